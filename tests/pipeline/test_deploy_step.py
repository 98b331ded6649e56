"""The pipeline's deploy step against a GitOps repo as Argo CD watches it: a bare repo (the
remote) and a clone of it (what the step's pod works in). The step must start the canary through
the rollout state machine, with the registry's storage URI, and push; the champion moves only
when that canary is promoted."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from taigimed.registry import Registry
from taigimed.rollout.machine import RolloutMachine
from taigimed.rollout.overlay import GitRepo, ProdOverlay
from taigimed.rollout.plan import RolloutPlan
from taigimed.utils import REPO_ROOT

PROD = "manifests/overlays/prod"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture
def gitops(tmp_path: Path) -> dict[str, Path]:
    """``remote``: a bare repo holding manifests/ (what Argo CD syncs); ``clone``: a clone."""
    seed = tmp_path / "seed"
    shutil.copytree(REPO_ROOT / "manifests", seed / "manifests")
    git(seed, "init", "-q", "-b", "main")
    git(seed, "add", ".")
    git(seed, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    remote = tmp_path / "gitops.git"
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(remote))
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(remote), str(clone))
    return {"remote": remote, "clone": clone}


def registry_with(tmp_path: Path, versions: int) -> Registry:
    """A file registry holding ``versions`` registered (config-only) models."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    registry = Registry((tmp_path / "registry").as_uri())
    for _ in range(versions):
        registry.register(model, metrics={}, verdict={"passed": True}, card="")
    return registry


def remote_file(remote: Path, rev: str, path: str) -> dict:
    return yaml.safe_load(git(remote, "show", f"{rev}:{path}"))


def test_deploy_step_commits_and_pushes_the_canary_and_keeps_the_champion(tmp_path, gitops):
    from components import deploy_canary

    registry = registry_with(tmp_path, versions=2)
    registry.set_champion("v1")
    remote, clone = gitops["remote"], gitops["clone"]
    before = git(remote, "rev-parse", "main").strip()

    # The component's own function, as KFP runs it in the step's pod.
    said = deploy_canary.python_func(
        version="v2", registry_root=registry.root, gitops_repo=str(clone), rollout_plan=""
    )

    # Exactly one new commit on the remote, the state machine's "start".
    log = git(remote, "log", "--format=%s", f"{before}..main").splitlines()
    assert log == ["rollout: start canary v2 at 10% (stable v1)"]
    patch = remote_file(remote, "main", f"{PROD}/inferenceservice-patch.yaml")
    predictor = patch["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 10
    assert predictor["model"]["storageUri"] == registry.storage_uri("v2")
    assert predictor["model"]["storageUri"].endswith("/versions/v2/model")
    assert predictor["model"]["env"] == [{"name": "TAIGIMED_MODEL_VERSION", "value": "v2"}]
    state = remote_file(remote, "main", f"{PROD}/rollout.yaml")["data"]
    assert (state["phase"], state["stable_version"], state["canary_version"]) == (
        "canary",
        "v1",
        "v2",
    )
    # Starting a canary is not a promotion.
    assert registry.champion() == "v1"
    assert "v2" in said and "10%" in said

    # A second run starts nothing over a canary in progress (the machine refuses).
    with pytest.raises(Exception, match="in phase canary"):
        deploy_canary.python_func(
            version="v2", registry_root=registry.root, gitops_repo=str(clone), rollout_plan=""
        )


def machine_on(clone: Path, registry: Registry) -> RolloutMachine:
    plan = RolloutPlan(steps=[10], overlay=clone / PROD, registry=registry.root)
    return RolloutMachine(plan, ProdOverlay(plan.overlay), GitRepo(clone))


def test_champion_moves_on_promotion_and_stays_on_rollback(tmp_path, gitops):
    from taigimed.pipeline.steps import deploy_canary_step

    registry = registry_with(tmp_path, versions=3)
    registry.set_champion("v1")
    clone = gitops["clone"]
    # The step can also be given the remote itself (a URL or a bare repo): it clones it.
    deploy_canary_step("v2", registry.root, str(gitops["remote"]), "")
    git(clone, "pull", "-q", "--ff-only")
    machine_on(clone, registry).promote(reason="analysis passed")
    assert registry.champion() == "v2"
    pointer = json.loads((tmp_path / "registry" / "champion.json").read_text())
    assert pointer["history"] == ["v1"] and pointer["storage_uri"] == registry.storage_uri("v2")

    git(clone, "-c", "user.name=t", "-c", "user.email=t@t", "push", "-q", "origin", "HEAD:main")
    deploy_canary_step("v3", registry.root, str(clone), "")
    machine_on(clone, registry).rollback(reason="error rate")
    assert registry.champion() == "v2"
    assert ProdOverlay(clone / PROD).read().stable_version == "v2"


def test_without_gitops_repo_the_step_makes_the_champion_at_once(tmp_path):
    from taigimed.pipeline.steps import deploy_canary_step

    registry = registry_with(tmp_path, versions=1)
    assert "champion=v1" in deploy_canary_step("v1", registry.root, "", "")
    assert registry.champion() == "v1"


def test_seeded_manifests_use_the_registrys_uri_layout(tmp_path):
    """Every seeded storageUri is what Registry.storage_uri writes for v1 under its root."""
    seeded = []
    for path in sorted((REPO_ROOT / "manifests").rglob("*.yaml")):
        seeded += [
            line.split(":", 1)[1].strip()
            for line in path.read_text().splitlines()
            if "storageUri:" in line or "stable_storage_uri:" in line
        ]
    assert seeded, "no storageUri in manifests/"
    for uri in seeded:
        root = uri.removesuffix("/versions/v1/model")
        assert root != uri, f"{uri}: not <registry root>/versions/v1/model"
        assert Registry(root, s3_client=object()).storage_uri("v1") == uri
