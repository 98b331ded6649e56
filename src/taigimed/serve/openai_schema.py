"""OpenAI-compatible request validation and response shapes, as vLLM's OpenAI server uses them.

kserve's own OpenAI types import vLLM, which cannot be installed beside CPU torch, so the shapes
are written here: ``chat.completion``, ``chat.completion.chunk``, ``text_completion``, the model
list, and the error body ``{"error": {"message", "type", "param", "code"}}``. Requests accept
unknown fields (vLLM accepts many extensions) but check the ones we act on, so a bad value is a
400 naming the field rather than a crash inside the batcher.
References: OpenAI API reference (chat/completions, completions, models) and vLLM's
``vllm/entrypoints/openai/protocol.py``.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

RequestT = TypeVar("RequestT", bound=BaseModel)


class APIError(Exception):
    """An error the client caused or can act on; rendered as an OpenAI error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.status)


def error_body(message: str, type: str, param: str | None, code: int) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """Message text; OpenAI 'content parts' of type text are joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text":
                raise APIError(400, f"content part type {part.get('type')!r} is not supported")
            parts.append(str(part.get("text", "")))
        return "".join(parts)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class SamplingFields(BaseModel):
    """Fields shared by chat and text completions."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=-1, ge=-1)  # vLLM extension
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False  # vLLM extension (benchmarks use it for fixed-length outputs)
    user: str | None = None

    @field_validator("n")
    @classmethod
    def _only_one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is supported")
        return value

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value: str | list[str] | None) -> list[str]:
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes at most 4 non-empty strings")
        return stops

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool = False
    top_logprobs: int = Field(default=0, ge=0, le=20)


class CompletionRequest(SamplingFields):
    prompt: str | list[str]
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _single_prompt(cls, value: str | list[str]) -> str:
        if isinstance(value, list):
            if len(value) != 1:
                raise ValueError("one prompt per request (send a string or a 1-item list)")
            value = value[0]
        return value

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value: bool) -> bool:
        if value:
            raise ValueError("echo is not supported")
        return value


def parse_request(model: type[RequestT], raw: bytes) -> RequestT:
    """Parse a JSON body into ``model``; malformed JSON or a bad field is a 400 naming it."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise APIError(400, f"request body is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise APIError(400, "request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise APIError(400, f"{where}: {first['msg']}", param=where) from None


# --- responses -------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_logprob_entry(token: str, logprob: float, top: dict[str, float] | None) -> dict:
    """One element of ``choices[].logprobs.content`` (OpenAI chat shape)."""
    return {
        "token": token,
        "logprob": logprob,
        "bytes": list(token.encode("utf-8")),
        "top_logprobs": [
            {"token": t, "logprob": lp, "bytes": list(t.encode("utf-8"))}
            for t, lp in (top or {}).items()
        ],
    }


def completion_body(
    chat: bool,
    *,
    id: str,
    model: str,
    text: str,
    finish_reason: str | None,
    prompt_tokens: int,
    completion_tokens: int,
    logprobs: Any = None,
    stop_reason: str | None = None,
) -> dict[str, Any]:
    """A whole (non-streamed) answer: ``chat.completion`` or legacy ``text_completion``.

    The two shapes differ only in where the text sits (``message`` or ``text``); ``logprobs``
    is the route's own object (chat ``{"content": [...]}``, completions the legacy dict) or
    None, so the predictor and the guard write both routes through this one function.
    """
    choice: dict[str, Any] = {"index": 0}
    if chat:
        choice["message"] = {"role": "assistant", "content": text, "tool_calls": []}
    else:
        choice["text"] = text
    choice.update(logprobs=logprobs, finish_reason=finish_reason, stop_reason=stop_reason)
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion" if chat else "text_completion",
        "created": now(),
        "model": model,
        "choices": [choice],
        "usage": usage(prompt_tokens, completion_tokens),
    }
    if chat:
        body["system_fingerprint"] = None
    return body


@dataclass(frozen=True)
class ChunkStream:
    """The chunks of one streamed answer, chat or legacy completion, in the order they are sent.

    Chat and completion streams differ only in chunk shape (a chat stream opens with an empty
    assistant delta and sends a finishing tail as its own content chunk); every streaming path
    of the predictor and the guard writes through this one sequence.
    """

    chat: bool
    id: str
    model: str
    created: int

    def _chunk(
        self,
        *,
        text: str | None = None,
        delta: dict[str, Any] | None = None,
        finish_reason: str | None = None,
        logprobs: Any = None,
        usage_info: dict[str, int] | None = None,
        with_choice: bool = True,
    ) -> dict[str, Any]:
        """One chunk; ``with_choice=False`` gives the final usage-only chunk."""
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": [],
        }
        if with_choice:
            choice: dict[str, Any] = {"index": 0}
            if self.chat:
                choice["delta"] = delta if delta is not None else _text_delta(text)
                choice["logprobs"] = {"content": logprobs} if logprobs is not None else None
            else:
                choice["text"] = text or ""
                choice["logprobs"] = logprobs
            choice["finish_reason"] = finish_reason
            chunk["choices"].append(choice)
        if usage_info is not None:
            chunk["usage"] = usage_info
        return chunk

    def opening(self) -> dict[str, Any] | None:
        """The first chunk (chat: the assistant role), or None for completions."""
        return self._chunk(delta={"role": "assistant", "content": ""}) if self.chat else None

    def text(self, text: str, logprobs: Any = None) -> dict[str, Any]:
        """A chunk of answer text (``logprobs``: chat entries or the legacy dict, or None)."""
        return self._chunk(text=text, logprobs=logprobs)

    def closing(self, finish_reason: str | None, tail: str = "") -> list[dict[str, Any]]:
        """The chunks that end the answer: any last text, then the finish reason."""
        if not self.chat:
            return [self.last(finish_reason, tail)]
        return ([self.text(tail)] if tail else []) + [self._chunk(finish_reason=finish_reason)]

    def last(self, finish_reason: str | None, tail: str) -> dict[str, Any]:
        """One chunk carrying both the last text and the finish reason (the guard's live stream
        ends this way, with its disclaimer or review note as the tail)."""
        return self._chunk(text=tail, finish_reason=finish_reason)

    def usage_chunk(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        """The usage-only chunk sent last when ``stream_options.include_usage`` asks for it."""
        return self._chunk(with_choice=False, usage_info=usage(prompt_tokens, completion_tokens))


def _text_delta(text: str | None) -> dict[str, Any]:
    return {} if text is None else {"content": text}


def completion_logprobs(tokens: list[str], logprobs: list[float], tops: list | None) -> dict:
    """The legacy completions ``logprobs`` object (tokens, token_logprobs, top_logprobs)."""
    offsets, pos = [], 0
    for tok in tokens:
        offsets.append(pos)
        pos += len(tok)
    return {
        "tokens": tokens,
        "token_logprobs": logprobs,
        "top_logprobs": tops,
        "text_offset": offsets,
    }


def model_list(names: list[str], created: int, max_model_len: int, root: str) -> dict:
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "taigimed",
                "root": root,
                "parent": None,
                "max_model_len": max_model_len,
            }
            for name in names
        ],
    }


def sse(obj: dict[str, Any] | str) -> bytes:
    """One server-sent event: ``data: <json>`` and a blank line (``[DONE]`` passes as text)."""
    payload = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    return f"data: {payload}\n\n".encode()


SSE_DONE = sse("[DONE]")
