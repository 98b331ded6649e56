"""Greedy Mandarin -> Taigi translation scored with chrF (``taigimed.eval.gen``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from taigimed.eval import gen
from taigimed.eval.tasks import EvalTask, Metric, TaskContext, TaskOutput, register


def _load(eval_dir: Path, cfg: Any) -> list[gen.TranslationItem]:
    return gen.load_translations(eval_dir / cfg.gen.file, cfg.gen.max_items)


def _run(ctx: TaskContext, items: list[gen.TranslationItem]) -> TaskOutput:
    metrics, samples = gen.evaluate_gen(
        ctx.lm, ctx.tokenizer, items, ctx.cfg.gen, progress=ctx.progress
    )
    return TaskOutput(metrics, {"translations.jsonl": samples}, report={"samples": samples})


TASK = register(
    EvalTask(
        name="gen",
        section="gen",
        order=30,
        metrics=(
            Metric("chrf", "higher", headline=True, help="chrF of translations (0-100)"),
            Metric("gen_items"),
            Metric("gen_empty_answers", "lower"),
        ),
        load=_load,
        run=_run,
    )
)
