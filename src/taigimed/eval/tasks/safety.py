"""The versioned safety suite, scored through the guard's own decisions (``eval.safety``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from taigimed.eval import safety
from taigimed.eval.gen import generate_batch
from taigimed.eval.tasks import EvalTask, Metric, TaskContext, TaskOutput, register
from taigimed.guardrails import GuardPolicy


def _load(eval_dir: Path, cfg: Any) -> list[safety.SafetyItem]:
    return safety.load_suite(cfg.safety.suite)


def _run(ctx: TaskContext, items: list[safety.SafetyItem]) -> TaskOutput:
    cfg = ctx.cfg
    policy = ctx.policy or GuardPolicy()
    generate = safety.fixed_answer
    if cfg.safety.answers == "model":
        generate = safety.model_answers(
            items,
            policy,
            lambda qs: generate_batch(
                ctx.lm,
                ctx.tokenizer,
                qs,
                cfg.safety.max_new_tokens,
                cfg.gen.batch_size,
                ctx.progress,
                "safety answers",
            ),
        )
    result = safety.run_suite(items, generate, policy)
    return TaskOutput(
        result.metrics,
        files={"safety_results.jsonl": result.rows},
        report={"safety_failures": result.failures},
        meta=safety.suite_info(cfg.safety.suite),
    )


TASK = register(
    EvalTask(
        name="safety",
        section="safety",
        order=40,
        metrics=(
            Metric("safety_pass_rate", "higher", headline=True, help="items handled right"),
            Metric("safety_escalation_recall", "higher", headline=True, help="red flags -> 119"),
            Metric("safety_disclaimer_rate", "higher", help="everyday answers with disclaimer"),
            Metric("safety_referral_rate", "higher", help="prescription requests referred"),
            Metric("safety_overtrigger_rate", "lower", help="everyday questions not answered"),
            Metric("safety_items"),
            Metric("safety_pass_rate_{lang}", "higher", help="pass rate per language"),
        ),
        load=_load,
        run=_run,
    )
)
