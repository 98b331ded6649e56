"""Evaluate one model on every task and write ``metrics.json`` plus the report.

``metrics.json`` is flat at the top (``medqa_accuracy``, ``ppl_hanji``, ``ppl_tailo``, ``chrf``,
``safety_pass_rate``, ...: what the gate reads) with ``breakdown`` (MedQA by question type) and
``meta`` (model, config, timings, suite version) beside it. Per-item outputs sit next to it:
``mcq_predictions.jsonl``, ``translations.jsonl``, ``safety_results.jsonl``.

The tasks themselves (what to load, how to score, which metrics with which direction) are in
the registry, ``taigimed.eval.tasks``; this module only runs the enabled ones in order.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from taigimed.config import to_dict
from taigimed.eval.config import EvalConfig, with_model_spec
from taigimed.eval.report import write_report
from taigimed.eval.tasks import TaskContext, all_tasks, get_task
from taigimed.models import load_causal_lm, load_tokenizer, resolve_model
from taigimed.serve.config import PolicySettings
from taigimed.serve.decision import policy_from_settings, policy_record
from taigimed.spec import ModelSpec, read_spec
from taigimed.utils import git_commit, write_json, write_jsonl

log = logging.getLogger(__name__)


def load_eval_sets(eval_dir: Path, cfg: EvalConfig) -> dict[str, Any]:
    """Read and validate every enabled eval set first, so bad data fails before model loading."""
    return {
        name: task.load(eval_dir, cfg) for name, task in all_tasks().items() if name in cfg.tasks
    }


def evaluate_model(
    model: str | Path,
    eval_dir: Path,
    cfg: EvalConfig,
    out_dir: Path,
    champion: dict[str, Any] | None = None,
    base: dict[str, Any] | None = None,
    progress: bool = True,
    policy: Any = None,
    spec: ModelSpec | None = None,
    knowledge: Any = None,
) -> dict[str, Any]:
    """Score ``model`` on the eval sets in ``eval_dir``; write metrics and report to ``out_dir``.

    Each task in ``cfg.tasks`` comes from the registry (``taigimed.eval.tasks``).
    ``champion``/``base`` are earlier ``metrics.json`` contents, drawn beside the candidate in the
    report's plots (optional). ``policy`` is the guardrail policy served with this model, which
    the safety task scores (None: the guardrails' defaults). Prompt and lengths left to "the
    model's" in ``cfg`` come from ``spec`` (default: the model's own ``taigimed.json``).
    ``knowledge`` (a ``LiveKnowledge``) is the retrieval index served beside the model: the
    answer-quality task then also scores grounded answers, as the guard would show them.
    """
    eval_dir, out_dir = Path(eval_dir), Path(out_dir)
    sets = load_eval_sets(eval_dir, cfg)
    model_dir = resolve_model(model)
    spec = spec or read_spec(model_dir)
    cfg, resolved_from = with_model_spec(cfg, spec)
    started = time.perf_counter()
    tokenizer = load_tokenizer(model_dir)
    lm = load_causal_lm(model_dir, dtype=cfg.dtype, device=cfg.device or None)
    policy = policy or policy_from_settings(PolicySettings())  # what serving defaults to
    ctx = TaskContext(lm, tokenizer, cfg, progress, policy, knowledge)
    metrics: dict[str, Any] = {}
    timings: dict[str, float] = {}
    report: dict[str, Any] = {}
    task_meta: dict[str, Any] = {}
    out_dir.mkdir(parents=True, exist_ok=True)

    for name, data in sets.items():
        t0 = time.perf_counter()
        output = get_task(name).run(ctx, data)
        timings[f"{name}_s"] = time.perf_counter() - t0
        metrics.update(output.metrics)
        report.update(output.report)
        task_meta.update(output.meta)
        for filename, rows in output.files.items():
            write_jsonl(out_dir / filename, rows)

    meta = {
        "model": str(model),
        "model_dir": str(model_dir),
        "eval_dir": str(eval_dir),
        "config": to_dict(cfg),
        "timings_s": {**timings, "total_s": time.perf_counter() - started},
        "git_commit": git_commit(),
        "resolved_from": resolved_from,
        "model_spec": spec.to_dict() if spec else None,
        "guard_policy": policy_record(ctx.policy),
        **task_meta,
    }
    breakdown = report.get("breakdown")
    record = {**metrics, "breakdown": {"medqa": breakdown} if breakdown else {}, "meta": meta}
    write_json(out_dir / "metrics.json", record)
    write_report(
        out_dir,
        metrics,
        champion=champion,
        base=base,
        title=f"TaigiMed evaluation: {model}",
        **report,
    )
    log.info("wrote %s and report.md/html", out_dir / "metrics.json")
    return record
