"""The canary state machine over the prod overlay.

::

    stable --start V--> canary(steps[0]%) --step: pass--> canary(steps[i+1]%) ... --step: pass
       ^                     |  \\                                                 at the last step
       |                     |   step: wait -> no change (not enough traffic yet)      |
       |                 step: fail / rollback                                          v
       |                     v                                                  promote: stable=V
       +--restore stable-- rolling_back(0%)

Every transition rewrites the overlay and is one git commit whose message says what changed
and why (the analysis numbers for a step). Argo CD applies the commit (auto for dev/staging,
a manual sync for prod); with ``--apply kube`` the same change is also patched straight into
the cluster for clusters without Argo CD. Nothing is kept outside git, so any machine with a
checkout can run the next step.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from taigimed.rollout.analysis import Analysis, CheckResult, Prometheus, analyse
from taigimed.rollout.overlay import GitRepo, ProdOverlay, RolloutState
from taigimed.rollout.plan import RolloutPlan
from taigimed.rollout.probes import probes_needed, send_probes

log = logging.getLogger(__name__)


class RolloutError(RuntimeError):
    """A transition that is not allowed from the current state; the message says what is."""


@dataclass
class StepOutcome:
    """What ``step`` did: ``advanced``, ``promoted``, ``rolled_back`` or ``waiting``."""

    action: str
    state: RolloutState
    analysis: Analysis | None = None
    commits: list[str] = dataclasses.field(default_factory=list)


Applier = Callable[[RolloutState], None]


def sync_champion(registry_root: str, state: RolloutState) -> str | None:
    """Point the registry's champion at the overlay's stable version, when they differ.

    The prod overlay in git is the one record of what serves; the registry's champion pointer
    (which the next pipeline run's gate compares candidates against) is derived from it. It is
    called after a promotion only: a canary that is started or rolled back changes nothing.
    Returns the new champion, or None when the pointer already agreed.
    """
    from taigimed.registry import Registry

    if state.phase != "stable" or not registry_root:
        return None
    registry = Registry(registry_root)
    if registry.champion() == state.stable_version:
        return None
    registry.set_champion(state.stable_version)
    log.info("registry champion -> %s (promoted in the prod overlay)", state.stable_version)
    return state.stable_version


class RolloutMachine:
    """Drive one InferenceService's canary through the plan, one git commit per transition."""

    def __init__(
        self,
        plan: RolloutPlan,
        overlay: ProdOverlay,
        repo: GitRepo,
        prometheus: Prometheus | None = None,
        applier: Applier | None = None,
        registry_root: str | None = None,
    ) -> None:
        """``registry_root`` (default: the plan's ``registry``) gets its champion moved on
        promotion; empty: no registry to keep in step (e.g. a plan used only for analysis)."""
        self.plan = plan
        self.registry_root = plan.registry if registry_root is None else registry_root
        self.sleep: Callable[[float], None] = time.sleep
        self.overlay = overlay
        self.repo = repo
        self.prometheus = prometheus
        self.applier = applier

    # -- queries -------------------------------------------------------------------------

    def status(self) -> RolloutState:
        return self.overlay.read()

    # -- transitions ---------------------------------------------------------------------

    def start(self, version: str, storage_uri: str) -> StepOutcome:
        """Begin a canary of ``version``: new storageUri, first traffic step."""
        state = self.overlay.read()
        if state.phase != "stable":
            raise RolloutError(
                f"a rollout of {state.canary_version} is in phase {state.phase}; "
                "finish it with `taigimed rollout step|promote|rollback` first"
            )
        if version == state.stable_version:
            raise RolloutError(f"{version} is already the stable version")
        percent = self.plan.steps[0]
        new = dataclasses.replace(
            state,
            phase="canary",
            canary_version=version,
            canary_storage_uri=storage_uri,
            canary_percent=percent,
            step_index=0,
            last_decision=f"start {version} at {percent}%",
        )
        sha = self._commit(
            new,
            f"rollout: start canary {version} at {percent}% (stable {state.stable_version})",
            f"storageUri: {storage_uri}\nStable stays on {state.stable_storage_uri}.",
        )
        return StepOutcome("started", new, commits=[sha])

    def step(self) -> StepOutcome:
        """Judge the current step in Prometheus; advance, promote, roll back or wait."""
        state = self._require_canary("step")
        if self.prometheus is None:
            raise RolloutError("step needs Prometheus: set prometheus_url in the plan")
        analysis = analyse(self.prometheus, self.plan, state.stable_version, state.canary_version)
        if analysis.verdict == "wait" and self.plan.probes.url:
            analysis = self._probe_and_reanalyse(state, analysis)
        verdict = analysis.verdict
        if verdict == "wait":
            log.info("not enough data yet: %s", analysis.summary())
            return StepOutcome("waiting", state, analysis)
        if verdict == "fail":
            outcome = self.rollback(
                reason=f"analysis failed at {state.canary_percent}%: " + analysis.summary()
            )
            outcome.analysis = analysis
            return outcome
        next_index = state.step_index + 1
        if next_index >= len(self.plan.steps):
            outcome = self.promote(reason=f"analysis passed at {state.canary_percent}%")
            outcome.analysis = analysis
            return outcome
        percent = self.plan.steps[next_index]
        new = dataclasses.replace(
            state,
            canary_percent=percent,
            step_index=next_index,
            last_decision=f"passed at {state.canary_percent}%, advanced to {percent}%",
        )
        sha = self._commit(
            new,
            f"rollout: advance canary {state.canary_version} {state.canary_percent}% -> {percent}%",
            f"Analysis over {self.plan.window} passed:\n" + _bullets(analysis),
        )
        return StepOutcome("advanced", new, analysis, [sha])

    def step_until_decided(
        self, timeout_s: float, poll_s: float = 15.0, sleep: Callable[[float], None] = time.sleep
    ) -> StepOutcome:
        """Call ``step`` until it decides (anything but ``waiting``) or ``timeout_s`` passes."""
        deadline = time.monotonic() + timeout_s
        while True:
            outcome = self.step()
            if outcome.action != "waiting" or time.monotonic() + poll_s > deadline:
                return outcome
            sleep(poll_s)

    def promote(self, reason: str = "promoted by hand") -> StepOutcome:
        """Make the canary the stable version: all traffic to it, no canary left."""
        state = self._require_canary("promote")
        new = RolloutState(
            stable_version=state.canary_version,
            stable_storage_uri=state.canary_storage_uri,
            last_decision=f"promoted {state.canary_version}: {reason}",
        )
        sha = self._commit(
            new,
            f"rollout: promote {state.canary_version} to 100% "
            f"(stable {state.stable_version} -> {state.canary_version})",
            reason,
        )
        # Only after the commit: the champion follows git, never the other way round.
        sync_champion(self.registry_root, new)
        return StepOutcome("promoted", new, commits=[sha])

    def rollback(self, reason: str = "rolled back by hand") -> StepOutcome:
        """Two commits: canary traffic to 0% at once, then the stable storageUri restored."""
        state = self.overlay.read()
        commits = []
        if state.phase == "stable":
            raise RolloutError(f"no canary to roll back; {state.stable_version} is stable")
        if state.phase == "canary":
            drained = dataclasses.replace(
                state, phase="rolling_back", canary_percent=0, last_decision=reason
            )
            # While rolling back the patch still names the canary's storageUri (so KServe
            # keeps the same revisions) with 0% to it: traffic returns to stable at once.
            commits.append(
                self._commit(
                    drained,
                    f"rollout: roll back {state.canary_version}: canary traffic "
                    f"{state.canary_percent}% -> 0%",
                    reason,
                )
            )
            state = drained
        restored = RolloutState(
            stable_version=state.stable_version,
            stable_storage_uri=state.stable_storage_uri,
            last_decision=f"rolled back {state.canary_version}: {reason}",
        )
        commits.append(
            self._commit(
                restored,
                f"rollout: restore stable {state.stable_version} after rolling back "
                f"{state.canary_version}",
                reason,
            )
        )
        return StepOutcome("rolled_back", restored, commits=commits)

    # -- helpers -------------------------------------------------------------------------

    def _probe_and_reanalyse(self, state: RolloutState, analysis: Analysis) -> Analysis:
        """Too few canary requests: send the probes that fill the window, analyse again.

        Only the traffic shortfall is filled; any other ``wait`` stays a wait. The red-flag
        probes are judged too: one that was not escalated fails the step (``probes``)."""
        traffic = next((r for r in analysis.results if r.name == "traffic"), None)
        if traffic is None or traffic.verdict != "wait":
            return analysis
        count = probes_needed(
            traffic.canary or 0.0, self.plan.thresholds.min_requests, state.canary_percent
        )
        report = send_probes(self.plan.probes, count)
        self.sleep(self.plan.probes.settle_s)
        again = analyse(self.prometheus, self.plan, state.stable_version, state.canary_version)
        verdict = "fail" if report.missed_red_flags else "pass"
        reason = report.line()
        if report.seconds + self.plan.probes.settle_s > self.plan.window_seconds:
            # Probes sent before the window began are not counted: the shortfall stays.
            reason += (
                f"; the round outlasted the {self.plan.window} window "
                f"(raise probes.concurrency or the window)"
            )
        if report.missed_red_flags:
            reason += f"; not escalated: {report.missed_red_flags[0]}"
        again.results.append(CheckResult("probes", verdict, None, None, reason))
        return again

    def _require_canary(self, action: str) -> RolloutState:
        state = self.overlay.read()
        if state.phase != "canary":
            raise RolloutError(
                f"cannot {action}: no canary in progress (phase {state.phase}, stable "
                f"{state.stable_version}); start one with `taigimed rollout start VERSION`"
            )
        return state

    def _commit(self, state: RolloutState, subject: str, body: str = "") -> str:
        paths: list[Path] = self.overlay.write(state)
        sha = self.repo.commit(paths, subject + ("\n\n" + body if body else ""))
        if self.plan.git.push:
            self.repo.push(self.plan.git.remote, self.plan.git.branch)
        if self.applier is not None:
            self.applier(state)
        return sha


def _bullets(analysis: Analysis) -> str:
    return "\n".join(f"- {r.line()}" for r in analysis.results)
