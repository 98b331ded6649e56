"""Perplexity on held-out Taigi text, one number per writing system (``taigimed.eval.lm``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from taigimed.eval import lm
from taigimed.eval.tasks import EvalTask, Metric, TaskContext, TaskOutput, register


def _load(eval_dir: Path, cfg: Any) -> list[lm.LMText]:
    return lm.load_lm_texts(eval_dir / cfg.lm.file, cfg.lm.max_texts)


def _run(ctx: TaskContext, texts: list[lm.LMText]) -> TaskOutput:
    return TaskOutput(lm.evaluate_lm(ctx.lm, ctx.tokenizer, texts, ctx.cfg.lm, ctx.progress))


TASK = register(
    EvalTask(
        name="lm",
        section="lm",
        order=20,
        metrics=(
            Metric("ppl_hanji", "lower", headline=True, help="perplexity on Hàn-jī text"),
            Metric("ppl_tailo", "lower", headline=True, help="perplexity on Tâi-lô text"),
            Metric("ppl_{script}", "lower", help="perplexity of any other configured script"),
            Metric("lm_tokens_{script}"),
            Metric("lm_truncated_texts"),
        ),
        load=_load,
        run=_run,
    )
)
