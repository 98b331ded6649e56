"""The one door (``taigimed.serve.door``) on a small ASGI app: each check answers itself,
with the status and reason a client can act on, and never lets an exception reset a connection."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from taigimed.serve.door import Door, DoorPolicy, SlotThroughput, TokenBuckets


async def echo_app(scope, receive, send):
    """Answers with the body it read (so the replay is checked) or raises on /boom."""
    if scope["path"] == "/boom":
        raise RuntimeError("broken template \ud800")  # even a message that cannot encode
    if scope["path"] == "/slow" or scope["path"].endswith("completions"):
        await asyncio.sleep(0.3)
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    payload = json.dumps({"len": len(body)}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": payload})


def call(policy: DoorPolicy, *requests: tuple[str, str, dict]) -> list[httpx.Response]:
    """Send the requests concurrently through one Door instance."""
    door = Door(echo_app, policy)

    async def run():
        transport = httpx.ASGITransport(app=door, client=("10.0.0.1", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await asyncio.gather(*(client.request(m, p, **kw) for m, p, kw in requests))

    return asyncio.run(run())


def test_tokens_guard_kserve_and_review_routes_but_not_probes():
    policy = DoorPolicy(api_tokens={"client"}, reviewer_tokens={"doctor"})
    good = {"headers": {"authorization": "Bearer client"}}
    doc = {"headers": {"authorization": "Bearer doctor"}}
    responses = call(
        policy,
        ("POST", "/v1/models/taigimed:predict", {"json": {"instances": ["x"]}}),
        ("POST", "/v1/models/taigimed:predict", {"json": {"instances": ["x"]}, **good}),
        ("POST", "/v2/models/taigimed/infer", {"json": {}}),
        ("GET", "/v1/review/pending", good),
        ("GET", "/v1/review/pending", doc),
        ("GET", "/v2/health/ready", {}),
        ("GET", "/v1/models/taigimed", {}),
        ("GET", "/metrics", {}),
        ("POST", "/v1/feedback", {"json": {}}),
    )
    assert [r.status_code for r in responses] == [401, 200, 401, 401, 200, 200, 200, 200, 401]
    assert responses[0].headers["www-authenticate"] == "Bearer"
    assert "bearer token" in responses[0].json()["error"]["message"]


def test_body_limit_refuses_declared_and_streamed_bodies():
    policy = DoorPolicy(max_request_bytes=1000)

    async def chunks():
        for _ in range(10):
            yield b"x" * 500

    big, small, streamed = call(
        policy,
        ("POST", "/v1/feedback", {"content": b"x" * 1_000_000}),
        ("POST", "/v1/feedback", {"content": b"x" * 900}),
        ("POST", "/v1/feedback", {"content": chunks()}),  # no content-length: counted as read
    )
    assert big.status_code == 413 and "1000000 bytes" in big.json()["error"]["message"]
    assert small.status_code == 200 and small.json() == {"len": 900}  # replayed to the route
    assert streamed.status_code == 413


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b'{"instances": ["\\ud800"]}', "surrogate"),
        (b'{"a": ' + b"[" * 10000 + b"]" * 10000 + b"}", "levels deep"),
        (b"\xff\xfe", "UTF-8"),
    ],
)
def test_json_bodies_are_checked_for_every_route(raw, needle):
    (resp,) = call(
        DoorPolicy(),
        (
            "POST",
            "/v1/models/taigimed:predict",
            {"content": raw, "headers": {"content-type": "application/json"}},
        ),
    )
    assert resp.status_code == 400 and needle in resp.json()["error"]["message"]


def test_unexpected_error_is_json_500_with_request_id():
    (resp,) = call(DoorPolicy(), ("GET", "/boom", {"headers": {"x-request-id": "abc-1"}}))
    assert resp.status_code == 500
    body = resp.json()
    assert body["error"]["request_id"] == "abc-1" and resp.headers["x-request-id"] == "abc-1"
    assert "RuntimeError" in body["error"]["message"]
    (ok,) = call(DoorPolicy(), ("GET", "/v2/health/live", {"headers": {"x-request-id": "a b"}}))
    assert len(ok.headers["x-request-id"]) == 32  # an unsafe id is replaced, not echoed


def test_inflight_limit_answers_429_with_retry_after():
    policy = DoorPolicy(max_inflight=2, retry_after_s=3)
    responses = call(policy, *[("POST", "/slow", {"content": b"{}"})] * 5)
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 200, 429, 429, 429]
    shed = next(r for r in responses if r.status_code == 429)
    assert shed.headers["retry-after"] == "3"


def test_rate_limit_per_token():
    policy = DoorPolicy(api_tokens={"a", "b"}, rate_per_s=0.5, rate_burst=2)
    a = {"headers": {"authorization": "Bearer a"}}
    b = {"headers": {"authorization": "Bearer b"}}
    codes = [r.status_code for r in call(policy, *[("GET", "/v1/x", a)] * 3, ("GET", "/v1/x", b))]
    assert sorted(codes[:3]) == [200, 200, 429] and codes[3] == 200
    buckets = TokenBuckets(rate_per_s=1.0, burst=1)
    assert buckets.take("k", now=0.0) == 0 and buckets.take("k", now=0.25) == pytest.approx(0.75)
    assert buckets.take("k", now=1.5) == 0


class FixedCapacity:
    slots = 2

    def __init__(self, wait: float | None) -> None:
        self.wait = wait

    def expected_wait_s(self, waiting_ahead: int) -> float | None:
        return None if self.wait is None else (waiting_ahead + 1) * self.wait


def test_shedding_by_capacity_answers_429_at_once_with_retry_after():
    # 2 slots, each waiting request costs 4 s: the 3rd request would wait 4 s (ok, limit 5),
    # the 4th 8 s (shed). Non-generation routes are never shed by capacity.
    policy = DoorPolicy(capacity=FixedCapacity(4.0), max_queue_wait_s=5.0)
    gen = ("POST", "/openai/v1/chat/completions", {"content": b"{}"})
    responses = call(policy, *[gen] * 5, ("POST", "/v1/feedback", {"content": b"{}"}))
    codes = [r.status_code for r in responses]
    assert sorted(codes[:5]) == [200, 200, 200, 429, 429] and codes[5] == 200
    shed = next(r for r in responses if r.status_code == 429)
    assert int(shed.headers["retry-after"]) >= 8
    assert "batch slot" in shed.json()["error"]["message"]


def test_shedding_before_measurement_bounds_the_queue_per_slot():
    policy = DoorPolicy(capacity=FixedCapacity(None), queue_per_slot=1)
    gen = ("POST", "/v1/completions", {"content": b"{}"})
    codes = sorted(r.status_code for r in call(policy, *[gen] * 6))
    assert codes == [200, 200, 200, 200, 429, 429]  # 2 slots + 2 waiting


def test_slot_throughput_estimate():
    t = SlotThroughput(slots=4, alpha=0.5)
    assert t.expected_wait_s(0) is None
    t.record(8.0)
    t.record(4.0)
    assert t.mean_hold_s == pytest.approx(6.0)
    assert t.expected_wait_s(3) == pytest.approx(4 * 6.0 / 4)
