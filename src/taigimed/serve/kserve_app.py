"""A FastAPI app carrying KServe's own REST data plane, plus a server bound where we say.

Why not ``kserve.ModelServer().start(...)``: it binds 0.0.0.0 with no option to change it, starts
a gRPC server, owns signal handling, and uses one module-level app (two servers in one test
process would share routes). We reuse kserve's pieces instead -- ``ModelRepository``,
``DataPlane``, the v1/v2 route registration and its exception handlers -- on a fresh app, so
health (``/``, ``/v1/models/{name}``, ``/v2/health/live``, ``/v2/health/ready``,
``/v2/models/{name}/ready``) and model-ready semantics are exactly KServe's, and the OpenAI
routes are added next to them.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import socket
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _plain_argv() -> Iterator[None]:
    """kserve parses ``sys.argv`` when imported; hide our own flags from it."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


def import_kserve() -> Any:
    with _plain_argv():
        import kserve

    return kserve


REPOSITORY_PREFIX = "/v2/repository/"
READY_PATH = "/v2/health/ready"


def build_app(
    models: list[Any],
    title: str,
    on_shutdown: Sequence[Callable[[], Any]] = (),
    openapi: bool = False,
) -> FastAPI:
    """A FastAPI app with kserve's health, v1 and v2 routes for ``models``.

    ``on_shutdown`` callables run when the server stops (sync or async). The v2 model
    repository routes (``/v2/repository/models/{name}/load|unload``) are removed: an
    unauthenticated unload left every chat failing while the probes said ready, and no served
    profile needs them (a model is loaded once per pod; a new one is a new revision).
    The ``/v2/models/{name}/versions/{v}/...`` routes are removed too: kserve answers them 501
    (model versioning not supported), a 5xx for a client's request.
    ``/v2/health/ready`` is false whenever one of ``models`` is gone or not ready.
    ``openapi=True`` publishes ``/openapi.json`` (the guard's contract; no HTML docs pages).
    """
    import_kserve()
    from kserve import errors
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.v1_endpoints import register_v1_endpoints
    from kserve.protocol.rest.v2_endpoints import register_v2_endpoints

    repository = ModelRepository()
    for model in models:
        repository.update(model)
    dataplane = DataPlane(model_registry=repository)
    extension = ModelRepositoryExtension(model_registry=repository)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        for hook in on_shutdown:
            result = hook()
            if inspect.isawaitable(result):
                await result

    app = FastAPI(
        title=title,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if openapi else None,
        lifespan=lifespan,
    )
    app.add_api_route("/", dataplane.live, methods=["GET"])
    routes = _FilteredRoutes(app, drop_prefix=REPOSITORY_PREFIX, replace={READY_PATH})
    register_v1_endpoints(routes, dataplane, extension)
    register_v2_endpoints(routes, dataplane, extension)
    ready = _strict_ready(models, repository, dataplane)
    app.add_api_route(READY_PATH, ready, methods=["GET"], response_model=None)
    for exc, handler in (
        (errors.InvalidInput, errors.invalid_input_handler),
        (errors.InferenceError, errors.inference_error_handler),
        (errors.ModelNotFound, errors.model_not_found_handler),
        (errors.ModelNotReady, errors.model_not_ready_handler),
        (NotImplementedError, _not_supported_handler),
        (errors.UnsupportedProtocol, errors.unsupported_protocol_error_handler),
        (errors.ServerNotLive, errors.server_not_live_handler),
        (errors.ServerNotReady, errors.server_not_ready_handler),
    ):
        app.add_exception_handler(exc, handler)
    app.state.dataplane = dataplane
    return app


async def _not_supported_handler(_: Any, err: NotImplementedError) -> Any:
    """kserve raises NotImplementedError for what a client asked and it does not support
    (``?model_version=`` on v2 routes): a 400 with the reason, not kserve's 501."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": f"not supported: {err}"}, status_code=400)


class _FilteredRoutes:
    """What kserve's ``register_v*_endpoints`` get instead of the app: their routers are
    included without the routes we drop or replace (filtered before inclusion, so nothing
    depends on how FastAPI stores included routers)."""

    def __init__(self, app: FastAPI, drop_prefix: str, replace: set[str]) -> None:
        self.app, self.drop_prefix, self.replace = app, drop_prefix, replace

    def include_router(self, router: Any, **kwargs: Any) -> None:
        router.routes[:] = [
            r
            for r in router.routes
            if not getattr(r, "path", "").startswith(self.drop_prefix)
            and "/versions/" not in getattr(r, "path", "")  # kserve answers these 501
            and getattr(r, "path", None) not in self.replace
        ]
        self.app.include_router(router, **kwargs)


def _strict_ready(models: list[Any], repository: Any, dataplane: Any) -> Callable[..., Any]:
    """kserve's server readiness asks only the models still registered (none after an
    unload = ready); ours asks every model this server was built to serve."""
    from fastapi.responses import JSONResponse

    async def ready() -> JSONResponse:
        missing = [m.name for m in models if repository.get_model(m.name) is not m or not m.ready]
        if missing:
            body = {"ready": False, "error": f"model(s) not loaded: {', '.join(missing)}"}
            return JSONResponse(body, status_code=503)
        if not await dataplane.ready():  # a transformer also asks its predictor
            return JSONResponse({"ready": False, "error": "predictor not ready"}, status_code=503)
        return JSONResponse({"ready": True})

    return ready


def set_predictor_config(predictor_host: str | None, health_check: bool) -> None:
    """Tell kserve (as ``--predictor_host`` does) where the predictor is, for readiness."""
    import_kserve()
    from kserve import context
    from kserve.predictor_config import PredictorConfig

    context.set_predictor_config(
        PredictorConfig(
            predictor_host=predictor_host,
            predictor_protocol="v2",
            predictor_health_check=health_check,
        )
    )


def bind(host: str, port: int) -> socket.socket:
    """Bind before serving, so ``port=0`` yields a known ephemeral port with no race."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def serve(app: FastAPI, host: str, port: int, port_file: Path | None = None) -> None:
    """Run ``app`` with uvicorn on ``host:port``; write ``{"host", "port"}`` to ``port_file``."""
    import uvicorn

    sock = bind(host, port)
    actual = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_config=None,
        timeout_keep_alive=65,
        timeout_graceful_shutdown=10,
        access_log=False,
    )
    server = uvicorn.Server(config)
    log.info("listening on http://%s:%d", host, actual)
    if port_file is not None:
        from taigimed.utils import write_json

        write_json(port_file, {"host": host, "port": actual})
    server.run(sockets=[sock])


def host_port_url(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}"
