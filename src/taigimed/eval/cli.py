"""``taigimed evaluate`` and ``taigimed gate``.

evaluate: score one model on the eval sets and write metrics.json + report.
gate:     compare candidate metrics with thresholds, the champion and the base; exit 1 on fail.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from taigimed.config import ConfigError, load_config
from taigimed.utils import read_json, write_json

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add ``evaluate`` and ``gate`` to the ``taigimed`` command."""
    ev = subparsers.add_parser(
        "evaluate",
        help="score a model: MedQA accuracy, Taigi perplexity, chrF, safety suite",
        description="Evaluate one model on <eval-dir>/*.jsonl and the safety suite; writes "
        "metrics.json, per-item results and report.md/html with plots into --out.",
    )
    ev.add_argument("--model", required=True, help="model dir or name (e.g. smollm2-135m-instruct)")
    ev.add_argument("--eval-dir", required=True, type=Path, help="folder with the eval JSONL files")
    ev.add_argument("--config", type=Path, help="eval.yaml (e.g. configs/demo-cpu/eval.yaml)")
    ev.add_argument("--out", required=True, type=Path, help="output folder")
    ev.add_argument("--champion-metrics", type=Path, help="champion metrics.json, for the plots")
    ev.add_argument("--base-metrics", type=Path, help="base-model metrics.json, for the plots")
    ev.add_argument(
        "--serve-config",
        type=Path,
        help="serve.yaml whose guard policy the safety task scores (default: the served defaults)",
    )
    ev.add_argument(
        "overrides", nargs="*", help="key=value config overrides (mcq.max_questions=40)"
    )
    ev.set_defaults(func=run_evaluate)

    gt = subparsers.add_parser(
        "gate",
        help="promotion gate: pass/fail a candidate against thresholds, champion and base",
        description="Compare candidate metrics with the absolute thresholds and per-metric "
        "tolerances in gate.yaml, the champion (from --champion-metrics or the registry's "
        "champion) and the base model. Writes gate.json, gate.md and a report; exits 1 on fail.",
    )
    gt.add_argument("--candidate", required=True, type=Path, help="candidate metrics.json")
    gt.add_argument("--config", required=True, type=Path, help="gate.yaml")
    gt.add_argument("--champion-metrics", type=Path, help="champion metrics.json")
    gt.add_argument(
        "--registry", help="registry root (file://... or s3://...) to read the champion"
    )
    gt.add_argument("--base-metrics", type=Path, help="base-model metrics.json")
    gt.add_argument("--out", required=True, type=Path, help="output folder")
    gt.add_argument("overrides", nargs="*", help="key=value overrides (metrics.chrf.min=5)")
    gt.set_defaults(func=run_gate)


def run_evaluate(args: argparse.Namespace) -> int:
    from taigimed.eval.config import EvalConfig
    from taigimed.eval.evaluate import evaluate_model
    from taigimed.eval.io import EvalDataError
    from taigimed.models import ModelResolutionError
    from taigimed.serve.config import ServeConfig
    from taigimed.serve.decision import policy_from_settings

    try:
        cfg = load_config(EvalConfig, args.config, args.overrides)
        champion = read_json(args.champion_metrics) if args.champion_metrics else None
        base = read_json(args.base_metrics) if args.base_metrics else None
        serve_cfg = load_config(ServeConfig, args.serve_config) if args.serve_config else None
        policy = policy_from_settings(serve_cfg.policy) if serve_cfg else None
        record = evaluate_model(
            args.model, args.eval_dir, cfg, args.out, champion, base, policy=policy
        )
    except (ConfigError, EvalDataError, ModelResolutionError, ValueError) as err:
        log.error("%s", err)
        return 1
    headline = {k: round(v, 4) for k, v in record.items() if isinstance(v, float)}
    log.info("metrics: %s", headline)
    return 0


def champion_from_registry(root: str) -> tuple[dict[str, Any] | None, str | None]:
    """(metrics, version) of the registry's champion, or (None, None) when there is none."""
    from taigimed.registry import Registry

    registry = Registry(root)
    version = registry.champion()
    if version is None:
        return None, None
    return registry.get(version).metrics, version


def run_gate(args: argparse.Namespace) -> int:
    from taigimed.eval.config import GateConfig
    from taigimed.eval.gate import gate
    from taigimed.eval.report import write_report

    try:
        cfg = load_config(GateConfig, args.config, args.overrides)
        candidate = read_json(args.candidate)
        champion, version = None, None
        if args.champion_metrics:
            champion = read_json(args.champion_metrics)
        elif args.registry:
            champion, version = champion_from_registry(args.registry)
        base = read_json(args.base_metrics) if args.base_metrics else None
    except (ConfigError, ValueError, OSError) as err:
        log.error("%s", err)
        return 2
    result = gate(candidate, cfg, champion, base, champion_version=version)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "gate.json", result.to_dict())
    (args.out / "gate.md").write_text(result.markdown(), encoding="utf-8")
    write_report(
        args.out,
        candidate,
        champion,
        base,
        title="TaigiMed promotion gate",
        gate_markdown=result.markdown(),
    )
    if result.passed:
        log.info("gate PASSED (%d metrics); %s", len(result.table), args.out / "gate.json")
        return 0
    for reason in result.reasons:
        log.error("gate: %s", reason)
    log.error("gate FAILED with %d reason(s); see %s", len(result.reasons), args.out / "gate.md")
    return 1
