"""Perplexity on held-out Taigi text, one number per writing system (Hàn-jī, Tâi-lô).

Token-level: ``exp(total negative log-likelihood / number of predicted tokens)`` over all texts
of one script, so long texts weigh by their length. Perplexities are comparable only between
models that share a tokenizer (candidate, champion and base here all use the base tokenizer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from taigimed.eval.config import FALLBACK_LM_MAX_TOKENS, LMConfig
from taigimed.eval.io import EvalDataError, read_eval_set, require_str

SCRIPTS = ("hanji", "tailo")


@dataclass
class LMText:
    id: str
    text: str
    script: str


def parse_lm(obj: dict[str, Any], where: str) -> LMText:
    text = require_str(obj, "text", where)
    script = require_str(obj, "script", where)
    if script not in SCRIPTS:
        raise EvalDataError(f"{where}: script {script!r} must be one of {list(SCRIPTS)}")
    return LMText(str(obj.get("id") or where), text, script)


def load_lm_texts(path: str | Path, max_texts: int = 0) -> list[LMText]:
    """Read and validate ``eval/taigi_lm.jsonl``."""
    return read_eval_set(path, parse_lm, "held-out Taigi text", limit=max_texts)


def token_nll(model: Any, rows: list[list[int]], pad_id: int) -> list[tuple[float, int]]:
    """(summed NLL, predicted tokens) per row, in one right-padded forward pass."""
    import torch

    device = next(model.parameters()).device
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    with torch.inference_mode():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
        logprobs = logits[:, :-1].float().log_softmax(-1)
        target = ids[:, 1:].to(device)
        nll = -logprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1) * mask[:, 1:].to(device)
    return [(float(nll[i].sum()), len(row) - 1) for i, row in enumerate(rows)]


def evaluate_lm(
    model: Any, tokenizer: Any, texts: list[LMText], cfg: LMConfig, progress: bool = True
) -> dict[str, float]:
    """``ppl_<script>`` and ``lm_tokens_<script>`` for every script in ``cfg.scripts``.

    A script with no text gives no perplexity (the gate then reports it missing) rather than a
    made-up number.
    """
    from tqdm.auto import tqdm

    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    metrics: dict[str, float] = {}
    truncated = 0
    limit = cfg.max_tokens or FALLBACK_LM_MAX_TOKENS  # 0: resolved from the spec by evaluate
    for script in cfg.scripts:
        rows = []
        for item in (t for t in texts if t.script == script):
            ids = bos + tokenizer(item.text, add_special_tokens=False)["input_ids"]
            truncated += len(ids) > limit
            ids = ids[:limit]
            if len(ids) >= 2:
                rows.append(ids)
        if not rows:
            continue
        rows.sort(key=len)
        total, count = 0.0, 0
        for start in tqdm(
            range(0, len(rows), cfg.batch_size), desc=f"ppl {script}", disable=not progress
        ):
            for nll, n in token_nll(model, rows[start : start + cfg.batch_size], pad_id):
                total += nll
                count += n
        metrics[f"ppl_{script}"] = math.exp(total / count) if count else float("nan")
        metrics[f"lm_tokens_{script}"] = float(count)
    metrics["lm_truncated_texts"] = float(truncated)
    return metrics
