"""Mandarin -> Taigi translation by greedy generation, scored with chrF (sacrebleu).

chrF works on character n-grams, so it needs no word segmentation for Hàn-jī text and gives
partial credit for near misses, which matters for a small model. A few answers are kept beside
their references for people to read in the report: a number alone hides what the model writes.

``generate_answers`` here is the evaluation's one batched greedy generation (with per-token
log-probs and the cut-character trim the predictor applies); the answer-quality and safety
tasks call it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taigimed.eval.config import GenConfig
from taigimed.eval.io import read_eval_set, require_str
from taigimed.quality import trim_partial_char


@dataclass
class TranslationItem:
    id: str
    source: str
    reference: str


def parse_translation(obj: dict[str, Any], where: str) -> TranslationItem:
    return TranslationItem(
        str(obj.get("id") or where),
        require_str(obj, "source", where),
        require_str(obj, "reference", where),
    )


def load_translations(path: str | Path, max_items: int = 0) -> list[TranslationItem]:
    """Read and validate ``eval/taigi_translation.jsonl``."""
    return read_eval_set(path, parse_translation, "translation", limit=max_items)


@dataclass
class Generated:
    text: str
    logprobs: list[float]
    finish: str  # "stop" | "length"


def chat_prompt(tokenizer: Any, system_prompt: str, question: str) -> str:
    """The question as the served model sees it: system prompt + one user turn."""
    messages = [{"role": "user", "content": question}]
    if system_prompt:
        messages.insert(0, {"role": "system", "content": system_prompt})
    return render_messages(tokenizer, messages)


def render_messages(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """A conversation in the model's chat template, ready for the assistant's turn (lines of
    text for a tokenizer without a template, as the predictor does)."""
    if not getattr(tokenizer, "chat_template", None):
        return "\n".join(m["content"] for m in messages) + "\n"
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def generate_answers(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "generate",
) -> list[Generated]:
    """Greedy answers with per-token log-probs, left-padded batches, order kept.

    An answer that stopped at ``max_new_tokens`` ends at its last whole character (the bytes of
    a cut character decode to U+FFFD, which is dropped), as the predictor does.
    """
    import torch
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    configured = getattr(model.generation_config, "eos_token_id", None)
    configured = configured if isinstance(configured, list) else [configured]
    eos = {tokenizer.eos_token_id, tokenizer.pad_token_id, *configured} - {None}
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    out: list[Generated] = []
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc=desc, disable=not progress):
            batch = tokenizer(
                prompts[start : start + batch_size],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            ).to(device)
            with torch.inference_mode():
                gen = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                    return_dict_in_generate=True,
                    output_scores=True,
                )
            new = gen.sequences[:, batch["input_ids"].shape[1] :]
            steps = torch.stack(gen.scores, dim=1).float().log_softmax(-1)
            chosen = steps.gather(2, new[:, :, None]).squeeze(2)
            for row, lps in zip(new.tolist(), chosen.tolist(), strict=True):
                ids: list[int] = []
                finish = "length"
                for tok in row:
                    if tok in eos:
                        finish = "stop"
                        break
                    ids.append(tok)
                text = tokenizer.decode(ids, skip_special_tokens=True)
                if finish == "length":
                    text = trim_partial_char(text)
                out.append(Generated(text.strip(), lps[: len(ids)], finish))
    finally:
        tokenizer.padding_side = side
    return out


def chat_prompts(tokenizer: Any, questions: list[str]) -> list[str]:
    """Each question as a single user turn in the model's chat template."""
    return [chat_prompt(tokenizer, "", q) for q in questions]


def generate_batch(
    model: Any,
    tokenizer: Any,
    questions: list[str],
    max_new_tokens: int,
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "generate",
) -> list[str]:
    """Greedy answers (text only) to ``questions``, each a single user turn; order kept."""
    prompts = chat_prompts(tokenizer, questions)
    generated = generate_answers(
        model, tokenizer, prompts, max_new_tokens, batch_size, progress, desc
    )
    return [g.text for g in generated]


def chrf(hypotheses: list[str], references: list[str]) -> float:
    """Corpus chrF (0–100) with sacrebleu's defaults (character 6-grams, beta 2)."""
    from sacrebleu.metrics import CHRF

    return float(CHRF().corpus_score(hypotheses, [references]).score)


def evaluate_gen(
    model: Any, tokenizer: Any, items: list[TranslationItem], cfg: GenConfig, progress: bool = True
) -> tuple[dict[str, float], list[dict[str, str]]]:
    """(metrics, samples): corpus chrF and the first ``samples_in_report`` translations."""
    questions = [cfg.instruction + item.source for item in items]
    hyps = generate_batch(
        model, tokenizer, questions, cfg.max_new_tokens, cfg.batch_size, progress, "translate"
    )
    samples = [
        {"id": item.id, "source": item.source, "reference": item.reference, "model": hyp}
        for item, hyp in zip(items, hyps, strict=True)
    ]
    metrics = {
        "chrf": chrf(hyps, [i.reference for i in items]),
        "gen_items": float(len(items)),
        "gen_empty_answers": float(sum(not h for h in hyps)),
    }
    return metrics, samples[: cfg.samples_in_report]
