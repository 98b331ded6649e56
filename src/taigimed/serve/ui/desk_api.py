"""Read-only review-desk routes: the audit trail and the desk's counters.

| route | who | what |
| --- | --- | --- |
| ``GET /v1/review/history?limit&offset`` | reviewer | decided sessions, newest first |
| ``GET /v1/review/stats?tz_offset_minutes`` | reviewer | backlog, waits, decisions today, |
| | | rejection rate per model version |

There is no route that changes a decision: a session is decided once (a second decision is the
review API's 409), so the history is the record, and nothing on the page can edit it.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from fastapi import APIRouter, Request

from taigimed.serve import openai_schema as oa
from taigimed.serve.context import GuardContext

MAX_PAGE = 1000
MAX_TZ_OFFSET_MIN = 14 * 60  # UTC-14 .. UTC+14 covers every time zone


def day_start(now: dt.datetime, tz_offset_minutes: int) -> dt.datetime:
    """Midnight of the reviewer's day, in UTC. ``tz_offset_minutes`` is the browser's
    ``Date.getTimezoneOffset()``: minutes *behind* UTC (Taiwan, UTC+8, sends -480)."""
    local = now - dt.timedelta(minutes=tz_offset_minutes)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    return midnight + dt.timedelta(minutes=tz_offset_minutes)


def check_page(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_PAGE or not 0 <= offset <= 10**9:
        raise oa.APIError(400, f"limit must be 1..{MAX_PAGE} and offset 0..10^9", param="limit")


def build_desk_api(ctx: GuardContext) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/review/history")
    async def review_history(request: Request, limit: int = 100, offset: int = 0) -> dict:
        """Who decided what, when, for which model version."""
        ctx.admission.authorize_reviewer(request)
        check_page(limit, offset)
        items = await asyncio.to_thread(ctx.store.history, limit, offset)
        return {"object": "list", "data": items}

    @router.get("/v1/review/stats")
    async def review_stats(request: Request, tz_offset_minutes: int = 0) -> dict:
        """The desk's counters; "today" starts at the reviewer's local midnight."""
        ctx.admission.authorize_reviewer(request)
        if abs(tz_offset_minutes) > MAX_TZ_OFFSET_MIN:
            raise oa.APIError(
                400, "tz_offset_minutes must be within ±840", param="tz_offset_minutes"
            )
        now = dt.datetime.now(dt.UTC)
        stats = await asyncio.to_thread(
            ctx.store.review_stats, now, day_start(now, tz_offset_minutes)
        )
        return {"object": "review.stats", "now": now.isoformat(), **stats}

    return router
