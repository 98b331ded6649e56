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

This module only assembles the guard; each part lives in its own module:

* ``decision``: pure decisions before and after the model, and the ``Action`` enum;
* ``proxy``: the OpenAI routes, one code path for chat and completions, with hooks;
* ``exchange``: what differs between the chat and completions routes;
* ``admission``: auth, size limits, requests in flight, per-request metrics;
* ``routers``: review, sessions, feedback and metrics routes;
* ``context``: the state they share (config, metrics, store, policy, predictor client).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from taigimed import embedding
from taigimed.config import load_config
from taigimed.serve import openai_schema as oa
from taigimed.serve import routers
from taigimed.serve.admission import api_error_handler, error_response
from taigimed.serve.config import ServeConfig
from taigimed.serve.context import GuardContext
from taigimed.serve.contract import publish
from taigimed.serve.door import Door, DoorPolicy
from taigimed.serve.exchange import CHAT, COMPLETIONS
from taigimed.serve.kserve_app import build_app, import_kserve, serve, set_predictor_config
from taigimed.serve.proxy import OPENAI_PREFIX, PREDICTOR_OPENAI_PREFIX, OpenAIProxy
from taigimed.serve.ui import ui_router

__all__ = [
    "OPENAI_PREFIX",
    "PREDICTOR_OPENAI_PREFIX",
    "ROUTERS",
    "Guard",
    "build_guard_app",
    "main",
    "run_guard",
]

log = logging.getLogger(__name__)
kserve = import_kserve()

# Whether the guard's readiness includes the predictor's KServe v2 readiness (/v2/health/ready).
# vLLM serves no v2 health route, so with the vLLM runtime the manifests turn this off; Knative
# routes to a predictor revision only once its own readiness probe (/v1/models) passes anyway.
_HEALTH_CHECK = os.environ.get("TAIGIMED_PREDICTOR_HEALTH_CHECK", "true").strip().lower()
PREDICTOR_HEALTH_CHECK = _HEALTH_CHECK not in ("0", "false", "no", "off")

# The routers the guard app includes besides the OpenAI proxy; a new group of routes (web UI
# pages, say) is a ``*_router(ctx) -> APIRouter`` function and one entry here.
ROUTERS = (
    routers.review_router,
    routers.sessions_router,
    routers.feedback_router,
    routers.metrics_router,
    ui_router,  # /ui/ chat, /ui/review desk, /v1/review/history and /v1/review/stats
)


class Guard:
    """One guard process: its shared state, its OpenAI proxy and its routes."""

    def __init__(self, cfg: ServeConfig, predictor_url: str) -> None:
        self.ctx = GuardContext.create(cfg, predictor_url)
        self.proxy = OpenAIProxy(self.ctx)
        self.cfg, self.metrics, self.store = cfg, self.ctx.metrics, self.ctx.store
        if cfg.system_prompt:
            log.warning(
                "system_prompt override: the model is prompted with %r instead of the prompt it "
                "was trained with (taigimed.json); the model list shows it as an override",
                cfg.system_prompt,
            )

    async def close(self) -> None:
        await self.ctx.close()

    def register(self, app: FastAPI) -> None:
        app.include_router(self.proxy.router())
        for make in ROUTERS:
            app.include_router(make(self.ctx))
        app.add_exception_handler(oa.APIError, api_error_handler)
        app.add_exception_handler(httpx.HTTPError, self._predictor_down_handler)

    async def _predictor_down_handler(self, _: Request, err: Exception) -> JSONResponse:
        return error_response(self.ctx.predictor_failed(err))


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
        answers = await asyncio.gather(*(self._answer(q) for q in questions))
        return {"predictions": list(answers)}

    async def _answer(self, question: str) -> dict[str, Any]:
        try:
            return await self.guard.proxy.guarded_answer(question)
        except oa.APIError as err:
            raise kserve.errors.InvalidInput(err.message) from None


def build_guard_app(cfg: ServeConfig, predictor_url: str) -> tuple[FastAPI, Guard]:
    """The guard app: kserve health/v1/v2 for the model name, OpenAI, review and metrics."""
    host = predictor_url.split("://", 1)[-1].rstrip("/")
    set_predictor_config(host, health_check=PREDICTOR_HEALTH_CHECK)
    embedding.configure(cfg.embedding_threads)  # before anything loads the model
    guard = Guard(cfg, predictor_url)
    app = build_app(
        [GuardModel(cfg.model_name, guard)],
        title="TaigiMed guard",
        on_shutdown=[guard.close],
        openapi=True,
    )
    guard.register(app)
    publish(app)  # GET /openapi.json: the contract (taigimed.serve.contract)
    # Every route behind the same door (KServe's own v1/v2 routes included); the guard has no
    # batch slots of its own, so shedding by capacity happens at the predictor's door and its
    # 429 comes back through the proxy with Retry-After.
    metrics = guard.metrics

    def count_refusal(path: str, status: int) -> None:
        """The door's refusals on the OpenAI routes count like the routes' own answers."""
        for route in (CHAT, COMPLETIONS):
            if path == f"{OPENAI_PREFIX}/{route.path}":
                metrics.requests.labels(metrics.model_version, route.name, str(status)).inc()

    policy = DoorPolicy.from_limits(
        cfg.limits, cfg.auth.api_tokens(), cfg.auth.reviewer_tokens(), on_refusal=count_refusal
    )
    app.add_middleware(Door, policy=policy)
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
