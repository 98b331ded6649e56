"""Stand-ins for Argo CD and Knative, so a canary rollout can be rehearsed on one machine.

Two things of the cluster path cannot run here, and these replace exactly them:

* ``LocalApplier`` replaces **Argo CD**: it watches the GitOps remote (a bare repo), and on every
  new commit renders the prod overlay with ``kubectl kustomize`` and "applies" what it says:
  each predictor revision the InferenceService names (its ``storageUri``, its
  ``TAIGIMED_MODEL_VERSION``, its ServingRuntime) is started as that runtime's own container
  command (``taigimed.serve.runtime``), and the split gets the committed
  ``canaryTrafficPercent``. Like Knative, it keeps earlier revisions running (the stable one
  serves the rest of the traffic); nothing is started from anything but the rendered overlay.
* ``Splitter`` replaces **Knative's traffic split** between the stable and the canary revision:
  an HTTP proxy that sends ``canaryTrafficPercent`` of the predictor requests to the canary
  (a deterministic counter, so a few dozen requests already show the share). It relays status,
  headers and body unchanged, so what the guard learns about the answering version comes from
  the predictor alone.

Everything else in a rehearsal is the real thing: the pipeline (kfp.local), the deploy step's
git push, the runtimes, the guard, Prometheus and ``taigimed rollout step``.
"""

from __future__ import annotations

import http.server
import logging
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from taigimed.serve.runtime import (
    RuntimeProcess,
    cpu_env,
    free_port,
    readiness_path,
    runtime_command,
)
from taigimed.utils import REPO_ROOT

log = logging.getLogger(__name__)

KUBECTL = REPO_ROOT / ".venv/bin/kubectl"
VLLM_RUNTIME = "taigimed-vllm"
# The OpenAI route prefix each runtime serves (the guard's TAIGIMED_PREDICTOR_OPENAI_PREFIX).
RUNTIME_PREFIX = {VLLM_RUNTIME: "/v1", "taigimed-cpu": "/openai/v1"}


@dataclass
class Revision:
    """One predictor revision as the rendered overlay describes it."""

    version: str
    storage_uri: str
    runtime: str


@dataclass
class DesiredState:
    """What the rendered prod overlay says should serve."""

    latest: Revision  # the InferenceService's predictor (the canary while one runs)
    stable: Revision  # the taigimed-rollout ConfigMap's stable version
    canary_percent: int
    commit: str = ""

    @property
    def canary(self) -> Revision | None:
        return self.latest if self.latest.version != self.stable.version else None


def render_overlay(checkout: Path, overlay: str = "manifests/overlays/prod") -> list[dict]:
    """``kubectl kustomize`` of the overlay: the objects Argo CD would apply."""
    done = subprocess.run(
        [str(KUBECTL), "kustomize", str(checkout / overlay)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [d for d in yaml.safe_load_all(done.stdout) if isinstance(d, dict)]


def desired_state(objects: list[dict], isvc: str = "taigimed") -> DesiredState:
    """The predictor revisions and split from rendered objects (InferenceService + ConfigMap)."""
    service = next(
        o for o in objects if o["kind"] == "InferenceService" and o["metadata"]["name"] == isvc
    )
    state = next(
        o["data"]
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "taigimed-rollout"
    )
    predictor = service["spec"]["predictor"]
    model = predictor["model"]
    env = {e["name"]: e.get("value") for e in model.get("env") or []}
    runtime = model.get("runtime", VLLM_RUNTIME)
    latest = Revision(env["TAIGIMED_MODEL_VERSION"], model["storageUri"], runtime)
    stable = Revision(state["stable_version"], state["stable_storage_uri"], runtime)
    return DesiredState(latest, stable, int(predictor.get("canaryTrafficPercent", 100)))


class Splitter:
    """Knative's stable/canary split, as an HTTP proxy in front of the predictor revisions."""

    HOP_BY_HOP = frozenset(
        ("connection", "content-length", "content-encoding", "transfer-encoding")
    )

    def __init__(self, guard_prefix: str = "/v1") -> None:
        self.guard_prefix = guard_prefix
        self.backends: dict[str, tuple[str, str]] = {}  # version -> (base URL, OpenAI prefix)
        self.lock = threading.Lock()
        self.stable, self.canary, self.percent = "", "", 0
        self.seen = 0
        self.routed: Counter[str] = Counter()
        self.client = httpx.Client(timeout=300)
        split = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                split.relay(self, None)

            def do_POST(self) -> None:
                split.relay(self, self.rfile.read(int(self.headers.get("content-length", 0))))

            def log_message(self, *_: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def set_route(self, stable: str, canary: str, percent: int) -> None:
        with self.lock:
            self.stable, self.canary = stable, canary
            self.percent = percent if canary else 0
            self.seen = 0

    def pick(self) -> str:
        with self.lock:
            before = self.seen * self.percent // 100
            self.seen += 1
            version = self.canary if self.seen * self.percent // 100 > before else self.stable
            self.routed[version] += 1
            return version

    def relay(self, handler: http.server.BaseHTTPRequestHandler, body: bytes | None) -> None:
        version = self.pick()
        base, prefix = self.backends[version]
        path = handler.path
        if path.startswith(self.guard_prefix + "/"):
            # Each runtime serves its OpenAI routes under its own prefix (a cluster runs one
            # runtime for both revisions; a rehearsal may mix them).
            path = prefix + path[len(self.guard_prefix) :]
        headers = {"content-type": handler.headers.get("content-type", "application/json")}
        try:
            if body is None:
                resp = self.client.get(base + path)
            else:
                resp = self.client.post(base + path, content=body, headers=headers)
        except httpx.HTTPError as err:
            # An unreachable revision: what Knative's activator answers, a 503.
            handler.send_error(503, f"revision {version} unreachable: {err}")
            return
        handler.send_response(resp.status_code)
        for name, value in resp.headers.items():
            if name.lower() not in self.HOP_BY_HOP:
                handler.send_header(name, value)
        handler.send_header("content-length", str(len(resp.content)))
        handler.end_headers()
        handler.wfile.write(resp.content)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.client.close()


@dataclass
class Applied:
    """One applied commit: when, and what it set (for the rehearsal's timeline)."""

    at: float
    commit: str
    stable: str
    canary: str
    percent: int


@dataclass
class LocalApplier:
    """Argo CD's part: watch the remote, render the overlay, start revisions, set the split.

    ``runtime_manifests`` maps a ServingRuntime name to its manifest; ``canary_runtime``, when
    set, serves *canary* revisions with that runtime instead of the one the overlay names (the
    rehearsal's pipeline model is a tiny random Llama vLLM's CPU kernels cannot run; the stable
    revision stays on the real vLLM runtime).
    """

    remote: Path
    workdir: Path
    splitter: Splitter
    runtime_manifests: dict[str, Path]
    pythons: dict[str, str]
    canary_runtime: str = ""
    branch: str = "main"
    ready_timeout_s: float = 900.0
    revisions: dict[str, RuntimeProcess] = field(default_factory=dict)
    history: list[Applied] = field(default_factory=list)
    applied_commit: str = ""

    def __post_init__(self) -> None:
        self.checkout = self.workdir / "argocd-checkout"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    # -- one sync ------------------------------------------------------------------------

    def remote_head(self) -> str:
        out = subprocess.run(
            ["git", "ls-remote", str(self.remote), f"refs/heads/{self.branch}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return out.split()[0] if out else ""

    def sync(self) -> bool:
        """Apply the remote's head if it is new; True when something was applied."""
        head = self.remote_head()
        if head == self.applied_commit:
            return False
        if not self.checkout.exists():
            subprocess.run(
                ["git", "clone", "-q", str(self.remote), str(self.checkout)],
                check=True,
                capture_output=True,
            )
        else:
            for args in (["fetch", "-q", "origin"], ["reset", "-q", "--hard", head]):
                subprocess.run(["git", *args], cwd=self.checkout, check=True, capture_output=True)
        desired = desired_state(render_overlay(self.checkout))
        desired.commit = head
        self.apply(desired)
        self.applied_commit = head
        return True

    def apply(self, desired: DesiredState) -> None:
        """Start the revisions that do not run yet (waiting until ready, as Knative routes to
        a revision only once it is), then route."""
        self._ensure(desired.stable, canary=False)
        canary = desired.canary
        if canary is not None:
            self._ensure(canary, canary=True)
        percent = desired.canary_percent if canary else 0
        self.splitter.set_route(desired.stable.version, canary.version if canary else "", percent)
        self.history.append(
            Applied(
                time.monotonic(),
                desired.commit,
                desired.stable.version,
                canary.version if canary else "",
                percent,
            )
        )
        log.info(
            "applied %s: stable %s, canary %s at %d%%",
            desired.commit[:10],
            desired.stable.version,
            canary.version if canary else "-",
            percent,
        )

    def _ensure(self, revision: Revision, canary: bool) -> None:
        if revision.version in self.revisions:
            return
        runtime = self.canary_runtime if canary and self.canary_runtime else revision.runtime
        manifest = self.runtime_manifests[runtime]
        if not revision.storage_uri.startswith("file://"):
            raise RuntimeError(f"{revision.storage_uri}: a rehearsal serves file:// models only")
        model_dir = Path(revision.storage_uri.removeprefix("file://"))
        port = free_port()
        work = self.workdir / f"revision-{revision.version}"
        cmd = runtime_command(
            manifest, model_dir, port, revision.version, self.pythons[runtime], work, cpu_env()
        )
        process = RuntimeProcess(cmd, port, work / "runtime.log")
        self.revisions[revision.version] = process
        log.info("starting revision %s on %s (%s)", revision.version, runtime, process.url)
        seconds = process.wait_ready(readiness_path(manifest), self.ready_timeout_s)
        log.info("revision %s ready in %.0f s", revision.version, seconds)
        self.splitter.backends[revision.version] = (process.url, RUNTIME_PREFIX[runtime])

    # -- watching ------------------------------------------------------------------------

    def watch(self, poll_s: float = 1.0) -> None:
        """Sync in a background thread every ``poll_s`` until ``stop``."""

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.sync()
                except BaseException as err:  # reported by the caller via .error
                    self.error = err
                    log.exception("applier failed")
                    return
                self._stop.wait(poll_s)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def wait_applied(self, commit: str, timeout_s: float) -> Applied:
        """Block until ``commit`` is applied; return its record."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.error is not None:
                raise RuntimeError(f"applier failed: {self.error}") from self.error
            for record in reversed(self.history):
                if record.commit == commit:
                    return record
            time.sleep(0.2)
        raise TimeoutError(f"commit {commit[:10]} not applied in {timeout_s:.0f} s")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for process in self.revisions.values():
            process.stop()


def summary(history: list[Applied]) -> list[dict[str, Any]]:
    """The applied timeline as plain dicts (for the rehearsal's JSON)."""
    start = history[0].at if history else 0.0
    return [
        {
            "t_s": round(h.at - start, 2),
            "commit": h.commit[:10],
            "stable": h.stable,
            "canary": h.canary,
            "canary_percent": h.percent,
        }
        for h in history
    ]
