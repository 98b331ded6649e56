"""Start a KServe ServingRuntime's container command on this machine, from the manifest itself.

The vLLM runtime (``manifests/base/servingruntime-vllm.yaml``) and the CPU runtime (the dev
overlay's ``servingruntime-cpu.yaml``) are tested and rehearsed by running *their own* command,
arguments and environment, read out of the YAML, with only what a pod provides replaced: the
model folder KServe's storage-initializer fills (``/mnt/models``), the listen address and port,
the interpreter (a venv's python for ``python``/``python3``) and ``/tmp`` (an emptyDir in the
pod, a private folder here). A change to the manifest is therefore a change to what the tests
run; a manifest the substitutions no longer fit fails loudly instead of being run half-edited.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

MODEL_MOUNT = "/mnt/models"  # where KServe's storage-initializer puts the model
POD_TMP = "/tmp"  # the runtime's emptyDir
CPUINFO = Path("/proc/cpuinfo")  # where Linux lists the CPU's instruction-set flags


def cpu_env(cpuinfo: Path = CPUINFO) -> dict[str, str]:
    """What vLLM needs on a CPU machine beyond its manifest: no hub, a 1 GiB KV cache, its
    compile cache kept across starts (in a pod it is an emptyDir; here a second start reuses
    the compiled graphs instead of spending a minute on them again), and ``DTYPE=float32`` on a
    CPU without bfloat16 instructions.

    Why the dtype: the manifest's ``bfloat16`` is for GPUs (its own comment names the choice
    per card). On an AVX2-only CPU vLLM emulates it: on an AMD EPYC with AVX2 alone, SmolLM2 gave
    6.2 tokens/s at one client and 6.8 at four in bfloat16, 16.9 and 32.7 in float32 (16 tokens a
    request, 2026-12-04). At that speed the rehearsal's stable answered at p95 16-37 s and its
    canary never saw enough traffic to be judged. A node's dtype is an env value, as a GPU
    node pool with older cards would set ``float16``; the command and arguments are unchanged."""
    from taigimed.models import cache_root

    env = {
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_CACHE_ROOT": str(cache_root() / "vllm-cache"),
    }
    if not cpu_has_bf16(cpuinfo):
        env["DTYPE"] = "float32"
    return env


def cpu_has_bf16(cpuinfo: Path = CPUINFO) -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX-BF16). Unreadable
    (not Linux): assume it does, so the manifest's value is kept."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return True
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


class RuntimeManifestError(RuntimeError):
    """The ServingRuntime YAML does not have the shape this launcher substitutes into."""


@dataclass
class RuntimeCommand:
    """A process to start: ``argv`` with ``env`` added to the caller's environment."""

    name: str
    argv: list[str]
    env: dict[str, str]


def load_runtime(path: Path) -> dict[str, Any]:
    """The ServingRuntime object from ``path`` (a file that may hold several documents)."""
    for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
        if isinstance(doc, dict) and doc.get("kind") == "ServingRuntime":
            return doc
    raise RuntimeManifestError(f"{path}: no ServingRuntime in it")


def _replace(text: str, old: str, new: str, path: Path) -> str:
    if old not in text:
        raise RuntimeManifestError(f"{path}: expected {old!r} in the container command")
    return text.replace(old, new)


def runtime_command(
    manifest: Path,
    model_dir: Path,
    port: int,
    version: str,
    python: str,
    workdir: Path,
    extra_env: dict[str, str] | None = None,
) -> RuntimeCommand:
    """The runtime's container command for serving ``model_dir`` as ``version`` on
    127.0.0.1:``port``, with the container's literal env values (``valueFrom`` secrets are
    optional ones and left out) and ``TAIGIMED_MODEL_VERSION`` as the InferenceService sets it."""
    runtime = load_runtime(manifest)
    container = runtime["spec"]["containers"][0]
    env = {
        e["name"]: str(e["value"]).replace(POD_TMP, str(workdir))
        for e in container.get("env") or []
        if "value" in e
    }
    env["TAIGIMED_MODEL_VERSION"] = version
    env.update(extra_env or {})
    command = list(container.get("command") or [])
    args = [str(a) for a in container.get("args") or []]
    if command[:2] == ["/bin/sh", "-c"]:
        # One shell line (the vLLM runtime): substitute in the text, let sh expand the rest.
        script = " ".join(args)
        script = _replace(script, MODEL_MOUNT, str(model_dir), manifest)
        script = _replace(script, "--host 0.0.0.0", "--host 127.0.0.1", manifest)
        script = _replace(script, "--port 8080", f"--port {port}", manifest)
        script = re.sub(r"\bpython3?\b(?= )", python, script)
        return RuntimeCommand(runtime["metadata"]["name"], ["/bin/sh", "-c", script], env)
    # An exec-form command (the CPU runtime): $(VAR) references are expanded as Kubernetes does.
    argv = [python if c in ("python", "python3") else c for c in command] + args
    values = {MODEL_MOUNT: str(model_dir), "0.0.0.0": "127.0.0.1", "8080": str(port)}
    for old in values:
        if old not in argv:
            raise RuntimeManifestError(f"{manifest}: expected argument {old!r}")
    argv = [values.get(a, a) for a in argv]
    argv = [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in argv]
    return RuntimeCommand(runtime["metadata"]["name"], argv, env)


def process_env(cmd: RuntimeCommand) -> dict[str, str]:
    """The caller's environment plus the runtime's (for ``subprocess.Popen(env=...)``)."""
    return {**os.environ, **cmd.env}


class RuntimeProcess:
    """One started runtime: its process (own process group, so ``stop`` ends its workers
    too), its log file and its base URL."""

    def __init__(self, cmd: RuntimeCommand, port: int, log_path: Path) -> None:
        import subprocess

        self.cmd = cmd
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            cmd.argv,
            env=process_env(cmd),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def tail(self, chars: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_ready(self, path: str, timeout_s: float) -> float:
        """Poll ``GET path`` until 200 (the runtime's readinessProbe); return the seconds it
        took. Raises with the log's tail when the process exits or the time runs out."""
        import time

        import httpx

        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise RuntimeError(f"{self.cmd.name} exited ({code}):\n{self.tail()}")
            try:
                if httpx.get(self.url + path, timeout=5).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(1.0)
        raise TimeoutError(f"{self.cmd.name} not ready in {timeout_s:.0f} s:\n{self.tail()}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM to the process group, SIGKILL after ``timeout_s``."""
        import signal
        import subprocess

        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        self._log.close()


def readiness_path(manifest: Path) -> str:
    """The runtime container's readinessProbe path (vLLM: /v1/models)."""
    container = load_runtime(manifest)["spec"]["containers"][0]
    return container["readinessProbe"]["httpGet"]["path"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for runtimes that cannot report an ephemeral one)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
