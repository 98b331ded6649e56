"""The rollout state machine on a real git repo holding a copy of manifests/ (no Prometheus:
the Prometheus-driven `step` is tested against a real server in tests/integration)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from taigimed.config import ConfigError
from taigimed.rollout.analysis import (
    AnalysisContext,
    ErrorRateCheck,
    LatencyP95Check,
    NegativeFeedbackCheck,
    TrafficCheck,
    UnattributedErrorCheck,
)
from taigimed.rollout.machine import RolloutError, RolloutMachine
from taigimed.rollout.overlay import GitRepo, OverlayError, ProdOverlay, RolloutState
from taigimed.rollout.plan import RolloutPlan, Thresholds, load_plan
from taigimed.utils import REPO_ROOT

V2_URI = "s3://taigimed-models/registry/versions/v2/model"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture
def gitops(tmp_path: Path) -> Path:
    """A git repo with a copy of the project's manifests/, as Argo CD would see it."""
    shutil.copytree(REPO_ROOT / "manifests", tmp_path / "manifests")
    git(tmp_path, "init", "-q", "-b", "main")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    git(tmp_path, "config", "user.name", "test")
    git(tmp_path, "config", "user.email", "test@example.invalid")
    return tmp_path


def machine(root: Path, steps=(10, 50)) -> RolloutMachine:
    plan = RolloutPlan(steps=list(steps), overlay=root / "manifests/overlays/prod")
    return RolloutMachine(plan, ProdOverlay(plan.overlay), GitRepo(plan.overlay))


def subjects(root: Path) -> list[str]:
    return git(root, "log", "--format=%s", "--", "manifests/overlays/prod").splitlines()


def test_committed_prod_overlay_is_a_consistent_stable_state():
    state = ProdOverlay(REPO_ROOT / "manifests/overlays/prod").read()
    assert state.phase == "stable" and state.canary_percent == 100


def test_start_writes_storage_uri_and_first_percent_in_one_commit(gitops):
    m = machine(gitops)
    out = m.start("v2", V2_URI)
    patch = (gitops / "manifests/overlays/prod/inferenceservice-patch.yaml").read_text()
    assert f"storageUri: {V2_URI}" in patch and "canaryTrafficPercent: 10" in patch
    assert "value: v2" in patch
    assert subjects(gitops)[0] == "rollout: start canary v2 at 10% (stable v1)"
    assert len(out.commits) == 1 and git(gitops, "status", "--porcelain") == ""
    state = m.status()
    assert (state.phase, state.canary_version, state.stable_version) == ("canary", "v2", "v1")


def test_second_start_during_a_canary_is_refused(gitops):
    m = machine(gitops)
    m.start("v2", V2_URI)
    with pytest.raises(RolloutError, match="in phase canary"):
        m.start("v3", "s3://x/v3")
    m.rollback()
    with pytest.raises(RolloutError, match="already the stable"):
        m.start("v1", "s3://x")


def test_promote_makes_canary_stable(gitops):
    m = machine(gitops)
    m.start("v2", V2_URI)
    m.promote()
    state = m.status()
    assert (state.phase, state.stable_version, state.canary_percent) == ("stable", "v2", 100)
    assert state.stable_storage_uri == V2_URI
    assert subjects(gitops)[0] == "rollout: promote v2 to 100% (stable v1 -> v2)"


def test_rollback_drains_then_restores_stable_in_two_commits(gitops):
    m = machine(gitops)
    m.start("v2", V2_URI)
    out = m.rollback(reason="manual test")
    assert len(out.commits) == 2
    assert subjects(gitops)[:2] == [
        "rollout: restore stable v1 after rolling back v2",
        "rollout: roll back v2: canary traffic 10% -> 0%",
    ]
    drained = git(gitops, "show", "HEAD~1:manifests/overlays/prod/inferenceservice-patch.yaml")
    assert "canaryTrafficPercent: 0" in drained and V2_URI in drained
    state = m.status()
    assert state.phase == "stable" and state.stable_version == "v1"
    assert (
        "s3://taigimed-models/registry/versions/v1/model"
        in (gitops / "manifests/overlays/prod/inferenceservice-patch.yaml").read_text()
    )


def patch_at(gitops: Path, rev: str) -> tuple[str, str, int]:
    """(storageUri, TAIGIMED_MODEL_VERSION, canaryTrafficPercent) of the patch at ``rev``."""
    text = git(gitops, "show", f"{rev}:manifests/overlays/prod/inferenceservice-patch.yaml")
    predictor = yaml.safe_load(text)["spec"]["predictor"]
    env = {e["name"]: e["value"] for e in predictor["model"]["env"]}
    percent = predictor["canaryTrafficPercent"]
    return predictor["model"]["storageUri"], env["TAIGIMED_MODEL_VERSION"], percent


def test_every_commit_keeps_the_served_version_with_its_storage_uri(gitops):
    """Each Knative revision names the version it serves (the guard labels canary and stable
    apart by it), so the version must change exactly when the storageUri does."""
    m = machine(gitops)
    m.start("v2", V2_URI)
    assert patch_at(gitops, "HEAD") == (V2_URI, "v2", 10)
    m.rollback()
    assert patch_at(gitops, "HEAD~1") == (V2_URI, "v2", 0)  # drained, same revisions
    assert patch_at(gitops, "HEAD") == (
        "s3://taigimed-models/registry/versions/v1/model",
        "v1",
        100,
    )
    m.start("v3", "s3://taigimed-models/registry/versions/v3/model")
    m.promote()
    assert patch_at(gitops, "HEAD") == (
        "s3://taigimed-models/registry/versions/v3/model",
        "v3",
        100,
    )


def test_hand_edited_version_is_reported(gitops):
    patch = gitops / "manifests/overlays/prod/inferenceservice-patch.yaml"
    patch.write_text(patch.read_text().replace("value: v1", "value: v9"))
    with pytest.raises(OverlayError, match="TAIGIMED_MODEL_VERSION='v9'"):
        machine(gitops).status()


def test_step_and_promote_need_a_canary(gitops):
    m = machine(gitops)
    for action in (m.step, m.promote):
        with pytest.raises(RolloutError, match="no canary in progress"):
            action()
    with pytest.raises(RolloutError, match="no canary to roll back"):
        m.rollback()


def test_hand_edit_that_breaks_consistency_is_reported(gitops):
    patch = gitops / "manifests/overlays/prod/inferenceservice-patch.yaml"
    text = patch.read_text().replace("canaryTrafficPercent: 100", "canaryTrafficPercent: 30")
    patch.write_text(text)
    with pytest.raises(OverlayError, match="disagree"):
        machine(gitops).status()


def test_rendered_prod_overlay_follows_the_rollout(gitops):
    kubectl = REPO_ROOT / ".venv/bin/kubectl"
    if not kubectl.exists():
        pytest.skip("kubectl not installed (make setup)")
    machine(gitops).start("v2", V2_URI)
    out = subprocess.run(
        [str(kubectl), "kustomize", str(gitops / "manifests/overlays/prod")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "canaryTrafficPercent: 10" in out and V2_URI in out
    assert "name: taigimed-rollout" in out


def test_plan_validation_names_the_problem(tmp_path):
    bad = tmp_path / "rollout.yaml"
    bad.write_text("steps: [50, 10]\n")
    with pytest.raises(ConfigError, match="ascending"):
        load_plan(bad)
    with pytest.raises(ConfigError, match="window"):
        load_plan(None, ["window=10 minutes"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_plan(None, ["thresholds.max_eror_rate=0.1"])
    for profile in ("demo-cpu", "gpu-8b"):
        assert load_plan(REPO_ROOT / "configs" / profile / "rollout.yaml").steps


def test_state_round_trips_through_the_configmap():
    state = RolloutState("v1", "s3://a", "canary", "v2", "s3://b", 25, 1, "why: x")
    assert RolloutState.from_configmap_data(state.to_configmap_data(), "t") == state
    with pytest.raises(OverlayError, match="phase"):
        RolloutState.from_configmap_data({**state.to_configmap_data(), "phase": "x"}, "t")


class StaticPrometheus:
    """Answers each query from a table keyed by (metric fragment, version): the decision rules
    of each check are pinned here; real PromQL runs in tests/integration."""

    def __init__(self, values: dict[tuple[str, str], float | None]):
        self.values = values

    def scalar(self, query: str) -> float | None:
        for (fragment, version), value in self.values.items():
            if fragment in query and f'model_version="{version}"' in query:
                return value
        return None


def ctx(**thresholds) -> AnalysisContext:
    return AnalysisContext("v1", "v2", "5m", Thresholds(**thresholds))


def test_too_little_traffic_waits_instead_of_promoting():
    prom = StaticPrometheus({("taigimed_requests_total", "v2"): 3.0})
    assert TrafficCheck().evaluate(prom, ctx(min_requests=20)).verdict == "wait"


def test_error_rate_is_judged_absolute_and_relative_to_stable():
    check = ErrorRateCheck()
    bad = StaticPrometheus({("status_code", "v2"): 0.2, ("status_code", "v1"): 0.0})
    assert check.evaluate(bad, ctx()).verdict == "fail"
    noisy_stable = StaticPrometheus({("status_code", "v2"): 0.07, ("status_code", "v1"): 0.06})
    assert check.evaluate(noisy_stable, ctx()).verdict == "pass"


def test_failures_no_version_answered_roll_the_canary_back():
    """A vLLM canary that 5xx's is labelled with the guard's fallback, not its version."""
    check = UnattributedErrorCheck()
    broken = StaticPrometheus({("status_code", "unknown"): 0.3})
    result = check.evaluate(broken, ctx(max_error_rate=0.05))
    assert result.verdict == "fail" and "no answering version" in result.reason
    healthy = StaticPrometheus({("status_code", "unknown"): 0.01})
    assert check.evaluate(healthy, ctx(max_error_rate=0.05)).verdict == "pass"
    assert check.evaluate(StaticPrometheus({}), ctx()).reason == "no requests to judge"


def test_latency_fails_on_ratio_and_ceiling():
    check = LatencyP95Check()
    slow = StaticPrometheus({("latency", "v2"): 3.0, ("latency", "v1"): 1.0})
    assert check.evaluate(slow, ctx(max_p95_latency_ratio=1.5)).verdict == "fail"
    over = StaticPrometheus({("latency", "v2"): 30.0, ("latency", "v1"): 29.0})
    assert check.evaluate(over, ctx(max_p95_latency_s=20.0)).verdict == "fail"


def test_sparse_feedback_is_not_judged():
    sparse = StaticPrometheus({("rating", "v2"): 2.0, ("feedback", "v2"): 3.0})
    result = NegativeFeedbackCheck().evaluate(sparse, ctx(min_feedback=10))
    assert result.verdict == "pass" and "not judged" in result.reason


def test_cli_start_status_rollback(gitops, capsys):
    from taigimed.cli import main

    overlay = str(gitops / "manifests/overlays/prod")
    base = ["rollout", "--config", str(REPO_ROOT / "configs/demo-cpu/rollout.yaml")]
    base += ["--overlay", overlay]
    assert main([*base, "start", "v2", "--storage-uri", V2_URI]) == 0
    assert main([*base, "status", "--json"]) == 0
    status = capsys.readouterr().out
    assert '"canary_version": "v2"' in status and '"canary_percent": "50"' in status
    assert main([*base, "start", "v3", "--storage-uri", "s3://x"]) == 1  # refused, not a crash
    assert main([*base, "rollback", "--reason", "cli test"]) == 0
    assert subjects(gitops)[0] == "rollout: restore stable v1 after rolling back v2"
