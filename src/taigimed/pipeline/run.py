"""Run the Kubeflow pipeline locally through kfp.local, or submit it to a KFP server.

Locally every component runs as a subprocess of this venv (``SubprocessRunner(use_venv=False)``)
with KFP's own orchestration: the same DAG, ``dsl.If`` and caching as on a cluster. Caching is
on, keyed by a fingerprint of the configs, the data and the taigimed source, so an interrupted
run resumes from the last finished step and a change to any input recomputes what depends on it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from taigimed.utils import REPO_ROOT, read_json

log = logging.getLogger(__name__)

PIPELINE_FILE = REPO_ROOT / "pipelines" / "taigimed_pipeline.py"
COMPILED_FILE = REPO_ROOT / "pipelines" / "compiled" / "taigimed_pipeline.yaml"
FINGERPRINTED = ("data", "src/taigimed", "components")


@dataclass
class LocalRunResult:
    """Where a local run left its outputs and what the gate decided."""

    run_dir: Path
    passed: bool
    reasons: list[str]
    version: str | None
    seconds: float
    outputs: dict[str, Path] = field(default_factory=dict)


def load_pipeline_module(path: Path = PIPELINE_FILE) -> ModuleType:
    """Import ``pipelines/taigimed_pipeline.py`` (a script folder, not a package)."""
    spec = importlib.util.spec_from_file_location("taigimed_pipeline", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"{path}: pipeline definition not found")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fingerprint(profile: str, extra: tuple[str, ...] = FINGERPRINTED) -> str:
    """SHA-256 over the profile's configs, the shipped data and the code the steps run.

    KFP's cache keys on a step's inputs; file contents behind a path are invisible to it. Feeding
    this hash into the first step makes any content change a cache miss downstream.
    """
    digest = hashlib.sha256()
    roots = [Path(profile) if Path(profile).is_absolute() else REPO_ROOT / profile]
    roots += [REPO_ROOT / name for name in extra]
    for root in roots:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in files:
            if "__pycache__" in path.parts or not path.exists():
                continue
            name = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
            digest.update(str(name).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def registry_uri(root: str) -> str:
    """``runs/registry`` -> ``file:///abs/runs/registry``; URIs pass through."""
    if "://" in root:
        return root
    return Path(root).resolve().as_uri()


def run_local(
    run_dir: Path,
    profile: str = "configs/demo-cpu",
    registry: str = "runs/registry",
    params: dict[str, Any] | None = None,
) -> LocalRunResult:
    """Execute the whole pipeline with kfp.local and summarise what it produced."""
    from kfp import local

    run_dir = run_dir.resolve()
    pipeline_root = run_dir / "kfp"
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(pipeline_root),
        enable_caching=True,
        cache_root=str(run_dir / "kfp-cache"),
    )
    arguments = {
        "profile": profile,
        "registry_root": registry_uri(registry),
        "fingerprint": fingerprint(profile),
        **(params or {}),
    }
    log.info("running the pipeline locally: %s", arguments)
    module = load_pipeline_module()
    started = time.monotonic()
    task = module.taigimed_pipeline(**arguments)
    seconds = time.monotonic() - started
    reasons = [r for r in str(task.output or "").splitlines() if r.strip()]
    return summarise(pipeline_root, module.PIPELINE_NAME, reasons, seconds)


def latest_run_folder(pipeline_root: Path, pipeline_name: str) -> Path:
    runs = sorted(pipeline_root.glob(f"{pipeline_name}-*"), key=lambda p: p.stat().st_mtime)
    if not runs:
        raise FileNotFoundError(f"{pipeline_root}: no run folder for {pipeline_name}")
    return runs[-1]


def summarise(
    pipeline_root: Path, pipeline_name: str, reasons: list[str], seconds: float
) -> LocalRunResult:
    """Find the interesting files of the newest run: reports, gate verdict, registered version."""
    folder = latest_run_folder(pipeline_root, pipeline_name)
    outputs: dict[str, Path] = {}
    for name, pattern in {
        "data_report": "prepare/data/data_report.md",
        "stage1_loss": "train-stage1/model/loss.png",
        "stage2_loss": "train-stage2/model/loss.png",
        "eval_report": "evaluate/results/candidate/report.html",
        "gate": "gate/verdict/gate.md",
        "index": "build-index/index/manifest.json",
        "rejected": "mark-rejected/report",
    }.items():
        matches = sorted(folder.glob(pattern))
        if matches:
            outputs[name] = matches[0]
    version = None
    register_out = folder / "register" / "Output"
    if register_out.is_file():
        version = register_out.read_text(encoding="utf-8").strip().strip('"') or None
    elif (folder / "register" / "executor_output.json").is_file():
        params = read_json(folder / "register" / "executor_output.json").get("parameterValues", {})
        version = params.get("Output")
    return LocalRunResult(folder, not reasons, reasons, version, seconds, outputs)


def submit(
    host: str,
    params: dict[str, Any],
    experiment: str = "taigimed",
    run_name: str | None = None,
    package: Path = COMPILED_FILE,
) -> str:
    """Upload the compiled pipeline to a KFP server and start a run; returns the run's URL."""
    import kfp

    if not package.is_file():
        raise FileNotFoundError(f"{package}: compile the pipeline first (make compile)")
    client = kfp.Client(host=host)
    run = client.create_run_from_pipeline_package(
        str(package),
        arguments=params,
        run_name=run_name or f"taigimed-{time.strftime('%Y%m%d-%H%M%S')}",
        experiment_name=experiment,
    )
    return f"{host.rstrip('/')}/#/runs/details/{run.run_id}"


def upload(host: str, name: str, package: Path = COMPILED_FILE) -> str:
    """Upload the compiled pipeline: a new pipeline, or a new version of an existing one."""
    import kfp

    if not package.is_file():
        raise FileNotFoundError(f"{package}: compile the pipeline first (make compile)")
    client = kfp.Client(host=host)
    pipeline_id = client.get_pipeline_id(name)
    if pipeline_id is None:
        pipeline = client.upload_pipeline(str(package), pipeline_name=name)
        return f"uploaded pipeline {name} ({pipeline.pipeline_id})"
    version = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    client.upload_pipeline_version(
        str(package), pipeline_version_name=version, pipeline_id=pipeline_id
    )
    return f"uploaded version {version} of pipeline {name} ({pipeline_id})"
