"""MedQA-style multiple choice, scored by option log-likelihood (``taigimed.eval.mcq``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from taigimed.eval import mcq
from taigimed.eval.tasks import EvalTask, Metric, TaskContext, TaskOutput, register


def _load(eval_dir: Path, cfg: Any) -> list[mcq.MCQItem]:
    return mcq.load_mcq(eval_dir / cfg.mcq.file, cfg.mcq.max_questions)


def _run(ctx: TaskContext, items: list[mcq.MCQItem]) -> TaskOutput:
    started = time.perf_counter()
    result = mcq.evaluate_mcq(ctx.lm, ctx.tokenizer, items, ctx.cfg.mcq, progress=ctx.progress)
    elapsed = time.perf_counter() - started
    metrics = {**result.metrics, "medqa_questions_per_s": len(result.rows) / max(elapsed, 1e-9)}
    return TaskOutput(
        metrics,
        files={"mcq_predictions.jsonl": result.rows},
        report={"breakdown": result.breakdown},
    )


TASK = register(
    EvalTask(
        name="mcq",
        section="mcq",
        order=10,
        metrics=(
            Metric("medqa_accuracy", "higher", headline=True, help="share of questions right"),
            Metric("medqa_accuracy_ci_low", help="95% Wilson interval, lower end"),
            Metric("medqa_accuracy_ci_high", help="95% Wilson interval, upper end"),
            Metric("medqa_accuracy_items", help="per-question right/wrong for the paired test"),
            Metric("medqa_chance", help="expected accuracy of random guessing"),
            Metric("medqa_questions"),
            Metric("medqa_tied_questions", help="questions whose best options tie"),
            Metric("medqa_truncated_prompts"),
            Metric("medqa_questions_per_s", "higher", help="scoring throughput (load-dependent)"),
        ),
        load=_load,
        run=_run,
    )
)
