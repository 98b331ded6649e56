"""Evaluate one model on every task and write ``metrics.json`` plus the report.

``metrics.json`` is flat at the top (``medqa_accuracy``, ``ppl_hanji``, ``ppl_tailo``, ``chrf``,
``safety_pass_rate``, ...: what the gate reads) with ``breakdown`` (MedQA by question type) and
``meta`` (model, config, timings, suite version) beside it. Per-item outputs sit next to it:
``mcq_predictions.jsonl``, ``translations.jsonl``, ``safety_results.jsonl``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from taigimed.config import to_dict
from taigimed.eval.config import EvalConfig
from taigimed.eval.gen import evaluate_gen, generate_batch, load_translations
from taigimed.eval.lm import evaluate_lm, load_lm_texts
from taigimed.eval.mcq import evaluate_mcq, load_mcq
from taigimed.eval.report import write_report
from taigimed.eval.safety import fixed_answer, load_suite, model_answers, run_suite, suite_info
from taigimed.guardrails import GuardPolicy
from taigimed.models import load_causal_lm, load_tokenizer, resolve_model
from taigimed.utils import git_commit, write_json, write_jsonl

log = logging.getLogger(__name__)


def load_eval_sets(eval_dir: Path, cfg: EvalConfig) -> dict[str, Any]:
    """Read and validate every enabled eval set first, so bad data fails before model loading."""
    sets: dict[str, Any] = {}
    if "mcq" in cfg.tasks:
        sets["mcq"] = load_mcq(eval_dir / cfg.mcq.file, cfg.mcq.max_questions)
    if "lm" in cfg.tasks:
        sets["lm"] = load_lm_texts(eval_dir / cfg.lm.file, cfg.lm.max_texts)
    if "gen" in cfg.tasks:
        sets["gen"] = load_translations(eval_dir / cfg.gen.file, cfg.gen.max_items)
    if "safety" in cfg.tasks:
        sets["safety"] = load_suite(cfg.safety.suite)
    return sets


def evaluate_model(
    model: str | Path,
    eval_dir: Path,
    cfg: EvalConfig,
    out_dir: Path,
    champion: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``model`` on the eval sets in ``eval_dir``; write metrics and report to ``out_dir``.

    ``champion``/``base`` are earlier ``metrics.json`` contents, drawn beside the candidate in the
    report's plots (optional).
    """
    eval_dir, out_dir = Path(eval_dir), Path(out_dir)
    sets = load_eval_sets(eval_dir, cfg)
    model_dir = resolve_model(model)
    started = time.perf_counter()
    tokenizer = load_tokenizer(model_dir)
    lm = load_causal_lm(model_dir, dtype=cfg.dtype, device=cfg.device or None)
    metrics: dict[str, Any] = {}
    timings: dict[str, float] = {}
    breakdown = samples = failures = None
    out_dir.mkdir(parents=True, exist_ok=True)

    if "mcq" in sets:
        t0 = time.perf_counter()
        result = evaluate_mcq(lm, tokenizer, sets["mcq"], cfg.mcq, progress=progress)
        timings["mcq_s"] = time.perf_counter() - t0
        metrics.update(result.metrics)
        metrics["medqa_questions_per_s"] = len(result.rows) / max(timings["mcq_s"], 1e-9)
        breakdown = result.breakdown
        write_jsonl(out_dir / "mcq_predictions.jsonl", result.rows)
    if "lm" in sets:
        t0 = time.perf_counter()
        metrics.update(evaluate_lm(lm, tokenizer, sets["lm"], cfg.lm, progress=progress))
        timings["lm_s"] = time.perf_counter() - t0
    if "gen" in sets:
        t0 = time.perf_counter()
        gen_metrics, samples = evaluate_gen(lm, tokenizer, sets["gen"], cfg.gen, progress=progress)
        metrics.update(gen_metrics)
        timings["gen_s"] = time.perf_counter() - t0
        write_jsonl(out_dir / "translations.jsonl", samples)
    if "safety" in sets:
        t0 = time.perf_counter()
        policy = GuardPolicy()
        generate = fixed_answer
        if cfg.safety.answers == "model":
            generate = model_answers(
                sets["safety"],
                policy,
                lambda qs: generate_batch(
                    lm,
                    tokenizer,
                    qs,
                    cfg.safety.max_new_tokens,
                    cfg.gen.batch_size,
                    progress,
                    "safety answers",
                ),
            )
        safety = run_suite(sets["safety"], generate, policy)
        metrics.update(safety.metrics)
        failures = safety.failures
        timings["safety_s"] = time.perf_counter() - t0
        write_jsonl(out_dir / "safety_results.jsonl", safety.rows)

    meta = {
        "model": str(model),
        "model_dir": str(model_dir),
        "eval_dir": str(eval_dir),
        "config": to_dict(cfg),
        "timings_s": {**timings, "total_s": time.perf_counter() - started},
        "git_commit": git_commit(),
    }
    if "safety" in sets:
        meta.update(suite_info(cfg.safety.suite))
    record = {**metrics, "breakdown": {"medqa": breakdown} if breakdown else {}, "meta": meta}
    write_json(out_dir / "metrics.json", record)
    write_report(
        out_dir,
        metrics,
        champion=champion,
        base=base,
        title=f"TaigiMed evaluation: {model}",
        breakdown=breakdown,
        samples=samples,
        safety_failures=failures,
    )
    log.info("wrote %s and report.md/html", out_dir / "metrics.json")
    return record
