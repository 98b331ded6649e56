"""Issue #15 findings pinned as fixed, over HTTP against real servers on 127.0.0.1.

The predictor here runs with ``TAIGIMED_PREDICTOR_TOKENS`` set, so every route but the probes
and /metrics needs the token: KServe's own v1/v2 routes included (finding 1). The exact requests
of the issue are among these (the unload, the lone surrogate, 10,000-deep JSON, ``prompt: ""``,
``"stream": 0``, ``"seed": false``, ``"temperature": false``, a 1 MB body).
"""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

from tests.integration.test_serve_http import MODEL, VERSION, metric, start_predictor

pytestmark = pytest.mark.slow

TOKEN = "predictor-secret"
AUTH = {"authorization": f"Bearer {TOKEN}"}
CHAT = "/openai/v1/chat/completions"
USER = [{"role": "user", "content": "頭殼痛"}]


@pytest.fixture(scope="module")
def predictor(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hardened-predictor")
    overrides = ("predictor.max_batch_size=2", "limits.max_queue_wait_s=1.0")
    env = {"TAIGIMED_PREDICTOR_TOKENS": TOKEN}
    server = start_predictor(tiny_model_dir, tmp, *overrides, env=env)
    yield server
    server.stop()


def post(url: str, path: str, body=None, raw: bytes | None = None, auth=True, **kw):
    headers = {"content-type": "application/json", **(AUTH if auth else {})}
    return httpx.post(f"{url}{path}", json=body, content=raw, headers=headers, timeout=60, **kw)


def test_finding1_kserve_routes_need_the_token(predictor):
    predict = "/v1/models/taigimed:predict"
    body = {"instances": [{"prompt": "a", "max_tokens": 2}]}
    assert post(predictor.url, predict, body, auth=False).status_code == 401
    assert post(predictor.url, "/v2/models/taigimed/infer", {}, auth=False).status_code == 401
    assert post(predictor.url, CHAT, {"messages": USER}, auth=False).status_code == 401
    ok = post(predictor.url, predict, body)
    assert ok.status_code == 200 and ok.json()["predictions"][0]["completion_tokens"] == 2
    # probes and the scrape stay open (the kubelet and Prometheus send no token)
    for path in ("/", "/v2/health/ready", "/v1/models/taigimed", "/metrics"):
        assert httpx.get(f"{predictor.url}{path}").status_code == 200, path


def test_finding1_a_1mb_body_is_refused_before_it_is_read(predictor):
    resp = post(predictor.url, "/v1/models/taigimed:predict", raw=b"{" + b" " * 1_000_000 + b"}")
    assert resp.status_code == 413 and "limit" in resp.json()["error"]["message"]
    # the server answered from the declared length: a client that has sent only the headers
    # gets its 413 without sending the body
    with socket.create_connection(("127.0.0.1", int(predictor.url.rsplit(":", 1)[1]))) as sock:
        sock.settimeout(10)
        sock.sendall(
            b"POST /v1/models/taigimed:predict HTTP/1.1\r\nhost: x\r\n"
            b"content-type: application/json\r\ncontent-length: 1000000\r\n"
            + f"authorization: Bearer {TOKEN}\r\n\r\n".encode()
        )
        assert sock.recv(4096).startswith(b"HTTP/1.1 413")


def test_finding2_nobody_can_unload_the_model(predictor):
    for action in ("unload", "load"):
        for auth in (False, True):
            resp = post(predictor.url, f"/v2/repository/models/taigimed/{action}", {}, auth=auth)
            assert resp.status_code in (401, 404), (action, auth, resp.status_code)
    assert httpx.get(f"{predictor.url}/v2/health/ready").status_code == 200
    answer = post(predictor.url, CHAT, {"messages": USER, "max_tokens": 2})
    assert answer.status_code == 200


def test_finding2_readiness_is_false_when_the_model_is_not_loaded(tiny_model_dir):
    """The in-process app: stop the model as an unload would; every readiness probe says no."""
    from fastapi.testclient import TestClient

    from taigimed.serve.predictor import build_predictor_app

    app, llm = build_predictor_app(tiny_model_dir, MODEL, VERSION)
    with TestClient(app) as client:
        assert client.get("/v2/health/ready").status_code == 200
        llm.stop()
        assert client.get("/v2/health/ready").status_code == 503
        assert client.get("/v2/models/taigimed/ready").status_code == 503
        assert client.get("/v1/models/taigimed").status_code == 503


@pytest.mark.parametrize(
    ("path", "raw", "needle"),
    [
        (CHAT, b'{"messages": [{"role": "user", "content": "\\ud800"}]}', "surrogate"),
        ("/openai/v1/completions", b'{"prompt": "\\ud800"}', "surrogate"),
        ("/v1/models/taigimed:predict", b'{"instances": [{"prompt": "\\ud800"}]}', "surrogate"),
        (CHAT, b'{"messages": ' + b"[" * 10000 + b"]" * 10000 + b"}", "levels deep"),
        ("/v1/models/taigimed:predict", b"[" * 10000 + b"]" * 10000, "levels deep"),
        ("/openai/v1/completions", b'{"prompt": ""}', "prompt"),
        (CHAT, b'{"messages": [{"role": "user", "content": "  "}]}', "whitespace"),
        (CHAT, b'{"messages": [{"role": "user", "content": "x"}], "stream": 0}', "stream"),
        (CHAT, b'{"messages": [{"role": "user", "content": "x"}], "seed": false}', "seed"),
        (CHAT, b'{"messages": [{"role": "user", "content": "x"}], "temperature": false}', "temp"),
    ],
)
def test_finding4_bad_input_is_a_400_with_a_reason_never_a_reset(predictor, path, raw, needle):
    resp = post(predictor.url, path, raw=raw)
    assert resp.status_code == 400, resp.text
    assert needle in resp.json()["error"]["message"]
    # the connection survives: the same keep-alive client goes on
    with httpx.Client(base_url=predictor.url, headers=AUTH, timeout=60) as client:
        assert client.post(path, content=raw, headers={"content-type": "application/json"})
        assert client.get("/v2/health/live").status_code == 200


def test_finding5_models_root_is_no_filesystem_path(predictor):
    models = httpx.get(f"{predictor.url}/openai/v1/models", headers=AUTH).json()["data"]
    assert [m["root"] for m in models] == [MODEL]


def test_finding3_disconnected_client_leaves_the_batch_and_gauges_return_to_0(predictor):
    """A plain request abandoned after 1 s stops generating; queue and batch gauges go to 0."""
    body = {"prompt": "a", "max_tokens": 1900, "ignore_eos": True}

    async def abandon():
        async with httpx.AsyncClient(base_url=predictor.url, headers=AUTH) as client:
            with pytest.raises(httpx.TimeoutException):
                await client.post("/openai/v1/completions", json=body, timeout=1.0)

    before = metric(predictor.url, "taigimed_predictor_generated_tokens_total")
    asyncio.run(abandon())
    deadline = time.monotonic() + 30
    while metric(predictor.url, "taigimed_predictor_running_sequences") > 0:
        assert time.monotonic() < deadline, "the abandoned request is still decoding"
        time.sleep(0.2)
    generated = metric(predictor.url, "taigimed_predictor_generated_tokens_total") - before
    time.sleep(1.0)
    after = metric(predictor.url, "taigimed_predictor_generated_tokens_total") - before
    assert after == generated < 1900  # stopped early, and stays stopped
    assert metric(predictor.url, "taigimed_predictor_queue_depth") == 0


def test_finding3_excess_load_is_shed_at_once_with_retry_after(predictor):
    """2 batch slots and a 1 s wait limit: a burst of 12 long requests is partly refused (429,
    Retry-After) instead of queueing; the accepted ones finish; all gauges return to 0."""
    body = {"prompt": "a", "max_tokens": 400, "ignore_eos": True}
    for _ in range(2):  # the slot time is measured on this workload, not the short ones before
        assert post(predictor.url, "/openai/v1/completions", body).status_code == 200

    async def burst():
        async with httpx.AsyncClient(base_url=predictor.url, headers=AUTH, timeout=120) as c:
            return await asyncio.gather(
                *(c.post("/openai/v1/completions", json=body) for _ in range(12))
            )

    responses = asyncio.run(burst())
    codes = [r.status_code for r in responses]
    assert set(codes) == {200, 429}, codes
    shed = [r for r in responses if r.status_code == 429]
    assert all(int(r.headers["retry-after"]) >= 1 for r in shed)
    assert all("capacity" in r.json()["error"]["message"] for r in shed)
    for name in ("taigimed_predictor_running_sequences", "taigimed_predictor_queue_depth"):
        assert metric(predictor.url, name) == 0, name
