"""The GPU serving path's runtime, for real: vLLM (its CPU build, the same release as the GPU
image) started from manifests/base/servingruntime-vllm.yaml's own command, arguments and env,
with the guard in front configured as the InferenceService's transformer is.

vLLM runs from ``.venv-vllm`` (``make vllm-env``; it pins another transformers than .venv) and
serves SmolLM2-135M-Instruct from the local cache. It starts once for the module: about 100 s on
an idle 2-core machine, longer under load. What is checked is what the cluster relies on: the
official ``openai`` client (plain and streaming) through the guard, the guard labelling the
answering version from vLLM's first served name, and vLLM's own errors reaching the client as
the guard's 4xx with vLLM's reason.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from taigimed.serve.runtime import (
    RuntimeProcess,
    cpu_env,
    free_port,
    readiness_path,
    runtime_command,
)
from taigimed.utils import REPO_ROOT

pytestmark = pytest.mark.slow

MANIFEST = REPO_ROOT / "manifests/base/servingruntime-vllm.yaml"
VLLM_PYTHON = REPO_ROOT / ".venv-vllm/bin/python"
VERSION = "v7"
FALLBACK = "unknown"
# The guard as the InferenceService's transformer runs it (manifests/base/inferenceservice.yaml).
GUARD_ENV = {"TAIGIMED_PREDICTOR_OPENAI_PREFIX": "/v1", "TAIGIMED_PREDICTOR_HEALTH_CHECK": "false"}
QUESTION = "我這兩工咧咳嗽，喉嚨嘛小可仔痛，愛按怎照顧家己？"


@pytest.fixture(scope="module")
def vllm(tmp_path_factory, smollm2_dir) -> Iterator[RuntimeProcess]:
    if not VLLM_PYTHON.is_file():
        pytest.skip(f"{VLLM_PYTHON} is absent: run `make vllm-env` (make test does)")
    work = tmp_path_factory.mktemp("vllm")
    port = free_port()
    cmd = runtime_command(
        MANIFEST, smollm2_dir, port, VERSION, str(VLLM_PYTHON), work, extra_env=cpu_env()
    )
    runtime = RuntimeProcess(cmd, port, work / "vllm.log")
    try:
        seconds = runtime.wait_ready(readiness_path(MANIFEST), timeout_s=900)
        print(f"vLLM ready in {seconds:.0f} s (load {os.getloadavg()[0]:.1f})")
        yield runtime
    finally:
        runtime.stop()


@pytest.fixture(scope="module")
def guard(tmp_path_factory, vllm) -> Iterator[str]:
    work = tmp_path_factory.mktemp("guard")
    port_file = work / "guard.json"
    log = (work / "guard.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "taigimed.serve.guard",
            "--predictor-url",
            vllm.url,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            f"review.store_url=sqlite:///{work}/review.db",
            f"model_version={FALLBACK}",
        ],
        env={**os.environ, **GUARD_ENV},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        url = ""
        while time.monotonic() < deadline and proc.poll() is None:
            if port_file.is_file() and port_file.stat().st_size:
                info = json.loads(port_file.read_text())
                url = f"http://127.0.0.1:{info['port']}"
                try:
                    if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
        else:
            raise AssertionError((work / "guard.log").read_text()[-3000:])
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


@pytest.fixture(scope="module")
def client(guard) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{guard}/openai/v1", api_key="unused", timeout=300)


def test_runtime_runs_the_manifests_command(vllm):
    """What started is the manifest's command with the pod's values substituted, no copy."""
    script = vllm.cmd.argv[-1]
    for arg in ("--max-model-len", "--dtype", "--max-logprobs", "--gpu-memory-utilization"):
        assert arg in script
    assert "taigimed-${TAIGIMED_MODEL_VERSION" in script and "/mnt/models" not in script
    models = httpx.get(f"{vllm.url}/v1/models", timeout=30).json()
    names = {m["id"] for m in models["data"]}
    assert names == {f"taigimed-{VERSION}", "taigimed"}
    assert models["data"][0]["max_model_len"] == 4096


def test_chat_through_the_guard_names_the_answering_version(client):
    resp = client.chat.completions.create(
        model="taigimed", messages=[{"role": "user", "content": QUESTION}], max_tokens=24
    )
    extra = resp.model_extra["taigimed"]
    assert extra["model_version"] == VERSION, extra
    assert extra["status"] in ("answered", "needs_review")
    assert resp.choices[0].message.content
    assert resp.usage.completion_tokens > 0


def test_streaming_chat_through_the_guard(client):
    stream = client.chat.completions.create(
        model="taigimed",
        messages=[{"role": "user", "content": QUESTION}],
        max_tokens=24,
        stream=True,
    )
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces).strip()


def test_completions_through_the_guard(client):
    # A Taigi prompt: the language the service is for (docs/serving.md on English text).
    resp = client.completions.create(model="taigimed", prompt="感冒的時陣愛多啉水，", max_tokens=8)
    assert resp.choices[0].text
    assert resp.model_extra["taigimed"]["model_version"] == VERSION


def test_guard_metrics_carry_the_answering_version(client, guard):
    client.chat.completions.create(
        model="taigimed", messages=[{"role": "user", "content": QUESTION}], max_tokens=4
    )
    text = httpx.get(f"{guard}/metrics", timeout=30).text
    lines = [ln for ln in text.splitlines() if ln.startswith("taigimed_requests_total{")]
    chat_ok = [ln for ln in lines if 'route="chat"' in ln and 'status_code="200"' in ln]
    assert chat_ok and all(f'model_version="{VERSION}"' in ln for ln in chat_ok), lines


def test_a_vllm_error_reaches_the_client_as_the_guards_4xx(client, vllm):
    # The manifest's --max-logprobs 20 is vLLM's limit: 21 is vLLM's own 400 ...
    direct = httpx.post(
        f"{vllm.url}/v1/chat/completions",
        json={
            "model": "taigimed",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 1,
            "logprobs": True,
            "top_logprobs": 21,
        },
        timeout=120,
    )
    assert direct.status_code == 400, direct.text
    # ... and the guard refuses it itself before any model is asked, with the reason.
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="taigimed",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=1,
            logprobs=True,
            top_logprobs=21,
        )
    assert "top_logprobs" in str(refused.value)
    # A request the guard lets through but vLLM refuses (longer than --max-model-len 4096
    # tokens, within the guard's 8000-character limit) comes back as vLLM's 400, not a 5xx.
    # A routine question repeated: the triage detector escalates some repetitive text (「咳嗽」
    # said 3,500 times scores 0.91), and an escalation never reaches the model.
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(
            model="taigimed",
            messages=[{"role": "user", "content": "感冒的時陣愛按怎歇睏？" * 600}],
            max_tokens=8,
        )
    assert too_long.value.status_code == 400
    assert "4096" in str(too_long.value) or "context" in str(too_long.value).lower()


def test_top_logprobs_at_the_limit_are_served(vllm):
    resp = httpx.post(
        f"{vllm.url}/v1/chat/completions",
        json={
            "model": "taigimed",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 1,
            "logprobs": True,
            "top_logprobs": 20,
        },
        timeout=120,
    ).json()
    assert len(resp["choices"][0]["logprobs"]["content"][0]["top_logprobs"]) == 20
    assert resp["model"] == f"taigimed-{VERSION}"
