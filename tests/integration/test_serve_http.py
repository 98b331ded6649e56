"""The real predictor and guard, started as processes on 127.0.0.1 ephemeral ports, over HTTP.

One predictor (tiny random Llama) serves the whole module; guards are cheap (no model), so tests
that need other settings (auth, a killed store) start their own. The tiny model's answers are
gibberish with near-zero confidence, so the shared guard uses ``confidence_threshold=0`` (model
answers are "answered") and review is triggered by a configured topic instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from taigimed.guardrails import ESCALATION_MESSAGE, has_disclaimer

MODEL = "taigimed"
VERSION = "itest"
CONTRACT_METRICS = (
    "taigimed_requests_total",
    "taigimed_request_latency_seconds_bucket",
    "taigimed_escalations_total",
    "taigimed_reviews_queued_total",
    "taigimed_feedback_total",
    "taigimed_generated_tokens_total",
    "taigimed_review_backlog",
)


class Server:
    """A server process started with ``--port 0 --port-file``; knows its URL once bound."""

    def __init__(self, module: str, args: list[str], tmp: Path, env: dict | None = None) -> None:
        self.port_file = tmp / f"{module.rsplit('.', 1)[-1]}-{time.monotonic_ns()}.json"
        self.log = self.port_file.with_suffix(".log").open("wb")
        cmd = [sys.executable, "-m", module, "--host", "127.0.0.1", "--port", "0"]
        cmd += ["--port-file", str(self.port_file), *args]
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
        self.url = ""

    def wait_ready(self, timeout: float = 120) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.logs()
            if self.port_file.is_file() and not self.url:
                try:
                    info = json.loads(self.port_file.read_text())
                    self.url = f"http://{info['host']}:{info['port']}"
                except (ValueError, KeyError):
                    pass
            if self.url:
                try:
                    if httpx.get(f"{self.url}/v2/health/ready", timeout=2).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
            time.sleep(0.2)
        raise TimeoutError(f"not ready in {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def start_predictor(
    model_dir: Path,
    tmp: Path,
    *overrides: str,
    env: dict | None = None,
    version: str | None = VERSION,
) -> Server:
    """The tiny test model served as MODEL/``version`` on one torch thread (``version=None``:
    the predictor reads it from ``TAIGIMED_MODEL_VERSION``, as the manifests set it)."""
    args = ["--model-dir", str(model_dir), "--model-name", MODEL]
    args += ["--model-version", version] if version else []
    args += ["predictor.torch_threads=1", *overrides]
    return Server("taigimed.serve.predictor", args, tmp, env).wait_ready()


def start_guard(
    predictor: Server,
    tmp: Path,
    *overrides: str,
    env: dict | None = None,
    version: str = VERSION,
) -> Server:
    args = ["--predictor-url", predictor.url, "--model-name", MODEL, "--model-version", version]
    args += [f"review.store_url=sqlite:///{tmp / 'review.db'}", *overrides]
    clean = {"TAIGIMED_API_TOKENS": "", "TAIGIMED_REVIEWER_TOKENS": "", **(env or {})}
    return Server("taigimed.serve.guard", args, tmp, clean).wait_ready()


@pytest.fixture(scope="module")
def predictor(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predictor")
    overrides = ("predictor.max_batch_size=4", "predictor.max_queue=2")
    server = start_predictor(tiny_model_dir, tmp, *overrides)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def guard(predictor, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("guard")
    server = start_guard(
        predictor,
        tmp,
        "review.confidence_threshold=0.0",
        "review.topics=[懷孕]",
        "limits.max_tokens=400",
    )
    yield server
    server.stop()


def chat(url: str, content: str, **extra) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 8}
    return httpx.post(f"{url}/openai/v1/chat/completions", json={**body, **extra}, timeout=60)


def metric(url: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if not line.startswith(name + "{"):
            continue
        label_text, value = line[len(name) + 1 :].rsplit("} ", 1)
        if all(f'{k}="{v}"' in label_text for k, v in labels.items()):
            total += float(value)
    return total


def sse_events(resp: httpx.Response) -> list:
    events = []
    for line in resp.text.splitlines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


# -- predictor ------------------------------------------------------------------------------


def test_predictor_kserve_health_and_models(predictor):
    assert httpx.get(f"{predictor.url}/").json() == {"status": "alive"}
    assert httpx.get(f"{predictor.url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{predictor.url}/v2/models/{MODEL}/ready").json()["ready"] is True
    assert httpx.get(f"{predictor.url}/v1/models/{MODEL}").json() == {"name": MODEL, "ready": True}
    assert httpx.get(f"{predictor.url}/v2/models/nope/ready").status_code == 404
    models = httpx.get(f"{predictor.url}/openai/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == [MODEL]


def test_predictor_streaming_matches_plain_answer(predictor):
    """SSE chunks in vLLM's shape; the streamed text equals the plain (greedy) text."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "What helps a sore throat?"}],
        "max_tokens": 12,
        "logprobs": True,
    }
    url = f"{predictor.url}/openai/v1/chat/completions"
    plain = httpx.post(url, json=body, timeout=60).json()
    assert plain["object"] == "chat.completion"
    assert plain["usage"]["completion_tokens"] == len(plain["choices"][0]["logprobs"]["content"])
    resp = httpx.post(
        url, json={**body, "stream": True, "stream_options": {"include_usage": True}}, timeout=60
    )
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = sse_events(resp)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]
    assert chunks[-2]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[:-1])
    assert streamed == plain["choices"][0]["message"]["content"]


def test_predictor_text_completion_and_v1_predict(predictor):
    resp = httpx.post(
        f"{predictor.url}/openai/v1/completions",
        json={"model": MODEL, "prompt": "Fever is", "max_tokens": 5, "logprobs": 2},
        timeout=60,
    ).json()
    assert resp["object"] == "text_completion"
    lp = resp["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == 5
    assert all(len(top) == 2 for top in lp["top_logprobs"])
    v1 = httpx.post(
        f"{predictor.url}/v1/models/{MODEL}:predict",
        json={"instances": [{"prompt": "Fever is", "max_tokens": 5}]},
        timeout=60,
    ).json()
    assert v1["predictions"][0]["text"] == resp["choices"][0]["text"]


def test_predictor_answers_429_with_retry_after_when_queue_full(predictor):
    """4 running + 2 waiting fit; the rest are refused at once instead of piling up."""

    async def burst():
        async with httpx.AsyncClient(timeout=120) as client:
            body = {"model": MODEL, "prompt": "a", "max_tokens": 300, "ignore_eos": True}
            return await asyncio.gather(
                *(
                    client.post(f"{predictor.url}/openai/v1/completions", json=body)
                    for _ in range(12)
                )
            )

    responses = asyncio.run(burst())
    codes = sorted(r.status_code for r in responses)
    assert set(codes) == {200, 429}, codes
    refused = [r for r in responses if r.status_code == 429]
    assert all(r.headers.get("retry-after") for r in refused)
    assert all(
        r.json()["usage"]["completion_tokens"] == 300 for r in responses if r.status_code == 200
    )


# -- guard ----------------------------------------------------------------------------------


def test_guard_chat_answer_has_disclaimer_session_and_confidence(guard):
    resp = chat(guard.url, "感冒的時陣愛按怎歇睏？")
    assert resp.status_code == 200, resp.text
    data = resp.json()
    tag = data["taigimed"]
    assert tag["status"] == "answered" and tag["model_version"] == VERSION
    # The tiny random model answers with blank lines: empty, so confidence 0 (taigimed.quality)
    assert 0.0 <= tag["confidence"] <= 1.0
    assert has_disclaimer(data["choices"][0]["message"]["content"])
    assert data["usage"]["completion_tokens"] == 8
    session = httpx.get(f"{guard.url}/v1/sessions/{tag['session_id']}").json()
    assert session["status"] == "answered"
    assert session["answer"] == data["choices"][0]["message"]["content"]


def test_guard_kserve_health_and_v1_predict(guard):
    assert httpx.get(f"{guard.url}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{guard.url}/v2/models/{MODEL}/ready").json()["ready"] is True
    out = httpx.post(
        f"{guard.url}/v1/models/{MODEL}:predict",
        json={"instances": ["我胸坎痛"]},
        timeout=60,
    ).json()
    assert out["predictions"][0]["status"] == "escalated"


def test_openai_client_plain_and_streaming(guard):
    client = openai.OpenAI(base_url=f"{guard.url}/openai/v1", api_key="unused", max_retries=0)
    models = client.models.list()
    assert [m.id for m in models.data] == [MODEL]
    plain = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "喉嚨痛欲按怎？"}], max_tokens=6
    )
    assert has_disclaimer(plain.choices[0].message.content)
    assert plain.model_extra["taigimed"]["status"] == "answered"
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "喉嚨痛欲按怎？"}],
        max_tokens=6,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 6
    completion = client.completions.create(model=MODEL, prompt="感冒", max_tokens=4)
    assert has_disclaimer(completion.choices[0].text)


def test_escalation_answers_at_once_without_the_model(guard, predictor):
    before = metric(predictor.url, "taigimed_predictor_requests_total")
    esc_before = metric(guard.url, "taigimed_escalations_total", category="stroke")
    resp = chat(guard.url, "阮阿公忽然間喙歪，講話袂輪轉")
    data = resp.json()
    assert data["taigimed"]["status"] == "escalated"
    text = data["choices"][0]["message"]["content"]
    assert ESCALATION_MESSAGE in text and "119" in text and has_disclaimer(text)
    assert metric(predictor.url, "taigimed_predictor_requests_total") == before
    assert metric(guard.url, "taigimed_escalations_total", category="stroke") == esc_before + 1
    streamed = chat(guard.url, "我想欲自殺", stream=True)
    events = sse_events(streamed)
    assert events[-1] == "[DONE]"
    assert events[-2]["taigimed"]["status"] == "escalated"
    joined = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert "1925" in joined  # the suicide-prevention line


def test_review_round_trip_approve_reject_and_export(guard):
    # Held for review by topic; no medicine named (that would be a referral, not a review).
    question = "我懷孕三個月，感冒愛按怎歇睏較好？我的 email 是 a.lin@example.com"
    held = chat(guard.url, question).json()
    tag = held["taigimed"]
    assert tag["status"] == "needs_review"
    sid = tag["session_id"]
    pending = httpx.get(f"{guard.url}/v1/review/pending").json()
    item = next(p for p in pending["data"] if p["session_id"] == sid)
    assert item["review_reasons"] == ["topic:懷孕"]
    assert "a.lin@example.com" not in json.dumps(pending) and "[EMAIL]" in item["question"]
    # The client never sees the held draft.
    client_view = httpx.get(f"{guard.url}/v1/sessions/{sid}").json()
    assert client_view["status"] == "needs_review" and client_view["answer"] is None
    assert item["draft_answer"] not in held["choices"][0]["message"]["content"]

    edited = "有身的時陣食藥仔進前，請先問婦產科醫生抑是藥師。"
    ok = httpx.post(
        f"{guard.url}/v1/review/{sid}/approve", json={"reviewer": "dr-lin", "answer": edited}
    )
    assert ok.status_code == 200 and ok.json()["status"] == "approved"
    view = httpx.get(f"{guard.url}/v1/sessions/{sid}").json()
    assert view["status"] == "approved" and view["answer"].startswith(edited)
    assert has_disclaimer(view["answer"])
    again = httpx.post(f"{guard.url}/v1/review/{sid}/reject", json={"reviewer": "x", "reason": "y"})
    assert again.status_code == 409

    other = chat(guard.url, "懷孕會使運動無？").json()["taigimed"]["session_id"]
    no_reason = httpx.post(f"{guard.url}/v1/review/{other}/reject", json={"reviewer": "dr-lin"})
    assert no_reason.status_code == 400 and "reason" in no_reason.json()["error"]["message"]
    rejected = httpx.post(
        f"{guard.url}/v1/review/{other}/reject", json={"reviewer": "dr-lin", "reason": "off topic"}
    )
    assert rejected.json()["status"] == "rejected"
    assert httpx.get(f"{guard.url}/v1/sessions/{other}").json()["review_note"] == "off topic"
    assert (
        httpx.post(f"{guard.url}/v1/review/nope/approve", json={"reviewer": "a"}).status_code == 404
    )

    export = httpx.get(f"{guard.url}/v1/review/export")
    assert export.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(x) for x in export.text.splitlines()]
    line = next(x for x in lines if x["id"] == f"review-{sid}")
    assert line["source"] == "clinician_review" and line["edited"] is True
    assert line["messages"][-1] == {"role": "assistant", "content": edited}
    assert any(m["role"] == "user" and "[EMAIL]" in m["content"] for m in line["messages"])
    assert not any(x["id"] == f"review-{other}" for x in lines)


def test_feedback_is_stored_scrubbed_and_counted(guard):
    sid = chat(guard.url, "腹肚痛").json()["taigimed"]["session_id"]
    before = metric(guard.url, "taigimed_feedback_total", rating="down")
    resp = httpx.post(
        f"{guard.url}/v1/feedback",
        json={"session_id": sid, "rating": "down", "comment": "call me 0912-345-678"},
    )
    assert resp.status_code == 201
    session = httpx.get(f"{guard.url}/v1/sessions/{sid}").json()
    assert session["feedback"][0]["rating"] == "down"
    assert session["feedback"][0]["comment"] == "call me [PHONE]"
    assert metric(guard.url, "taigimed_feedback_total", rating="down") == before + 1
    bad = httpx.post(f"{guard.url}/v1/feedback", json={"session_id": sid, "rating": "meh"})
    assert bad.status_code == 400
    missing = httpx.post(f"{guard.url}/v1/feedback", json={"session_id": "nope", "rating": "up"})
    assert missing.status_code == 404


def test_metrics_exposed_with_model_version_and_incremented(guard):
    labels = {"model_version": VERSION, "route": "chat", "status_code": "200"}
    before = metric(guard.url, "taigimed_requests_total", **labels)
    tokens = metric(guard.url, "taigimed_generated_tokens_total", model_version=VERSION)
    chat(guard.url, "頭殼痛")
    assert metric(guard.url, "taigimed_requests_total", **labels) == before + 1
    assert metric(guard.url, "taigimed_generated_tokens_total", model_version=VERSION) == tokens + 8
    text = httpx.get(f"{guard.url}/metrics").text
    for name in CONTRACT_METRICS:
        series = [x for x in text.splitlines() if x.startswith(name + "{")]
        assert series, f"{name} missing"
        assert all(f'model_version="{VERSION}"' in x for x in series), name


def test_rollout_probes_are_counted_apart_from_user_requests(guard):
    """A request with the rollout's probe header counts under ``chat_probe``, never ``chat``."""
    user = {"model_version": VERSION, "route": "chat", "status_code": "200"}
    probe = {**user, "route": "chat_probe"}
    users_before = metric(guard.url, "taigimed_requests_total", **user)
    probes_before = metric(guard.url, "taigimed_requests_total", **probe)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "頭殼痛"}], "max_tokens": 4}
    resp = httpx.post(
        f"{guard.url}/openai/v1/chat/completions",
        json=body,
        headers={"x-taigimed-probe": "rollout"},
        timeout=60,
    )
    assert resp.status_code == 200
    assert metric(guard.url, "taigimed_requests_total", **probe) == probes_before + 1
    assert metric(guard.url, "taigimed_requests_total", **user) == users_before


@pytest.mark.parametrize(
    ("payload", "status", "needle"),
    [
        (b'{"model": "taigimed", "messages": [', 400, "not valid JSON"),
        (b'{"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}', 404, "gpt-4"),
        (b'{"model": "taigimed"}', 400, "messages"),
        (
            b'{"model": "taigimed", "messages": [{"role": "user", "content": "hi"}], '
            b'"max_tokens": 9999}',
            400,
            "max_tokens",
        ),
        (b'{"model": "taigimed", "messages": [{"role": "robot", "content": "hi"}]}', 400, "role"),
        (
            b'{"model": "taigimed", "messages": [{"role": "user", "content": "'
            + b"x" * 70000
            + b'"}]}',
            413,
            "limit",
        ),
    ],
)
def test_bad_input_gets_4xx_with_reason(guard, payload, status, needle):
    resp = httpx.post(
        f"{guard.url}/openai/v1/chat/completions",
        content=payload,
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert resp.status_code == status, resp.text
    assert needle in resp.json()["error"]["message"]
    code = metric(guard.url, "taigimed_requests_total", route="chat", status_code=str(status))
    assert code >= 1


def test_auth_on_requires_tokens(predictor, tmp_path):
    env = {"TAIGIMED_API_TOKENS": "client-1,client-2", "TAIGIMED_REVIEWER_TOKENS": "doc-1"}
    server = start_guard(predictor, tmp_path, env=env)
    try:
        assert chat(server.url, "感冒").status_code == 401
        wrong = httpx.post(
            f"{server.url}/openai/v1/chat/completions",
            json={"model": MODEL, "messages": [{"role": "user", "content": "感冒"}]},
            headers={"Authorization": "Bearer nope"},
        )
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        client = openai.OpenAI(
            base_url=f"{server.url}/openai/v1", api_key="client-2", max_retries=0
        )
        answer = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "我胸坎痛"}], max_tokens=4
        )
        assert answer.model_extra["taigimed"]["status"] == "escalated"
        pending = f"{server.url}/v1/review/pending"
        assert httpx.get(pending, headers={"Authorization": "Bearer client-1"}).status_code == 401
        assert httpx.get(pending, headers={"Authorization": "Bearer doc-1"}).status_code == 200
        # Probes and Prometheus need no token.
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
        assert httpx.get(f"{server.url}/metrics").status_code == 200
    finally:
        server.stop()


def test_review_store_survives_sigkill(predictor, tmp_path):
    """Every session, decision and feedback written before a SIGKILL is there after restart."""
    overrides = ("review.confidence_threshold=0.0", "review.topics=[懷孕]")
    first = start_guard(predictor, tmp_path, *overrides)
    sids = [
        chat(first.url, q).json()["taigimed"]["session_id"] for q in ("我胸坎痛", "懷孕", "懷孕")
    ]
    sids.append(chat(first.url, "感冒").json()["taigimed"]["session_id"])
    httpx.post(f"{first.url}/v1/review/{sids[1]}/approve", json={"reviewer": "dr", "answer": "ok"})
    httpx.post(f"{first.url}/v1/feedback", json={"session_id": sids[3], "rating": "up"})
    before = {s: httpx.get(f"{first.url}/v1/sessions/{s}").json() for s in sids}
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    first.stop()

    second = start_guard(predictor, tmp_path, *overrides)
    try:
        after = {s: httpx.get(f"{second.url}/v1/sessions/{s}").json() for s in sids}
        assert after == before
        assert [s["status"] for s in after.values()] == [
            "escalated",
            "approved",
            "needs_review",
            "answered",
        ]
        pending = httpx.get(f"{second.url}/v1/review/pending").json()
        assert [p["session_id"] for p in pending["data"]] == [sids[2]]
        assert metric(second.url, "taigimed_review_backlog") == 1
    finally:
        second.stop()


def test_guard_answers_503_when_predictor_is_down(tmp_path):
    dead = Server.__new__(Server)
    dead.url = "http://127.0.0.1:9"  # discard port: nothing listens
    args = ["--predictor-url", dead.url, f"review.store_url=sqlite:///{tmp_path / 'r.db'}"]
    server = Server("taigimed.serve.guard", args, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not server.port_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        info = json.loads(server.port_file.read_text())
        url = f"http://127.0.0.1:{info['port']}"
        for _ in range(100):
            try:
                httpx.get(f"{url}/", timeout=2)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert httpx.get(f"{url}/v2/health/ready").status_code == 503
        resp = chat(url, "感冒")
        assert resp.status_code == 503 and resp.headers["retry-after"]
        assert "predictor unreachable: ConnectError" in resp.json()["error"]["message"]
        assert chat(url, "我胸坎痛").json()["taigimed"]["status"] == "escalated"
    finally:
        server.stop()


def test_a_predictor_slower_than_the_timeout_is_named_as_such(tmp_path):
    """Alive but silent (a listening socket nobody answers): the 503 says it timed out, not an
    empty 「predictor unreachable: 」 (what the demo printed on an overloaded machine)."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel accepts the connection; nothing ever replies
    args = [
        "--predictor-url",
        f"http://127.0.0.1:{silent.getsockname()[1]}",
        f"review.store_url=sqlite:///{tmp_path / 'r.db'}",
        "limits.predictor_timeout_s=1",
    ]
    server = Server("taigimed.serve.guard", args, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not server.port_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.2)
        url = f"http://127.0.0.1:{json.loads(server.port_file.read_text())['port']}"
        resp = chat(url, "感冒")
        assert resp.status_code == 503
        assert "did not answer within 1 s (ReadTimeout)" in resp.json()["error"]["message"]
    finally:
        server.stop()
        silent.close()


# -- which version answered: one guard in front of several predictor versions -----------------
# On a cluster one guard fronts Knative's stable/canary split of the predictor, so the guard must
# label each request with the version that answered it, not with its own configured version.


@pytest.fixture(scope="module")
def predictor_v2(tiny_model_dir, tmp_path_factory):
    """A predictor whose version comes only from the env var, as the manifests set it."""
    tmp = tmp_path_factory.mktemp("predictor-v2")
    env = {"TAIGIMED_MODEL_VERSION": "v2"}
    server = start_predictor(tiny_model_dir, tmp, env=env, version=None)
    yield server
    server.stop()


def test_predictor_names_its_version_in_every_response(predictor_v2):
    url = f"{predictor_v2.url}/openai/v1/chat/completions"
    body = {"model": MODEL, "messages": [{"role": "user", "content": "感冒"}], "max_tokens": 3}
    assert httpx.post(url, json=body, timeout=60).headers["x-taigimed-model-version"] == "v2"
    streamed = httpx.post(url, json={**body, "stream": True}, timeout=60)
    assert streamed.headers["x-taigimed-model-version"] == "v2"
    missing = httpx.post(url, json={**body, "model": "gpt-4"}, timeout=60)
    assert missing.status_code == 404 and missing.headers["x-taigimed-model-version"] == "v2"


def test_guard_labels_requests_with_the_version_that_answered(predictor_v2, tmp_path):
    guard = start_guard(predictor_v2, tmp_path, "review.confidence_threshold=0.0", version="stable")
    try:
        answered = chat(guard.url, "頭殼痛")
        assert answered.json()["taigimed"]["model_version"] == "v2"
        streamed = sse_events(chat(guard.url, "頭殼痛", stream=True))
        assert streamed[-2]["taigimed"]["model_version"] == "v2"
        ok = {"route": "chat", "status_code": "200"}
        assert metric(guard.url, "taigimed_requests_total", model_version="v2", **ok) == 2
        assert metric(guard.url, "taigimed_request_latency_seconds_count", model_version="v2") == 2
        assert metric(guard.url, "taigimed_generated_tokens_total", model_version="v2") == 16
        assert metric(guard.url, "taigimed_requests_total", model_version="stable", **ok) == 0
        # No model answers an emergency: it keeps the guard's own (fallback) label.
        escalated = chat(guard.url, "我胸坎痛，喘袂過來").json()
        assert escalated["taigimed"]["model_version"] == "stable"
        assert metric(guard.url, "taigimed_escalations_total", model_version="stable") >= 1
        assert metric(guard.url, "taigimed_escalations_total", model_version="v2") == 0
        assert metric(guard.url, "taigimed_requests_total", model_version="stable", **ok) == 1
        # Feedback counts for the version stored with the session, not the guard's label.
        sid = answered.json()["taigimed"]["session_id"]
        httpx.post(f"{guard.url}/v1/feedback", json={"session_id": sid, "rating": "down"})
        assert metric(guard.url, "taigimed_feedback_total", model_version="v2") == 1
        assert httpx.get(f"{guard.url}/v1/sessions/{sid}").json()["model_version"] == "v2"
    finally:
        guard.stop()


FAKE_TOKEN = {"token": "好", "logprob": -0.1, "bytes": None, "top_logprobs": []}


class FakeVLLM:
    """Stands in for vLLM's OpenAI server, which cannot run here (it needs a GPU build).

    It answers ``POST /v1/chat/completions`` as vLLM does for the parts the guard reads: no
    TaigiMed header, ``model`` = the first ``--served-model-name`` (here ``served_as``), plain
    JSON or SSE chunks that each carry ``model``, logprobs and usage. Every other path is a 404,
    like vLLM, which has no KServe v2 health route either.
    """

    def __init__(self, served_as: str) -> None:
        import http.server
        import threading

        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                if self.path != "/v1/chat/completions":
                    self.send_error(404)
                    return
                self.send_response(200)
                if body.get("stream"):
                    self.send_header("content-type", "text/event-stream")
                    self.end_headers()
                    for chunk in fake.chunks():
                        self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                    self.wfile.write(b"data: [DONE]\n\n")
                    return
                payload = json.dumps(fake.completion()).encode()
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *_: object) -> None:
                pass

        self.served_as = served_as
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def completion(self) -> dict:
        logprobs = {
            "content": [{"token": "好", "logprob": -0.1, "bytes": None, "top_logprobs": []}]
        }
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": self.served_as,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "好"},
                    "logprobs": logprobs,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        }

    def chunks(self) -> list[dict]:
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "model": self.served_as}
        return [
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"content": "好"},
                        "logprobs": {"content": [FAKE_TOKEN]},
                        "finish_reason": "stop",
                    }
                ],
            },
            {**base, "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1}},
        ]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize(("served_as", "label"), [("taigimed-v3", "v3"), ("taigimed", "stable")])
def test_guard_reads_vllm_version_from_model_field_else_falls_back(tmp_path, served_as, label):
    """vLLM answers with its first served name: ``taigimed-v3`` -> v3; a bare ``taigimed`` names
    no version, so the guard's configured one is used."""
    vllm = FakeVLLM(served_as)
    guard = start_guard(
        vllm,
        tmp_path,
        "review.confidence_threshold=0.0",
        "review.hold_streams=false",  # the live stream path reads each chunk's model
        version="stable",
        # As the manifests configure the guard for vLLM: OpenAI routes under /v1, and no
        # KServe v2 readiness check against a server that has no such route.
        env={"TAIGIMED_PREDICTOR_OPENAI_PREFIX": "/v1", "TAIGIMED_PREDICTOR_HEALTH_CHECK": "false"},
    )
    try:
        assert chat(guard.url, "頭殼痛").json()["taigimed"]["model_version"] == label
        assert (
            sse_events(chat(guard.url, "頭殼痛", stream=True))[-2]["taigimed"]["model_version"]
            == label
        )
        ok = {"route": "chat", "status_code": "200"}
        assert metric(guard.url, "taigimed_requests_total", model_version=label, **ok) == 2
        assert metric(guard.url, "taigimed_request_latency_seconds_count", model_version=label) == 2
        other = "stable" if label == "v3" else "v3"
        assert metric(guard.url, "taigimed_requests_total", model_version=other) == 0
    finally:
        guard.stop()
        vllm.stop()
