"""Web pages the guard serves for the two people the service is for.

* ``/ui/``: the patient chat (conversation kept in the browser session and sent as one
  conversation, streamed answers, a red 119 banner for emergencies, waiting-for-a-doctor
  answers that fill in once approved, feedback and problem reports, large text);
* ``/ui/review``: the clinician review desk (queue, approve / edit / reject, history, counters).

They are served by the guard process itself: same origin, same bearer tokens, no second server
and no build step. The pages are static HTML, CSS and JavaScript in ``static/`` (written by
hand, no CDN, nothing fetched at run time); the only server-rendered HTML is the review desk's
read-only queue for browsers without JavaScript (``render``). Every response carries a
content security policy that allows scripts, styles and requests to this origin only.

The guard includes everything as one entry of ``taigimed.serve.guard.ROUTERS``:
``ui_router(ctx)``, over the process's ``GuardContext`` (store, settings, admission).
"""

from __future__ import annotations

from fastapi import APIRouter

from taigimed.serve.context import GuardContext
from taigimed.serve.ui.desk_api import build_desk_api
from taigimed.serve.ui.pages import build_pages

__all__ = ["ui_router"]


def ui_router(ctx: GuardContext) -> APIRouter:
    """The desk's read-only API routes, and the pages unless ``ui.enabled`` is false."""
    router = APIRouter()
    router.include_router(build_desk_api(ctx))
    if ctx.cfg.ui.enabled:
        router.include_router(build_pages(ctx))
    return router
