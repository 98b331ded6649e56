"""The page routes: ``/ui/`` (patient chat), ``/ui/review`` (review desk), their static files.

The HTML, CSS and JavaScript are files in ``static/``, read once at start-up and served from
memory with a fixed list of names (no path from the request ever reaches the file system).
Every response carries ``SECURITY_HEADERS``: a content security policy that allows scripts,
styles, images and requests from this origin only and no inline script, so no secret and no
server value is ever written into a page; the pages read ``/ui/config.json`` instead.

``POST /ui/review`` is the desk for a browser without JavaScript: the login form posts the
token, and the answer is the queue, counters and history as plain HTML (read only). With
JavaScript the same form never posts: ``review.js`` keeps the token in ``sessionStorage`` and
sends it as a bearer header to the review API.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import urllib.parse
from importlib import resources
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from taigimed import guardrails
from taigimed.serve import openai_schema as oa
from taigimed.serve.context import GuardContext
from taigimed.serve.review_store import PROBLEM_CATEGORIES
from taigimed.serve.ui import render
from taigimed.serve.ui.desk_api import day_start

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
MAX_LOGIN_BYTES = 4096


def load_static() -> dict[str, bytes]:
    """Every file of ``static/`` by name, read once."""
    folder = resources.files("taigimed.serve.ui") / "static"
    return {
        f.name: f.read_bytes()
        for f in folder.iterdir()
        if f.is_file() and any(f.name.endswith(ext) for ext in STATIC_TYPES)
    }


def field_bounds(model: type, name: str) -> dict[str, float]:
    """The min/max the OpenAI schema accepts for ``name`` (one source for page and server)."""
    bounds: dict[str, float] = {}
    for rule in model.model_fields[name].metadata:
        for attr, key in (("ge", "min"), ("gt", "min_exclusive"), ("le", "max"), ("lt", "max")):
            if getattr(rule, attr, None) is not None:
                bounds[key] = float(getattr(rule, attr))
    return bounds


def reviewer_token_ok(ctx: GuardContext, token: str) -> bool:
    """The bearer check of the review API, for the desk's no-JavaScript login form."""
    tokens = ctx.admission.reviewer_tokens
    if not tokens:
        return True
    given = token.strip().encode()
    return any(hmac.compare_digest(given, t.encode()) for t in tokens)


def page_config(ctx: GuardContext) -> dict[str, Any]:
    """What the pages need to know about this server; no secret is ever in it."""
    cfg = ctx.cfg
    return {
        "model": cfg.model_name,
        "model_version": cfg.model_version,
        "auth_required": bool(ctx.admission.api_tokens),
        "poll_seconds": cfg.ui.poll_seconds,
        "limits": {
            "max_tokens": cfg.limits.max_tokens,
            "max_messages": cfg.limits.max_messages,
            "max_prompt_chars": cfg.limits.max_prompt_chars,
            "temperature": field_bounds(oa.ChatCompletionRequest, "temperature"),
            "top_p": field_bounds(oa.ChatCompletionRequest, "top_p"),
        },
        "defaults": {"temperature": cfg.predictor.default_temperature, "top_p": 1.0},
        "disclaimer": guardrails.DISCLAIMER,
        "disclaimer_markers": list(guardrails.DISCLAIMER_MARKERS),
        "problem_categories": list(PROBLEM_CATEGORIES),
    }


def build_pages(ctx: GuardContext) -> APIRouter:
    static = load_static()
    router = APIRouter(include_in_schema=False)

    def page(body: bytes | str, status: int = 200, media: str = STATIC_TYPES[".html"]) -> Response:
        headers = {**SECURITY_HEADERS, "Cache-Control": "no-store"}
        return Response(body, status_code=status, media_type=media, headers=headers)

    @router.get("/ui")
    async def ui_root() -> Response:
        return RedirectResponse("/ui/", status_code=308, headers=SECURITY_HEADERS)

    @router.get("/ui/")
    async def chat_page() -> Response:
        return page(static["chat.html"])

    @router.get("/ui/config.json")
    async def config_json() -> Response:
        return JSONResponse(page_config(ctx), headers={**SECURITY_HEADERS})

    @router.get("/ui/static/{name}")
    async def static_file(name: str) -> Response:
        if name not in static:
            return page("not found", 404, "text/plain; charset=utf-8")
        media = STATIC_TYPES["." + name.rsplit(".", 1)[-1]]
        return Response(
            static[name],
            media_type=media,
            headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
        )

    @router.get("/ui/review")
    async def review_page() -> Response:
        return page(render.review_page(static["review.html"].decode()))

    @router.post("/ui/review")
    async def review_page_without_js(request: Request) -> Response:
        """The login form posted by a browser without JavaScript: the queue as plain HTML."""
        raw = b""
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > MAX_LOGIN_BYTES:
                return page("login form too large", 413, "text/plain; charset=utf-8")
        form = urllib.parse.parse_qs(raw.decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0]
        template = static["review.html"].decode()
        if not reviewer_token_ok(ctx, token):
            return page(render.review_page(template, login_error=True), 401)
        now = dt.datetime.now(dt.UTC)
        queue, history, stats = await asyncio.gather(
            asyncio.to_thread(ctx.store.pending, 200, 0),
            asyncio.to_thread(ctx.store.history, 50, 0),
            asyncio.to_thread(ctx.store.review_stats, now, day_start(now, 0)),
        )
        return page(render.review_page(template, queue=queue, history=history, stats=stats))

    return router
