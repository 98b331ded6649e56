"""`taigimed serve` starts predictor + guard and stops both; `taigimed chat --once` asks."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from taigimed.guardrails import has_disclaimer


class ServeProcess:
    """``taigimed serve`` on ephemeral ports; the URLs are read from what it prints."""

    def __init__(self, model: str, tmp, *overrides: str, timeout: float = 240) -> None:
        cmd = [sys.executable, "-m", "taigimed.cli", "serve", "--model", model]
        cmd += ["--port", "0", "--predictor-port", "0", "--model-version", "clitest"]
        cmd += [f"review.store_url=sqlite:///{tmp / 'review.db'}", *overrides]
        env = {**os.environ, "TAIGIMED_API_TOKENS": "", "TAIGIMED_REVIEWER_TOKENS": ""}
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        self.lines: list[str] = []
        self.guard = self.predictor = ""
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not self.guard and time.monotonic() < deadline:
            assert self.proc.poll() is None, "\n".join(self.lines[-30:])
            time.sleep(0.2)
        assert self.guard, "\n".join(self.lines[-30:])

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip())
            if m := re.match(r"predictor\s+(http://\S+)", line):
                self.predictor = m.group(1)
            if m := re.match(r"guard\s+(http://\S+)/openai/v1", line):
                self.guard = m.group(1)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def chat_once(url: str, question: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "taigimed.cli", "chat", "--url", url, "--once", question],
        capture_output=True,
        text=True,
        timeout=120,
    )


def gone(url: str) -> bool:
    try:
        httpx.get(f"{url}/", timeout=2)
    except httpx.HTTPError:
        return True
    return False


def test_serve_starts_both_and_chat_once_prints_status(tiny_model_dir, tmp_path):
    server = ServeProcess(str(tiny_model_dir), tmp_path)
    try:
        assert server.guard.startswith("http://127.0.0.1:")
        assert server.predictor.startswith("http://127.0.0.1:")
        out = chat_once(server.guard, "阮老爸胸坎痛閣喘袂過")
        assert out.returncode == 0, out.stderr
        assert "119" in out.stdout and "status: escalated" in out.stdout
        assert re.search(r"session: [0-9a-f]{32}", out.stdout)
        answered = chat_once(server.guard, "感冒欲按怎？")
        assert answered.returncode == 0 and "confidence: " in answered.stdout
    finally:
        code = server.stop()
    assert code == 0
    assert gone(server.guard) and gone(server.predictor)


def test_chat_once_reports_unreachable_server():
    out = chat_once("http://127.0.0.1:9", "hi")
    assert out.returncode == 1 and "cannot reach" in out.stderr


@pytest.mark.slow
def test_smollm2_served_answers_and_batching_keeps_answers(smollm2_dir, tmp_path):
    """The real model through both processes: concurrent answers equal one-at-a-time answers."""
    server = ServeProcess(str(smollm2_dir), tmp_path, "review.confidence_threshold=0.0")
    try:
        client = openai.OpenAI(base_url=f"{server.guard}/openai/v1", api_key="x", max_retries=0)
        # The languages the service is for (English short questions are routine too since
        # safety suite v3, docs/serving.md, but the service is for Taigi and Mandarin speakers).
        questions = ["發燒是什麼？", "按怎較好睏？", "為什麼要多喝水？"]

        def ask(q: str):
            return client.chat.completions.create(
                model="taigimed", messages=[{"role": "user", "content": q}], max_tokens=24
            )

        alone = [ask(q) for q in questions]
        with ThreadPoolExecutor(len(questions)) as pool:
            together = list(pool.map(ask, questions))
        for a, b in zip(alone, together, strict=True):
            assert a.choices[0].message.content == b.choices[0].message.content
            assert has_disclaimer(a.choices[0].message.content)
            tag = a.model_extra["taigimed"]
            assert tag["status"] == "answered" and 0 < tag["confidence"] < 1
        stream = client.chat.completions.create(
            model="taigimed",
            messages=[{"role": "user", "content": questions[0]}],
            max_tokens=24,
            stream=True,
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == alone[0].choices[0].message.content
    finally:
        assert server.stop() == 0
