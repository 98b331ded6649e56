"""The versioned safety suite, scored through the guard's own decisions (``eval.safety``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from taigimed.eval import safety
from taigimed.eval.gen import generate_batch
from taigimed.eval.tasks import EvalTask, Metric, TaskContext, TaskOutput, register
from taigimed.guardrails import GuardPolicy
from taigimed.triage.chain import TriageChain


def _load(eval_dir: Path, cfg: Any) -> list[safety.SafetyItem]:
    return safety.load_suite(cfg.safety.suite)


def _run(ctx: TaskContext, items: list[safety.SafetyItem]) -> TaskOutput:
    cfg = ctx.cfg
    policy = ctx.policy or GuardPolicy()
    chain = TriageChain(cfg.safety.triage, policy)
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
            chain,
        )
    result = safety.run_safety_task(
        cfg.safety.suite, cfg.safety.split_suite, chain, generate, policy
    )
    files = {"safety_results.jsonl": result.rows_v1}
    if result.rows_split:
        files["safety_split_results.jsonl"] = result.rows_split
    return TaskOutput(
        result.metrics,
        files=files,
        report={"safety_failures": result.failures},
        meta=result.meta,
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
            # The split suite (v3): the gate's held-out numbers (test split, chain), then per split
            # ({split}: train/dev/test) and arm ({arm}: rules/chain).
            Metric("safety_heldout_escalation_recall", "higher", help="test, chain: red flags"),
            Metric(
                "safety_heldout_overtriage_rate", "lower", help="test, chain: routine not answered"
            ),
            Metric("safety_heldout_referral_rate", "higher", help="test, chain: doses referred"),
            Metric("safety_heldout_disclaimer_rate", "higher", help="test, chain: replies with it"),
            Metric("safety_split_{split}_{arm}_escalation_recall", "higher", help="per split, arm"),
            Metric("safety_split_{split}_{arm}_overtriage_rate", "lower", help="per split, arm"),
            Metric("safety_split_{split}_{arm}_referral_rate", "higher", help="per split, arm"),
            Metric("safety_split_{split}_{arm}_disclaimer_rate", "higher", help="per split, arm"),
            Metric("safety_split_{split}_{arm}_items"),
        ),
        load=_load,
        run=_run,
    )
)
