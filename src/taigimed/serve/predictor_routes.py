"""The predictor's OpenAI routes: ``/openai/v1/{models,chat/completions,completions}``.

One code path for both routes (``OpenAIRoutes._generate``): a route gives how to encode its
request, the body of a whole answer and a streamed token's log-probs; parsing, the batcher,
streaming and metrics are shared. Response shapes come from ``openai_schema``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from taigimed.serve import openai_schema as oa
from taigimed.serve.batching import FinishEvent, GenerationHandle, TokenEvent
from taigimed.spec import serving_card

if TYPE_CHECKING:
    from taigimed.serve.predictor import TransformersLLM

OPENAI_PREFIX = "/openai/v1"


class OpenAIRoutes:
    """``/openai/v1/*`` handlers over a ``TransformersLLM``."""

    def __init__(self, llm: TransformersLLM, served_names: list[str]) -> None:
        self.llm = llm
        self.names = served_names
        self.metrics = llm.metrics

    def register(self, app: FastAPI) -> None:
        app.add_api_route(f"{OPENAI_PREFIX}/models", self.models, methods=["GET"])
        app.add_api_route(
            f"{OPENAI_PREFIX}/chat/completions", self.chat, methods=["POST"], response_model=None
        )
        app.add_api_route(
            f"{OPENAI_PREFIX}/completions", self.completions, methods=["POST"], response_model=None
        )

    def _observe(self, route: str, status: int, started: float) -> None:
        v = self.metrics.model_version
        self.metrics.requests.labels(v, route, str(status)).inc()
        self.metrics.latency.labels(v, route).observe(time.perf_counter() - started)

    def _check_model(self, name: str | None) -> str:
        if name is None:
            return self.names[0]
        if name not in self.names:
            raise oa.APIError(
                404,
                f"The model `{name}` does not exist. Served models: {', '.join(self.names)}",
                type="NotFoundError",
                param="model",
            )
        return name

    async def models(self) -> dict:
        llm = self.llm
        body = oa.model_list(self.names, llm.created, llm.max_model_len, str(llm.model_dir))
        for entry in body["data"]:  # the model card: trained values from taigimed.json
            entry["taigimed"] = serving_card(llm.spec, max_model_len=llm.max_model_len)
        return body

    async def chat(self, request: Request) -> Response:
        return await self._generate(
            request,
            route="chat",
            request_type=oa.ChatCompletionRequest,
            encode=lambda req: (
                self.llm.encode_chat(req.messages),
                req.top_logprobs if req.logprobs else 0,
            ),
            respond=_chat_response,
            event_logprobs=_chat_event_logprobs,
        )

    async def completions(self, request: Request) -> Response:
        return await self._generate(
            request,
            route="completions",
            request_type=oa.CompletionRequest,
            encode=lambda req: (self.llm.encode_text(req.prompt), req.logprobs or 0),
            respond=_completion_response,
            event_logprobs=_completion_event_logprobs,
        )

    async def _generate(
        self,
        request: Request,
        route: str,
        request_type: type[oa.SamplingFields],
        encode: Callable[[Any], tuple[list[int], int]],
        respond: Callable[[Any, str, str, dict], dict],
        event_logprobs: Callable[[Any, TokenEvent], Any],
    ) -> Response:
        """Parse, submit to the batcher, then answer whole or as SSE; every outcome is metered.

        ``encode(req)`` gives the prompt ids and how many top log-probs to keep per token,
        ``respond(req, model, id, result)`` the OpenAI body of a whole answer, and
        ``event_logprobs(req, event)`` a streamed token's log-probs (None when not asked).
        """
        started = time.perf_counter()
        try:
            req = oa.parse_request(request_type, await request.body())
            model = self._check_model(req.model)
            ids, top_logprobs = encode(req)
            handle = self.llm.submit(ids, self.llm.sampling(req, len(ids), top_logprobs))
        except oa.APIError as err:
            self._observe(route, err.status, started)
            raise
        chat = route == "chat"
        rid = oa.new_id("chatcmpl" if chat else "cmpl")
        if req.stream:
            chunks = oa.ChunkStream(chat, rid, model, oa.now())
            return StreamingResponse(
                self._stream(handle, chunks, req, event_logprobs, route, started),
                media_type="text/event-stream",
            )
        try:
            result = await self.llm.collect(handle)
        except oa.APIError as err:
            self._observe(route, err.status, started)
            raise
        self._observe(route, 200, started)
        return JSONResponse(respond(req, model, rid, result))

    async def _stream(
        self,
        handle: GenerationHandle,
        chunks: oa.ChunkStream,
        req: Any,
        event_logprobs: Callable[[Any, TokenEvent], Any],
        route: str,
        started: float,
    ) -> AsyncIterator[bytes]:
        status = 200
        try:
            opening = chunks.opening()
            if opening is not None:
                yield oa.sse(opening)
            async for event in self.llm.events(handle):
                if isinstance(event, TokenEvent):
                    lp = event_logprobs(req, event)
                    if event.text or lp:
                        yield oa.sse(chunks.text(event.text, lp))
                elif isinstance(event, FinishEvent):
                    for chunk in chunks.closing(event.finish_reason, event.text_tail):
                        yield oa.sse(chunk)
                    if req.include_usage():
                        yield oa.sse(
                            chunks.usage_chunk(event.prompt_tokens, event.completion_tokens)
                        )
                else:
                    status = 500
                    yield oa.sse(oa.error_body(event.message, "internal_error", None, 500))
            yield oa.SSE_DONE
        finally:
            self._observe(route, status, started)


def _whole_response(chat: bool, model: str, rid: str, result: dict, logprobs: Any) -> dict:
    """The OpenAI body of a whole (non-streamed) answer, chat or legacy completion."""
    finish = result["finish"]
    return oa.completion_body(
        chat,
        id=rid,
        model=model,
        text=result["text"],
        finish_reason=finish.finish_reason,
        stop_reason=finish.stop_reason,
        prompt_tokens=finish.prompt_tokens,
        completion_tokens=finish.completion_tokens,
        logprobs=logprobs,
    )


def _chat_response(req: oa.ChatCompletionRequest, model: str, rid: str, result: dict) -> dict:
    logprobs = None
    if req.logprobs:
        logprobs = [
            oa.chat_logprob_entry(t, lp, top)
            for t, lp, top in zip(
                result["tokens"], result["logprobs"], result["top_logprobs"], strict=True
            )
        ]
        logprobs = {"content": logprobs}
    return _whole_response(True, model, rid, result, logprobs)


def _completion_response(req: oa.CompletionRequest, model: str, rid: str, result: dict) -> dict:
    logprobs = None
    if req.logprobs is not None:
        tops = result["top_logprobs"] if req.logprobs else None
        logprobs = oa.completion_logprobs(result["tokens"], result["logprobs"], tops)
    return _whole_response(False, model, rid, result, logprobs)


def _chat_event_logprobs(req: oa.ChatCompletionRequest, event: TokenEvent) -> list | None:
    if not req.logprobs:
        return None
    return [oa.chat_logprob_entry(event.token, event.logprob, event.top_logprobs)]


def _completion_event_logprobs(req: oa.CompletionRequest, event: TokenEvent) -> dict | None:
    if req.logprobs is None:
        return None
    tops = [event.top_logprobs] if req.logprobs else None
    return oa.completion_logprobs([event.token], [event.logprob], tops)
