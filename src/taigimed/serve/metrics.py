"""Prometheus metrics for the guard and the predictor, every series labelled ``model_version``.

The guard's names are a contract (INTERFACES.md): the rollout area compares canary and stable
with them, so they must not change. The predictor's series carry a ``taigimed_predictor_`` prefix
so that summing ``taigimed_requests_total`` over all pods never counts a request twice.

Each server keeps its metrics in its own ``CollectorRegistry`` (two servers in one test process
do not collide) and ``/metrics`` renders it together with kserve's default registry.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

# The guard's series names: one definition for the guard that exports them and for the rollout
# analysis (``taigimed.rollout.analysis``) that builds PromQL on them.
REQUESTS = "taigimed_requests_total"  # {model_version, route, status_code}
REQUEST_LATENCY = "taigimed_request_latency_seconds"  # histogram {model_version, route}
REQUEST_LATENCY_BUCKET = f"{REQUEST_LATENCY}_bucket"
ESCALATIONS = "taigimed_escalations_total"  # {model_version, category}
ANSWERS = "taigimed_answers_total"  # {model_version, status}: a decision.Action value
REVIEWS_QUEUED = "taigimed_reviews_queued_total"
REVIEWS_DECIDED = "taigimed_reviews_decided_total"  # {model_version, decision}
FEEDBACK = "taigimed_feedback_total"  # {model_version, rating}
GENERATED_TOKENS = "taigimed_generated_tokens_total"
ANSWER_CONFIDENCE = "taigimed_answer_confidence"
REVIEW_BACKLOG = "taigimed_review_backlog"
GUARD_OVERHEAD = "taigimed_guard_overhead_seconds"
INFLIGHT = "taigimed_inflight_requests"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)


class GuardMetrics:
    """The metric names the rollout analysis queries; see INTERFACES.md.

    ``model_version`` here is the guard's *configured* version, its fallback label. Per-request
    series (requests, latency, tokens, confidence, reviews, feedback, ...) are labelled by the
    guard with the version that answered each request (see ``taigimed.serve.guard``), so one
    guard in front of Knative's stable/canary split yields one series per version, all with the
    same label names. Whole-guard gauges (in flight, review backlog) keep the configured label.
    """

    def __init__(self, model_version: str) -> None:
        self.model_version = model_version
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            REQUESTS,
            "Requests answered by the guard, by route and HTTP status code",
            ["model_version", "route", "status_code"],
            registry=r,
        )
        self.latency = Histogram(
            REQUEST_LATENCY,
            "End-to-end request latency at the guard",
            ["model_version", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.escalations = Counter(
            ESCALATIONS,
            "Questions escalated by red-flag triage (call 119 / emergency room)",
            ["model_version", "category"],
            registry=r,
        )
        self.outcomes = Counter(
            ANSWERS,
            "Guarded answers by outcome (answered, escalated, referred, needs_review)",
            ["model_version", "status"],
            registry=r,
        )
        self.reviews_queued = Counter(
            REVIEWS_QUEUED,
            "Answers held for clinician review",
            ["model_version"],
            registry=r,
        )
        self.reviews_decided = Counter(
            REVIEWS_DECIDED,
            "Clinician decisions on held answers",
            ["model_version", "decision"],
            registry=r,
        )
        self.feedback = Counter(
            FEEDBACK,
            "User feedback on answers",
            ["model_version", "rating"],
            registry=r,
        )
        self.tokens = Counter(
            GENERATED_TOKENS,
            "Completion tokens generated for answers that passed through the guard",
            ["model_version"],
            registry=r,
        )
        self.confidence = Histogram(
            ANSWER_CONFIDENCE,
            "Confidence (exp of the mean token log-probability) of model answers",
            ["model_version"],
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
            registry=r,
        )
        self.backlog = Gauge(
            REVIEW_BACKLOG,
            "Answers waiting for a clinician decision",
            ["model_version"],
            registry=r,
        )
        self.overhead = Histogram(
            GUARD_OVERHEAD,
            "Time the guard spends on a request outside the predictor call",
            ["model_version"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1),
            registry=r,
        )
        self.inflight = Gauge(
            INFLIGHT,
            "Requests being processed by the guard",
            ["model_version"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry) + generate_latest(REGISTRY)


class PredictorMetrics:
    """Batching and generation series of the transformers predictor."""

    def __init__(self, model_version: str) -> None:
        self.model_version = model_version
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "taigimed_predictor_requests_total",
            "Requests answered by the predictor",
            ["model_version", "route", "status_code"],
            registry=r,
        )
        self.latency = Histogram(
            "taigimed_predictor_request_latency_seconds",
            "Predictor request latency",
            ["model_version", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.first_token = Histogram(
            "taigimed_predictor_time_to_first_token_seconds",
            "Time from arrival to the first generated token",
            ["model_version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "taigimed_predictor_generated_tokens_total",
            "Completion tokens generated",
            ["model_version"],
            registry=r,
        )
        self.prompt_tokens = Counter(
            "taigimed_predictor_prompt_tokens_total",
            "Prompt tokens processed",
            ["model_version"],
            registry=r,
        )
        self.batch_size = Histogram(
            "taigimed_predictor_batch_size",
            "Sequences in each decode step",
            ["model_version"],
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.queue_depth = Gauge(
            "taigimed_predictor_queue_depth",
            "Requests waiting to join the running batch",
            ["model_version"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry) + generate_latest(REGISTRY)
