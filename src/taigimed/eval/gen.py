"""Mandarin -> Taigi translation by greedy generation, scored with chrF (sacrebleu).

chrF works on character n-grams, so it needs no word segmentation for Hàn-jī text and gives
partial credit for near misses, which matters for a small model. A few answers are kept beside
their references for people to read in the report: a number alone hides what the model writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taigimed.eval.config import GenConfig
from taigimed.eval.io import read_eval_set, require_str


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


def chat_prompts(tokenizer: Any, questions: list[str]) -> list[str]:
    """Each question as a single user turn in the model's chat template."""
    if not getattr(tokenizer, "chat_template", None):
        return [q + "\n" for q in questions]
    return [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True
        )
        for q in questions
    ]


def generate_batch(
    model: Any,
    tokenizer: Any,
    questions: list[str],
    max_new_tokens: int,
    batch_size: int = 8,
    progress: bool = False,
    desc: str = "generate",
) -> list[str]:
    """Greedy answers to ``questions`` (left-padded batches); order kept."""
    import torch
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    prompts = chat_prompts(tokenizer, questions)
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation appends on the right
    answers: list[str] = []
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc=desc, disable=not progress):
            batch = tokenizer(
                prompts[start : start + batch_size],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            ).to(device)
            with torch.inference_mode():
                out = model.generate(
                    **batch,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=tokenizer.pad_token_id,
                )
            new = out[:, batch["input_ids"].shape[1] :]
            answers.extend(t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    return answers


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
