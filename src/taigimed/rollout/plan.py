"""The canary plan: which traffic steps, how long each is watched, and what counts as healthy.

A plan is data (``configs/<profile>/rollout.yaml``), loaded with ``taigimed.config.load_config``
so that a typo in a threshold fails at load time, not halfway through a rollout. The state of a
rollout is *not* here: it lives in git, in the prod overlay (see ``overlay.py``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from taigimed.config import ConfigError, load_config
from taigimed.rollout.probes import ProbeSettings

WINDOW_RE = re.compile(r"^[1-9][0-9]*(s|m|h)$")


@dataclass
class Thresholds:
    """Health limits for the canary, each absolute and/or relative to the stable version.

    A canary fails a check when it is worse than *both* the absolute limit and the stable
    version by more than the allowed margin; so a noisy stable does not block a good canary,
    and a canary is never allowed past an absolute ceiling.
    """

    min_requests: int = 20  # canary requests in the window before any verdict (else: wait)
    max_error_rate: float = 0.05  # absolute ceiling of the 5xx share
    max_error_rate_increase: float = 0.02  # allowed 5xx share above stable
    max_p95_latency_s: float = 20.0  # absolute p95 ceiling (seconds)
    max_p95_latency_ratio: float = 1.5  # allowed canary p95 / stable p95
    max_escalation_rate_increase: float = 0.10  # allowed red-flag escalation share above stable
    min_feedback: int = 10  # feedback votes needed before the feedback check counts
    max_negative_feedback_increase: float = 0.15  # allowed thumbs-down share above stable

    def validate(self) -> None:
        if self.min_requests < 1:
            raise ConfigError("thresholds.min_requests must be >= 1")
        for name in ("max_error_rate", "max_error_rate_increase"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"thresholds.{name} must be a share between 0 and 1")
        if self.max_p95_latency_ratio < 1.0:
            raise ConfigError("thresholds.max_p95_latency_ratio must be >= 1.0")


@dataclass
class GitSettings:
    """How rollout commits leave this machine."""

    push: bool = False  # push after every commit (Argo CD syncs from the remote)
    remote: str = "origin"
    branch: str = ""  # empty: the current branch
    author: str = "taigimed-rollout <rollout@taigimed.invalid>"


@dataclass
class RolloutPlan:
    """Everything ``taigimed rollout`` needs besides the version to roll out."""

    steps: list[int] = field(default_factory=lambda: [10, 25, 50])  # canary %, ascending, < 100
    window: str = "10m"  # PromQL range each step is judged over
    prometheus_url: str = "http://kube-prometheus-stack-prometheus.monitoring:9090"
    label_selector: str = 'namespace="taigimed-prod"'  # extra matchers on every query
    route_regex: str = "chat|completions"  # guard `route` labels that count as traffic
    # The guard's own model_version label (its TAIGIMED_MODEL_VERSION): requests that no
    # predictor answer named, e.g. a revision that was unreachable.
    unattributed_version: str = "unknown"
    overlay: Path = Path("manifests/overlays/prod")  # the overlay `rollout` edits
    inference_service: str = "taigimed"
    namespace: str = "taigimed-prod"  # used by --apply kube
    registry: str = ""  # registry root (file://, s3://) for `start VERSION` without --storage-uri
    thresholds: Thresholds = field(default_factory=Thresholds)
    git: GitSettings = field(default_factory=GitSettings)
    # Probe requests when the canary has too few (rollout/probes.py); no url: none are sent.
    probes: ProbeSettings = field(default_factory=ProbeSettings)

    def validate(self) -> None:
        if not self.steps:
            raise ConfigError("steps must list at least one canary percentage, e.g. [10, 50]")
        if any(not 0 < s < 100 for s in self.steps):
            raise ConfigError(f"steps must be percentages between 1 and 99, got {self.steps}")
        if self.steps != sorted(set(self.steps)):
            raise ConfigError(f"steps must be strictly ascending, got {self.steps}")
        if not WINDOW_RE.match(self.window):
            raise ConfigError(f"window must look like 30s, 10m or 1h, got {self.window!r}")

    @property
    def window_seconds(self) -> int:
        unit = {"s": 1, "m": 60, "h": 3600}[self.window[-1]]
        return int(self.window[:-1]) * unit


def load_plan(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> RolloutPlan:
    """Load and validate a rollout plan (YAML + ``key=value`` overrides)."""
    return load_config(RolloutPlan, path, overrides)
