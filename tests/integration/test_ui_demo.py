"""``taigimed ui-demo`` starts a served model with answers waiting on the desk, prints the page
URLs and a reviewer token, and stops its servers on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ui_demo_serves_both_pages_with_held_answers(tmp_path):
    port, predictor_port = free_port(), free_port()
    command = [sys.executable, "-m", "taigimed.cli", "ui-demo", "--model", "tiny-random-llama"]
    command += ["--port", str(port), "--predictor-port", str(predictor_port)]
    command += ["--store-dir", str(tmp_path), "--max-tokens", "8"]
    log = (tmp_path / "ui-demo.log").open("w+")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
    try:
        deadline = time.monotonic() + 300
        token = None
        while time.monotonic() < deadline and token is None:
            assert proc.poll() is None, (tmp_path / "ui-demo.log").read_text()[-3000:]
            found = re.search(r"reviewer token (\S+)", (tmp_path / "ui-demo.log").read_text())
            token = found.group(1) if found else None
            time.sleep(0.5)
        output = (tmp_path / "ui-demo.log").read_text()
        assert token, output[-3000:]
        base = f"http://127.0.0.1:{port}"
        assert f"patient chat   {base}/ui/" in output
        assert f"review desk    {base}/ui/review" in output
        assert httpx.get(f"{base}/ui/", timeout=10).status_code == 200
        assert httpx.get(f"{base}/v1/review/pending", timeout=10).status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        pending = httpx.get(f"{base}/v1/review/pending", headers=auth, timeout=10).json()
        assert pending["backlog"] >= 3  # the three topic questions at least
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        log.close()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/ui/", timeout=2)
