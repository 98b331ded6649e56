"""The door: one admission path for every route of the guard and the predictor (pure ASGI).

(The guard's per-request bookkeeping -- the ``Tracker`` that records each request's metrics
once, the prompt-size limits -- stays in ``taigimed.serve.admission``; what refuses a request
before any route runs is here, the same for both servers.)

Why one middleware and not checks inside each handler: the KServe v1/v2 routes, the repository
routes and the review/feedback/session routes are registered by different code (kserve's own
routers among them), and a check that lives in a handler is a check some route forgets. Here
every HTTP request passes the same door, in this order:

1. a request id (the client's ``x-request-id`` when it is a plain token, else a new one) on every
   response, and in the log line of every unexpected error;
2. the route class: *open* (liveness/readiness, ``/metrics``, ``/openapi.json``: kubelet and
   Prometheus call them without tokens), *reviewer* (``/v1/review/*``) or *client* (the rest);
3. the bearer token of that class, where tokens are configured (401);
4. the rate limit per token (or per client address when auth is off): a token bucket (429);
5. the in-flight limit (429), then, on generation routes, **shedding by capacity**: the
   ``Capacity`` estimate of the queue wait a new request would see; past ``max_queue_wait_s`` it
   is answered 429 with ``Retry-After`` at once, before its body is read;
6. the body limit before the body is read (``content-length``), then while it is read (413); a
   JSON body is checked for depth and unencodable text (400, see ``openai_schema.load_json``)
   and replayed to the route;
7. any exception the app lets escape becomes a JSON 500 with the request id, never a reset
   connection.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from taigimed.serve import openai_schema as oa

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

REQUEST_ID_HEADER = "x-request-id"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# Probes and scrapes: the kubelet and Prometheus send no tokens, and they must keep working while
# clients are shed. KServe's readiness routes are /v2/health/ready, /v1/models/{name} (GET) and
# /v2/models/{name}/ready.
OPEN_ROUTES = (
    re.compile(r"^/$"),
    re.compile(r"^/v2/health/(live|ready)$"),
    re.compile(r"^/v1/models/[^/:]+$"),
    re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/ready$"),
    re.compile(r"^/metrics$"),
    re.compile(r"^/openapi\.json$"),
)
REVIEWER_ROUTES = (re.compile(r"^/v1/review(/|$)"),)
# Requests that occupy a batch slot: shed by capacity.
GENERATION_ROUTES = (
    re.compile(r"^(/openai)?/v1/(chat/)?completions$"),
    re.compile(r"^/v1/models/[^/]+:predict$"),
    re.compile(r"^/v2/models/[^/]+(/versions/[^/]+)?/infer$"),
)


class Capacity(Protocol):
    """What the door asks the batcher: how long would one more request wait for a slot?"""

    def expected_wait_s(self, waiting_ahead: int) -> float | None:
        """Seconds a request with ``waiting_ahead`` others queued before it would wait, or
        None when there is no measurement yet (the door then bounds the queue per slot)."""

    @property
    def slots(self) -> int:
        """Batch slots (requests decoded together)."""


@dataclass
class DoorPolicy:
    """The limits of one server's door; ``from_limits`` builds it from the serve config."""

    api_tokens: set[str] = field(default_factory=set)
    reviewer_tokens: set[str] = field(default_factory=set)
    max_request_bytes: int = 65536
    max_inflight: int = 64
    rate_per_s: float = 0.0  # per token (or client address); 0 = no rate limit
    rate_burst: int = 20
    retry_after_s: int = 1
    max_queue_wait_s: float = 10.0
    queue_per_slot: int = 1  # before throughput is measured: waiting requests per batch slot
    max_json_depth: int = oa.MAX_JSON_DEPTH
    capacity: Capacity | None = None  # None (the guard): only the in-flight limit applies
    # called with (path, status) for each request the door answers itself, so the server's own
    # request counters (taigimed_requests_total) still see every 4xx/429 it refused
    on_refusal: Callable[[str, int], None] | None = None

    @classmethod
    def from_limits(cls, limits: Any, api_tokens: set[str], reviewer_tokens: set[str], **kw: Any):
        return cls(
            api_tokens=api_tokens,
            reviewer_tokens=reviewer_tokens,
            max_request_bytes=limits.max_request_bytes,
            max_inflight=limits.max_inflight,
            rate_per_s=limits.rate_per_token_per_s,
            rate_burst=limits.rate_burst,
            retry_after_s=limits.retry_after_s,
            max_queue_wait_s=limits.max_queue_wait_s,
            **kw,
        )


class TokenBuckets:
    """A token bucket per key, with the least recently used keys forgotten past ``max_keys``."""

    def __init__(self, rate_per_s: float, burst: int, max_keys: int = 10000) -> None:
        self.rate = rate_per_s
        self.burst = float(max(1, burst))
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float | None = None) -> float:
        """0 when the request may go, else the seconds until the bucket has a token again."""
        if self.rate <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
        while len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return wait


class SlotThroughput:
    """Measured time a request holds a batch slot, as an exponentially weighted mean.

    With every slot busy, slots free up at ``slots / mean_hold_s`` per second, so a request with
    ``k`` others waiting before it waits about ``(k + 1) * mean_hold_s / slots``. The mean is
    measured per request (slot entry to finish), so it holds under any load, unlike a count of
    completions per second, which under light load measures the arrivals instead.
    """

    def __init__(self, slots: int, alpha: float = 0.2) -> None:
        self._slots = slots
        self.alpha = alpha
        self.mean_hold_s: float | None = None
        self._lock = threading.Lock()

    @property
    def slots(self) -> int:
        return self._slots

    def record(self, hold_s: float) -> None:
        """Called by the batcher thread when a request leaves its slot (finished, not aborted)."""
        with self._lock:
            if self.mean_hold_s is None:
                self.mean_hold_s = hold_s
            else:
                self.mean_hold_s += self.alpha * (hold_s - self.mean_hold_s)

    def expected_wait_s(self, waiting_ahead: int) -> float | None:
        if self.mean_hold_s is None:
            return None
        return (waiting_ahead + 1) * self.mean_hold_s / self._slots


def _matches(patterns: tuple[re.Pattern, ...], path: str) -> bool:
    return any(p.match(path) for p in patterns)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _bearer(scope: Scope) -> str | None:
    scheme, _, token = (_header(scope, b"authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _token_ok(token: str | None, tokens: set[str]) -> bool:
    return token is not None and any(hmac.compare_digest(token, t) for t in tokens)


class Rejection(Exception):
    """A request the door answers itself."""

    def __init__(self, status: int, message: str, type: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.headers = headers or {}


class Door:
    """The ASGI middleware; ``stats()`` gives the live counts (tests and gauges read them)."""

    def __init__(self, app: Any, policy: DoorPolicy) -> None:
        self.app = app
        self.policy = policy
        self.buckets = TokenBuckets(policy.rate_per_s, policy.rate_burst)
        self.inflight = 0
        self.inflight_generation = 0

    def stats(self) -> dict[str, int]:
        return {"inflight": self.inflight, "inflight_generation": self.inflight_generation}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, REQUEST_ID_HEADER.encode())
        request_id = given if given and _SAFE_REQUEST_ID.match(given) else uuid.uuid4().hex
        id_header = (REQUEST_ID_HEADER.encode(), request_id.encode())
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", []), id_header]
            await send(message)

        path = scope.get("path", "")
        open_route = _matches(OPEN_ROUTES, path) and scope.get("method") in ("GET", "HEAD")
        generation = _matches(GENERATION_ROUTES, path)
        counted = gen_counted = False
        try:
            if not open_route:
                self._authorize(scope, path)
                self._rate_limit(scope)
                self._check_inflight()
                self.inflight += 1
                counted = True
                if generation:
                    self._shed_by_capacity()
                    self.inflight_generation += 1
                    gen_counted = True
            body_receive = await self._read_body(scope, receive)
            await self.app(scope, body_receive, send_with_id)
        except Rejection as err:
            if started:
                raise
            if self.policy.on_refusal is not None:
                self.policy.on_refusal(path, err.status)
            await _send_json(
                send_with_id, err.status, _error(err.message, err.type, err.status), err.headers
            )
        except Exception as err:
            log.exception(
                "unexpected error, request %s %s %s", request_id, scope.get("method"), path
            )
            if not started:
                body = _error(
                    f"internal error ({type(err).__name__}); request id {request_id}",
                    "internal_error",
                    500,
                )
                body["error"]["request_id"] = request_id
                await _send_json(send_with_id, 500, body)
        finally:
            if counted:
                self.inflight -= 1
            if gen_counted:
                self.inflight_generation -= 1

    # -- the checks, in order -------------------------------------------------------------
    def _authorize(self, scope: Scope, path: str) -> None:
        reviewer = _matches(REVIEWER_ROUTES, path)
        tokens = self.policy.reviewer_tokens if reviewer else self.policy.api_tokens
        if tokens and not _token_ok(_bearer(scope), tokens):
            who = "reviewer " if reviewer else ""
            raise Rejection(
                401,
                f"missing or invalid {who}bearer token (send 'Authorization: Bearer <token>')",
                "authentication_error",
                {"WWW-Authenticate": "Bearer"},
            )

    def _rate_limit(self, scope: Scope) -> None:
        client = scope.get("client") or ("?", 0)
        key = _bearer(scope) or f"addr:{client[0]}"
        wait = self.buckets.take(key)
        if wait > 0:
            raise Rejection(
                429,
                f"rate limit of {self.policy.rate_per_s:g} requests/s per token exceeded",
                "rate_limit_exceeded",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )

    def _check_inflight(self) -> None:
        if self.inflight >= self.policy.max_inflight:
            raise Rejection(
                429,
                f"{self.inflight} requests in progress (limit {self.policy.max_inflight}); retry",
                "rate_limit_exceeded",
                {"Retry-After": str(self.policy.retry_after_s)},
            )

    def _shed_by_capacity(self) -> None:
        """429 at once when this request would wait for a slot past ``max_queue_wait_s``."""
        capacity = self.policy.capacity
        if capacity is None:
            return
        waiting_ahead = self.inflight_generation - capacity.slots
        if waiting_ahead < 0:
            return  # a slot is free
        wait = capacity.expected_wait_s(waiting_ahead)
        if wait is None:  # not measured yet: bound the queue per batch slot
            if waiting_ahead < capacity.slots * self.policy.queue_per_slot:
                return
            wait = float(self.policy.retry_after_s)
        elif wait <= self.policy.max_queue_wait_s:
            return
        raise Rejection(
            429,
            f"server at capacity: a new request would wait about {wait:.1f} s for a batch slot "
            f"(limit {self.policy.max_queue_wait_s:g} s); retry later",
            "rate_limit_exceeded",
            {"Retry-After": str(max(1, math.ceil(wait)))},
        )

    async def _read_body(self, scope: Scope, receive: Receive) -> Receive:
        """Read the body under the limit (refusing a large declared length before reading),
        check JSON well-formedness, and return a ``receive`` that replays it."""
        limit = self.policy.max_request_bytes
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                raise Rejection(400, "content-length is not a number", "invalid_request_error")
            if int(declared) > limit:
                raise Rejection(
                    413,
                    f"request body is {declared} bytes; the limit is {limit}",
                    "invalid_request_error",
                )
        if scope.get("method") in ("GET", "HEAD", "DELETE", "OPTIONS") and declared is None:
            return receive
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return _replay(b"", receive, disconnected=True)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise Rejection(
                    413,
                    f"request body exceeds the limit of {limit} bytes",
                    "invalid_request_error",
                )
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        content_type = (_header(scope, b"content-type") or "").lower()
        if body and "json" in content_type:
            try:
                oa.load_json(body, self.policy.max_json_depth)
            except oa.APIError as err:
                raise Rejection(err.status, err.message, err.type) from None
        return _replay(body, receive)


def _replay(body: bytes, receive: Receive, disconnected: bool = False) -> Receive:
    """A ``receive`` that gives the buffered body once, then the real channel (disconnects)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            if disconnected:
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _error(message: str, type: str, status: int) -> dict[str, Any]:
    return oa.error_body(message, type, None, status)


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    # ensure_ascii: a message can never fail to encode, whatever text reached it
    payload = json.dumps(body, ensure_ascii=True).encode()
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload, "more_body": False})
