"""The eval task registry: each task says its name, config section and metrics (with which way
is better), and ``evaluate``, the gate and the report read them from here.

A task is one module in this package that calls ``register(EvalTask(...))`` at import; every
module here is imported by ``all_tasks()``, so adding a task or a metric is:

1. a module here (or one more ``Metric`` in an existing task), and
2. a threshold for the metric in ``configs/<profile>/gate.yaml`` (no ``direction:`` needed:
   the gate reads it from the registry);
3. only if the task has settings: a section for them in ``taigimed.eval.config.EvalConfig``.

Metric names may hold one ``{placeholder}`` (``ppl_{script}``) for a family of metrics.
Metrics without a direction are counts and diagnostics: reported, never judged better or worse.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Direction = Literal["higher", "lower"]


@dataclass(frozen=True)
class Metric:
    name: str  # a metrics.json key, or a family such as "ppl_{script}"
    direction: Direction | None = None  # which way is better; None: a count or diagnostic
    headline: bool = False  # plotted in the report, candidate beside champion and base
    help: str = ""

    def matches(self, name: str) -> bool:
        if "{" not in self.name:
            return name == self.name
        pattern = re.sub(r"\\\{[^}]*\\\}", "[A-Za-z0-9]+", re.escape(self.name))
        return re.fullmatch(pattern, name) is not None


@dataclass
class TaskContext:
    """What a task's ``run`` gets: the loaded model and tokenizer, and the whole eval config
    (a task reads its own section, and may read shared ones such as ``gen.batch_size``)."""

    lm: Any
    tokenizer: Any
    cfg: Any  # taigimed.eval.config.EvalConfig
    progress: bool = True
    policy: Any = None  # the guardrail policy served beside this model (None: the defaults)
    knowledge: Any = None  # taigimed.retrieval.serving.LiveKnowledge served beside it, if any


@dataclass
class TaskOutput:
    """What a task returns: its metrics, per-item files, report parts and metadata."""

    metrics: dict[str, float]
    files: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # jsonl name -> rows
    report: dict[str, Any] = field(default_factory=dict)  # write_report keyword arguments
    meta: dict[str, Any] = field(default_factory=dict)  # recorded in metrics.json's meta


@dataclass(frozen=True)
class EvalTask:
    name: str  # as listed in eval.yaml's ``tasks``
    section: str | None  # the EvalConfig attribute holding its settings (None: none)
    metrics: tuple[Metric, ...]
    load: Callable[[Path, Any], Any]  # (eval_dir, EvalConfig) -> the validated eval set
    run: Callable[[TaskContext, Any], TaskOutput]  # (context, eval set) -> output
    order: int = 100  # where the task runs and plots among the others (lower first)
    needs_model: bool = True

    def settings(self, cfg: Any) -> Any:
        return getattr(cfg, self.section) if self.section else None


_TASKS: dict[str, EvalTask] = {}
_discovered = False


def register(task: EvalTask) -> EvalTask:
    """Add a task; a second task of the same name or a metric declared twice is an error."""
    if task.name in _TASKS and _TASKS[task.name] is not task:
        raise ValueError(f"eval task {task.name!r} is registered twice")
    for other in _TASKS.values():
        if other.name == task.name:
            continue
        clash = {m.name for m in other.metrics} & {m.name for m in task.metrics}
        if clash:
            raise ValueError(f"metric {sorted(clash)[0]!r} is declared by {other.name!r} too")
    _TASKS[task.name] = task
    return task


def all_tasks() -> dict[str, EvalTask]:
    """Every registered task, in run order (importing each module of this package once)."""
    global _discovered
    if not _discovered:
        for module in pkgutil.iter_modules(__path__):
            importlib.import_module(f"{__name__}.{module.name}")
        _discovered = True
    return dict(sorted(_TASKS.items(), key=lambda kv: (kv[1].order, kv[0])))


def get_task(name: str) -> EvalTask:
    tasks = all_tasks()
    if name not in tasks:
        raise KeyError(f"unknown eval task {name!r}; known: {', '.join(tasks)}")
    return tasks[name]


def find_metric(name: str) -> Metric | None:
    """The declaration of a metric (exact names before families), or None if no task has it."""
    declared = [m for t in all_tasks().values() for m in t.metrics]
    exact = [m for m in declared if m.name == name]
    return (exact or [m for m in declared if m.matches(name)] or [None])[0]


def direction(name: str) -> Direction | None:
    """Which way is better for a metric, as its task declares it (None: undeclared or a count)."""
    metric = find_metric(name)
    return metric.direction if metric else None


def headline_metrics() -> dict[str, Direction]:
    """The metrics the report plots, in task order, with their direction."""
    return {
        m.name: m.direction
        for t in all_tasks().values()
        for m in t.metrics
        if m.headline and m.direction is not None and "{" not in m.name
    }
