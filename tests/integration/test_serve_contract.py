"""The guard's contract (``/openapi.json``) against a real guard + predictor on 127.0.0.1.

A schemathesis run of >= 1,000 generated cases (examples and fuzzing phases, bounded by
``--max-time``) must find no 5xx and no response that breaks the published schema: status code,
content type, headers and body. The guard-side findings of issue #15 are pinned here too: KServe
routes behind the token, ``offset=10**30`` on the review list, the published document itself.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.integration.test_serve_http import MODEL, start_guard, start_predictor

pytestmark = pytest.mark.slow

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)
MIN_CASES = 1000


@pytest.fixture(scope="module")
def pair(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("contract")
    cheap = "predictor.default_max_tokens=8"  # generated requests stay cheap
    predictor = start_predictor(tiny_model_dir, tmp, "predictor.max_batch_size=4", cheap)
    guard = start_guard(predictor, tmp, "review.confidence_threshold=0.0", "limits.max_tokens=16")
    yield predictor, guard, tmp
    guard.stop()
    predictor.stop()


def test_guard_publishes_every_route_with_its_models(pair):
    _, guard, _ = pair
    spec = httpx.get(f"{guard.url}/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/openai/v1/chat/completions",
        "/openai/v1/completions",
        "/openai/v1/models",
        "/v1/models/{model_name}:predict",
        "/v1/review/pending",
        "/v1/review/{session_id}/approve",
        "/v1/review/{session_id}/reject",
        "/v1/review/export",
        "/v1/sessions/{session_id}",
        "/v1/feedback",
        "/v2/health/ready",
    ):
        assert path in paths, path
    chat = paths["/openai/v1/chat/completions"]["post"]
    body = chat["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    assert body.endswith("/ChatCompletionRequest")
    assert chat["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ChatCompletion"
    )
    assert {"400", "401", "413", "429", "503"} <= set(chat["responses"])
    assert not any(p.startswith("/v2/repository") for p in paths)


def test_guard_kserve_predict_needs_the_token(pair, tmp_path):
    predictor, _, _ = pair
    guard = start_guard(predictor, tmp_path, env={"TAIGIMED_API_TOKENS": "client"})
    try:
        url = f"{guard.url}/v1/models/{MODEL}:predict"
        body = {"instances": ["頭殼痛"]}
        assert httpx.post(url, json=body, timeout=60).status_code == 401
        authed = httpx.post(url, json=body, headers={"authorization": "Bearer client"}, timeout=60)
        assert authed.status_code == 200
        big = httpx.post(url, content=b"x" * 1_000_000, headers={"authorization": "Bearer client"})
        assert big.status_code == 413
    finally:
        guard.stop()


def test_review_list_offset_10_to_the_30_is_400(pair):
    _, guard, _ = pair
    resp = httpx.get(f"{guard.url}/v1/review/pending", params={"offset": 10**30})
    assert resp.status_code == 400 and "offset" in resp.json()["error"]["message"]
    ok = httpx.get(f"{guard.url}/v1/review/pending", params={"offset": 10})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("/openai/v1/chat/completions", b'{"messages": [{"role": "user", "content": "\\ud800"}]}'),
        ("/openai/v1/completions", b'{"prompt": "\\ud800"}'),
        ("/v1/feedback", b'{"session_id": "\\ud800", "rating": "up"}'),
        ("/openai/v1/chat/completions", b'{"messages": ' + b"[" * 10000 + b"]" * 10000 + b"}"),
        ("/openai/v1/completions", b'{"prompt": ""}'),
        ("/openai/v1/completions", b'{"prompt": "\\u0013"}'),  # tokenizes to nothing
    ],
)
def test_guard_bad_input_is_400_not_500_or_502(pair, path, raw):
    _, guard, _ = pair
    resp = httpx.post(
        f"{guard.url}{path}", content=raw, headers={"content-type": "application/json"}
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["message"]


def test_schemathesis_finds_no_5xx_and_no_schema_violation(pair):
    _, guard, tmp = pair
    exe = Path(sys.executable).with_name("schemathesis")
    if not exe.is_file():
        exe = Path(shutil.which("schemathesis") or "schemathesis")
    report = tmp / "schemathesis.json"
    cmd = [
        str(exe),
        "run",
        f"{guard.url}/openapi.json",
        "--checks",
        CHECKS,
        "--phases",
        "examples,fuzzing",  # the coverage phase crashed inside schemathesis 4.32.5 (KeyError)
        "--max-examples",
        "60",
        "--workers",
        "2",
        "--seed",
        "15",
        "--request-timeout",
        "60",
        "--max-time",
        "420",
        "--no-color",
        "--report",
        "ndjson",
        "--report-ndjson-path",
        str(report),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    log = out.stdout + out.stderr
    generated = re.search(r"(\d+) generated", log)
    assert generated, log[-4000:]
    assert int(generated.group(1)) >= MIN_CASES, log[-4000:]
    assert out.returncode == 0, log[-6000:]
    assert report.is_file() and json.loads(report.read_text().splitlines()[0])
