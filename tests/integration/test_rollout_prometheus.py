"""The canary state machine against a real Prometheus scraping real guard/predictor pairs.

Everything runs on 127.0.0.1: Debian's `prometheus` (installed by `make test-deps`) scrapes
the guards' /metrics every second; the stable pair serves v1 with the tiny test model, a healthy
canary pair serves v2, and a broken canary guard (v3) points at a predictor port where nothing
listens, so it answers 5xx like a canary whose model server crashed. The overlay lives in a
temporary git repo holding a copy of manifests/, and its log must show every transition.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from taigimed.rollout.analysis import Prometheus, PrometheusError
from taigimed.rollout.machine import RolloutMachine
from taigimed.rollout.overlay import GitRepo, ProdOverlay
from taigimed.rollout.plan import RolloutPlan, Thresholds
from taigimed.utils import REPO_ROOT

pytestmark = pytest.mark.slow

PROMETHEUS = shutil.which("prometheus")
QUESTION = "食飽了後腹肚淡薄仔脹，愛注意啥物？"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (OSError, requests.RequestException, ValueError, PrometheusError):
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Processes:
    """Start servers as subprocesses, remember them, stop them all at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = self.workdir / f"{name}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(
            args, cwd=self.workdir, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env
        )
        self.procs.append((proc, log))
        return proc

    def serve(self, module: str, name: str, *args: str) -> str:
        """Start ``python -m module`` on an ephemeral port; return its base URL once bound."""
        port_file = self.workdir / f"{name}.port.json"
        command = [sys.executable, "-m", module, "--port", "0", "--port-file", str(port_file)]
        proc = self.start(name, [*command, *args])

        def bound() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited:\n{self.tail(name)}")
            return port_file.exists() and port_file.stat().st_size > 0

        wait_for(bound, 180, f"{name} to bind")
        info = json.loads(port_file.read_text())
        return f"http://127.0.0.1:{info['port']}"

    def tail(self, name: str) -> str:
        return (self.workdir / f"{name}.log").read_text()[-3000:]

    def stop(self) -> None:
        for proc, _ in self.procs:
            proc.terminate()
        for proc, _ in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture(scope="module")
def servers(tmp_path_factory, tiny_model_dir) -> Iterator[dict[str, str]]:
    """Guards for v1 (stable), v2 (healthy canary), v3 (canary with a dead predictor)."""
    work = tmp_path_factory.mktemp("serving")
    procs = Processes(work)
    try:
        predictors = {}
        for version in ("v1", "v2"):
            predictors[version] = procs.serve(
                "taigimed.serve.predictor",
                f"predictor-{version}",
                "--model-dir",
                str(tiny_model_dir),
                "--model-version",
                version,
            )
        dead = f"http://127.0.0.1:{free_port()}"
        guards = {}
        for version, upstream in (("v1", predictors["v1"]), ("v2", predictors["v2"]), ("v3", dead)):
            guards[version] = procs.serve(
                "taigimed.serve.guard",
                f"guard-{version}",
                "--predictor-url",
                upstream,
                "--model-version",
                version,
                f"review.store_url=sqlite:///{work}/review-{version}.db",
            )
        yield guards
    finally:
        procs.stop()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, servers) -> Iterator[str]:
    if not PROMETHEUS:
        pytest.skip("the `prometheus` binary is absent: run `make test-deps` (Debian package)")
    work = tmp_path_factory.mktemp("prometheus")
    targets = [url.removeprefix("http://") for url in servers.values()]
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "taigimed-guard", "static_configs": [{"targets": targets}]}
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    procs = Processes(work)
    procs.start(
        "prometheus",
        [
            PROMETHEUS,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: requests.get(f"{url}/-/ready", timeout=2).ok, 60, "Prometheus ready")
        # Every guard up as a target before any traffic, so the first requests are counted.
        for guard in servers.values():
            requests.post(f"{guard}/openai/v1/chat/completions", json=chat(), timeout=60)
        up = 'count(up{job="taigimed-guard"} == 1)'
        prom = Prometheus(url, timeout_s=30)
        wait_for(lambda: prom.scalar(up) == 3, 90, "all three guards scraped")
        yield url
    finally:
        procs.stop()


def chat() -> dict:
    return {
        "model": "taigimed",
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 8,
    }


def drive_traffic(guards: list[str], seconds: float) -> dict[str, list[int]]:
    """Send chat requests to each guard in turn for ``seconds``; return their status codes."""
    codes: dict[str, list[int]] = {g: [] for g in guards}
    deadline = time.monotonic() + seconds

    def loop(guard: str) -> None:
        while time.monotonic() < deadline:
            r = requests.post(f"{guard}/openai/v1/chat/completions", json=chat(), timeout=60)
            codes[guard].append(r.status_code)
            time.sleep(0.05)

    threads = [threading.Thread(target=loop, args=(g,)) for g in guards]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return codes


@pytest.fixture
def gitops(tmp_path: Path) -> Path:
    shutil.copytree(REPO_ROOT / "manifests", tmp_path / "manifests")
    for args in (
        ["init", "-q", "-b", "main"],
        ["config", "user.name", "test"],
        ["config", "user.email", "test@example.invalid"],
        ["add", "."],
        ["commit", "-q", "-m", "init"],
    ):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)
    return tmp_path


def rollout(gitops: Path, prometheus: str) -> RolloutMachine:
    plan = RolloutPlan(
        steps=[25, 50],
        window="30s",
        prometheus_url=prometheus,
        label_selector="",
        overlay=gitops / "manifests/overlays/prod",
        # Few requests on loopback; latency ratio loose because a shared 2-core machine makes
        # millisecond latencies noisy. Errors are judged as in prod.
        thresholds=Thresholds(min_requests=10, max_p95_latency_ratio=20.0),
    )
    overlay = ProdOverlay(plan.overlay)
    # A loaded CI machine can make Prometheus slow to answer: allow it time.
    prom = Prometheus(prometheus, timeout_s=60)
    return RolloutMachine(plan, overlay, GitRepo(plan.overlay), prom)


def history(gitops: Path) -> list[str]:
    out = subprocess.run(
        ["git", "log", "--reverse", "--format=%s", "--", "manifests/overlays/prod"],
        cwd=gitops,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.splitlines()[1:]  # without "init"


def test_healthy_canary_is_promoted_step_by_step(servers, prometheus, gitops):
    machine = rollout(gitops, prometheus)
    machine.start("v2", "file:///registry/v2/model")
    codes = drive_traffic([servers["v1"], servers["v2"]], seconds=8)
    assert all(c == 200 for c in codes[servers["v2"]]), codes
    first = machine.step_until_decided(timeout_s=40, poll_s=2)
    assert first.action == "advanced", [r.line() for r in first.analysis.results]
    drive_traffic([servers["v1"], servers["v2"]], seconds=4)
    second = machine.step_until_decided(timeout_s=40, poll_s=2)
    assert second.action == "promoted", [r.line() for r in second.analysis.results]
    state = machine.status()
    assert (state.phase, state.stable_version) == ("stable", "v2")
    assert history(gitops) == [
        "rollout: start canary v2 at 25% (stable v1)",
        "rollout: advance canary v2 25% -> 50%",
        "rollout: promote v2 to 100% (stable v1 -> v2)",
    ]
    body = subprocess.run(
        ["git", "log", "-1", "--skip=1", "--format=%B"],
        cwd=gitops,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "error_rate: pass" in body and "traffic: pass" in body


def test_erroring_canary_is_rolled_back(servers, prometheus, gitops):
    machine = rollout(gitops, prometheus)
    machine.start("v3", "file:///registry/v3/model")
    codes = drive_traffic([servers["v1"], servers["v3"]], seconds=8)
    assert codes[servers["v3"]] and all(c >= 500 for c in codes[servers["v3"]]), codes
    outcome = machine.step_until_decided(timeout_s=40, poll_s=2)
    assert outcome.action == "rolled_back"
    failed = [r.name for r in outcome.analysis.results if r.verdict == "fail"]
    assert "error_rate" in failed
    state = machine.status()
    assert (state.phase, state.stable_version, state.canary_percent) == ("stable", "v1", 100)
    assert history(gitops) == [
        "rollout: start canary v3 at 25% (stable v1)",
        "rollout: roll back v3: canary traffic 25% -> 0%",
        "rollout: restore stable v1 after rolling back v3",
    ]
    patch = (gitops / "manifests/overlays/prod/inferenceservice-patch.yaml").read_text()
    assert "registry/v1/model" in patch and "v3" not in patch
