"""The guard's non-OpenAI routes, one FastAPI router per concern.

* ``review_router``: the clinician queue, ``/v1/review/*`` (reviewer tokens);
* ``sessions_router``: what a client may see of its session, ``/v1/sessions/{id}``;
* ``feedback_router``: thumbs up/down on an answer, ``/v1/feedback``;
* ``metrics_router``: Prometheus ``/metrics``.

Each takes the process's ``GuardContext`` and returns an ``APIRouter``;
``taigimed.serve.guard.ROUTERS`` lists the ones the app includes. Extension point: a new
group of routes (web UI pages, say) is one more module with a ``*_router(ctx)`` function and
one entry in ``ROUTERS``. Every refusal is an ``APIError`` (4xx with a reason).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from taigimed import guardrails
from taigimed.serve import openai_schema as oa
from taigimed.serve.context import GuardContext
from taigimed.serve.decision import session_answer
from taigimed.serve.review_store import Conflict, NotFound


def text_field(data: dict, key: str, required: bool) -> str | None:
    """A string field of a JSON body, stripped and PII-scrubbed (it will be stored)."""
    value = data.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise oa.APIError(400, f"field '{key}' is required", param=key)
        return None
    if not isinstance(value, str):
        raise oa.APIError(400, f"field '{key}' must be a string", param=key)
    return guardrails.scrub_pii(value.strip())


def _no_session(session_id: str) -> oa.APIError:
    return oa.APIError(404, f"no session {session_id}", param="session_id")


def review_router(ctx: GuardContext) -> APIRouter:
    router = APIRouter()
    store, metrics, admission = ctx.store, ctx.metrics, ctx.admission

    @router.get("/v1/review/pending")
    async def review_pending(request: Request, limit: int = 100, offset: int = 0) -> dict:
        admission.authorize_reviewer(request)
        if not 1 <= limit <= 1000 or offset < 0:
            raise oa.APIError(400, "limit must be 1..1000 and offset >= 0")
        items = await asyncio.to_thread(store.pending, limit, offset)
        backlog = await asyncio.to_thread(store.backlog)
        return {"object": "list", "backlog": backlog, "data": items}

    @router.get("/v1/review/export", response_model=None)
    async def review_export(request: Request, since: str | None = None) -> Response:
        """Approved answers as JSONL SFT lines, for the next training run."""
        admission.authorize_reviewer(request)
        when = None
        if since:
            try:
                when = dt.datetime.fromisoformat(since)
            except ValueError:
                raise oa.APIError(
                    400, f"since={since!r} is not an ISO date/time", param="since"
                ) from None

        def lines() -> str:
            return "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in store.approved(when))

        return Response(await asyncio.to_thread(lines), media_type="application/x-ndjson")

    async def decide(request: Request, session_id: str, approve: bool) -> dict:
        admission.authorize_reviewer(request)
        data = await admission.json_body(request)
        reviewer = text_field(data, "reviewer", required=True)
        try:
            if approve:
                answer = text_field(data, "answer", required=False)
                note = text_field(data, "note", required=False)
                result = await asyncio.to_thread(store.approve, session_id, reviewer, answer, note)
            else:
                reason = text_field(data, "reason", required=True)
                result = await asyncio.to_thread(store.reject, session_id, reviewer, reason)
        except NotFound:
            raise _no_session(session_id) from None
        except Conflict as err:
            raise oa.APIError(409, str(err), param="session_id") from None
        # The decision counts for the version that wrote the answer; the backlog is the queue's.
        decision = "approved" if approve else "rejected"
        metrics.reviews_decided.labels(result["model_version"], decision).inc()
        backlog = await asyncio.to_thread(store.backlog)
        metrics.backlog.labels(metrics.model_version).set(backlog)
        return result

    @router.post("/v1/review/{session_id}/approve")
    async def review_approve(request: Request, session_id: str) -> dict:
        return await decide(request, session_id, approve=True)

    @router.post("/v1/review/{session_id}/reject")
    async def review_reject(request: Request, session_id: str) -> dict:
        return await decide(request, session_id, approve=False)

    return router


def sessions_router(ctx: GuardContext) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/sessions/{session_id}")
    async def session_status(request: Request, session_id: str) -> dict:
        """What the client may see of a session: never a held draft."""
        ctx.admission.authorize_client(request)
        try:
            s = await asyncio.to_thread(ctx.store.get, session_id)
        except NotFound:
            raise _no_session(session_id) from None
        return {
            "session_id": s["session_id"],
            "status": s["status"],
            "answer": session_answer(s, ctx.policy, ctx.cfg.review),
            "confidence": s["confidence"],
            "model_version": s["model_version"],
            "review_note": s["review_note"] if s["status"] == "rejected" else None,
            "created_at": s["created_at"],
            "updated_at": s["updated_at"],
            "reviewed_at": s["reviewed_at"],
            "feedback": s["feedback"],
        }

    return router


def feedback_router(ctx: GuardContext) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/feedback", status_code=201)
    async def feedback(request: Request) -> dict[str, Any]:
        ctx.admission.authorize_client(request)
        data = await ctx.admission.json_body(request)
        session_id = text_field(data, "session_id", required=True)
        rating = data.get("rating")
        if rating not in ("up", "down"):
            raise oa.APIError(400, "rating must be 'up' or 'down'", param="rating")
        comment = text_field(data, "comment", required=False)
        try:
            feedback_id, version = await asyncio.to_thread(
                ctx.store.add_feedback, session_id, rating, comment
            )
        except NotFound:
            raise _no_session(session_id) from None
        # Feedback judges the version that answered the session, not this guard's label.
        ctx.metrics.feedback.labels(version, rating).inc()
        return {"id": feedback_id, "session_id": session_id, "rating": rating}

    return router


def metrics_router(ctx: GuardContext) -> APIRouter:
    router = APIRouter()

    @router.get("/metrics")
    async def metrics_route() -> Response:
        return Response(ctx.metrics.render(), media_type="text/plain; version=0.0.4")

    return router
