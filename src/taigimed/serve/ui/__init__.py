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

The guard mounts everything with one call, ``mount_ui(app, guard)``; ``DeskPort`` is the small
part of the guard the pages and the desk's read-only API need (store, settings, auth).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from taigimed.serve.ui.desk_api import build_desk_api
from taigimed.serve.ui.pages import build_pages
from taigimed.serve.ui.port import DeskPort

__all__ = ["DeskPort", "mount_ui"]


def mount_ui(app: FastAPI, guard: Any) -> None:
    """Add the pages and the desk's read-only API routes to the guard's app."""
    port = DeskPort.from_guard(guard)
    app.include_router(build_desk_api(port))
    if port.cfg.ui.enabled:
        app.include_router(build_pages(port))
