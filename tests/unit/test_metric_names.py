"""The rollout analysis queries only series the guard exports: both read the names from
``taigimed.serve.metrics``, and this pins that every name in every check's PromQL exists."""

from __future__ import annotations

import re

from taigimed.rollout import analysis
from taigimed.rollout.plan import RolloutPlan
from taigimed.serve import metrics as names
from taigimed.serve.metrics import GuardMetrics


class RecordingPrometheus:
    """Answers every query with 1.0 and keeps the queries."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def scalar(self, query: str) -> float:
        self.queries.append(query)
        return 1.0


def exported_series() -> set[str]:
    m = GuardMetrics("v1")
    m.requests.labels("v1", "chat", "200").inc()
    m.latency.labels("v1", "chat").observe(0.1)
    m.escalations.labels("v1", "stroke").inc()
    m.feedback.labels("v1", "down").inc()
    text = m.render().decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1].isalpha()}


def test_every_series_the_rollout_checks_query_is_exported_by_the_guard():
    prom = RecordingPrometheus()
    plan = RolloutPlan()
    analysis.analyse(prom, plan, "v1", "v2", checks=analysis.DEFAULT_CHECKS)
    queried = {n for q in prom.queries for n in re.findall(r"taigimed_[a-z_]+", q)}
    assert queried, "no query named a taigimed series"
    assert queried <= exported_series()
    assert {names.REQUESTS, names.REQUEST_LATENCY_BUCKET, names.ESCALATIONS} <= queried
