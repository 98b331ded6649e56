"""The canary state machine against a real Prometheus scraping ONE guard in front of a split.

This is the cluster's shape: one guard (the InferenceService transformer) fronts the predictor,
and Knative splits the *predictor's* traffic between the stable and the canary revision
(``canaryTrafficPercent``). The guard tells them apart only by what each answer says about its
version (``x-taigimed-model-version``), and the analysis compares those per-request labels.

Everything runs on 127.0.0.1: Debian's `prometheus` (installed by `make test-deps`) scrapes the
guard's /metrics every second. Three real predictors serve the tiny test model: v1 (stable), v2
(a healthy canary) and v3, whose model directory carries a broken chat template (a packaging
bug), so it answers every chat with a 500 that still names its version. Knative's split cannot
run here, so ``taigimed.rollout.local.Splitter`` (the rehearsal's) stands in for it: a minimal
HTTP proxy that sends each predictor request to the canary or the stable predictor in the
proportion the rollout last committed; the rollout machine's applier hook (what ``--apply kube``
uses on a cluster) updates it after every commit, as Argo CD and Knative would. The guard is
configured with the fallback version ``unknown``, as in the manifests. The overlay lives in a
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
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from taigimed.rollout.analysis import Prometheus, PrometheusError
from taigimed.rollout.local import Splitter
from taigimed.rollout.machine import RolloutMachine
from taigimed.rollout.overlay import GitRepo, ProdOverlay, RolloutState
from taigimed.rollout.plan import RolloutPlan, Thresholds
from taigimed.utils import REPO_ROOT

pytestmark = pytest.mark.slow

PROMETHEUS = shutil.which("prometheus")
QUESTION = "食飽了後腹肚淡薄仔脹，愛注意啥物？"
FALLBACK = "unknown"  # the guard's own label, as the manifests set it


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


def apply_to(split: Splitter):
    """The rollout machine's applier: route as the committed InferenceService says."""

    def apply(state: RolloutState) -> None:
        canary = state.canary_version if state.phase != "stable" else ""
        split.set_route(state.stable_version, canary, state.canary_percent)

    return apply


def broken_model_dir(tiny_model_dir: Path, dest: Path) -> Path:
    """The tiny model with a chat template that raises: a canary packaged wrongly."""
    shutil.copytree(tiny_model_dir, dest)
    (dest / "chat_template.jinja").write_text(
        "{{ raise_exception('v3 was packaged with a broken chat template') }}"
    )
    return dest


@pytest.fixture(scope="module")
def serving(tmp_path_factory, tiny_model_dir) -> Iterator[dict]:
    """Predictors v1, v2, v3 (broken); the split in front of them; ONE guard in front of it."""
    work = tmp_path_factory.mktemp("serving")
    procs = Processes(work)
    split = None
    try:
        models = {
            "v1": tiny_model_dir,
            "v2": tiny_model_dir,
            "v3": broken_model_dir(tiny_model_dir, work / "v3-model"),
        }
        predictors = {
            version: procs.serve(
                "taigimed.serve.predictor",
                f"predictor-{version}",
                "--model-dir",
                str(model_dir),
                "--model-version",
                version,
            )
            for version, model_dir in models.items()
        }
        split = Splitter()
        for version, url in predictors.items():
            split.backends[version] = (url, "/v1")  # the guard's paths, relayed as they are
        guard = procs.serve(
            "taigimed.serve.guard",
            "guard",
            "--predictor-url",
            split.url,
            "--model-version",
            FALLBACK,
            f"review.store_url=sqlite:///{work}/review.db",
        )
        yield {"guard": guard, "split": split}
    finally:
        procs.stop()
        if split is not None:
            split.stop()


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory, serving) -> Iterator[str]:
    if not PROMETHEUS:
        pytest.skip("the `prometheus` binary is absent: run `make test-deps` (Debian package)")
    work = tmp_path_factory.mktemp("prometheus")
    guard = serving["guard"].removeprefix("http://")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "taigimed-guard", "static_configs": [{"targets": [guard]}]}
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
        prom = Prometheus(url, timeout_s=30)
        wait_for(lambda: prom.scalar('max(up{job="taigimed-guard"})') == 1, 90, "guard scraped")
        yield url
    finally:
        procs.stop()


def chat() -> dict:
    return {
        "model": "taigimed",
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": 8,
    }


MIN_TRAFFIC_S = 6.0  # traffic spans at least this many seconds of 1 s scrapes


def drive_traffic(guard: str, split: Splitter, canary: str, need: int) -> Counter:
    """Chat through the one guard (three clients) until the split has sent ``need`` requests to
    the canary; return the guard's answers as (status code, model_version) counts."""
    answers: Counter = Counter()
    began = time.monotonic()
    deadline = began + 120
    start = split.routed[canary]

    def loop() -> None:
        # Spread over several 1 s scrapes: a counter series that appears between two scrapes
        # already at its final value shows no increase() in Prometheus, which is what a fast
        # guard on an idle machine did when all requests fitted between two scrapes.
        while (
            split.routed[canary] - start < need or time.monotonic() - began < MIN_TRAFFIC_S
        ) and time.monotonic() < deadline:
            r = requests.post(f"{guard}/openai/v1/chat/completions", json=chat(), timeout=60)
            tag = r.json().get("taigimed", {}) if r.status_code == 200 else {}
            answers[(r.status_code, tag.get("model_version"))] += 1
            time.sleep(0.1)

    threads = [threading.Thread(target=loop) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert split.routed[canary] - start >= need, f"too little traffic in 120 s: {answers}"
    return answers


def series_versions(prometheus: str) -> set[str]:
    """The model_version labels of the guard's chat request series in Prometheus."""
    r = requests.get(
        f"{prometheus}/api/v1/series",
        params={"match[]": 'taigimed_requests_total{route="chat"}'},
        timeout=30,
    )
    return {s["model_version"] for s in r.json()["data"]}


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


def rollout(gitops: Path, prometheus: str, split: Splitter) -> RolloutMachine:
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
    machine = RolloutMachine(plan, overlay, GitRepo(plan.overlay), prom, applier=apply_to(split))
    apply_to(split)(machine.status())  # the cluster as the committed overlay describes it
    return machine


def history(gitops: Path) -> list[str]:
    out = subprocess.run(
        ["git", "log", "--reverse", "--format=%s", "--", "manifests/overlays/prod"],
        cwd=gitops,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.splitlines()[1:]  # without "init"


def test_healthy_canary_is_promoted_step_by_step(serving, prometheus, gitops):
    guard, split = serving["guard"], serving["split"]
    machine = rollout(gitops, prometheus, split)
    machine.start("v2", "file:///registry/versions/v2/model")
    answers = drive_traffic(guard, split, "v2", need=15)
    # One guard, two versions: every answer names the predictor that produced it.
    assert set(answers) == {(200, "v1"), (200, "v2")}, answers
    first = machine.step_until_decided(timeout_s=40, poll_s=2)
    assert first.action == "advanced", [r.line() for r in first.analysis.results]
    assert split.percent == 50
    drive_traffic(guard, split, "v2", need=15)
    second = machine.step_until_decided(timeout_s=40, poll_s=2)
    assert second.action == "promoted", [r.line() for r in second.analysis.results]
    state = machine.status()
    assert (state.phase, state.stable_version) == ("stable", "v2")
    assert (split.stable, split.canary) == ("v2", "")
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
    # Prometheus saw the split per answering version; nothing fell back to the guard's label.
    assert {"v1", "v2"} <= series_versions(prometheus)
    assert FALLBACK not in series_versions(prometheus)


def test_erroring_canary_is_rolled_back(serving, prometheus, gitops):
    guard, split = serving["guard"], serving["split"]
    machine = rollout(gitops, prometheus, split)
    machine.start("v3", "file:///registry/versions/v3/model")
    answers = drive_traffic(guard, split, "v3", need=15)
    assert {a for a in answers if a[0] != 200} == {(502, None)}, answers
    assert {a for a in answers if a[0] == 200} == {(200, "v1")}, answers
    outcome = machine.step_until_decided(timeout_s=40, poll_s=2)
    assert outcome.action == "rolled_back"
    failed = {r.name: r for r in outcome.analysis.results if r.verdict == "fail"}
    assert "error_rate" in failed
    # The 5xx were blamed on v3 (its predictor named itself), not on stable or the fallback.
    assert failed["error_rate"].canary == pytest.approx(1.0)
    assert not failed["error_rate"].stable
    state = machine.status()
    assert (state.phase, state.stable_version, state.canary_percent) == ("stable", "v1", 100)
    assert (split.stable, split.canary) == ("v1", "")
    assert history(gitops) == [
        "rollout: start canary v3 at 25% (stable v1)",
        "rollout: roll back v3: canary traffic 25% -> 0%",
        "rollout: restore stable v1 after rolling back v3",
    ]
    patch = (gitops / "manifests/overlays/prod/inferenceservice-patch.yaml").read_text()
    assert "registry/versions/v1/model" in patch and "v3" not in patch
