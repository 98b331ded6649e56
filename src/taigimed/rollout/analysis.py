"""Canary analysis: compare the canary with the stable version in Prometheus over a window.

Each signal is a small ``Check`` class behind one interface, ``evaluate(prom, ctx) ->
CheckResult``, so a new signal (say, a safety-probe pass rate) is one class added to
``DEFAULT_CHECKS``. A check answers ``pass``, ``fail`` (roll back) or ``wait`` (not enough
traffic yet to judge; never a reason to promote).

The metrics are the guard's (label ``model_version`` on all, see helpers' INTERFACES):
``taigimed_requests_total{route,status_code}``, ``taigimed_request_latency_seconds_bucket``,
``taigimed_escalations_total``, ``taigimed_feedback_total{rating}``.

On a cluster one guard fronts both predictor revisions, and it labels each request with the
version that answered it (the predictor's ``x-taigimed-model-version`` header, or vLLM's
``model: taigimed-<version>``; see ``taigimed.serve.version``). What no version answered carries
the guard's fallback label (``unknown`` in the manifests) and is in neither side of a comparison:
pre-model escalations and referrals, 4xx, and errors that name no version (vLLM error bodies, an
unreachable revision). tests/integration/test_rollout_prometheus.py runs this with one guard.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Literal

import requests

from taigimed.rollout.plan import RolloutPlan, Thresholds
from taigimed.serve.metrics import ESCALATIONS, FEEDBACK, REQUEST_LATENCY_BUCKET, REQUESTS

log = logging.getLogger(__name__)

Verdict = Literal["pass", "fail", "wait"]


class PrometheusError(RuntimeError):
    """Prometheus could not answer a query; the message has the URL and the query."""


class Prometheus:
    """The tiny slice of Prometheus' HTTP API the analysis needs: instant scalar queries."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def scalar(self, query: str) -> float | None:
        """Value of a query that yields at most one series; None when it yields none (no data)."""
        try:
            response = requests.get(
                f"{self.url}/api/v1/query", params={"query": query}, timeout=self.timeout_s
            )
        except requests.RequestException as err:
            raise PrometheusError(f"{self.url}: cannot reach Prometheus: {err}") from None
        if response.status_code != 200:
            raise PrometheusError(
                f"{self.url}: HTTP {response.status_code} for query {query!r}: "
                f"{response.text[:300]}"
            )
        body = response.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{self.url}: query {query!r} failed: {body.get('error')}")
        result = body["data"]["result"]
        if body["data"]["resultType"] == "scalar":
            value = float(result[1])
        elif not result:
            return None
        elif len(result) > 1:
            raise PrometheusError(
                f"query {query!r} returned {len(result)} series; aggregate it (sum/max) to one"
            )
        else:
            value = float(result[0]["value"][1])
        return None if math.isnan(value) else value


@dataclass
class AnalysisContext:
    """What every check needs to build its queries."""

    stable_version: str
    canary_version: str
    window: str
    thresholds: Thresholds
    label_selector: str = ""
    route_regex: str = ".*"
    unattributed_version: str = "unknown"

    def selector(self, version: str | None, *extra: str) -> str:
        """PromQL label matchers for one version, or all (None), plus the plan's selector."""
        parts = [f'model_version="{version}"'] if version is not None else []
        if self.label_selector:
            parts.append(self.label_selector)
        parts.extend(extra)
        return "{" + ",".join(parts) + "}"


@dataclass
class CheckResult:
    name: str
    verdict: Verdict
    canary: float | None
    stable: float | None
    reason: str

    def line(self) -> str:
        def fmt(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.4g}"

        return (
            f"{self.name}: {self.verdict} (canary {fmt(self.canary)}, "
            f"stable {fmt(self.stable)}): {self.reason}"
        )


class Check(ABC):
    """One health signal. Subclasses build the PromQL and judge canary against stable."""

    name: str = "check"

    @abstractmethod
    def evaluate(self, prom: Prometheus, ctx: AnalysisContext) -> CheckResult:
        """Query Prometheus for both versions and return a verdict with its reason."""

    def result(self, verdict: Verdict, canary, stable, reason: str) -> CheckResult:
        return CheckResult(self.name, verdict, canary, stable, reason)


def request_count(prom: Prometheus, ctx: AnalysisContext, version: str) -> float:
    sel = ctx.selector(version, f'route=~"{ctx.route_regex}"')
    return prom.scalar(f"sum(increase({REQUESTS}{sel}[{ctx.window}]))") or 0.0


class TrafficCheck(Check):
    """Enough canary requests in the window to judge at all; otherwise everyone waits."""

    name = "traffic"

    def evaluate(self, prom: Prometheus, ctx: AnalysisContext) -> CheckResult:
        canary = request_count(prom, ctx, ctx.canary_version)
        stable = request_count(prom, ctx, ctx.stable_version)
        need = ctx.thresholds.min_requests
        if canary < need:
            return self.result("wait", canary, stable, f"{canary:.0f} < {need} canary requests")
        return self.result("pass", canary, stable, f"{canary:.0f} >= {need} canary requests")


class ErrorRateCheck(Check):
    """Share of requests answered with a 5xx."""

    name = "error_rate"

    def rate(self, prom: Prometheus, ctx: AnalysisContext, version: str) -> float | None:
        route = f'route=~"{ctx.route_regex}"'
        errors = ctx.selector(version, route, 'status_code=~"5.."')
        total = ctx.selector(version, route)
        return prom.scalar(
            f"(sum(increase({REQUESTS}{errors}[{ctx.window}])) or vector(0))"
            f" / sum(increase({REQUESTS}{total}[{ctx.window}]))"
        )

    def evaluate(self, prom: Prometheus, ctx: AnalysisContext) -> CheckResult:
        canary = self.rate(prom, ctx, ctx.canary_version)
        stable = self.rate(prom, ctx, ctx.stable_version)
        t = ctx.thresholds
        if canary is None:
            return self.result("wait", canary, stable, "no canary requests yet")
        limit = max(t.max_error_rate, (stable or 0.0) + t.max_error_rate_increase)
        if canary > limit:
            return self.result("fail", canary, stable, f"5xx share above {limit:.3f}")
        return self.result("pass", canary, stable, f"5xx share within {limit:.3f}")


class LatencyP95Check(Check):
    """95th-percentile request latency from the guard's histogram."""

    name = "p95_latency"

    def p95(self, prom: Prometheus, ctx: AnalysisContext, version: str) -> float | None:
        sel = ctx.selector(version, f'route=~"{ctx.route_regex}"')
        return prom.scalar(
            "histogram_quantile(0.95, sum by (le) "
            f"(increase({REQUEST_LATENCY_BUCKET}{sel}[{ctx.window}])))"
        )

    def evaluate(self, prom: Prometheus, ctx: AnalysisContext) -> CheckResult:
        canary = self.p95(prom, ctx, ctx.canary_version)
        stable = self.p95(prom, ctx, ctx.stable_version)
        t = ctx.thresholds
        if canary is None:
            return self.result("wait", canary, stable, "no canary latency samples yet")
        if canary > t.max_p95_latency_s:
            return self.result("fail", canary, stable, f"above the {t.max_p95_latency_s}s ceiling")
        if stable and canary > stable * t.max_p95_latency_ratio and canary > 0.05:
            return self.result(
                "fail", canary, stable, f"more than {t.max_p95_latency_ratio}x stable's p95"
            )
        return self.result("pass", canary, stable, "within ceiling and ratio")


class EscalationRateCheck(Check):
    """Share of chat requests the guard escalated as red flags (a model that over-triggers
    floods emergency advice; one that under-triggers is caught by the eval gate, not here).

    Escalations are decided on the question before any model answers, so with one guard in
    front of both revisions they carry the guard's fallback label, not a version: the check
    then sees 0 for both sides and passes. It judges only where each version has its own guard.
    """

    name = "escalation_rate"

    def rate(self, prom: Prometheus, ctx: AnalysisContext, version: str) -> float | None:
        esc = ctx.selector(version)
        total = ctx.selector(version, f'route=~"{ctx.route_regex}"')
        return prom.scalar(
            f"(sum(increase({ESCALATIONS}{esc}[{ctx.window}])) or vector(0))"
            f" / sum(increase({REQUESTS}{total}[{ctx.window}]))"
        )

    def evaluate(self, prom: Prometheus, ctx: AnalysisContext) -> CheckResult:
        canary = self.rate(prom, ctx, ctx.canary_version)
        stable = self.rate(prom, ctx, ctx.stable_version)
        if canary is None:
            return self.result("wait", canary, stable, "no canary requests yet")
        limit = (stable or 0.0) + ctx.thresholds.max_escalation_rate_increase
        if canary > limit:
            return self.result("fail", canary, stable, f"escalation share above {limit:.3f}")
        return self.result("pass", canary, stable, f"escalation share within {limit:.3f}")


class NegativeFeedbackCheck(Check):
    """Thumbs-down share of user feedback. Feedback is sparse: below ``min_feedback`` votes
    the check passes with a note instead of holding the rollout forever."""

    name = "negative_feedback"

    def counts(self, prom: Prometheus, ctx: AnalysisContext, version: str) -> tuple[float, float]:
        down = ctx.selector(version, 'rating="down"')
        total = ctx.selector(version)
        w = ctx.window
        n_down = prom.scalar(f"sum(increase({FEEDBACK}{down}[{w}]))") or 0.0
        n_all = prom.scalar(f"sum(increase({FEEDBACK}{total}[{w}]))") or 0.0
        return n_down, n_all

    def evaluate(self, prom: Prometheus, ctx: AnalysisContext) -> CheckResult:
        c_down, c_all = self.counts(prom, ctx, ctx.canary_version)
        s_down, s_all = self.counts(prom, ctx, ctx.stable_version)
        stable = s_down / s_all if s_all else None
        if c_all < ctx.thresholds.min_feedback:
            canary = c_down / c_all if c_all else None
            return self.result(
                "pass", canary, stable, f"only {c_all:.0f} feedback votes: not judged"
            )
        canary = c_down / c_all
        limit = (stable or 0.0) + ctx.thresholds.max_negative_feedback_increase
        if canary > limit:
            return self.result("fail", canary, stable, f"thumbs-down share above {limit:.3f}")
        return self.result("pass", canary, stable, f"thumbs-down share within {limit:.3f}")


class UnattributedErrorCheck(Check):
    """5xx answers that no version can be blamed for, as a share of all requests.

    With one guard in front of the split, a request fails *unattributed* (labelled with the
    guard's own fallback version) when the predictor revision it reached was unreachable or
    answered an error that does not name its version (vLLM's 5xx bodies carry no ``model``).
    A broken canary then shows up here rather than in its own error rate, so while a canary
    runs such failures above ``max_error_rate`` roll it back: if stable caused them, rolling
    back costs one retry of the rollout; if the canary did, promoting it would be an outage.
    """

    name = "unattributed_errors"

    def evaluate(self, prom: Prometheus, ctx: AnalysisContext) -> CheckResult:
        route = f'route=~"{ctx.route_regex}"'
        errors = ctx.selector(ctx.unattributed_version, route, 'status_code=~"5.."')
        share = prom.scalar(
            f"(sum(increase({REQUESTS}{errors}[{ctx.window}])) or vector(0))"
            f" / sum(increase({REQUESTS}{ctx.selector(None, route)}[{ctx.window}]))"
        )
        if share is None:  # no requests at all: the traffic check already waits
            return self.result("pass", None, None, "no requests to judge")
        limit = ctx.thresholds.max_error_rate
        if share > limit:
            return self.result(
                "fail", share, None, f"5xx share with no answering version above {limit:.3f}"
            )
        return self.result(
            "pass", share, None, f"5xx share with no answering version within {limit:.3f}"
        )


DEFAULT_CHECKS: tuple[type[Check], ...] = (
    TrafficCheck,
    ErrorRateCheck,
    UnattributedErrorCheck,
    LatencyP95Check,
    EscalationRateCheck,
    NegativeFeedbackCheck,
)


@dataclass
class Analysis:
    """All check results and the overall verdict: any fail -> fail; else any wait -> wait."""

    results: list[CheckResult] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        verdicts = {r.verdict for r in self.results}
        if "fail" in verdicts:
            return "fail"
        if "wait" in verdicts:
            return "wait"
        return "pass"

    def summary(self) -> str:
        """One line for a commit message: the failing checks, or every check's value."""
        failed = [r for r in self.results if r.verdict == "fail"]
        shown = failed or self.results
        return "; ".join(r.line() for r in shown)


def analyse(
    prom: Prometheus,
    plan: RolloutPlan,
    stable_version: str,
    canary_version: str,
    checks: tuple[type[Check], ...] = DEFAULT_CHECKS,
) -> Analysis:
    """Run every check for canary against stable over the plan's window."""
    ctx = AnalysisContext(
        stable_version=stable_version,
        canary_version=canary_version,
        window=plan.window,
        thresholds=plan.thresholds,
        label_selector=plan.label_selector,
        route_regex=plan.route_regex,
        unattributed_version=plan.unattributed_version,
    )
    analysis = Analysis([cls().evaluate(prom, ctx) for cls in checks])
    for r in analysis.results:
        log.info("%s", r.line())
    return analysis
