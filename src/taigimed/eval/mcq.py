"""MedQA-style multiple-choice accuracy by the log-likelihood of each option.

The model is not asked to *write* an answer (a 135M model rarely writes a parsable letter); each
option is scored by how likely the model finds it after the question, under the model's own chat
template::

    <system> <user: question + "A. ..." lines> <assistant> 答案：| B. 肺尖
                                                                 ^ scored continuation

The highest-scoring option is the model's answer. Ties (a model with no preference) earn
``1/len(tied)`` credit, so accuracy is the expected accuracy under random tie-breaking and a
uniform model scores exactly chance.

Two batched paths give the same numbers as scoring one option at a time (tests pin this):

* ``share_prompt_cache=True`` (default): the prompts of a batch of questions run once, left-padded;
  their KV cache is repeated per option and only the short continuations run again. The prompt is
  most of the tokens, so this removes most of the work.
* ``share_prompt_cache=False``: every (question, option) sequence in the batch is run whole,
  left-padded so that the continuations end together and only their logits are computed.

Left padding with explicit ``position_ids`` keeps positions identical to an unpadded run.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taigimed.data.normalise import needs_figure
from taigimed.eval.config import FALLBACK_MAX_PROMPT_TOKENS, MCQConfig
from taigimed.eval.io import EvalDataError, read_eval_set, require_str
from taigimed.eval.stats import wilson_interval

log = logging.getLogger(__name__)

LETTERS = "ABCDEFGH"
ANSWER_PREFIX = "答案："
ITEMS_KEY = "medqa_accuracy_items"  # metrics.json: {question id: right?}, read by the gate
_NUMBERED = re.compile(r"^\s*\d{1,3}\s*[.．、)]")


@dataclass
class MCQItem:
    """One question: options keyed A.. in order, the right letter, and data flags."""

    id: str
    question: str
    options: dict[str, str]
    answer_idx: str
    flags: dict[str, bool] = field(default_factory=dict)

    @property
    def letters(self) -> list[str]:
        return list(self.options)


def derive_flags(question: str) -> dict[str, bool]:
    """Flags for raw MedQA lines without them: missing figure, chained or numbered question."""
    return {
        "figure": needs_figure(question),  # the one detector data prep drops figure items with
        "chained": "承上題" in question or "承上" in question[:6],
        "numbered": bool(_NUMBERED.match(question)),
    }


def parse_mcq(obj: dict[str, Any], where: str) -> MCQItem:
    """Validate one MedQA line (options A–D or A–E, answer letter among them)."""
    question = require_str(obj, "question", where)
    options = obj.get("options")
    if not isinstance(options, dict) or not options:
        raise EvalDataError(f"{where}: field 'options' must be a non-empty object like {{'A': ..}}")
    keys = list(options)
    expected = list(LETTERS[: len(keys)])
    if sorted(keys) != expected or len(keys) < 2:
        raise EvalDataError(
            f"{where}: options must be keyed {', '.join(expected)} (2 to {len(LETTERS)} options), "
            f"got {keys}"
        )
    options = {k: options[k] for k in expected}
    for key, text in options.items():
        if not isinstance(text, str) or not text.strip():
            raise EvalDataError(f"{where}: option {key} is empty or not a string")
    answer_idx = require_str(obj, "answer_idx", where)
    if answer_idx not in options:
        raise EvalDataError(f"{where}: answer_idx {answer_idx!r} is not one of {expected}")
    answer = obj.get("answer")
    if isinstance(answer, str) and answer.strip() and answer.strip() != options[answer_idx].strip():
        raise EvalDataError(
            f"{where}: answer {answer!r} differs from option {answer_idx} "
            f"({options[answer_idx]!r}); fix answer or answer_idx"
        )
    flags = derive_flags(question)
    given = obj.get("flags")
    if isinstance(given, dict):
        flags.update({k: bool(v) for k, v in given.items()})
    qid = str(obj.get("id") or where.rsplit("/", 1)[-1])
    return MCQItem(qid, question, options, answer_idx, flags)


def load_mcq(path: str | Path, max_questions: int = 0) -> list[MCQItem]:
    """Read and validate a MedQA-style JSONL file (``eval/medqa_mcq.jsonl`` or raw MedQA)."""
    return read_eval_set(path, parse_mcq, "multiple-choice", limit=max_questions)


# --- encoding -----------------------------------------------------------------------------------


def prompt_text(tokenizer: Any, item: MCQItem, cfg: MCQConfig) -> str:
    """The question in the model's chat template, ending with the shared answer prefix."""
    lines = [item.question.strip(), *(f"{k}. {v.strip()}" for k, v in item.options.items())]
    messages = [{"role": "user", "content": "\n".join(lines)}]
    if cfg.system_prompt:
        messages.insert(0, {"role": "system", "content": cfg.system_prompt})
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:  # base models without a template: plain text
        text = "\n\n".join(m["content"] for m in messages) + "\n"
    return text + ANSWER_PREFIX


def continuation_text(letter: str, option: str, mode: str) -> str:
    """What is scored for one option: ``B``, ``肺尖`` or ``B. 肺尖``."""
    if mode == "letter":
        return letter
    if mode == "text":
        return option.strip()
    return f"{letter}. {option.strip()}"


@dataclass
class EncodedQuestion:
    """Token ids of one prompt and of each option's continuation, plus normalisers."""

    prompt: list[int]
    options: list[list[int]]
    norms: list[float]
    truncated: bool = False


def encode(tokenizer: Any, item: MCQItem, cfg: MCQConfig) -> EncodedQuestion:
    """Tokenise prompt and continuations separately (the same split for every option)."""
    prompt = tokenizer(prompt_text(tokenizer, item, cfg), add_special_tokens=False)["input_ids"]
    limit = cfg.max_prompt_tokens or FALLBACK_MAX_PROMPT_TOKENS  # 0: resolved by evaluate
    truncated = len(prompt) > limit
    if truncated:
        prompt = prompt[-limit:]
    options, norms = [], []
    for letter, text in item.options.items():
        cont = continuation_text(letter, text, cfg.continuation)
        ids = tokenizer(cont, add_special_tokens=False)["input_ids"]
        if not ids:
            raise EvalDataError(f"question {item.id}: option {letter} tokenises to nothing")
        options.append(ids)
        if cfg.normalize == "tokens":
            norms.append(float(len(ids)))
        elif cfg.normalize == "chars":
            norms.append(float(max(len(cont), 1)))
        else:
            norms.append(1.0)
    return EncodedQuestion(prompt, options, norms, truncated)


# --- scoring ------------------------------------------------------------------------------------


def _device(model: Any) -> Any:
    return next(model.parameters()).device


def _left_pad(rows: list[list[int]], pad_id: int) -> tuple[Any, Any, Any]:
    """Left-padded ids, attention mask and position ids (0.. from each row's first real token)."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, width - len(row) :] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


def _gather(logprobs: Any, targets: Any) -> Any:
    return logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)


def score_one_by_one(model: Any, encoded: list[EncodedQuestion]) -> list[list[float]]:
    """Sum of continuation log-probs, one forward pass per (question, option): the baseline."""
    import torch

    device = _device(model)
    out = []
    with torch.inference_mode():
        for enc in encoded:
            scores = []
            for cont in enc.options:
                ids = torch.tensor([enc.prompt + cont], device=device)
                logits = model(input_ids=ids, logits_to_keep=len(cont) + 1).logits
                logprobs = logits[0, :-1].float().log_softmax(-1)
                scores.append(float(_gather(logprobs, torch.tensor(cont, device=device)).sum()))
            out.append(scores)
    return out


def score_batch_full(model: Any, encoded: list[EncodedQuestion], pad_id: int) -> list[list[float]]:
    """All options of all questions as whole sequences in one left-padded forward pass."""
    import torch

    device = _device(model)
    rows, conts = [], []
    for enc in encoded:
        for cont in enc.options:
            rows.append(enc.prompt + cont)
            conts.append(cont)
    ids, mask, positions = _left_pad(rows, pad_id)
    keep = max(len(c) for c in conts) + 1
    with torch.inference_mode():
        logits = model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            logits_to_keep=keep,
        ).logits
        logprobs = logits.float().log_softmax(-1)
    flat = []
    for r, cont in enumerate(conts):
        # the continuation's n tokens are predicted by the n positions before the last one
        window = logprobs[r, keep - 1 - len(cont) : keep - 1]
        flat.append(float(_gather(window, torch.tensor(cont, device=device)).sum()))
    return _unflatten(flat, encoded)


def score_batch_cached(
    model: Any, encoded: list[EncodedQuestion], pad_id: int
) -> list[list[float]]:
    """Prompts once (left-padded), then every option's continuation on a copy of their cache."""
    import torch
    from transformers import DynamicCache

    device = _device(model)
    ids, mask, positions = _left_pad([e.prompt for e in encoded], pad_id)
    with torch.inference_mode():
        cache = DynamicCache()
        first = model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        first_logprobs = first.logits[:, -1].float().log_softmax(-1)  # predicts token 0
        owner = [q for q, e in enumerate(encoded) for _ in e.options]
        conts = [c for e in encoded for c in e.options]
        index = torch.tensor(owner, device=device)
        cache = first.past_key_values
        cache.reorder_cache(index)  # one row of cache per option (index_select with repeats)
        width = max(len(c) for c in conts)
        cont_ids = torch.full((len(conts), width), pad_id, dtype=torch.long)
        cont_mask = torch.zeros((len(conts), width), dtype=torch.long)
        for i, c in enumerate(conts):
            cont_ids[i, : len(c)] = torch.tensor(c)
            cont_mask[i, : len(c)] = 1
        lengths = torch.tensor([len(e.prompt) for e in encoded])[owner]
        cont_pos = lengths.unsqueeze(1) + torch.arange(width).unsqueeze(0)
        full_mask = torch.cat([mask[owner], cont_mask], dim=1)
        logits = model(
            input_ids=cont_ids.to(device),
            attention_mask=full_mask.to(device),
            position_ids=cont_pos.to(device),
            past_key_values=cache,
            use_cache=True,
        ).logits
        logprobs = logits.float().log_softmax(-1)
        flat = []
        for r, c in enumerate(conts):
            target = torch.tensor(c, device=device)
            total = first_logprobs[owner[r], c[0]]
            if len(c) > 1:
                total = total + _gather(logprobs[r, : len(c) - 1], target[1:]).sum()
            flat.append(float(total))
    return _unflatten(flat, encoded)


def _unflatten(flat: list[float], encoded: list[EncodedQuestion]) -> list[list[float]]:
    out, pos = [], 0
    for enc in encoded:
        out.append(flat[pos : pos + len(enc.options)])
        pos += len(enc.options)
    return out


def option_logprobs(
    model: Any,
    tokenizer: Any,
    encoded: list[EncodedQuestion],
    cfg: MCQConfig,
    mode: str = "batched",
    progress: bool = True,
) -> list[list[float]]:
    """Summed continuation log-probs for every option, in input order.

    ``mode="batched"`` groups ``cfg.batch_questions`` questions of similar prompt length per pass;
    ``mode="one_by_one"`` is the unbatched baseline (for the benchmark and equivalence tests).
    """
    from tqdm.auto import tqdm

    if mode == "one_by_one":
        iterator = tqdm(encoded, desc="mcq 1-by-1", unit="q", disable=not progress)
        return [score_one_by_one(model, [enc])[0] for enc in iterator]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].prompt))
    results: list[list[float] | None] = [None] * len(encoded)
    score = score_batch_cached if cfg.share_prompt_cache else score_batch_full
    bar = tqdm(total=len(encoded), desc="mcq batched", unit="q", disable=not progress)
    for start in range(0, len(order), cfg.batch_questions):
        chunk = order[start : start + cfg.batch_questions]
        for i, scores in zip(chunk, score(model, [encoded[i] for i in chunk], pad_id), strict=True):
            results[i] = scores
        bar.update(len(chunk))
    bar.close()
    return [r for r in results if r is not None]


# --- metrics ------------------------------------------------------------------------------------


def credit(scores: list[float], answer: int, tol: float = 1e-6) -> tuple[float, int, int]:
    """(credit, predicted index, number tied at the top): ties share the credit."""
    best = max(scores)
    tied = [i for i, s in enumerate(scores) if s >= best - tol]
    return (1.0 / len(tied) if answer in tied else 0.0), tied[0], len(tied)


def length_bucket(n_chars: int, edges: list[int]) -> str:
    """Label like ``<60``, ``60-120`` or ``>=200`` for a question of ``n_chars`` characters."""
    lower = 0
    for edge in edges:
        if n_chars < edge:
            return f"<{edge}" if lower == 0 else f"{lower}-{edge}"
        lower = edge
    return f">={lower}"


def _accuracy_groups(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, float]]:
    groups: dict[str, list[float]] = {}
    for row in rows:
        groups.setdefault(str(row[key]).lower(), []).append(row["credit"])
    return {
        name: {"n": len(vals), "accuracy": sum(vals) / len(vals)}
        for name, vals in sorted(groups.items())
    }


@dataclass
class MCQResult:
    """Flat metrics, breakdowns, and one row per question (written to predictions.jsonl)."""

    metrics: dict[str, Any]
    breakdown: dict[str, Any]
    rows: list[dict[str, Any]]


def summarise(
    items: list[MCQItem], encoded: list[EncodedQuestion], sums: list[list[float]], cfg: MCQConfig
) -> MCQResult:
    """Accuracy overall and by question length, figure/chained/numbered flags, option count."""
    rows = []
    for item, enc, raw in zip(items, encoded, sums, strict=True):
        normed = [s / n for s, n in zip(raw, enc.norms, strict=True)]
        answer = item.letters.index(item.answer_idx)
        got, predicted, tied = credit(normed, answer)
        rows.append(
            {
                "id": item.id,
                "answer": item.answer_idx,
                "predicted": item.letters[predicted],
                "credit": got,
                "tied": tied,
                "scores": [round(s, 4) for s in normed],
                "length": length_bucket(len(item.question), cfg.length_buckets),
                "num_options": len(item.options),
                **{k: bool(v) for k, v in item.flags.items()},
            }
        )
    n = len(rows)
    accuracy = sum(r["credit"] for r in rows) / n
    breakdown = {"length": _accuracy_groups(rows, "length")}
    for flag in ("figure", "chained", "numbered"):
        breakdown[flag] = _accuracy_groups([{**r, flag: r.get(flag, False)} for r in rows], flag)
    breakdown["num_options"] = _accuracy_groups(rows, "num_options")
    low, high = wilson_interval(sum(r["credit"] for r in rows), n)
    metrics: dict[str, Any] = {
        "medqa_accuracy": accuracy,
        "medqa_accuracy_ci_low": low,  # 95% Wilson interval
        "medqa_accuracy_ci_high": high,
        "medqa_chance": sum(1.0 / r["num_options"] for r in rows) / n,
        "medqa_questions": float(n),
        "medqa_tied_questions": float(sum(r["tied"] > 1 for r in rows)),
        "medqa_truncated_prompts": float(sum(e.truncated for e in encoded)),
        # Per-question correctness (the unique best option is the right one) for the gate's
        # paired test against the champion; a tie is not counted as right.
        ITEMS_KEY: {r["id"]: r["credit"] > 0.5 for r in rows},
    }
    return MCQResult(metrics, breakdown, rows)


def evaluate_mcq(
    model: Any,
    tokenizer: Any,
    items: list[MCQItem],
    cfg: MCQConfig,
    mode: str = "batched",
    progress: bool = True,
) -> MCQResult:
    """Score ``items`` and summarise: the whole MCQ task for one model."""
    encoded = [encode(tokenizer, item, cfg) for item in items]
    truncated = sum(e.truncated for e in encoded)
    if truncated:
        log.warning(
            "%d prompts exceeded %d tokens and were cut",
            truncated,
            cfg.max_prompt_tokens or FALLBACK_MAX_PROMPT_TOKENS,
        )
    sums = option_logprobs(model, tokenizer, encoded, cfg, mode=mode, progress=progress)
    result = summarise(items, encoded, sums, cfg)
    if not math.isfinite(result.metrics["medqa_accuracy"]):
        raise RuntimeError("MCQ accuracy is not finite; the model returned NaN log-probs")
    return result
