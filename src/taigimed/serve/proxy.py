"""The guard's OpenAI proxy: one code path for chat and completions, with hooks.

Shaped like kserve's ``OpenAIProxyModel`` (request in, predictor call, response or chunks
out, with overridable hooks around each step), but written once for both routes: what differs
between them is in ``taigimed.serve.exchange.Route``. The hooks, in the order they run:

1. ``pre_request(route, raw, tracker)``: parse and check the request, scrub PII, add the
   system prompt -> an ``Exchange``;
2. ``pre_model(ex)``: the decision taken before the model (``decision.before_model``); an
   ``Outcome`` here means the model is not called;
3. ``on_chunk(ex, piece)``: each piece of text of a live stream (``review.hold_streams:
   false``) before the client sees it; returns the text to send (e.g. hold back a broken
   character until the next piece completes it);
4. ``post_answer(ex, answer)``: the decision on the model's answer (``decision.after_model``),
   stored and counted -> the ``Outcome`` the client receives.

Extension points: a grounding check or an answer rewrite is a change to ``post_answer`` (or a
new step in ``decision.after_model`` if it is pure); streaming text fixes go in ``on_chunk``.

Streaming: by default an answer is decided before it is shown, then re-streamed in pieces
(``replay_stream``), so a held answer is never seen; with ``review.hold_streams: false`` tokens
pass through as they come (``live_stream``) and the decision is announced at the end.

Retrieval (``taigimed.retrieval``, when an index is served): between hooks 2 and 4, ``retrieve``
finds the top-k approved passages for a question that passed triage. A confident match grounds
the model (it is asked to answer from the passages); in ``post_answer`` a grounded answer that
fails the degenerate checks is replaced by the best passage itself, and an answer nothing
supported is held for review (``retrieval_low_confidence``).

Every guard response is the OpenAI shape plus ``taigimed: {status, session_id, confidence,
model_version, grounding, sources}``; see ``taigimed.serve.guard`` for which version a request
is labelled with. ``sources`` lists the retrieved passages (id, title, score, origin, reviewer).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from taigimed import quality
from taigimed.serve import decision
from taigimed.serve import openai_schema as oa
from taigimed.serve import version as versioning
from taigimed.serve.admission import Tracker, error_response
from taigimed.serve.context import GuardContext
from taigimed.serve.decision import Action
from taigimed.serve.exchange import CHAT, COMPLETIONS, Exchange, Route, UpstreamAnswer
from taigimed.serve.metrics import PROBE_HEADER, PROBE_ROUTE_SUFFIX
from taigimed.serve.review_store import NewSession

log = logging.getLogger(__name__)

OPENAI_PREFIX = "/openai/v1"
# Where the predictor serves its OpenAI routes: /openai/v1 for taigimed's predictor, /v1 for
# KServe's vLLM runtime (the manifests set this per runtime).
PREDICTOR_OPENAI_PREFIX = os.environ.get("TAIGIMED_PREDICTOR_OPENAI_PREFIX", OPENAI_PREFIX)
STREAM_PIECE_CHARS = 16  # buffered answers are re-streamed in pieces of this many characters


@dataclass
class Outcome:
    """What the guard decided for one question, ready to be rendered in either route's shape."""

    action: Action
    text: str
    session_id: str
    confidence: float | None
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    upstream_logprobs: Any = None
    model_version: str = ""  # the version that answered (the guard's own when no model did)
    sources: list[dict[str, Any]] = field(default_factory=list)  # retrieved passages
    # "" (no retrieval), "model_grounded", "passage" (the model's answer failed the checks and
    # the best approved passage was shown), "model_alone" (nothing matched well)
    grounding: str = ""
    rejected_model_answer: list[str] = field(default_factory=list)  # why, for "passage"

    @property
    def status(self) -> str:
        return self.action.value


class OpenAIProxy:
    """``/openai/v1/{models,chat/completions,completions}`` in front of the predictor."""

    def __init__(self, ctx: GuardContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.cfg
        self.metrics = ctx.metrics

    def router(self) -> APIRouter:
        router = APIRouter()
        add = router.add_api_route
        add(f"{OPENAI_PREFIX}/models", self.models, methods=["GET"])
        add(f"{OPENAI_PREFIX}/chat/completions", self.chat, methods=["POST"], response_model=None)
        add(f"{OPENAI_PREFIX}/completions", self.completions, methods=["POST"], response_model=None)
        return router

    async def models(self, request: Request) -> Response:
        self.ctx.admission.authorize_client(request)
        cfg = self.cfg
        max_len = cfg.predictor.max_model_len
        body = oa.model_list([cfg.model_name], int(time.time()), max_len, cfg.model_version)
        override = cfg.system_prompt
        for entry in body["data"]:  # an explicit prompt override is part of the model card
            entry["taigimed"] = {
                "system_prompt": override or None,
                "system_prompt_source": "override" if override else "the model's (taigimed.json)",
            }
        return JSONResponse(body)

    async def chat(self, request: Request) -> Response:
        return await self.handle(CHAT, request)

    async def completions(self, request: Request) -> Response:
        return await self.handle(COMPLETIONS, request)

    async def handle(self, route: Route, request: Request) -> Response:
        """Admission, auth, body limits and metrics around one OpenAI request."""
        admission = self.ctx.admission
        label = route.name
        if request.headers.get(PROBE_HEADER):
            label += PROBE_ROUTE_SUFFIX  # the rollout's own probes: kept out of user series
        try:
            tracker = admission.admit(label)
        except oa.APIError as err:
            return error_response(err)
        status = 500
        try:
            admission.authorize_client(request)
            raw = await admission.read_body(request)
            response = await self.respond(route, raw, tracker)
            status = response.status_code
            return response
        except oa.APIError as err:
            status = err.status
            return error_response(err)
        except httpx.HTTPError as err:
            status = 503
            return error_response(self.ctx.predictor_failed(err))
        finally:
            if not tracker.deferred:
                tracker.finish(status)

    async def respond(self, route: Route, raw: bytes, tracker: Tracker) -> Response:
        """The hooks in order, then the response in the shape and streaming mode asked for."""
        ex = self.pre_request(route, raw, tracker)
        outcome = await self.pre_model(ex)
        if outcome is None:
            await self.retrieve(ex)
        if outcome is None and ex.req.stream and not self.cfg.review.hold_streams:
            tracker.deferred = True
            return StreamingResponse(self.live_stream(ex), media_type="text/event-stream")
        if outcome is None:
            data = await self.post_predictor(route.path, route.upstream_body(ex, False), tracker)
            outcome = await self.post_answer(ex, route.read_answer(ex, data))
        if ex.req.stream:
            tracker.deferred = True
            replay = self.replay_stream(ex, outcome)
            return StreamingResponse(replay, media_type="text/event-stream")
        body = oa.completion_body(
            route.chat,
            id=ex.id,
            model=ex.model,
            text=outcome.text,
            finish_reason=outcome.finish_reason,
            prompt_tokens=outcome.prompt_tokens,
            completion_tokens=outcome.completion_tokens,
            logprobs=outcome.upstream_logprobs,
        )
        body["taigimed"] = self.tag(outcome)
        return JSONResponse(body, headers=self.headers(outcome, tracker))

    # -- hooks ---------------------------------------------------------------------------
    def pre_request(self, route: Route, raw: bytes, tracker: Tracker) -> Exchange:
        """Hook 1: the checked, scrubbed request (4xx ``APIError`` for a bad one)."""
        return route.read(raw, self.cfg, self.ctx.admission, tracker)

    async def pre_model(self, ex: Exchange) -> Outcome | None:
        """Hook 2: escalation or referral without the model, stored and counted; or None."""
        # In a thread: the detector's embedding is CPU work that must not stall the event loop.
        decided = await asyncio.to_thread(
            decision.before_model, ex.turns(), self.ctx.policy, self.ctx.chain
        )
        if decided is None:
            return None
        v = self.metrics.model_version
        if decided.action is Action.ESCALATED:
            for category in decided.categories:
                self.metrics.escalations.labels(v, category).inc()
        self.metrics.outcomes.labels(v, decided.action.value).inc()
        session_id = await self.ctx.save_session(
            NewSession(
                model_version=v,
                status=decided.action.value,
                question=ex.question,
                messages=ex.messages,
                draft_answer=None,
                final_answer=decided.text,
                confidence=None,
                review_reasons=[],
                categories=decided.categories,
            )
        )
        log.info("session %s %s %s", session_id, decided.action.value, decided.categories)
        return Outcome(decided.action, decided.text, session_id, None, model_version=v)

    async def retrieve(self, ex: Exchange) -> None:
        """Top-k approved passages for a question that passed triage; a confident match
        grounds the model's prompt. No index served: nothing changes."""
        knowledge = self.ctx.knowledge
        if knowledge is None:
            return
        from taigimed.retrieval.grounding import grounded_messages, grounded_prompt

        ex.grounding = await asyncio.to_thread(knowledge.ground, ex.question)
        if ex.grounding.mode == "grounded":
            ex.upstream_messages = grounded_messages(ex.messages, ex.grounding)
            ex.upstream_prompt = grounded_prompt(ex.question, ex.grounding)

    def grounded_answer(
        self, ex: Exchange, answer: UpstreamAnswer
    ) -> tuple[str, list[float], tuple[str, ...], str, list[str]]:
        """(text, token log-probs, extra review reasons, grounding mode, rejected-answer
        reasons) for the decision: the model's answer, or the best passage when a grounded
        answer is degenerate (approved text: no model confidence applies to it)."""
        g = ex.grounding
        if g is None:
            return answer.text, answer.token_logprobs, (), "", []
        from taigimed.retrieval.grounding import NO_MATCH_REASON, choose_answer

        if g.mode != "grounded":
            held = (NO_MATCH_REASON,) if self.cfg.retrieval.hold_ungrounded else ()
            return answer.text, answer.token_logprobs, held, "model_alone", []
        prompt_text = "\n".join(str(m.get("content", "")) for m in ex.messages)
        shown, verdict = choose_answer(answer.text, g, prompt_text)
        if verdict.ok:
            return answer.text, answer.token_logprobs, (), "model_grounded", []
        return shown, [], (), "passage", list(verdict.reasons)

    def on_chunk(self, ex: Exchange, piece: str) -> str:
        """Hook 3: one piece of a live stream's text before the client sees it: a trailing
        U+FFFD (the first bytes of a character cut by the backend) is not shown."""
        return quality.trim_partial_char(piece)

    async def post_answer(self, ex: Exchange, answer: UpstreamAnswer) -> Outcome:
        """Hook 4: confidence, review decision, disclaimer, storage and metrics for a model
        answer (labelled and stored with the version that answered)."""
        review = self.cfg.review
        text, token_logprobs, extra, mode, rejected = self.grounded_answer(ex, answer)
        system = next((m["content"] for m in ex.messages if m["role"] == "system"), "")
        decided = decision.after_model(
            ex.question,
            text,
            token_logprobs,
            self.ctx.policy,
            review,
            system_prompt=system,
            finish_reason=answer.finish_reason,
            extra_reasons=extra,
        )
        sources = ex.grounding.sources if ex.grounding is not None else []
        v, m = ex.tracker.version, self.metrics
        session_id = await self.ctx.save_session(
            NewSession(
                model_version=v,
                status=decided.action.value,
                question=ex.question,
                messages=ex.messages,
                draft_answer=decided.draft,
                final_answer=None if decided.held else decided.draft,
                confidence=decided.confidence,
                review_reasons=decided.review_reasons,
                categories=[],
                sources=sources,
            )
        )
        m.outcomes.labels(v, decided.action.value).inc()
        m.tokens.labels(v).inc(answer.usage.get("completion_tokens", 0))
        if decided.confidence is not None:
            m.confidence.labels(v).observe(decided.confidence)
        if decided.held:
            m.reviews_queued.labels(v).inc()
            # The backlog is the whole queue's size, not a per-version quantity.
            m.backlog.labels(m.model_version).inc()
            reasons = ", ".join(decided.review_reasons)
            log.info("session %s held for review: %s", session_id, reasons)
        return Outcome(
            decided.action,
            decided.client_text,
            session_id,
            decided.confidence,
            finish_reason=answer.finish_reason,
            prompt_tokens=answer.usage.get("prompt_tokens", 0),
            completion_tokens=answer.usage.get("completion_tokens", 0),
            upstream_logprobs=None if decided.held or mode == "passage" else answer.client_logprobs,
            model_version=v,
            sources=sources,
            grounding=mode,
            rejected_model_answer=rejected,
        )

    # -- the predictor ---------------------------------------------------------------------
    async def post_predictor(self, path: str, body: dict, tracker: Tracker) -> dict:
        started = time.perf_counter()
        try:
            resp = await self.ctx.client.post(f"{PREDICTOR_OPENAI_PREFIX}/{path}", json=body)
        finally:
            tracker.predictor_s += time.perf_counter() - started
        if resp.status_code == 200:
            data = resp.json()
            self.note_version(tracker, resp.headers, data.get("model"))
            return data
        self.note_version(tracker, resp.headers, None)  # vLLM's errors name no model
        raise self.upstream_error(resp.status_code, resp.content)

    def note_version(self, tracker: Tracker, headers: httpx.Headers, model: object) -> None:
        """Label the request with the version that answered, if the response names one."""
        header = headers.get(versioning.HEADER)
        answered = versioning.answered_by(header, model, self.cfg.model_name)
        if answered is not None:
            tracker.version = answered

    def upstream_error(self, status: int, content: bytes) -> oa.APIError:
        try:
            message = json.loads(content)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = content[:200].decode("utf-8", "replace")
        if status in (429, 503):
            retry = self.ctx.admission.retry_after()
            return oa.APIError(status, f"predictor: {message}", type="overloaded", headers=retry)
        if 400 <= status < 500:
            return oa.APIError(status, message)
        return oa.APIError(502, f"predictor failed ({status}): {message}", type="bad_gateway")

    # -- rendering -------------------------------------------------------------------------
    def tag(self, outcome: Outcome) -> dict[str, Any]:
        tag = {
            "status": outcome.status,
            "session_id": outcome.session_id,
            "confidence": outcome.confidence,
            "model_version": outcome.model_version or self.metrics.model_version,
            "sources": outcome.sources,
        }
        if outcome.grounding:
            tag["grounding"] = outcome.grounding
        if outcome.rejected_model_answer:
            tag["model_answer_rejected"] = outcome.rejected_model_answer
        return tag

    def headers(self, outcome: Outcome, tracker: Tracker) -> dict[str, str]:
        return {
            "x-taigimed-session-id": outcome.session_id,
            "x-taigimed-status": outcome.status,
            "x-taigimed-guard-overhead-ms": f"{tracker.overhead_ms():.3f}",
        }

    async def replay_stream(self, ex: Exchange, outcome: Outcome) -> AsyncIterator[bytes]:
        """Stream a decided answer as OpenAI chunks (the answer was held until it was safe).

        The ``taigimed`` tag rides on the opening chunk (chat) and on the finishing one.
        """
        chunks = ex.chunks()
        try:
            tag = self.tag(outcome)
            opening = chunks.opening()
            if opening is not None:
                yield oa.sse({**opening, "taigimed": tag})
            text = outcome.text
            for start in range(0, len(text), STREAM_PIECE_CHARS):
                yield oa.sse(chunks.text(text[start : start + STREAM_PIECE_CHARS]))
            last = chunks.closing(outcome.finish_reason)[-1]
            yield oa.sse({**last, "taigimed": tag})
            if ex.req.include_usage():
                yield oa.sse(chunks.usage_chunk(outcome.prompt_tokens, outcome.completion_tokens))
            yield oa.SSE_DONE
        finally:
            ex.tracker.finish(200)

    async def live_stream(self, ex: Exchange) -> AsyncIterator[bytes]:
        """Pass tokens through as they come (``review.hold_streams: false``).

        The review decision can only be made at the end; a held answer then carries a closing
        note that a clinician will check it, since its words were already shown.
        """
        status, tracker, chunks = 200, ex.tracker, ex.chunks()
        parts: list[str] = []
        lps: list[float] = []
        finish, usage = "stop", {}
        body = ex.route.upstream_body(ex, stream=True)
        url = f"{PREDICTOR_OPENAI_PREFIX}/{ex.route.path}"
        try:
            opening = chunks.opening()
            if opening is not None:
                yield oa.sse(opening)
            async with self.ctx.client.stream("POST", url, json=body) as resp:
                self.note_version(tracker, resp.headers, None)
                if resp.status_code != 200:
                    err = self.upstream_error(resp.status_code, await resp.aread())
                    status = err.status
                    yield oa.sse(err.body())
                    yield oa.SSE_DONE
                    return
                async for line in resp.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    self.note_version(tracker, resp.headers, chunk.get("model"))
                    if chunk.get("usage"):
                        usage = chunk["usage"]
                    for choice in chunk.get("choices", []):
                        text, token_lps, _ = ex.route.read_choice(ex, choice)
                        lps += token_lps
                        if choice.get("finish_reason"):
                            finish = choice["finish_reason"]
                        piece = self.on_chunk(ex, text) if text else ""
                        if piece:
                            parts.append(piece)
                            yield oa.sse(chunks.text(piece))
            streamed = "".join(parts)
            answer = UpstreamAnswer(streamed, lps, finish, usage, None)
            outcome = await self.post_answer(ex, answer)
            held = outcome.action is Action.NEEDS_REVIEW
            tail = decision.live_stream_tail(streamed, held, self.ctx.policy, self.cfg.review)
            if outcome.grounding == "passage":  # its words were shown; the passage follows
                tail = "\n\n" + outcome.text
            last = chunks.last(finish, tail)
            last["taigimed"] = self.tag(outcome)
            yield oa.sse(last)
            if ex.req.include_usage():
                prompt_tokens = usage.get("prompt_tokens", 0)
                yield oa.sse(chunks.usage_chunk(prompt_tokens, usage.get("completion_tokens", 0)))
            yield oa.SSE_DONE
        except httpx.HTTPError as err:
            status = 503
            yield oa.sse(self.ctx.predictor_failed(err).body())
        finally:
            tracker.finish(status)

    async def guarded_answer(self, question: str) -> dict[str, Any]:
        """One question through the whole guard (KServe v1 ``:predict`` uses this); a bad one
        raises ``APIError`` for the caller to render in its own protocol."""
        tracker = self.ctx.admission.enter("predict")
        status = 500
        try:
            messages = [{"role": "user", "content": question}]
            raw = json.dumps({"model": self.cfg.model_name, "messages": messages}).encode()
            response = await self.respond(CHAT, raw, tracker)
            status = response.status_code
            body = json.loads(response.body)
            return {"answer": body["choices"][0]["message"]["content"], **body["taigimed"]}
        except oa.APIError as err:
            status = err.status
            raise
        finally:
            tracker.finish(status)
