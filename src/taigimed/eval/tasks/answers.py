"""Open health questions answered as a person would be answered (``taigimed.eval.answers``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from taigimed.eval import answers
from taigimed.eval.tasks import EvalTask, Metric, TaskContext, TaskOutput, register
from taigimed.utils import REPO_ROOT


def _path(name: str) -> Path:
    """Repo-relative like the safety suite (the set ships with the code, not with prepare)."""
    path = Path(name)
    return path if path.is_absolute() or path.exists() else REPO_ROOT / path


def _load(eval_dir: Path, cfg: Any) -> list[answers.AnswerItem]:
    return answers.load_answer_items([_path(f) for f in cfg.answers.files], cfg.answers.max_items)


def _run(ctx: TaskContext, items: list[answers.AnswerItem]) -> TaskOutput:
    knowledge = ctx.knowledge if ctx.cfg.answers.grounded else None
    result = answers.evaluate_answers(ctx.lm, ctx.tokenizer, items, ctx.cfg.answers, knowledge)
    metrics = {k: v for k, v in result.metrics.items() if v is not None}
    return TaskOutput(
        metrics,
        files={"answers.jsonl": result.rows}
        | ({"answers_grounded.jsonl": result.grounded_rows} if result.grounded_rows else {}),
        report={"answers": result.rows, "answer_samples": ctx.cfg.answers.samples_in_report},
        meta={
            "answer_files": list(ctx.cfg.answers.files),
            "answer_system_prompt": answers.resolve_system_prompt(ctx.cfg.answers),
            "answer_seconds": result.seconds,
        },
    )


def _split_metrics() -> tuple[Metric, ...]:
    """Each metric for the dev split (gated) and the held-out split (reported apart)."""
    base = [
        ("answer_chrf", "higher", True, "mean sentence chrF vs the best reference (0-100)"),
        ("answer_rougeL", "higher", False, "mean character ROUGE-L F1 (0-1)"),
        ("answer_echo_rate", "lower", True, "answers mostly copied from the prompt or question"),
        ("answer_repetition_rate", "lower", True, "answers in a loop"),
        ("answer_broken_char_rate", "lower", False, "answers with U+FFFD or a lone surrogate"),
        ("answer_empty_rate", "lower", False, "answers with nothing to read"),
        ("answer_simplified_rate", "lower", False, "answers in Simplified characters"),
        ("answer_off_script_rate", "lower", False, "Latin-letter answers to Hàn-jī questions"),
        ("answer_degenerate_rate", "lower", False, "answers with any degenerate flag"),
        ("answer_acceptable_rate", "higher", False, "chrF above the bar and no flag"),
        ("answer_length_cut_rate", None, False, "answers stopped by max_new_tokens"),
        ("confidence_auroc", "higher", False, "confidence separates acceptable answers"),
        ("confidence_auroc_logprob", None, False, "the same for exp(mean log-prob) alone"),
        ("answer_items", None, False, ""),
    ]
    # What the guard would show with the index served (the candidate only; reported).
    shown = ("chrf", "rougeL", "echo_rate", "repetition_rate", "degenerate_rate", "acceptable_rate")
    grounded = [
        (name.replace("answer_", "answer_grounded_", 1), d, False, f"grounded as served: {h}")
        for name, d, _, h in base
        if name.removeprefix("answer_") in shown
    ]
    grounded += [
        ("answer_grounded_share", None, False, "questions the index grounded (confident match)"),
        ("answer_grounded_passage_rate", None, False, "answers replaced by the approved passage"),
    ]
    out = []
    for name, direction, headline, help_text in base + grounded:
        out.append(Metric(name, direction, headline=headline, help=help_text))
        out.append(Metric(f"{name}_heldout", direction, help=f"held-out split: {help_text}"))
    out.append(Metric("answers_per_s", "higher", help="generation throughput (load-dependent)"))
    return tuple(out)


TASK = register(
    EvalTask(
        name="answers",
        section="answers",
        order=35,
        metrics=_split_metrics(),
        load=_load,
        run=_run,
    )
)
