"""The prod overlay as the rollout's state store, and the git commits that change it.

Two files in ``manifests/overlays/prod/`` hold a rollout, both written whole by this module:

* ``inferenceservice-patch.yaml``: the predictor's ``storageUri``, the model version it
  serves (env ``TAIGIMED_MODEL_VERSION``), and ``canaryTrafficPercent``. This is what Argo CD
  applies and KServe acts on. The storageUri and the version change together, so the new
  Knative revision (the canary) carries the canary's version and the previous one keeps the
  stable's; each names its version in every answer (the vLLM runtime serves it as the first
  ``--served-model-name``, the CPU predictor as a header), which is how the one guard labels
  canary and stable traffic apart for the analysis.
* ``rollout.yaml``: a ConfigMap ``taigimed-rollout`` with the state machine's bookkeeping
  (stable and canary versions and URIs, phase, step). It changes no pod, so writing it never
  creates a Knative revision, and ``taigimed rollout status`` reads it back from git.

Writing whole files (not editing YAML in place) keeps every commit's diff to the lines that
matter, and makes the files' format a contract tested in tests/unit/test_rollout_overlay.py.
"""

from __future__ import annotations

import dataclasses
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from taigimed.utils import atomic_open

log = logging.getLogger(__name__)

PATCH_FILE = "inferenceservice-patch.yaml"
STATE_FILE = "rollout.yaml"
STATE_CONFIGMAP = "taigimed-rollout"
VERSION_ENV = "TAIGIMED_MODEL_VERSION"
STEADY_PERCENT = 100  # no canary: all traffic on the latest (= stable) revision

Phase = Literal["stable", "canary", "rolling_back"]
PHASES = ("stable", "canary", "rolling_back")


class OverlayError(RuntimeError):
    """The overlay cannot be read or written as a rollout needs; the message names the file."""


@dataclass
class RolloutState:
    """Where a rollout stands. ``phase`` is ``stable`` (no canary), ``canary`` or ``rolling_back``.

    ``canary_percent`` is the traffic share written into the InferenceService; in ``stable`` it
    is 100 (everything on the one revision), and during a rollback 0.
    """

    stable_version: str
    stable_storage_uri: str
    phase: Phase = "stable"
    canary_version: str = ""
    canary_storage_uri: str = ""
    canary_percent: int = STEADY_PERCENT
    step_index: int = -1  # index into the plan's steps; -1 when no canary
    last_decision: str = ""  # one line: why the last transition happened

    @property
    def serving_version(self) -> str:
        """The version whose storageUri the InferenceService points at (the 'latest' revision)."""
        return self.canary_version if self.phase != "stable" else self.stable_version

    @property
    def serving_storage_uri(self) -> str:
        """While rolling back the canary's URI stays, at 0%, so KServe keeps both revisions."""
        return self.canary_storage_uri if self.phase != "stable" else self.stable_storage_uri

    def to_configmap_data(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_configmap_data(cls, data: dict[str, Any], source: str) -> RolloutState:
        known = {f.name: f for f in dataclasses.fields(cls)}
        missing = [n for n in ("stable_version", "stable_storage_uri") if not data.get(n)]
        if missing:
            raise OverlayError(f"{source}: data.{missing[0]} is missing or empty")
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise OverlayError(f"{source}: unknown key data.{unknown[0]}")
        values: dict[str, Any] = {}
        for name, value in data.items():
            if name in ("canary_percent", "step_index"):
                try:
                    values[name] = int(value)
                except (TypeError, ValueError):
                    raise OverlayError(f"{source}: data.{name} must be an integer") from None
            else:
                values[name] = "" if value is None else str(value)
        if values.get("phase", "stable") not in PHASES:
            raise OverlayError(f"{source}: data.phase must be one of {list(PHASES)}")
        return cls(**values)


def render_patch(state: RolloutState, isvc_name: str = "taigimed") -> str:
    """The text of ``inferenceservice-patch.yaml`` for a state."""
    patch = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": isvc_name},
        "spec": {
            "predictor": {
                "canaryTrafficPercent": state.canary_percent,
                "model": {
                    "storageUri": state.serving_storage_uri,
                    "env": [{"name": VERSION_ENV, "value": state.serving_version}],
                },
            }
        },
    }
    header = (
        "# Managed by `taigimed rollout` (src/taigimed/rollout): the prod predictor's model and\n"
        "# canary traffic share. Change it with `taigimed rollout start|step|promote|rollback`,\n"
        "# not by hand, so that rollout.yaml (the state) stays consistent with it.\n"
    )
    return header + yaml.safe_dump(patch, sort_keys=False)


def render_state(state: RolloutState) -> str:
    """The text of ``rollout.yaml``: the ConfigMap that records the rollout's state."""
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": STATE_CONFIGMAP},
        "data": state.to_configmap_data(),
    }
    header = (
        "# Managed by `taigimed rollout`: the canary state machine's state (read by\n"
        "# `taigimed rollout status`). Changing it alters no pod, so it never makes a revision.\n"
    )
    return header + yaml.safe_dump(configmap, sort_keys=False, allow_unicode=True)


class ProdOverlay:
    """Read and write the rollout state of one overlay directory."""

    def __init__(self, path: str | Path, isvc_name: str = "taigimed") -> None:
        self.path = Path(path)
        self.isvc_name = isvc_name

    @property
    def patch_path(self) -> Path:
        return self.path / PATCH_FILE

    @property
    def state_path(self) -> Path:
        return self.path / STATE_FILE

    def read(self) -> RolloutState:
        """The state from ``rollout.yaml``, checked against the InferenceService patch."""
        state = RolloutState.from_configmap_data(
            self._read_mapping(self.state_path).get("data") or {}, str(self.state_path)
        )
        predictor = (self._read_mapping(self.patch_path).get("spec") or {}).get("predictor") or {}
        model = predictor.get("model") or {}
        uri = model.get("storageUri")
        percent = predictor.get("canaryTrafficPercent", STEADY_PERCENT)
        env = {e.get("name"): e.get("value") for e in model.get("env") or [] if isinstance(e, dict)}
        version = env.get(VERSION_ENV)
        expected = (state.serving_storage_uri, state.canary_percent, state.serving_version)
        if (uri, percent, version) != expected:
            raise OverlayError(
                f"{self.patch_path}: storageUri={uri!r} canaryTrafficPercent={percent!r} "
                f"{VERSION_ENV}={version!r} disagree with {self.state_path} (expects "
                f"{expected[0]!r}, {expected[1]}, {expected[2]!r}); someone edited one by hand. "
                "Restore both from git (`git checkout -- manifests/overlays/prod`) or fix them to "
                "match."
            )
        return state

    def write(self, state: RolloutState) -> list[Path]:
        """Write both files atomically; return their paths (for the commit)."""
        for path, text in (
            (self.patch_path, render_patch(state, self.isvc_name)),
            (self.state_path, render_state(state)),
        ):
            with atomic_open(path) as fh:
                fh.write(text)
        return [self.patch_path, self.state_path]

    @staticmethod
    def _read_mapping(path: Path) -> dict[str, Any]:
        if not path.is_file():
            raise OverlayError(
                f"{path}: not found; is --overlay (plan key `overlay`) the prod overlay directory?"
            )
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise OverlayError(f"{path}: invalid YAML: {err}") from None
        if not isinstance(data, dict):
            raise OverlayError(f"{path}: expected a Kubernetes object (a mapping)")
        return data


class GitRepo:
    """The git work tree holding the overlay: commit changed files, optionally push."""

    def __init__(self, path: str | Path, author: str | None = None) -> None:
        self.root = Path(self._git(Path(path), "rev-parse", "--show-toplevel").strip())
        self.author = author

    def commit(self, paths: list[Path], message: str) -> str:
        """Commit exactly ``paths`` with ``message``; return the new commit's sha."""
        rel = [str(Path(p).resolve().relative_to(self.root.resolve())) for p in paths]
        self._git(self.root, "add", "--", *rel)
        identity: list[str] = []
        if self.author and not self._git_ok(self.root, "config", "user.email"):
            # No committer identity here (a fresh pod or CI runner): commit as the author.
            name, _, email = self.author.partition("<")
            identity = ["-c", f"user.name={name.strip()}", "-c", f"user.email={email.strip('> ')}"]
        args = [*identity, "commit", "--quiet", "-m", message]
        if self.author:
            args.append(f"--author={self.author}")
        self._git(self.root, *args, "--", *rel)
        sha = self._git(self.root, "rev-parse", "HEAD").strip()
        log.info("committed %s: %s", sha[:10], message.splitlines()[0])
        return sha

    def push(self, remote: str = "origin", branch: str = "") -> None:
        """Push HEAD so that Argo CD, which syncs from the remote, sees the change."""
        target = branch or self._git(self.root, "rev-parse", "--abbrev-ref", "HEAD").strip()
        self._git(self.root, "push", remote, f"HEAD:{target}")
        log.info("pushed to %s/%s", remote, target)

    @classmethod
    def clone(cls, url: str, dest: Path) -> Path:
        """Clone ``url`` (a URL or a bare repo path) into ``dest``; return ``dest``."""
        cls._git(dest.parent, "clone", "--quiet", url, str(dest))
        return dest

    def pull(self, remote: str = "origin", branch: str = "") -> None:
        """Fast-forward to the remote before a transition, so the push is not rejected as
        stale; a repo without that remote (a plain local work tree) is left as it is."""
        remotes = self._git(self.root, "remote").split()
        if remote not in remotes:
            return
        target = branch or self._git(self.root, "rev-parse", "--abbrev-ref", "HEAD").strip()
        self._git(self.root, "pull", "--quiet", "--ff-only", remote, target)

    def log(self, path: str | Path, limit: int = 20) -> list[str]:
        """Subjects of the last commits touching ``path``, newest first."""
        rel = str(Path(path).resolve().relative_to(self.root.resolve()))
        out = self._git(self.root, "log", f"-{limit}", "--format=%s", "--", rel)
        return [line for line in out.splitlines() if line]

    @staticmethod
    def _git_ok(cwd: Path, *args: str) -> bool:
        """Whether ``git args`` succeeds and prints something (e.g. a config value is set)."""
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
        return done.returncode == 0 and bool(done.stdout.strip())

    @staticmethod
    def _git(cwd: Path, *args: str) -> str:
        try:
            done = subprocess.run(
                ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
            )
        except FileNotFoundError:
            raise OverlayError(
                "git is not installed; the rollout records every step as a commit"
            ) from None
        except subprocess.CalledProcessError as err:
            raise OverlayError(
                f"git {' '.join(args[:2])} failed in {cwd}: {err.stderr.strip() or err.stdout}"
            ) from None
        return done.stdout
