"""The CPU/CUDA predictor: a ``kserve.Model`` over transformers with OpenAI-compatible routes.

On a GPU cluster the predictor is KServe's vLLM runtime; this one serves the same API (the
request and response shapes of vLLM's OpenAI server) from a merged model directory with
transformers, so the guard, the tests and the demo run anywhere:

* ``POST /openai/v1/chat/completions`` and ``/openai/v1/completions`` (plain and SSE streaming,
  ``logprobs``/``top_logprobs``, ``stream_options.include_usage``), ``GET /openai/v1/models``;
* KServe v1/v2 health and model-ready routes, v1 ``:predict``
  (``{"instances": [{"prompt": ...}]}``);
* ``/metrics`` (Prometheus).

Every response carries ``x-taigimed-model-version: <version>`` (``taigimed.serve.version``), errors
included, so the one guard in front of Knative's stable/canary split labels each request with the
revision that actually answered. The version is ``--model-version``, else the env var
``TAIGIMED_MODEL_VERSION`` (set per revision by the manifests), else the serve config.

Requests are decoded together by ``ContinuousBatcher``. Run it with
``python -m taigimed.serve.predictor --model-dir DIR`` or ``run_predictor(...)``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from taigimed.config import ConfigError, load_config
from taigimed.serve import openai_schema as oa
from taigimed.serve import version as versioning
from taigimed.serve.batching import (
    ContinuousBatcher,
    ErrorEvent,
    FinishEvent,
    GenerationHandle,
    Overloaded,
    SamplingParams,
    TokenEvent,
)
from taigimed.serve.config import (
    DEFAULT_MAX_MODEL_LEN,
    LimitSettings,
    PredictorSettings,
    ServeConfig,
)
from taigimed.serve.door import Door, DoorPolicy, SlotThroughput
from taigimed.serve.kserve_app import build_app, import_kserve, serve
from taigimed.serve.metrics import PredictorMetrics
from taigimed.serve.predictor_routes import OPENAI_PREFIX, OpenAIRoutes
from taigimed.spec import ModelSpec, read_spec, resolve_max_len, serving_card

log = logging.getLogger(__name__)
kserve = import_kserve()

__all__ = ["OPENAI_PREFIX", "OpenAIRoutes", "TransformersLLM", "build_predictor_app", "main"]

RETRY = {"Retry-After": "1"}  # seconds; a batch slot frees up about this often


class TransformersLLM(kserve.Model):
    """A causal LM from a model directory, decoded by the continuous batcher."""

    def __init__(
        self,
        name: str,
        model_dir: str | Path,
        settings: PredictorSettings,
        metrics: PredictorMetrics,
    ) -> None:
        super().__init__(name)
        self.model_dir = Path(model_dir)
        self.settings = settings
        self.metrics = metrics
        self.tokenizer: Any = None
        self.batcher: ContinuousBatcher | None = None
        self.created = int(time.time())
        self.spec: ModelSpec | None = None
        self.max_model_len = settings.max_model_len
        self.throughput = SlotThroughput(settings.max_batch_size)

    def load(self) -> bool:
        import torch

        from taigimed.models import load_causal_lm, load_tokenizer

        if self.settings.torch_threads > 0:
            torch.set_num_threads(self.settings.torch_threads)
        device = None if self.settings.device == "auto" else self.settings.device
        started = time.perf_counter()
        self.tokenizer = load_tokenizer(self.model_dir)
        self.spec = read_spec(self.model_dir)
        self.max_model_len, source = resolve_max_len(
            self.settings.max_model_len, self.spec, DEFAULT_MAX_MODEL_LEN
        )
        prompt_source = serving_card(self.spec)["system_prompt_source"]
        log.info(
            "system prompt: %s; max_model_len %d: %s", prompt_source, self.max_model_len, source
        )
        model = load_causal_lm(self.model_dir, dtype=self.settings.dtype, device=device)
        version = self.metrics.model_version
        self.batcher = ContinuousBatcher(
            model,
            self.tokenizer,
            max_batch_size=self.settings.max_batch_size,
            batch_wait_ms=self.settings.batch_wait_ms,
            max_queue=self.settings.max_queue,
            max_model_len=self.max_model_len,
            on_step=lambda n: self.metrics.batch_size.labels(version).observe(n),
            on_finish=self.throughput.record,
        )
        # Read at scrape time, so the gauges fall back to 0 the moment the batcher is idle.
        batcher = self.batcher
        self.metrics.queue_depth.labels(version).set_function(lambda: batcher.queue_depth)
        self.metrics.running.labels(version).set_function(lambda: batcher.running)
        log.info(
            "loaded %s on %s in %.1f s (max_batch_size=%d)",
            self.model_dir,
            self.batcher.device,
            time.perf_counter() - started,
            self.settings.max_batch_size,
        )
        self.ready = True
        return self.ready

    def stop(self) -> None:
        if self.batcher is not None:
            self.batcher.close()
        self.ready = False

    # -- prompts and sampling -------------------------------------------------------------
    def encode_chat(self, messages: list[oa.ChatMessage]) -> list[int]:
        turns = [
            {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
            for m in messages
        ]
        text = self.tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_text(self, prompt: str) -> list[int]:
        return self.tokenizer(prompt)["input_ids"]

    def sampling(
        self, req: oa.SamplingFields, prompt_len: int, top_logprobs: int
    ) -> SamplingParams:
        """Sampling settings, with vLLM's context-length check as a 400."""
        limit = self.max_model_len
        if prompt_len == 0:  # "" or only characters the tokenizer drops ("\u0013")
            raise oa.APIError(400, "the prompt is empty once tokenized", param="prompt")
        if prompt_len >= limit:
            raise oa.APIError(
                400,
                f"This model's maximum context length is {limit} tokens; the prompt has "
                f"{prompt_len}. Shorten the messages.",
                param="messages",
            )
        max_tokens = req.requested_max_tokens()
        if max_tokens is None:
            max_tokens = min(self.settings.default_max_tokens, limit - prompt_len)
        elif prompt_len + max_tokens > limit:
            raise oa.APIError(
                400,
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt_len + max_tokens} tokens ({prompt_len} in the prompt, {max_tokens} in "
                "the completion). Reduce the length of the messages or max_tokens.",
                param="max_tokens",
            )
        temperature = req.temperature
        if temperature is None:
            temperature = self.settings.default_temperature
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=req.top_p,
            top_k=req.top_k,
            seed=req.seed,
            stop=list(req.stop or []),
            ignore_eos=req.ignore_eos,
            top_logprobs=top_logprobs,
        )

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> GenerationHandle:
        if not self.ready or self.batcher is None:
            raise oa.APIError(
                503, "model is not loaded yet", type="service_unavailable", headers=RETRY
            )
        try:
            handle = self.batcher.submit(prompt_ids, params)
        except Overloaded as err:
            raise oa.APIError(
                429, f"server busy: {err}; retry later", type="rate_limit_exceeded", headers=RETRY
            ) from None
        self.metrics.prompt_tokens.labels(self.metrics.model_version).inc(len(prompt_ids))
        return handle

    async def events(self, handle: GenerationHandle) -> AsyncIterator[Any]:
        """The handle's events, with time-to-first-token and token metrics recorded."""
        version = self.metrics.model_version
        first = True
        try:
            async for event in handle:
                if isinstance(event, TokenEvent):
                    if first:
                        waited = time.perf_counter() - handle.enqueued_at
                        self.metrics.first_token.labels(version).observe(waited)
                        first = False
                    self.metrics.tokens.labels(version).inc()
                yield event
        finally:
            handle.cancel()  # a client that went away frees its batch slot

    async def generate(self, prompt_ids: list[int], params: SamplingParams) -> dict[str, Any]:
        """Run one request to the end (see ``collect``)."""
        return await self.collect(self.submit(prompt_ids, params))

    async def collect(self, handle: GenerationHandle) -> dict[str, Any]:
        """Text, per-token log-probabilities and the finish event of one request."""
        text, tokens, logprobs, tops = [], [], [], []
        finish: FinishEvent | None = None
        async for event in self.events(handle):
            if isinstance(event, TokenEvent):
                text.append(event.text)
                tokens.append(event.token)
                logprobs.append(event.logprob)
                tops.append(event.top_logprobs)
            elif isinstance(event, FinishEvent):
                text.append(event.text_tail)
                finish = event
            elif isinstance(event, ErrorEvent):
                raise oa.APIError(500, event.message, type="internal_error")
        return {
            "text": "".join(text),
            "tokens": tokens,
            "logprobs": logprobs,
            "top_logprobs": tops,
            "finish": finish,
        }

    # -- KServe v1 ------------------------------------------------------------------------
    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> dict:
        """v1 ``{"instances": [{"prompt": str, "max_tokens": int}]}`` -> generated texts."""
        if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
            raise kserve.errors.InvalidInput('expected {"instances": [{"prompt": "..."}]}')
        jobs = []
        for i, item in enumerate(payload["instances"]):
            prompt = item.get("prompt") if isinstance(item, dict) else item
            if not isinstance(prompt, str) or not prompt:
                raise kserve.errors.InvalidInput(f"instances[{i}].prompt must be a string")
            fields = oa.SamplingFields.model_validate(
                {"max_tokens": item.get("max_tokens")} if isinstance(item, dict) else {}
            )
            ids = self.encode_text(prompt)
            jobs.append(self.generate(ids, self.sampling(fields, len(ids), 0)))
        results = await asyncio.gather(*jobs)
        return {
            "predictions": [
                {
                    "text": r["text"],
                    "finish_reason": r["finish"].finish_reason,
                    "completion_tokens": r["finish"].completion_tokens,
                }
                for r in results
            ]
        }


async def api_error_handler(_: Request, err: oa.APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


ASGIMessage = MutableMapping[str, Any]


class VersionHeader:
    """ASGI middleware: ``x-taigimed-model-version`` on every response this app sends.

    Pure ASGI rather than ``BaseHTTPMiddleware`` so streamed (SSE) responses pass through
    untouched; the header goes into the ``http.response.start`` message, before any body.
    """

    def __init__(self, app: Any, version: str) -> None:
        self.app = app
        self.header = (versioning.HEADER.encode(), version.encode())

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[ASGIMessage]],
        send: Callable[[ASGIMessage], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_version(message: ASGIMessage) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, send_with_version)


def unexpected_error_handler(model_version: str) -> Callable[..., Awaitable[JSONResponse]]:
    """A 500 in the OpenAI error shape for exceptions no route expected (a broken chat template,
    say). Starlette answers these outside every middleware, so the version header is set here:
    the guard must be able to blame the revision that failed."""

    async def handler(request: Request, err: Exception) -> JSONResponse:
        log.error("unexpected error on %s: %s: %s", request.url.path, type(err).__name__, err)
        body = oa.error_body(f"{type(err).__name__}: {err}", "internal_error", None, 500)
        return JSONResponse(body, status_code=500, headers={versioning.HEADER: model_version})

    return handler


def build_predictor_app(
    model_dir: str | Path,
    model_name: str,
    model_version: str,
    settings: PredictorSettings | None = None,
    limits: LimitSettings | None = None,
    api_tokens: set[str] | None = None,
) -> tuple[FastAPI, TransformersLLM]:
    """Load the model and return the app (kserve routes + OpenAI routes + /metrics), every route
    behind ``Door`` (tokens, body limit, in-flight, rate, shedding by measured capacity)."""
    if not versioning.is_label(model_version):
        raise ConfigError(
            f"model version {model_version!r} is not a usable label (letters, digits, '.', '_', "
            f"'-'; at most 63): set --model-version or {versioning.ENV} to e.g. v3"
        )
    settings = settings or PredictorSettings()
    metrics = PredictorMetrics(model_version)
    llm = TransformersLLM(model_name, model_dir, settings, metrics)
    llm.load()
    app = build_app([llm], title="TaigiMed predictor", on_shutdown=[llm.stop])
    OpenAIRoutes(llm, [model_name]).register(app)
    app.add_exception_handler(oa.APIError, api_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler(model_version))
    policy = DoorPolicy.from_limits(
        limits or LimitSettings(), api_tokens or set(), set(), capacity=llm.throughput
    )
    # added first = innermost: its own answers (401/413/429/500) still get the version header
    app.add_middleware(Door, policy=policy)
    app.add_middleware(VersionHeader, version=model_version)

    async def metrics_route() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    app.add_api_route("/metrics", metrics_route, methods=["GET"])
    return app, llm


def run_predictor(
    model_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8081,
    model_name: str = "taigimed",
    model_version: str = "dev",
    settings: PredictorSettings | None = None,
    port_file: Path | None = None,
    limits: LimitSettings | None = None,
    api_tokens: set[str] | None = None,
) -> None:
    """Load the model and serve until SIGINT/SIGTERM (the contract in INTERFACES.md)."""
    app, _ = build_predictor_app(model_dir, model_name, model_version, settings, limits, api_tokens)
    serve(app, host, port, port_file)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m taigimed.serve.predictor",
        description="Serve a merged model directory with OpenAI-compatible routes (KServe model).",
    )
    parser.add_argument("--model-dir", required=True, help="merged model directory")
    parser.add_argument("--config", type=Path, help="serve.yaml (ServeConfig)")
    parser.add_argument("--host", help="bind address (default from config: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (0 = ephemeral; default predictor_port)")
    parser.add_argument("--model-name", help="served model name (default from config)")
    parser.add_argument(
        "--model-version",
        help=f"the version this predictor serves: the model_version label on its metrics and the "
        f"{versioning.HEADER} response header (default: env {versioning.ENV}, else the config)",
    )
    parser.add_argument("--port-file", type=Path, help="write {host, port} here once bound")
    parser.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = parser.parse_args(argv)
    from taigimed.utils import setup_logging

    setup_logging("INFO")
    cfg = load_config(ServeConfig, args.config, args.overrides)
    run_predictor(
        args.model_dir,
        host=args.host or cfg.host,
        port=cfg.predictor_port if args.port is None else args.port,
        model_name=args.model_name or cfg.model_name,
        model_version=versioning.resolve(args.model_version, cfg.model_version),
        settings=cfg.predictor,
        port_file=args.port_file,
        limits=cfg.limits,
        api_tokens=set(cfg.auth.predictor_tokens()),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
