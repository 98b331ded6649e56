"""What the guard checks before any work: bearer tokens, body size, requests in flight.

Every refusal is an ``APIError`` (a 4xx with a reason, or 429 with Retry-After), rendered by
``error_response`` as an OpenAI error body. The ``Tracker`` counts a request in flight and
records its request/latency/overhead metrics exactly once, whichever way it ends.

Extension point: load shedding (refusing earlier than ``limits.max_inflight`` when the
predictor is slow, say) belongs in ``Admission.admit``: it returns a ``Tracker`` or raises the
429, and nothing else in the guard needs to change.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from taigimed.serve import openai_schema as oa
from taigimed.serve.config import LimitSettings
from taigimed.serve.metrics import GuardMetrics


def error_response(err: oa.APIError) -> JSONResponse:
    """An ``APIError`` as the OpenAI error body with its status and headers."""
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


async def api_error_handler(_: Request, err: oa.APIError) -> JSONResponse:
    return error_response(err)


class Tracker:
    """Counts one request in flight and records its metrics exactly once.

    ``version`` starts as the guard's configured version and becomes the answering predictor's
    once its response names one (``taigimed.serve.proxy``'s ``note_version``).
    """

    def __init__(self, admission: Admission, route: str) -> None:
        self.admission, self.route = admission, route
        self.version = admission.metrics.model_version
        self.started = time.perf_counter()
        self.predictor_s = 0.0
        self.deferred = False  # a streaming response finishes the tracker itself
        self._done = False

    def overhead_ms(self) -> float:
        """Time spent in the guard itself so far, predictor calls excluded."""
        return (time.perf_counter() - self.started - self.predictor_s) * 1000

    def finish(self, status: int) -> None:
        if self._done:
            return
        self._done = True
        m, v = self.admission.metrics, self.version
        self.admission.leave()
        elapsed = time.perf_counter() - self.started
        m.requests.labels(v, self.route, str(status)).inc()
        m.latency.labels(v, self.route).observe(elapsed)
        if status == 200 and self.predictor_s:
            m.overhead.labels(v).observe(max(0.0, elapsed - self.predictor_s))


class Admission:
    """Auth, size limits and the in-flight bound, shared by every guard route."""

    def __init__(
        self,
        limits: LimitSettings,
        metrics: GuardMetrics,
        api_tokens: set[str],
        reviewer_tokens: set[str],
    ) -> None:
        self.limits = limits
        self.metrics = metrics
        self.api_tokens = api_tokens
        self.reviewer_tokens = reviewer_tokens
        self.inflight = 0

    def retry_after(self) -> dict[str, str]:
        return {"Retry-After": str(self.limits.retry_after_s)}

    def admit(self, route: str) -> Tracker:
        """Count a request in, or refuse it with 429 when ``limits.max_inflight`` are running."""
        if self.inflight >= self.limits.max_inflight:
            self.metrics.requests.labels(self.metrics.model_version, route, "429").inc()
            raise oa.APIError(
                429,
                f"{self.inflight} requests in progress; retry later",
                type="rate_limit_exceeded",
                headers=self.retry_after(),
            )
        return self.enter(route)

    def enter(self, route: str) -> Tracker:
        """Count a request in without the bound (KServe's ``:predict`` is bounded by KServe)."""
        self.inflight += 1
        self.metrics.inflight.labels(self.metrics.model_version).set(self.inflight)
        return Tracker(self, route)

    def leave(self) -> None:
        self.inflight -= 1
        self.metrics.inflight.labels(self.metrics.model_version).set(self.inflight)

    def authorize(self, request: Request, tokens: set[str]) -> None:
        """401 unless the request carries one of ``tokens`` (no tokens configured = open)."""
        if not tokens:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not any(
            hmac.compare_digest(token.strip(), t) for t in tokens
        ):
            raise oa.APIError(
                401,
                "missing or invalid bearer token (send 'Authorization: Bearer <token>')",
                type="authentication_error",
                headers={"WWW-Authenticate": "Bearer"},
            )

    def authorize_client(self, request: Request) -> None:
        self.authorize(request, self.api_tokens)

    def authorize_reviewer(self, request: Request) -> None:
        self.authorize(request, self.reviewer_tokens)

    async def read_body(self, request: Request) -> bytes:
        """The body, refused with 413 as soon as it passes ``limits.max_request_bytes``."""
        limit = self.limits.max_request_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise oa.APIError(413, f"request body is {declared} bytes; the limit is {limit}")
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise oa.APIError(413, f"request body exceeds the limit of {limit} bytes")
        return bytes(body)

    async def json_body(self, request: Request) -> dict[str, Any]:
        """A size-limited JSON object body (review, feedback); 400 with the reason otherwise."""
        raw = await self.read_body(request)
        try:
            data = json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise oa.APIError(400, f"request body is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise oa.APIError(400, "request body must be a JSON object")
        return data

    def check_prompt(self, req: oa.SamplingFields, prompt_chars: int) -> None:
        """400 when the request asks for more tokens or sends more text than the limits."""
        limits = self.limits
        asked = req.requested_max_tokens()
        if asked is not None and asked > limits.max_tokens:
            raise oa.APIError(
                400,
                f"max_tokens={asked} is above the limit of {limits.max_tokens}",
                param="max_tokens",
            )
        if prompt_chars > limits.max_prompt_chars:
            raise oa.APIError(
                400,
                f"prompt has {prompt_chars} characters; the limit is {limits.max_prompt_chars}",
                param="messages",
            )
