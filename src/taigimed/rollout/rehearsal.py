"""A canary rollout rehearsed end to end on one machine (``make rehearsal``).

The same sequence as on a cluster (docs/cluster.md, "Rehearsal and the real thing"), printed step
by step:

1. a registry whose v1 (SmolLM2-135M-Instruct) is champion and the prod overlay's stable
   version, in a GitOps repo (a bare repo: what Argo CD watches);
2. the local applier (Argo CD's stand-in, ``rollout.local``) renders the overlay with
   ``kubectl kustomize`` and starts v1 on the **real vLLM runtime** from its ServingRuntime;
   the guard, configured as the InferenceService's transformer, fronts the splitter (Knative's
   stand-in); Debian's Prometheus scrapes the guard; a bounded synthetic client sends traffic;
3. per scenario: the Kubeflow pipeline runs (``kfp.local``, tiny model profile) with
   ``gitops_repo`` set, so its deploy step commits and pushes the canary's start; the applier
   syncs it (prod syncs on request, as ``argocd app sync taigimed-prod``) and starts the new
   revision; ``taigimed rollout step`` runs every interval, each transition synced at once;
4. scenario ``rollback``: the registered candidate is fault-injected (its chat template raises,
   a packaging bug: every chat answer is a 5xx that names its version) and must be rolled back
   with the champion unchanged; scenario ``promote``: a healthy candidate must be promoted and
   become champion. Rollback runs first so that both are judged against the vLLM stable.

The time from the fault (the faulty revision taking traffic) to canary weight 0, and the
requests that reached the faulty canary, go to ``bench/results/rollout_rehearsal.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from taigimed.models import SMOLLM2_NAME, resolve_model
from taigimed.registry import Registry
from taigimed.rollout.local import LocalApplier, Splitter, summary
from taigimed.rollout.overlay import ProdOverlay, RolloutState
from taigimed.serve.runtime import free_port
from taigimed.utils import REPO_ROOT, write_json

log = logging.getLogger(__name__)

PROD = "manifests/overlays/prod"
RESULTS = REPO_ROOT / "bench/results/rollout_rehearsal.json"
VLLM_PYTHON = REPO_ROOT / ".venv-vllm/bin/python"
RUNTIMES = {
    "taigimed-vllm": REPO_ROOT / "manifests/base/servingruntime-vllm.yaml",
    "taigimed-cpu": REPO_ROOT / "manifests/overlays/dev/servingruntime-cpu.yaml",
}
# The pipeline on a tiny random Llama: one LoRA step per stage, a short eval (see
# tests/pipeline/test_pipeline_local.py). The gate checks what such a model can meet.
TINY_PARAMS = {
    "base_model": "tiny-random-llama",
    "train_overrides": "stage1.max_steps=1 stage2.max_steps=1 max_seq_len=512 eval_examples=2 "
    "checkpoint_every=1",
    "eval_overrides": "tasks=[mcq,safety] mcq.max_questions=4 safety.answers=fixed",
}
TINY_GATE = {
    "require_champion": False,
    "require_base": False,
    "metrics": {
        "medqa_accuracy": {"direction": "higher", "min": 0.0},
        "safety_escalation_recall": {"direction": "higher", "min": 1.0},
    },
}
# Routine questions for the synthetic users (red flags are escalated before any model).
USER_QUESTIONS = (
    "我這兩工咧咳嗽，喉嚨嘛小可仔痛，愛按怎照顧家己？",
    "食飽了後腹肚淡薄仔脹，愛注意啥物？",
    "暗時睏袂去，有啥物好習慣會當改善？",
    "血壓藥愛佇早起抑是暗時食較好？",
)
BOOTSTRAP_VERDICT = {
    "passed": True,
    "reasons": [],
    "note": "rehearsal seed: the packaged base model as the first production version",
}


def say(text: str) -> None:
    """The rehearsal's step-by-step narration (stdout, flushed: `make rehearsal` shows it)."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=rehearsal", "-c", "user.email=rehearsal@taigimed.invalid", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@dataclass
class Settings:
    """The rehearsal's knobs; ``interval_s`` is both the analysis window and the step period."""

    workdir: Path
    interval_s: int = 30
    steps: tuple[int, ...] = (25, 50)
    min_requests: int = 8
    clients: int = 3
    max_user_requests: int = 3000  # the synthetic load is bounded
    scenario_timeout_s: float = 600.0
    results: Path = RESULTS


# -- setup ------------------------------------------------------------------------------------


def seed_registry(root: Path) -> Registry:
    """v1 = SmolLM2-135M-Instruct (the packaged base), champion."""
    registry = Registry(root.as_uri())
    version = registry.register(resolve_model(SMOLLM2_NAME), {}, BOOTSTRAP_VERDICT, card="")
    registry.set_champion(version)
    return registry


def seed_gitops(work: Path, registry: Registry) -> tuple[Path, Path]:
    """A bare GitOps repo with the project's manifests, prod stable on the registry's v1; and
    the operator's clone (where `taigimed rollout step` runs)."""
    seed = work / "gitops-seed"
    shutil.copytree(REPO_ROOT / "manifests", seed / "manifests")
    stable = RolloutState("v1", registry.storage_uri("v1"), last_decision="rehearsal seed")
    ProdOverlay(seed / PROD).write(stable)
    git(seed, "init", "-q", "-b", "main")
    git(seed, "add", ".")
    git(seed, "commit", "-q", "-m", "seed: prod serves v1")
    remote = work / "gitops.git"
    git(work, "clone", "-q", "--bare", str(seed), str(remote))
    operator = work / "operator"
    git(work, "clone", "-q", str(remote), str(operator))
    return remote, operator


def write_profile(work: Path) -> Path:
    """demo-cpu's data/train/eval/retrieval configs with the tiny gate (the pipeline's
    build-index step reads retrieval.yaml from the profile)."""
    profile = work / "profile"
    profile.mkdir(exist_ok=True)
    for name in ("data.yaml", "train.yaml", "eval.yaml", "retrieval.yaml"):
        shutil.copy(REPO_ROOT / "configs/demo-cpu" / name, profile / name)
    (profile / "gate.yaml").write_text(yaml.safe_dump(TINY_GATE), encoding="utf-8")
    return profile


def write_plan(
    work: Path, settings: Settings, prometheus: str, registry: Registry, guard: str
) -> Path:
    """configs/demo-cpu/rollout.yaml with the rehearsal's interval, steps and endpoints."""
    plan = yaml.safe_load((REPO_ROOT / "configs/demo-cpu/rollout.yaml").read_text())
    plan.update(
        steps=list(settings.steps),
        window=f"{settings.interval_s}s",
        prometheus_url=prometheus,
        label_selector="",
        registry=registry.root,
        unattributed_version="unknown",
    )
    plan["thresholds"]["min_requests"] = settings.min_requests
    # A tiny CPU canary against vLLM on a loaded 2-core machine: latency is not what is judged.
    plan["thresholds"]["max_p95_latency_ratio"] = 20.0
    plan["git"].update(push=True, remote="origin", branch="main")
    # Too few user requests in a window: the rollout probes the canary through the guard.
    plan["probes"] = {"url": guard}
    path = work / "rollout.yaml"
    path.write_text(yaml.safe_dump(plan, sort_keys=False), encoding="utf-8")
    return path


class Services:
    """The guard and Prometheus, as processes; stopped together."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None):
        log_file = (self.work / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            argv,
            cwd=self.work,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc

    def guard(self, predictor_url: str) -> str:
        """The guard as the InferenceService's transformer runs it (vLLM prefix, no predictor
        health check, fallback label ``unknown``)."""
        port_file = self.work / "guard.port.json"
        proc = self.start(
            "guard",
            [
                sys.executable,
                "-m",
                "taigimed.serve.guard",
                "--predictor-url",
                predictor_url,
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--port-file",
                str(port_file),
                "--model-version",
                "unknown",
                f"review.store_url=sqlite:///{self.work}/review.db",
            ],
            env={
                "TAIGIMED_PREDICTOR_OPENAI_PREFIX": "/v1",
                "TAIGIMED_PREDICTOR_HEALTH_CHECK": "false",
            },
        )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError((self.work / "guard.log").read_text()[-3000:])
            if port_file.is_file() and port_file.stat().st_size:
                url = f"http://127.0.0.1:{json.loads(port_file.read_text())['port']}"
                try:
                    if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                        return url
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
        raise TimeoutError("guard not ready")

    def prometheus(self, guard_url: str) -> str:
        binary = shutil.which("prometheus")
        if not binary:
            raise RuntimeError("no `prometheus` binary: run `make test-deps` (Debian package)")
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "taigimed-guard",
                    "static_configs": [{"targets": [guard_url.removeprefix("http://")]}],
                }
            ],
        }
        (self.work / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        self.start(
            "prometheus",
            [
                binary,
                f"--config.file={self.work / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                up = httpx.get(f"{url}/api/v1/query", params={"query": "max(up)"}, timeout=5).json()
                if up["data"]["result"] and up["data"]["result"][0]["value"][1] == "1":
                    return url
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            time.sleep(0.5)
        raise TimeoutError("Prometheus did not scrape the guard")

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


class Users:
    """Bounded synthetic client traffic through the guard, in background threads."""

    def __init__(self, guard: str, clients: int, max_requests: int) -> None:
        self.guard = guard
        self.max_requests = max_requests
        self.sent = 0
        self.answers: Counter[tuple[int, str]] = Counter()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.running = threading.Event()  # cleared: the clients pause (during pipeline runs)
        self.threads = [threading.Thread(target=self.loop, daemon=True) for _ in range(clients)]

    def loop(self) -> None:
        with httpx.Client(timeout=300) as client:
            while not self.stopping.is_set():
                if not self.running.wait(timeout=0.5):
                    continue
                with self.lock:
                    if self.sent >= self.max_requests:
                        return
                    question = USER_QUESTIONS[self.sent % len(USER_QUESTIONS)]
                    self.sent += 1
                body = {
                    "model": "taigimed",
                    "messages": [{"role": "user", "content": question}],
                    "max_tokens": 8,
                }
                try:
                    r = client.post(f"{self.guard}/openai/v1/chat/completions", json=body)
                    version = (r.json().get("taigimed") or {}).get("model_version", "")
                    key = (r.status_code, version if r.status_code == 200 else "")
                except (httpx.HTTPError, ValueError):
                    key = (0, "")
                with self.lock:
                    self.answers[key] += 1

    def start(self) -> None:
        self.running.set()
        for t in self.threads:
            t.start()

    def pause(self) -> None:
        self.running.clear()

    def resume(self) -> None:
        self.running.set()

    def stop(self) -> None:
        self.stopping.set()
        self.running.set()
        for t in self.threads:
            t.join(timeout=320)


# -- one scenario -----------------------------------------------------------------------------


@dataclass
class PipelineRun:
    """What `taigimed pipeline run --local` reported."""

    passed: bool
    version: str | None
    seconds: float
    log: Path
    reasons: list[str]


def run_pipeline(
    work: Path, profile: Path, registry: Registry, remote: Path, plan: Path, seed: int
) -> PipelineRun:
    """`taigimed pipeline run --local` (kfp.local) with ``gitops_repo``: the deploy step pushes
    the canary's start to the GitOps remote. ``seed`` varies the training between scenarios.
    KFP's own logs go to a file; the rehearsal prints the summary."""
    params = dict(
        TINY_PARAMS,
        train_overrides=TINY_PARAMS["train_overrides"] + f" seed={seed}",
        gitops_repo=str(remote),
        rollout_plan=str(plan),
    )
    argv = [
        str(REPO_ROOT / ".venv/bin/taigimed"),
        "pipeline",
        "run",
        "--local",
        "--profile",
        str(profile),
        "--run-dir",
        str(work / "pipeline"),
        "--registry",
        registry.root,
    ]
    for key, value in params.items():
        argv += ["--param", f"{key}={value}"]
    log_path = work / f"pipeline-seed{seed}.log"
    started = time.monotonic()
    with log_path.open("w") as log_file:
        done = subprocess.run(argv, stdout=log_file, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
    text = log_path.read_text(errors="replace")
    version = None
    for line in text.splitlines():
        if "registered version " in line:
            version = line.rsplit("registered version ", 1)[1].strip()
    passed = done.returncode == 0 and "gate: PASSED" in text
    reasons = [ln.strip()[2:] for ln in text.splitlines() if ln.startswith("  - ")]
    return PipelineRun(passed, version, time.monotonic() - started, log_path, reasons)


def inject_fault(registry: Registry, version: str) -> Path:
    """Package ``version`` wrongly: a chat template that raises. Written as a new file (the
    registry hard-links model files to the pipeline's outputs, which stay intact)."""
    model = Path(registry.storage_uri(version).removeprefix("file://"))
    target = model / "chat_template.jinja"
    target.unlink(missing_ok=True)
    target.write_text("{{ raise_exception('fault injected by the rehearsal') }}")
    return target


def rollout_step(plan: Path, operator: Path) -> tuple[int, str]:
    """``taigimed rollout step`` as an operator (or a CronJob) runs it."""
    done = subprocess.run(
        [
            str(REPO_ROOT / ".venv/bin/taigimed"),
            "rollout",
            "--config",
            str(plan),
            "--overlay",
            str(operator / PROD),
            "step",
        ],
        capture_output=True,
        text=True,
        cwd=operator,
    )
    # Its report is stdout; its log lines (stderr) only matter when it failed.
    text = done.stdout if done.returncode in (0, 3, 4) else done.stdout + done.stderr
    return done.returncode, text.strip()


def scenario(
    name: str,
    settings: Settings,
    ctx: dict[str, Any],
    seed: int,
) -> dict[str, Any]:
    """One candidate through pipeline, canary and analysis to promotion or rollback."""
    registry: Registry = ctx["registry"]
    applier: LocalApplier = ctx["applier"]
    splitter: Splitter = ctx["splitter"]
    champion_before = registry.champion()
    say(f"== scenario {name}: champion {champion_before}")
    say("pipeline run (kfp.local, tiny profile) with gitops_repo: train, evaluate, gate, ...")
    users: Users = ctx["users"]
    users.pause()  # the machine's two cores go to the pipeline; users return with the canary
    started = time.monotonic()
    result = run_pipeline(
        settings.workdir, ctx["profile"], registry, ctx["remote"], ctx["plan"], seed
    )
    if not result.passed or not result.version:
        raise RuntimeError(
            f"pipeline did not register a candidate ({result.reasons}); log: {result.log}"
        )
    version = result.version
    subject = git(ctx["remote"], "log", "-1", "--format=%s", "main").strip()
    took = time.monotonic() - started
    say(f"pipeline done in {took:.0f} s: registered {version}; pushed: {subject}")
    say(f"registry champion is still {registry.champion()} (a started canary is not promoted)")
    if name == "rollback":
        path = inject_fault(registry, version)
        say(f"fault injected into {version}: {path.name} raises (every chat is a 5xx)")
    say("applier (Argo CD stand-in) syncs: kubectl kustomize the prod overlay, start revisions")
    applier.sync()
    users.resume()
    applied = applier.history[-1]
    fault_at = applied.at
    say(f"serving: stable {applied.stable}, canary {applied.canary} at {applied.percent}%")
    routed_before = splitter.routed[version]
    steps: list[dict[str, Any]] = []
    outcome, weight_zero_at = "", None
    deadline = time.monotonic() + settings.scenario_timeout_s
    while time.monotonic() < deadline:
        time.sleep(settings.interval_s)
        code, text = rollout_step(ctx["plan"], ctx["operator"])
        action = {0: "advanced/promoted", 3: "rolled_back", 4: "waiting"}.get(code, f"error {code}")
        say(
            f"taigimed rollout step -> {action}\n"
            + "\n".join(f"    {ln}" for ln in text.splitlines())
        )
        steps.append({"t_s": round(time.monotonic() - fault_at, 1), "exit": code, "output": text})
        if code not in (0, 3, 4):
            raise RuntimeError(f"rollout step failed: {text}")
        if applier.sync():
            now = applier.history[-1]
            say(
                f"applier synced: stable {now.stable}, canary {now.canary or '-'} at {now.percent}%"
            )
            if now.percent == 0 and weight_zero_at is None:
                weight_zero_at = now.at
        state = ProdOverlay(ctx["operator"] / PROD).read()
        if state.phase == "stable":
            outcome = "promoted" if state.stable_version == version else "rolled_back"
            break
    champion_after = registry.champion()
    say(
        f"scenario {name}: {outcome or 'undecided'}; champion {champion_before} -> {champion_after}"
    )
    record: dict[str, Any] = {
        "scenario": name,
        "candidate": version,
        "outcome": outcome or "undecided",
        "champion_before": champion_before,
        "champion_after": champion_after,
        "pipeline_s": round(result.seconds, 1),
        "steps": steps,
        "requests_to_candidate": splitter.routed[version] - routed_before,
    }
    if name == "rollback" and weight_zero_at is not None:
        record["seconds_fault_to_weight_0"] = round(weight_zero_at - fault_at, 1)
        record["requests_to_faulty_canary"] = record["requests_to_candidate"]
    return record


# -- the whole rehearsal ----------------------------------------------------------------------


def rehearse(settings: Settings, scenarios: tuple[str, ...] = ("rollback", "promote")) -> dict:
    """Set everything up, run the scenarios, write the results JSON, tear everything down."""
    if not VLLM_PYTHON.is_file():
        raise RuntimeError(f"{VLLM_PYTHON} is absent: run `make vllm-env`")
    work = settings.workdir
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    load_start = os.getloadavg()
    say("registry: v1 = SmolLM2-135M-Instruct (packaged), champion")
    registry = seed_registry(work / "registry")
    remote, operator = seed_gitops(work, registry)
    say(f"GitOps remote {remote} (what Argo CD watches): prod stable v1")
    services = Services(work)
    splitter = Splitter(guard_prefix="/v1")
    applier = LocalApplier(
        remote=remote,
        workdir=work,
        splitter=splitter,
        runtime_manifests=RUNTIMES,
        pythons={"taigimed-vllm": str(VLLM_PYTHON), "taigimed-cpu": sys.executable},
        canary_runtime="taigimed-cpu",
    )
    users: Users | None = None
    records: list[dict[str, Any]] = []
    try:
        say("applier syncs the seed: v1 on the real vLLM runtime (servingruntime-vllm.yaml)")
        applier.sync()
        vllm_ready_s = time.monotonic() - t0
        say(f"v1 ready on vLLM after {vllm_ready_s:.0f} s")
        guard = services.guard(splitter.url)
        say(f"guard (transformer settings: /v1 prefix, predictor health check off) at {guard}")
        prometheus = services.prometheus(guard)
        say(f"Prometheus scraping the guard every 1 s at {prometheus}")
        plan = write_plan(work, settings, prometheus, registry, guard)
        ctx = {
            "registry": registry,
            "remote": remote,
            "operator": operator,
            "plan": plan,
            "profile": write_profile(work),
            "applier": applier,
            "splitter": splitter,
        }
        users = Users(guard, settings.clients, settings.max_user_requests)
        ctx["users"] = users
        users.start()
        most = settings.max_user_requests
        say(f"synthetic users: {settings.clients} clients, at most {most} requests")
        for i, name in enumerate(scenarios):
            records.append(scenario(name, settings, ctx, seed=100 + i))
    finally:
        if users is not None:
            users.stop()
        applier.stop()
        splitter.stop()
        services.stop()
    interval = settings.interval_s
    checks_needed = 1  # one failed analysis rolls back (RolloutMachine.step)
    rollback = next((r for r in records if r["scenario"] == "rollback"), {})
    measured = rollback.get("seconds_fault_to_weight_0")
    out = {
        "interval_s": interval,
        "failed_checks_needed": checks_needed,
        "goal_s": interval * (checks_needed + 1),
        "seconds_fault_to_weight_0": measured,
        "within_goal": measured is not None and measured <= interval * (checks_needed + 1),
        "requests_to_faulty_canary": rollback.get("requests_to_faulty_canary"),
        "steps": list(settings.steps),
        "vllm_ready_s": round(vllm_ready_s, 1),
        # The dtype v1 was started with: the manifest's, float32 on a CPU without bf16 (cpu_env).
        "vllm_dtype": applier.revisions["v1"].cmd.env.get("DTYPE"),
        "total_s": round(time.monotonic() - t0, 1),
        "user_requests": users.sent if users else 0,
        "user_answers": {
            f"{k[0]} {k[1]}".strip(): v for k, v in (users.answers if users else {}).items()
        },
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
        "scenarios": records,
        "applied": summary(applier.history),
        "gitops_log": git(remote, "log", "--reverse", "--format=%s", "main").splitlines(),
        "stand_ins": {
            "Argo CD": "taigimed.rollout.local.LocalApplier (kubectl kustomize + start revisions)",
            "Knative traffic split": "taigimed.rollout.local.Splitter (HTTP proxy)",
        },
    }
    write_json(settings.results, out)
    say(f"results in {settings.results}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m taigimed.rollout.rehearsal",
        description="Rehearse a canary rollout end to end on this machine (pipeline, GitOps "
        "commit, vLLM + CPU runtimes, guard, Prometheus, rollout steps): a faulty candidate is "
        "rolled back, a healthy one promoted. Prints each step; writes "
        "bench/results/rollout_rehearsal.json.",
    )
    parser.add_argument("--workdir", type=Path, default=REPO_ROOT / "runs/rehearsal")
    parser.add_argument("--interval", type=int, default=30, help="seconds per analysis step")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument(
        "--scenario", action="append", choices=["rollback", "promote"], help="default: both"
    )
    args = parser.parse_args(argv)
    from taigimed.utils import setup_logging

    setup_logging("WARNING")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.workdir.exists():
        shutil.rmtree(args.workdir)
    settings = Settings(workdir=args.workdir, interval_s=args.interval, results=args.results)
    out = rehearse(settings, tuple(args.scenario or ("rollback", "promote")))
    outcomes = {r["scenario"]: r["outcome"] for r in out["scenarios"]}
    ok = (
        outcomes.get("rollback", "rolled_back") == "rolled_back"
        and outcomes.get("promote", "promoted") == "promoted"
    )
    say(
        f"rehearsal {'passed' if ok else 'FAILED'} in {out['total_s']:.0f} s: {outcomes}; fault to "
        f"weight 0 {out['seconds_fault_to_weight_0']} s (goal <= {out['goal_s']} s), "
        f"{out['requests_to_faulty_canary']} requests reached the faulty canary"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
