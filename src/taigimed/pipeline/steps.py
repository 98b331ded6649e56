"""The pipeline's steps as plain functions: what each KFP component runs.

Components in ``components/`` are a few lines that unpack KFP artifacts and call one function
here, so the logic of every step can be tested without KFP, and the same code runs in a pod on
a cluster and in a subprocess on a laptop (``kfp.local``).

Every step takes the config *profile* (a folder such as ``configs/demo-cpu`` holding
``data.yaml``, ``train.yaml``, ``eval.yaml``, ``gate.yaml``) plus ``key=value`` overrides, so a
pipeline run in the Kubeflow UI can change any setting without a new image.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from taigimed.config import load_config
from taigimed.utils import REPO_ROOT, read_json, write_json

log = logging.getLogger(__name__)
T = TypeVar("T")

# The DataConfig key the pipeline's replay_fraction parameter sets.
REPLAY_FRACTION_KEY = "replay_fraction"

# Where configs and data live inside the pipeline image; the repo root locally.
PROJECT_HOME = Path(os.environ.get("TAIGIMED_HOME", REPO_ROOT))


@contextlib.contextmanager
def in_project_home() -> Iterator[None]:
    """Run with the project folder as cwd, so relative paths in configs mean the same thing
    in a KFP subprocess, in a pod, and on the command line."""
    previous = Path.cwd()
    os.chdir(PROJECT_HOME)
    try:
        yield
    finally:
        os.chdir(previous)


def split_overrides(text: str) -> list[str]:
    """``"a=1 b='x y'"`` -> ``["a=1", "b=x y"]``: overrides travel as one string parameter."""
    return shlex.split(text or "")


def profile_file(profile: str, name: str) -> Path:
    """``configs/demo-cpu`` + ``train.yaml`` -> an absolute path that must exist."""
    path = Path(profile) / name
    if not path.is_absolute():
        path = PROJECT_HOME / path
    if not path.is_file():
        raise FileNotFoundError(f"{path}: config {name} missing from profile {profile!r}")
    return path


def profile_config(cls: type[T], profile: str, name: str, overrides: str | list[str]) -> T:
    """Load ``<profile>/<name>`` into ``cls`` with the step's overrides applied."""
    items = split_overrides(overrides) if isinstance(overrides, str) else overrides
    return load_config(cls, profile_file(profile, name), items)


def prepare_step(
    profile: str,
    overrides: str,
    out_dir: str,
    replay_fraction: float | None = None,
    base_model: str = "",
) -> dict[str, Any]:
    """Prepare stage datasets, eval sets and the data report into ``out_dir``.

    ``replay_fraction`` is a pipeline parameter of its own (the knob people turn most), applied
    after the other overrides. ``base_model`` (the pipeline's) is the tokenizer the length
    filter counts with, so examples are measured with the model that is trained; an explicit
    ``tokenizer=`` in ``overrides`` still wins.
    """
    from taigimed.data.config import DataConfig
    from taigimed.data.prepare import prepare

    items = ([f"tokenizer={base_model}"] if base_model else []) + split_overrides(overrides)
    if replay_fraction is not None:
        items.append(f"{REPLAY_FRACTION_KEY}={replay_fraction}")
    with in_project_home():
        cfg = profile_config(DataConfig, profile, "data.yaml", items)
        return prepare(cfg, Path(out_dir))


def train_step(
    profile: str, stage: int, data_dir: str, base_model: str, out_dir: str, overrides: str
) -> dict[str, Any]:
    """Train one stage; stage 2's ``base_model`` is stage 1's merged model directory.

    ``resume=True`` makes a retried pod (or a re-run after a crash) continue from its last
    checkpoint instead of starting over; with no checkpoint it starts fresh.
    """
    from taigimed.train.config import TrainConfig
    from taigimed.train.recipe import train_stage

    with in_project_home():
        cfg = profile_config(TrainConfig, profile, "train.yaml", overrides)
        base = base_model or cfg.base_model
        return train_stage(
            cfg,
            stage=stage,
            data_dir=Path(data_dir),
            out_dir=Path(out_dir),
            base_model=base,
            resume=True,
        )


def evaluate_step(
    profile: str,
    candidate_dir: str,
    data_dir: str,
    base_model: str,
    registry_root: str,
    out_dir: str,
    overrides: str,
    index_dir: str | None = None,
) -> dict[str, Any]:
    """Evaluate the candidate, the base model and the current champion on the same eval sets.

    ``index_dir``: the retrieval index the index step built (and register will record); the
    candidate's answers are also scored grounded on it. Without one they are scored alone.

    The champion is re-evaluated rather than trusted from its old metrics: today's eval set may
    differ from the one it was registered with, and the gate must compare like with like.
    Writes ``<out>/{candidate,base,champion}/metrics.json`` and ``<out>/summary.json``.
    """
    from taigimed.eval.config import EvalConfig
    from taigimed.eval.evaluate import evaluate_model
    from taigimed.registry import Registry
    from taigimed.serve.config import ServeConfig
    from taigimed.serve.decision import policy_from_settings
    from taigimed.spec import read_spec

    out = Path(out_dir)
    eval_dir = Path(data_dir) / "eval"
    registry = Registry(registry_root)
    champion = registry.champion()
    summary: dict[str, Any] = {"champion_version": champion}
    with in_project_home():
        cfg = profile_config(EvalConfig, profile, "eval.yaml", overrides)
        # The safety suite scores the guard policy this profile serves, and every model is
        # scored with the candidate's trained prompt and lengths (its taigimed.json).
        has_serve = (Path(profile) / "serve.yaml").is_file() or (
            PROJECT_HOME / profile / "serve.yaml"
        ).is_file()
        serve_cfg = profile_config(ServeConfig, profile, "serve.yaml", "") if has_serve else None
        if serve_cfg is None:
            log.warning("%s has no serve.yaml: scoring the default guard policy", profile)
            serve_cfg = ServeConfig()
        policy = policy_from_settings(serve_cfg.policy)
        knowledge = eval_knowledge(cfg, index_dir)
        spec = read_spec(candidate_dir)
        # The base the candidate was trained from, as its spec records it (the pipeline's
        # parameter, or the profile's train.yaml when that is empty): one source for both.
        base = base_model or spec.base_model or None
        models: dict[str, str | None] = {"candidate": candidate_dir, "base": base}
        champion_dir = local_model_dir(registry.storage_uri(champion)) if champion else None
        models["champion"] = str(champion_dir) if champion_dir else None
        for role, model in models.items():
            if model is None:
                summary[role] = None
                continue
            log.info("evaluating %s: %s", role, model)
            # Grounded answers for the candidate only: it is what would be served with the
            # index, and the grounded arm doubles the answer task's cost on CPU.
            served = knowledge if role == "candidate" else None
            summary[role] = evaluate_model(
                model, eval_dir, cfg, out / role, policy=policy, spec=spec, knowledge=served
            )
    if champion and summary["champion"] is None:
        # A remote registry: the champion's weights are not here; use its registered metrics.
        log.warning("champion %s is remote: using its registered metrics", champion)
        summary["champion"] = registry.get(champion).metrics
    write_json(out / "summary.json", summary)
    return summary


def eval_knowledge(cfg: Any, index_dir: str | None) -> Any:
    """The saved index the version will serve, loaded for the answer task's grounded arm (the
    same index register records, so the gate scores the grounded answers a person would get).
    None without an index or with the grounded arm off (``answers.grounded``)."""
    if "answers" not in cfg.tasks or not cfg.answers.grounded:
        return None
    if not index_dir:
        log.info("no retrieval index given: answers are scored without grounding")
        return None
    from taigimed.retrieval.serving import LiveKnowledge

    return LiveKnowledge.load(index_dir)


def local_model_dir(uri: str) -> Path | None:
    """The directory behind a ``file://`` storage URI; ``None`` for remote (s3://) ones."""
    if uri.startswith("file://"):
        return Path(uri.removeprefix("file://"))
    return None


def gate_step(profile: str, eval_dir: str, overrides: str, out_dir: str) -> tuple[bool, list[str]]:
    """Apply the promotion gate to the evaluation summary; write ``gate.json`` and a report."""
    from taigimed.eval.config import GateConfig
    from taigimed.eval.gate import gate

    summary = read_json(Path(eval_dir) / "summary.json")
    with in_project_home():
        thresholds = profile_config(GateConfig, profile, "gate.yaml", overrides)
    result = gate(
        summary["candidate"],
        thresholds,
        summary.get("champion"),
        summary.get("base"),
        champion_version=summary.get("champion_version"),
    )
    out = Path(out_dir)
    write_json(out / "gate.json", result.to_dict())
    (out / "gate.md").write_text(result.markdown(), encoding="utf-8")
    return result.passed, list(result.reasons)


def index_step(profile: str, overrides: str, out_dir: str) -> dict[str, Any]:
    """Build the retrieval index the next version serves (``<profile>/retrieval.yaml``): the
    knowledge base, leaflets and approved review answers, embedded and saved with its hash."""
    from taigimed.retrieval.build import build_index
    from taigimed.retrieval.config import RetrievalConfig

    with in_project_home():
        cfg = profile_config(RetrievalConfig, profile, "retrieval.yaml", overrides)
        return build_index(cfg, Path(out_dir), home=PROJECT_HOME)


def register_step(
    candidate_dir: str,
    eval_dir: str,
    gate_dir: str,
    registry_root: str,
    index_dir: str | None = None,
) -> str:
    """Register the candidate with its metrics, gate verdict and retrieval index (same
    version); returns the new version."""
    from taigimed.registry import Registry

    summary = read_json(Path(eval_dir) / "summary.json")
    verdict = read_json(Path(gate_dir) / "gate.json")
    card = Path(candidate_dir) / "MODEL_CARD.md"
    return Registry(registry_root).register(
        Path(candidate_dir),
        metrics=summary["candidate"],
        verdict=verdict,
        card=card.read_text(encoding="utf-8") if card.is_file() else "",
        index_dir=index_dir,
    )


def deploy_canary_step(version: str, registry_root: str, gitops_repo: str, plan: str) -> str:
    """Deploy a registered version: start its canary in the GitOps prod overlay, or (with no
    GitOps repo) make it the champion at once.

    On a cluster the prod overlay in git is what serves. The step starts the canary through the
    rollout state machine's own entry point (``RolloutMachine.start``): the registry's storage
    URI and the first ``canaryTrafficPercent`` written into the overlay, one commit, pushed so
    that Argo CD (which watches the remote) applies it. The registry's champion does NOT move
    here: ``taigimed rollout step`` moves it when the canary is promoted, and a rollback leaves
    it where it was, so the next run's gate never compares against an unjudged model.

    Locally (no ``gitops_repo``) there is no rollout to judge a canary: the champion pointer is
    the deployment, read by ``taigimed serve`` and the next run's gate.

    ``gitops_repo`` is a git work tree (a clone of the repo Argo CD watches) or a URL / bare
    repo, which is cloned into a temporary folder first. ``plan`` is a rollout plan YAML (its
    ``overlay`` is taken relative to the GitOps repo); empty: the default plan.
    """
    from taigimed.registry import Registry

    registry = Registry(registry_root)
    if not gitops_repo:
        registry.set_champion(version)
        return f"champion={version} (local: no GitOps repo given, nothing to roll out)"
    with in_project_home():
        outcome = start_canary_in_gitops(
            gitops_repo, version, registry.storage_uri(version), plan, registry_root
        )
    state = outcome.state
    return (
        f"canary {version} started at {state.canary_percent}% (stable {state.stable_version}, "
        f"still champion); commit {outcome.commits[0][:10]} pushed"
    )


def start_canary_in_gitops(
    gitops_repo: str, version: str, storage_uri: str, plan_path: str, registry_root: str
) -> Any:
    """Clone (if needed), bring the work tree up to date, start the canary, push."""
    import tempfile

    from taigimed.rollout.machine import RolloutMachine
    from taigimed.rollout.overlay import GitRepo, ProdOverlay
    from taigimed.rollout.plan import load_plan

    rollout_plan = load_plan(plan_path or None)
    # A commit that stays in this pod's clone is lost: the step always pushes.
    rollout_plan.git.push = True
    with contextlib.ExitStack() as stack:
        checkout = Path(gitops_repo)
        if not (checkout / ".git").exists():
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="taigimed-gitops-"))
            checkout = GitRepo.clone(gitops_repo, Path(tmp) / "repo")
        repo = GitRepo(checkout, author=rollout_plan.git.author or None)
        repo.pull(rollout_plan.git.remote, rollout_plan.git.branch)
        overlay_dir = rollout_plan.overlay
        if not overlay_dir.is_absolute():
            overlay_dir = repo.root / overlay_dir
        rollout_plan.overlay = overlay_dir
        machine = RolloutMachine(
            rollout_plan,
            ProdOverlay(overlay_dir, rollout_plan.inference_service),
            repo,
            registry_root=registry_root,
        )
        return machine.start(version, storage_uri)


def record_rejection(reasons: list[str], out_dir: str) -> str:
    """Write the rejection verdict where people look for it; the run itself succeeds."""
    text = "# Candidate rejected by the promotion gate\n\n" + "\n".join(f"- {r}" for r in reasons)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "REJECTED.md").write_text(text + "\n", encoding="utf-8")
    return text
