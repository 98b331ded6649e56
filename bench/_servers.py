"""Starting our own servers for a benchmark, and the questions the load benchmarks send.

Light on purpose (no torch import): the load benchmarks only drive HTTP. A server is started
with ``--port 0 --port-file`` so two runs never race for a port, and is ready when its KServe
readiness route answers 200.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

# Ordinary questions: no red flag, referral or review topic, so every one reaches the model.
QUESTIONS = [
    "感冒的時陣愛按怎歇睏？",
    "How much water should an adult drink each day?",
    "喉嚨痛會使食啥物？",
    "What are common causes of a mild headache?",
    "血壓懸的人食物愛注意啥？",
    "Why is regular exercise good for the heart?",
    "睏袂去的時陣有啥物好習慣？",
    "How can I tell a cold from the flu?",
]


@dataclass
class Server:
    """One started server: its process, log file, URL and how long it took to be ready."""

    proc: subprocess.Popen
    log: IO[bytes]
    url: str
    ready_s: float

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def start(
    module: str, args: list[str], tmp: Path, env: dict | None = None, timeout_s: float = 300
) -> Server:
    """``python -m module --host 127.0.0.1 --port 0 --port-file … args``, once it is ready."""
    port_file = tmp / f"{module.rsplit('.', 1)[-1]}-{time.monotonic_ns()}.json"
    log = open(port_file.with_suffix(".log"), "wb")  # noqa: SIM115 (closed in Server.stop)
    cmd = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", "0"]
    cmd += ["--port-file", str(port_file), *args]
    started = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    url = None
    while time.monotonic() - started < timeout_s:
        if proc.poll() is not None:
            log.close()
            raise RuntimeError(f"{module} exited:\n{Path(log.name).read_text()[-2000:]}")
        if url is None and port_file.is_file():
            with contextlib.suppress(ValueError, KeyError):
                url = f"http://127.0.0.1:{json.loads(port_file.read_text())['port']}"
        if url:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    return Server(proc, log, url, time.monotonic() - started)
        time.sleep(0.3)
    proc.kill()
    log.close()
    raise TimeoutError(f"{module} not ready in {timeout_s:.0f} s")
