"""The guard: the InferenceService transformer between clients and the predictor.

It serves the same OpenAI routes as the predictor, so the official ``openai`` client works
against it unchanged, and adds what a medical advisor needs around the model:

* red-flag triage *before* the model (``taigimed.guardrails``): emergencies get the call-119 /
  emergency-room message at once, prescription requests a referral; the model is not called;
* a not-a-diagnosis disclaimer on every answer;
* a confidence score, exp(mean token log-probability) from the predictor's ``logprobs``; an
  answer below ``review.confidence_threshold``, or on a ``review.topics`` subject, is *held*:
  the client gets ``needs_review`` and a session id, a clinician approves (optionally edited)
  or rejects it through ``/v1/review/*``, and approved answers export as JSONL for training;
* feedback (``/v1/feedback``) and session status (``/v1/sessions/{id}``);
* PII scrubbing before anything is stored, logged or sent on to the model;
* optional bearer-token auth, request size and ``max_tokens`` limits, a bounded number of
  requests in flight (429 with Retry-After), 503 while the predictor is unreachable;
* Prometheus metrics labelled with the model version (``taigimed.serve.metrics``).

Which version a request is labelled with: on a cluster one guard fronts both the stable and the
canary predictor revision (Knative splits the predictor's traffic), so each request is labelled
with the version that *answered it*: the predictor's ``x-taigimed-model-version`` header, else
``<version>`` from vLLM's ``model: taigimed-<version>``, else the guard's configured
``model_version`` (``taigimed.serve.version``). Requests the guard answers without the model
(red-flag escalations, referrals, 4xx, 429 at admission, a predictor that could not be reached)
carry the configured version: no model answered them, so no model version is blamed for them.
On a cluster that label is ``unknown`` (the manifests' fallback), kept apart from every real
version. Review decisions and feedback carry the version stored with their session. Whole-guard
gauges (requests in flight, review backlog) stay on the configured version.

Every guard chat response is the OpenAI shape plus a top-level ``taigimed`` object:
``{"status", "session_id", "confidence", "model_version"}``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hmac
import json
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from taigimed import guardrails
from taigimed.config import load_config
from taigimed.serve import openai_schema as oa
from taigimed.serve import version as versioning
from taigimed.serve.config import ServeConfig
from taigimed.serve.kserve_app import build_app, import_kserve, serve, set_predictor_config
from taigimed.serve.metrics import GuardMetrics
from taigimed.serve.review_store import Conflict, NewSession, NotFound, ReviewStore, check_feedback
from taigimed.serve.ui import mount_ui

log = logging.getLogger(__name__)
kserve = import_kserve()

OPENAI_PREFIX = "/openai/v1"
# Where the predictor serves its OpenAI routes: /openai/v1 for taigimed's predictor, /v1 for
# KServe's vLLM runtime (the manifests set this per runtime).
PREDICTOR_OPENAI_PREFIX = os.environ.get("TAIGIMED_PREDICTOR_OPENAI_PREFIX", OPENAI_PREFIX)
# Whether the guard's readiness includes the predictor's KServe v2 readiness (/v2/health/ready).
# vLLM serves no v2 health route, so with the vLLM runtime the manifests turn this off; Knative
# routes to a predictor revision only once its own readiness probe (/v1/models) passes anyway.
_HEALTH_CHECK = os.environ.get("TAIGIMED_PREDICTOR_HEALTH_CHECK", "true").strip().lower()
PREDICTOR_HEALTH_CHECK = _HEALTH_CHECK not in ("0", "false", "no", "off")
STREAM_PIECE_CHARS = 16  # buffered answers are re-streamed in pieces of this many characters


@dataclass
class Outcome:
    """What the guard decided for one question, ready to be rendered in any response shape."""

    status: str  # answered | escalated | referred | needs_review
    text: str
    session_id: str
    confidence: float | None
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    upstream_logprobs: Any = None
    categories: list[str] = field(default_factory=list)
    model_version: str = ""  # the version that answered (the guard's own when no model did)


class Tracker:
    """Counts one request in flight and records its metrics exactly once.

    ``version`` starts as the guard's configured version and becomes the answering predictor's
    once its response names one (``Guard._note_version``).
    """

    def __init__(self, guard: Guard, route: str) -> None:
        self.guard, self.route = guard, route
        self.version = guard.metrics.model_version
        self.started = time.perf_counter()
        self.predictor_s = 0.0
        self.deferred = False  # a streaming response finishes the tracker itself
        self._done = False

    def finish(self, status: int) -> None:
        if self._done:
            return
        self._done = True
        g, v = self.guard, self.version
        g.inflight -= 1
        g.metrics.inflight.labels(g.metrics.model_version).set(g.inflight)
        elapsed = time.perf_counter() - self.started
        g.metrics.requests.labels(v, self.route, str(status)).inc()
        g.metrics.latency.labels(v, self.route).observe(elapsed)
        if status == 200 and self.predictor_s:
            g.metrics.overhead.labels(v).observe(max(0.0, elapsed - self.predictor_s))


class Guard:
    """Routes and guardrail logic; one instance per guard process."""

    def __init__(self, cfg: ServeConfig, predictor_url: str) -> None:
        self.cfg = cfg
        self.predictor_url = predictor_url.rstrip("/")
        self.metrics = GuardMetrics(cfg.model_version)
        self.store = ReviewStore(cfg.review.store_url)
        self.policy = guardrails.GuardPolicy(
            escalate_red_flags=cfg.policy.escalate_red_flags,
            refer_prescriptions=cfg.policy.refer_prescriptions,
            add_disclaimer=cfg.policy.add_disclaimer,
        )
        self.api_tokens = cfg.auth.api_tokens()
        self.reviewer_tokens = cfg.auth.reviewer_tokens()
        self.client = httpx.AsyncClient(
            base_url=self.predictor_url,
            timeout=cfg.limits.predictor_timeout_s,
            limits=httpx.Limits(max_connections=cfg.limits.max_inflight + 8),
        )
        self.inflight = 0
        self.metrics.backlog.labels(cfg.model_version).set(self.store.backlog())

    async def close(self) -> None:
        await self.client.aclose()
        self.store.close()

    # -- plumbing -------------------------------------------------------------------------
    def register(self, app: FastAPI) -> None:
        add = app.add_api_route
        add(f"{OPENAI_PREFIX}/models", self.models, methods=["GET"])
        add(f"{OPENAI_PREFIX}/chat/completions", self.chat, methods=["POST"], response_model=None)
        add(f"{OPENAI_PREFIX}/completions", self.completions, methods=["POST"], response_model=None)
        add("/v1/review/pending", self.review_pending, methods=["GET"])
        add("/v1/review/export", self.review_export, methods=["GET"], response_model=None)
        add("/v1/review/{session_id}/approve", self.review_approve, methods=["POST"])
        add("/v1/review/{session_id}/reject", self.review_reject, methods=["POST"])
        add("/v1/sessions/{session_id}", self.session_status, methods=["GET"])
        add("/v1/feedback", self.feedback, methods=["POST"], status_code=201)
        add("/metrics", self.metrics_route, methods=["GET"])
        app.add_exception_handler(oa.APIError, _api_error_handler)
        app.add_exception_handler(httpx.HTTPError, self._predictor_down_handler)

    async def _predictor_down_handler(self, _: Request, err: Exception) -> JSONResponse:
        return _api_error_response(self._unavailable(f"predictor unreachable: {err}"))

    def _unavailable(self, message: str) -> oa.APIError:
        retry = {"Retry-After": str(self.cfg.limits.retry_after_s)}
        return oa.APIError(503, message, type="service_unavailable", headers=retry)

    def _authorize(self, request: Request, tokens: set[str]) -> None:
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

    async def _read_body(self, request: Request) -> bytes:
        limit = self.cfg.limits.max_request_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise oa.APIError(413, f"request body is {declared} bytes; the limit is {limit}")
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > limit:
                raise oa.APIError(413, f"request body exceeds the limit of {limit} bytes")
        return bytes(body)

    async def _openai(
        self, request: Request, route: str, handler: Callable[[bytes, Tracker], Awaitable[Response]]
    ) -> Response:
        """Admission, auth, body limits and metrics around one OpenAI-route handler."""
        if self.inflight >= self.cfg.limits.max_inflight:
            err = oa.APIError(
                429,
                f"{self.inflight} requests in progress; retry later",
                type="rate_limit_exceeded",
                headers={"Retry-After": str(self.cfg.limits.retry_after_s)},
            )
            v = self.metrics.model_version
            self.metrics.requests.labels(v, route, "429").inc()
            return _api_error_response(err)
        self.inflight += 1
        self.metrics.inflight.labels(self.metrics.model_version).set(self.inflight)
        tracker = Tracker(self, route)
        status = 500
        try:
            self._authorize(request, self.api_tokens)
            raw = await self._read_body(request)
            response = await handler(raw, tracker)
            status = response.status_code
            return response
        except oa.APIError as err:
            status = err.status
            return _api_error_response(err)
        except httpx.HTTPError as err:
            status = 503
            return _api_error_response(self._unavailable(f"predictor unreachable: {err}"))
        finally:
            if not tracker.deferred:
                tracker.finish(status)

    def _check_model(self, name: str | None) -> str:
        if name is None:
            return self.cfg.model_name
        if name != self.cfg.model_name:
            raise oa.APIError(
                404,
                f"The model `{name}` does not exist. Served models: {self.cfg.model_name}",
                type="NotFoundError",
                param="model",
            )
        return name

    def _check_limits(self, req: oa.SamplingFields, prompt_chars: int) -> None:
        limits = self.cfg.limits
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

    # -- guardrails -----------------------------------------------------------------------
    def _pre_model(self, question: str) -> guardrails.GuardDecision | None:
        """Escalation or referral decided by the shared guardrails, or None: ask the model."""
        return guardrails.pre_model_decision(question, self.policy)

    def _finish_text(self, text: str) -> str:
        return guardrails.finish(text, self.policy)

    def _review_reasons(self, question: str, confidence: float | None) -> list[str]:
        reasons = []
        if confidence is not None and confidence < self.cfg.review.confidence_threshold:
            reasons.append(f"low_confidence<{self.cfg.review.confidence_threshold}")
        norm = guardrails.normalise(question)
        reasons += [f"topic:{t}" for t in self.cfg.review.topics if guardrails.normalise(t) in norm]
        return reasons

    async def _store(self, new: NewSession) -> str:
        """Write the session before answering. A local SQLite commit (WAL) takes well under a
        millisecond, less than handing it to a thread; a network database goes to a thread."""
        if self.store.url.startswith("sqlite"):
            return self.store.create(new)
        return await asyncio.to_thread(self.store.create, new)

    async def _pre_model_outcome(
        self, question: str, messages: list[dict[str, str]]
    ) -> Outcome | None:
        decision = self._pre_model(question)
        if decision is None:
            return None
        status = "escalated" if decision.action == "escalate" else "referred"
        v = self.metrics.model_version
        for category in decision.triage.categories if status == "escalated" else []:
            self.metrics.escalations.labels(v, category).inc()
        self.metrics.outcomes.labels(v, status).inc()
        session_id = await self._store(
            NewSession(
                model_version=v,
                status=status,
                question=question,
                messages=messages,
                draft_answer=None,
                final_answer=decision.text,
                confidence=None,
                review_reasons=[],
                categories=decision.triage.categories,
            )
        )
        log.info("session %s %s %s", session_id, status, decision.triage.categories)
        return Outcome(
            status,
            decision.text,
            session_id,
            None,
            categories=decision.triage.categories,
            model_version=v,
        )

    async def _model_outcome(
        self,
        question: str,
        messages: list[dict[str, str]],
        draft: str,
        token_logprobs: list[float],
        finish_reason: str,
        usage: dict[str, int],
        upstream_logprobs: Any,
        version: str,
    ) -> Outcome:
        """Confidence, review decision, disclaimer, storage and metrics for a model answer
        (labelled and stored with ``version``, the version that answered)."""
        confidence = math.exp(sum(token_logprobs) / len(token_logprobs)) if token_logprobs else None
        reasons = self._review_reasons(question, confidence)
        status = "needs_review" if reasons else "answered"
        draft = guardrails.scrub_pii(draft)
        final = None if reasons else self._finish_text(draft)
        v = version
        session_id = await self._store(
            NewSession(
                model_version=v,
                status=status,
                question=question,
                messages=messages,
                draft_answer=draft,
                final_answer=draft if final is not None else None,
                confidence=confidence,
                review_reasons=reasons,
                categories=[],
            )
        )
        self.metrics.outcomes.labels(v, status).inc()
        self.metrics.tokens.labels(v).inc(usage.get("completion_tokens", 0))
        if confidence is not None:
            self.metrics.confidence.labels(v).observe(confidence)
        if reasons:
            self.metrics.reviews_queued.labels(v).inc()
            # The backlog is the whole queue's size, not a per-version quantity.
            self.metrics.backlog.labels(self.metrics.model_version).inc()
            log.info("session %s held for review: %s", session_id, ", ".join(reasons))
        text = final if final is not None else self._finish_text(self.cfg.review.pending_message)
        return Outcome(
            status,
            text,
            session_id,
            confidence,
            finish_reason=finish_reason,
            prompt_tokens=usage.get("prompt_tokens", 0),
            completion_tokens=usage.get("completion_tokens", 0),
            upstream_logprobs=upstream_logprobs if not reasons else None,
            model_version=v,
        )

    async def _post_predictor(self, path: str, body: dict, tracker: Tracker) -> dict:
        started = time.perf_counter()
        try:
            resp = await self.client.post(f"{PREDICTOR_OPENAI_PREFIX}/{path}", json=body)
        finally:
            tracker.predictor_s += time.perf_counter() - started
        if resp.status_code == 200:
            data = resp.json()
            self._note_version(tracker, resp.headers, data.get("model"))
            return data
        self._note_version(tracker, resp.headers, None)  # vLLM's errors name no model
        raise self._upstream_error(resp.status_code, resp.content)

    def _note_version(self, tracker: Tracker, headers: httpx.Headers, model: object) -> None:
        """Label the request with the version that answered, if the response names one."""
        header = headers.get(versioning.HEADER)
        answered = versioning.answered_by(header, model, self.cfg.model_name)
        if answered is not None:
            tracker.version = answered

    def _upstream_error(self, status: int, content: bytes) -> oa.APIError:
        try:
            message = json.loads(content)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = content[:200].decode("utf-8", "replace")
        if status in (429, 503):
            retry = {"Retry-After": str(self.cfg.limits.retry_after_s)}
            return oa.APIError(status, f"predictor: {message}", type="overloaded", headers=retry)
        if 400 <= status < 500:
            return oa.APIError(status, message)
        return oa.APIError(502, f"predictor failed ({status}): {message}", type="bad_gateway")

    def _tag(self, outcome: Outcome) -> dict[str, Any]:
        return {
            "status": outcome.status,
            "session_id": outcome.session_id,
            "confidence": outcome.confidence,
            "model_version": outcome.model_version or self.metrics.model_version,
        }

    # -- chat -----------------------------------------------------------------------------
    async def chat(self, request: Request) -> Response:
        return await self._openai(request, "chat", self._chat)

    async def _chat(self, raw: bytes, tracker: Tracker) -> Response:
        req = oa.parse_request(oa.ChatCompletionRequest, raw)
        model = self._check_model(req.model)
        limits = self.cfg.limits
        if len(req.messages) > limits.max_messages:
            raise oa.APIError(
                400,
                f"{len(req.messages)} messages; the limit is {limits.max_messages}",
                param="messages",
            )
        messages = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in req.messages
        ]
        self._check_limits(req, sum(len(m["content"]) for m in messages))
        users = [m["content"] for m in messages if m["role"] == "user"]
        if not users:
            raise oa.APIError(
                400, "messages must contain at least one user message", param="messages"
            )
        scrubbed = [{**m, "content": guardrails.scrub_pii(m["content"])} for m in messages]
        if self.cfg.system_prompt and not any(m["role"] == "system" for m in scrubbed):
            scrubbed.insert(0, {"role": "system", "content": self.cfg.system_prompt})
        question = guardrails.scrub_pii(users[-1])
        rid, created = oa.new_id("chatcmpl"), oa.now()

        outcome = await self._pre_model_outcome(question, scrubbed)
        if outcome is None and req.stream and not self.cfg.review.hold_streams:
            tracker.deferred = True
            body = self._upstream_body(req, model, scrubbed, stream=True)
            return StreamingResponse(
                self._live_chat_stream(body, req, question, scrubbed, rid, created, tracker),
                media_type="text/event-stream",
            )
        if outcome is None:
            body = self._upstream_body(req, model, scrubbed, stream=False)
            data = await self._post_predictor("chat/completions", body, tracker)
            choice = data["choices"][0]
            content = (choice.get("logprobs") or {}).get("content") or []
            outcome = await self._model_outcome(
                question,
                scrubbed,
                choice["message"]["content"] or "",
                [t["logprob"] for t in content],
                choice.get("finish_reason") or "stop",
                data.get("usage") or {},
                {"content": content} if req.logprobs else None,
                tracker.version,
            )
        if req.stream:
            tracker.deferred = True
            return StreamingResponse(
                self._replay_stream(
                    outcome, oa.ChunkStream(True, rid, model, created), req.include_usage(), tracker
                ),
                media_type="text/event-stream",
            )
        body = oa.chat_completion(
            id=rid,
            model=model,
            text=outcome.text,
            finish_reason=outcome.finish_reason,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
        )
        body["choices"][0]["logprobs"] = outcome.upstream_logprobs
        body["taigimed"] = self._tag(outcome)
        return JSONResponse(body, headers=self._headers(outcome, tracker))

    def _headers(self, outcome: Outcome, tracker: Tracker) -> dict[str, str]:
        overhead = (time.perf_counter() - tracker.started - tracker.predictor_s) * 1000
        return {
            "x-taigimed-session-id": outcome.session_id,
            "x-taigimed-status": outcome.status,
            "x-taigimed-guard-overhead-ms": f"{overhead:.3f}",
        }

    def _upstream_body(
        self, req: oa.SamplingFields, model: str, messages: list[dict], stream: bool
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model,
            "messages": messages,
            "logprobs": True,
            "top_logprobs": getattr(req, "top_logprobs", 0) or 0,
            "stream": stream,
        }
        for key in ("max_tokens", "temperature", "top_p", "seed", "stop", "ignore_eos"):
            value = getattr(req, key)
            if value not in (None, []):
                body[key] = value
        if req.max_completion_tokens:
            body["max_tokens"] = req.max_completion_tokens
        if req.top_k != -1:
            body["top_k"] = req.top_k
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    async def _replay_stream(
        self, outcome: Outcome, chunks: oa.ChunkStream, include_usage: bool, tracker: Tracker
    ) -> AsyncIterator[bytes]:
        """Stream a decided answer as OpenAI chunks (the answer was held until it was safe).

        The ``taigimed`` tag rides on the opening chunk (chat) and on the finishing one.
        """
        try:
            tag = self._tag(outcome)
            opening = chunks.opening()
            if opening is not None:
                yield oa.sse({**opening, "taigimed": tag})
            text = outcome.text
            for start in range(0, len(text), STREAM_PIECE_CHARS):
                yield oa.sse(chunks.text(text[start : start + STREAM_PIECE_CHARS]))
            last = chunks.closing(outcome.finish_reason)[-1]
            yield oa.sse({**last, "taigimed": tag})
            if include_usage:
                yield oa.sse(chunks.usage_chunk(outcome.prompt_tokens, outcome.completion_tokens))
            yield oa.SSE_DONE
        finally:
            tracker.finish(200)

    async def _live_chat_stream(
        self,
        body: dict,
        req: oa.ChatCompletionRequest,
        question: str,
        messages: list[dict],
        rid: str,
        created: int,
        tracker: Tracker,
    ) -> AsyncIterator[bytes]:
        """Pass tokens through as they come (``review.hold_streams: false``).

        The review decision can only be made at the end; a held answer then carries a closing
        note that a clinician will check it, since its words were already shown.
        """
        status = 200
        model = body["model"]
        chunks = oa.ChunkStream(True, rid, model, created)
        parts: list[str] = []
        lps: list[float] = []
        finish, usage = "stop", {}
        try:
            yield oa.sse(chunks.opening())
            async with self.client.stream(
                "POST", f"{PREDICTOR_OPENAI_PREFIX}/chat/completions", json=body
            ) as resp:
                self._note_version(tracker, resp.headers, None)
                if resp.status_code != 200:
                    err = self._upstream_error(resp.status_code, await resp.aread())
                    status = err.status
                    yield oa.sse(err.body())
                    yield oa.SSE_DONE
                    return
                async for line in resp.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    self._note_version(tracker, resp.headers, chunk.get("model"))
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices", []):
                        lps += [
                            t["logprob"]
                            for t in (choice.get("logprobs") or {}).get("content") or []
                        ]
                        piece = (choice.get("delta") or {}).get("content") or ""
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
                        if piece:
                            parts.append(piece)
                            yield oa.sse(chunks.text(piece))
            outcome = await self._model_outcome(
                question, messages, "".join(parts), lps, finish, usage, None, tracker.version
            )
            draft = "".join(parts).rstrip()
            tail = self._finish_text(draft)[len(draft) :]
            if outcome.status == "needs_review":
                tail = "\n\n" + self.cfg.review.pending_message + tail
            last = oa.chat_chunk(
                id=rid, model=model, created=created, delta={"content": tail}, finish_reason=finish
            )
            last["taigimed"] = self._tag(outcome)
            yield oa.sse(last)
            if req.include_usage():
                yield oa.sse(
                    chunks.usage_chunk(
                        usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
                    )
                )
            yield oa.SSE_DONE
        except httpx.HTTPError as err:
            status = 503
            yield oa.sse(self._unavailable(f"predictor unreachable: {err}").body())
        finally:
            tracker.finish(status)

    # -- text completions -----------------------------------------------------------------
    async def completions(self, request: Request) -> Response:
        return await self._openai(request, "completions", self._completions)

    async def _completions(self, raw: bytes, tracker: Tracker) -> Response:
        req = oa.parse_request(oa.CompletionRequest, raw)
        model = self._check_model(req.model)
        self._check_limits(req, len(req.prompt))
        prompt = guardrails.scrub_pii(req.prompt)
        messages = [{"role": "user", "content": prompt}]
        outcome = await self._pre_model_outcome(prompt, messages)
        if outcome is None:
            body = self._upstream_body(req, model, messages, stream=False)
            body.pop("messages")
            body.pop("top_logprobs")
            body["prompt"] = prompt
            body["logprobs"] = req.logprobs or 0
            data = await self._post_predictor("completions", body, tracker)
            choice = data["choices"][0]
            lp = choice.get("logprobs") or {}
            outcome = await self._model_outcome(
                prompt,
                messages,
                choice["text"],
                [x for x in lp.get("token_logprobs") or [] if x is not None],
                choice.get("finish_reason") or "stop",
                data.get("usage") or {},
                lp if req.logprobs is not None else None,
                tracker.version,
            )
        rid, created = oa.new_id("cmpl"), oa.now()
        if req.stream:
            tracker.deferred = True
            return StreamingResponse(
                self._replay_stream(
                    outcome,
                    oa.ChunkStream(False, rid, model, created),
                    req.include_usage(),
                    tracker,
                ),
                media_type="text/event-stream",
            )
        body = oa.text_completion(
            id=rid,
            model=model,
            text=outcome.text,
            finish_reason=outcome.finish_reason,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            logprobs=outcome.upstream_logprobs,
        )
        body["taigimed"] = self._tag(outcome)
        return JSONResponse(body, headers=self._headers(outcome, tracker))

    async def models(self, request: Request) -> Response:
        self._authorize(request, self.api_tokens)
        return JSONResponse(
            oa.model_list(
                [self.cfg.model_name],
                int(time.time()),
                self.cfg.predictor.max_model_len,
                self.cfg.model_version,
            )
        )

    async def guarded_answer(self, question: str) -> dict[str, Any]:
        """One question through the whole guard (KServe v1 ``:predict`` uses this)."""
        tracker = Tracker(self, "predict")
        self.inflight += 1
        status = 500
        try:
            raw = json.dumps(
                {"model": self.cfg.model_name, "messages": [{"role": "user", "content": question}]}
            ).encode()
            response = await self._chat(raw, tracker)
            status = response.status_code
            body = json.loads(response.body)
            return {"answer": body["choices"][0]["message"]["content"], **body["taigimed"]}
        except oa.APIError as err:
            status = err.status
            raise kserve.errors.InvalidInput(err.message) from None
        finally:
            tracker.finish(status)

    # -- review, sessions, feedback -------------------------------------------------------
    async def _json_body(self, request: Request) -> dict[str, Any]:
        raw = await self._read_body(request)
        try:
            data = json.loads(raw or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise oa.APIError(400, f"request body is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise oa.APIError(400, "request body must be a JSON object")
        return data

    @staticmethod
    def _text_field(data: dict, key: str, required: bool) -> str | None:
        value = data.get(key)
        if value is None or (isinstance(value, str) and not value.strip()):
            if required:
                raise oa.APIError(400, f"field '{key}' is required", param=key)
            return None
        if not isinstance(value, str):
            raise oa.APIError(400, f"field '{key}' must be a string", param=key)
        return guardrails.scrub_pii(value.strip())

    async def review_pending(self, request: Request, limit: int = 100, offset: int = 0) -> dict:
        self._authorize(request, self.reviewer_tokens)
        if not 1 <= limit <= 1000 or offset < 0:
            raise oa.APIError(400, "limit must be 1..1000 and offset >= 0")
        items = await asyncio.to_thread(self.store.pending, limit, offset)
        backlog = await asyncio.to_thread(self.store.backlog)
        return {"object": "list", "backlog": backlog, "data": items}

    async def _decide(self, request: Request, session_id: str, approve: bool) -> dict:
        self._authorize(request, self.reviewer_tokens)
        data = await self._json_body(request)
        reviewer = self._text_field(data, "reviewer", required=True)
        try:
            if approve:
                answer = self._text_field(data, "answer", required=False)
                note = self._text_field(data, "note", required=False)
                result = await asyncio.to_thread(
                    self.store.approve, session_id, reviewer, answer, note
                )
            else:
                reason = self._text_field(data, "reason", required=True)
                result = await asyncio.to_thread(self.store.reject, session_id, reviewer, reason)
        except NotFound:
            raise oa.APIError(404, f"no session {session_id}", param="session_id") from None
        except Conflict as err:
            raise oa.APIError(409, str(err), param="session_id") from None
        # The decision counts for the version that wrote the answer; the backlog is the queue's.
        decision = "approved" if approve else "rejected"
        self.metrics.reviews_decided.labels(result["model_version"], decision).inc()
        backlog = await asyncio.to_thread(self.store.backlog)
        self.metrics.backlog.labels(self.metrics.model_version).set(backlog)
        return result

    async def review_approve(self, request: Request, session_id: str) -> dict:
        return await self._decide(request, session_id, approve=True)

    async def review_reject(self, request: Request, session_id: str) -> dict:
        return await self._decide(request, session_id, approve=False)

    async def review_export(self, request: Request, since: str | None = None) -> Response:
        """Approved answers as JSONL SFT lines, for the next training run."""
        self._authorize(request, self.reviewer_tokens)
        when = None
        if since:
            try:
                when = dt.datetime.fromisoformat(since)
            except ValueError:
                raise oa.APIError(
                    400, f"since={since!r} is not an ISO date/time", param="since"
                ) from None

        def lines() -> str:
            return "".join(
                json.dumps(x, ensure_ascii=False) + "\n" for x in self.store.approved(when)
            )

        return Response(await asyncio.to_thread(lines), media_type="application/x-ndjson")

    async def session_status(self, request: Request, session_id: str) -> dict:
        """What the client may see of a session: never a held draft."""
        self._authorize(request, self.api_tokens)
        try:
            s = await asyncio.to_thread(self.store.get, session_id)
        except NotFound:
            raise oa.APIError(404, f"no session {session_id}", param="session_id") from None
        answer = None
        if s["status"] == "rejected":
            answer = self._finish_text(self.cfg.review.rejected_message)
        elif s["final_answer"] is not None:
            answer = self._finish_text(s["final_answer"])
        return {
            "session_id": s["session_id"],
            "status": s["status"],
            "answer": answer,
            "confidence": s["confidence"],
            "model_version": s["model_version"],
            "review_note": s["review_note"] if s["status"] == "rejected" else None,
            "created_at": s["created_at"],
            "updated_at": s["updated_at"],
            "reviewed_at": s["reviewed_at"],
            "feedback": s["feedback"],
        }

    async def feedback(self, request: Request) -> dict:
        """A thumb (``rating``), a 1-5 ``score`` and/or a reported problem (``category`` +
        ``comment``), stored with the session; only thumbs feed the feedback metric."""
        self._authorize(request, self.api_tokens)
        data = await self._json_body(request)
        session_id = self._text_field(data, "session_id", required=True)
        rating, score, category = data.get("rating"), data.get("score"), data.get("category")
        try:
            check_feedback(rating, score, category)
        except ValueError as err:
            raise oa.APIError(400, str(err), param="rating") from None
        comment = self._text_field(data, "comment", required=False)
        try:
            feedback_id, version = await asyncio.to_thread(
                self.store.add_feedback, session_id, rating, comment, score, category
            )
        except NotFound:
            raise oa.APIError(404, f"no session {session_id}", param="session_id") from None
        # Feedback judges the version that answered the session, not this guard's label.
        if rating is not None:
            self.metrics.feedback.labels(version, rating).inc()
        return {
            "id": feedback_id,
            "session_id": session_id,
            "rating": rating,
            "score": score,
            "category": category,
        }

    async def metrics_route(self) -> Response:
        return Response(self.metrics.render(), media_type="text/plain; version=0.0.4")


class GuardModel(kserve.Model):
    """The guard as a KServe model, so v1/v2 health and model-ready are KServe's own."""

    def __init__(self, name: str, guard: Guard) -> None:
        super().__init__(name)
        self.guard = guard
        self.ready = True

    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> dict:
        """v1 ``{"instances": ["question", ...]}`` -> guarded answers with their status."""
        if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
            raise kserve.errors.InvalidInput('expected {"instances": ["question", ...]}')
        questions = []
        for i, item in enumerate(payload["instances"]):
            q = item.get("question") if isinstance(item, dict) else item
            if not isinstance(q, str) or not q.strip():
                raise kserve.errors.InvalidInput(f"instances[{i}] must be a question string")
            questions.append(q)
        answers = await asyncio.gather(*(self.guard.guarded_answer(q) for q in questions))
        return {"predictions": list(answers)}


async def _api_error_handler(_: Request, err: oa.APIError) -> JSONResponse:
    return _api_error_response(err)


def _api_error_response(err: oa.APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def build_guard_app(cfg: ServeConfig, predictor_url: str) -> tuple[FastAPI, Guard]:
    """The guard app: kserve health/v1/v2 for the model name, OpenAI, review and metrics."""
    host = predictor_url.split("://", 1)[-1].rstrip("/")
    set_predictor_config(host, health_check=PREDICTOR_HEALTH_CHECK)
    guard = Guard(cfg, predictor_url)
    app = build_app(
        [GuardModel(cfg.model_name, guard)], title="TaigiMed guard", on_shutdown=[guard.close]
    )
    guard.register(app)
    mount_ui(app, guard)  # /ui/ chat, /ui/review desk, /v1/review/history and /stats
    return app, guard


def run_guard(
    predictor_url: str,
    host: str = "127.0.0.1",
    port: int = 8080,
    cfg: ServeConfig | None = None,
    port_file: Path | None = None,
) -> None:
    """Serve the guard in front of ``predictor_url`` until SIGINT/SIGTERM (INTERFACES.md)."""
    app, _ = build_guard_app(cfg or ServeConfig(), predictor_url)
    serve(app, host, port, port_file)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m taigimed.serve.guard",
        description="The TaigiMed guard (KServe transformer) in front of an OpenAI predictor.",
    )
    parser.add_argument(
        "--predictor-url",
        "--predictor_host",
        dest="predictor_url",
        required=True,
        help="predictor base URL, e.g. http://127.0.0.1:8081 (KServe passes --predictor_host)",
    )
    parser.add_argument("--config", type=Path, help="serve.yaml (ServeConfig)")
    parser.add_argument("--host", help="bind address (default from config: 127.0.0.1)")
    parser.add_argument("--port", "--http_port", type=int, help="port (0 = ephemeral)")
    parser.add_argument("--model-name", "--model_name", help="served model name")
    parser.add_argument(
        "--model-version",
        help="fallback model_version label: for requests no model answered, and for answers "
        "that do not name their version (x-taigimed-model-version header or model: NAME-VERSION)",
    )
    parser.add_argument("--port-file", type=Path, help="write {host, port} here once bound")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    # KServe may pass more transformer flags (--predictor_protocol, --workers, ...) than the
    # guard uses; they are logged and ignored rather than stopping the pod.
    args, ignored = parser.parse_known_args(argv)
    from taigimed.utils import setup_logging

    setup_logging("INFO")
    if ignored:
        log.warning("ignoring arguments the guard does not use: %s", " ".join(ignored))
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per proxied call is noise
    cfg = load_config(ServeConfig, args.config, args.overrides)
    if args.model_name:
        cfg.model_name = args.model_name
    if args.model_version:
        cfg.model_version = args.model_version
    url = args.predictor_url if "://" in args.predictor_url else f"http://{args.predictor_url}"
    run_guard(
        url,
        host=args.host or cfg.host,
        port=cfg.port if args.port is None else args.port,
        cfg=cfg,
        port_file=args.port_file,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
