"""The guard's published contract: ``GET /openapi.json`` with the real request and response models.

Why a table here rather than annotations on each route: the OpenAI routes read their body
themselves (the door has already size-checked it, and ``openai_schema.parse_request`` gives
OpenAI-style 400s instead of FastAPI's 422s), so FastAPI cannot infer their models. This module
names, per operation, the request model that route parses and the models of what it answers,
and every operation gets the error responses the door itself can give (400, 401, 413, 429, 500,
503) in the one OpenAI error shape. ``tests/integration/test_serve_contract.py`` runs
schemathesis against it: no 5xx, and every response matches what is written here.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from taigimed.serve import openai_schema as oa


class _Open(BaseModel):
    """Response models name what a client may rely on; more fields may come."""

    model_config = ConfigDict(extra="allow")


class ErrorDetail(_Open):
    message: str
    type: str
    param: str | None = None
    code: int | None = None
    request_id: str | None = None  # on unexpected errors (500), to find the log line


class ErrorResponse(_Open):
    error: ErrorDetail


class KServeError(_Open):
    """KServe's own error body on its v1/v2 routes (InvalidInput, ModelNotFound, ...)."""

    error: str


class Usage(_Open):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class GuardTag(_Open):
    """What the guard adds to every answer."""

    status: str  # answered | escalated | referred | needs_review
    session_id: str | None
    confidence: float | None
    model_version: str | None


class AssistantMessage(_Open):
    role: Literal["assistant"]
    content: str | None


class ChatChoice(_Open):
    index: int
    message: AssistantMessage
    finish_reason: str | None


class ChatCompletion(_Open):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage | None = None
    taigimed: GuardTag


class TextChoice(_Open):
    index: int
    text: str
    finish_reason: str | None


class TextCompletion(_Open):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage | None = None
    taigimed: GuardTag


class ModelCard(_Open):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(_Open):
    object: Literal["list"]
    data: list[ModelCard]


class ReviewList(_Open):
    object: Literal["list"]
    backlog: int
    data: list[dict[str, Any]]


class ApproveRequest(BaseModel):
    reviewer: str = Field(min_length=1)
    answer: str | None = None  # the edited answer users get instead of the draft
    note: str | None = None


class RejectRequest(BaseModel):
    reviewer: str = Field(min_length=1)
    reason: str = Field(min_length=1)


class ReviewedSession(_Open):
    session_id: str
    status: str
    model_version: str | None = None


class SessionStatus(_Open):
    session_id: str
    status: str
    answer: str | None
    confidence: float | None
    model_version: str | None


class FeedbackRequest(BaseModel):
    session_id: str = Field(min_length=1)
    rating: Literal["up", "down"]
    comment: str | None = None


class FeedbackReceipt(_Open):
    id: int | str
    session_id: str
    rating: Literal["up", "down"]


JSON = "application/json"
SSE = "text/event-stream"
# Errors the door can answer on any route, before the route runs.
DOOR_ERRORS = {
    "400": "malformed body: not UTF-8, not JSON, nested too deep, or unencodable text",
    "401": "missing or invalid bearer token (when tokens are configured)",
    "404": "no such route, model or session",
    "413": "body over limits.max_request_bytes",
    "429": "rate limit, in-flight limit or capacity: retry after Retry-After seconds",
    "500": "unexpected error (JSON, with a request id)",
    "503": "the predictor is unreachable or not ready: retry after Retry-After seconds",
}
# (method, path) -> (request model or None, {status: (description, model or media type)})
OPERATIONS: dict[tuple[str, str], tuple[type[BaseModel] | None, dict[str, tuple[str, Any]]]] = {
    ("post", "/openai/v1/chat/completions"): (
        oa.ChatCompletionRequest,
        {
            "200": ("a guarded answer (JSON, or SSE chunks when stream=true)", ChatCompletion),
            "404": ("unknown model", ErrorResponse),
        },
    ),
    ("post", "/openai/v1/completions"): (
        oa.CompletionRequest,
        {
            "200": ("a guarded completion (JSON, or SSE chunks when stream=true)", TextCompletion),
            "404": ("unknown model", ErrorResponse),
        },
    ),
    ("get", "/openai/v1/models"): (None, {"200": ("the served model", ModelList)}),
    ("get", "/v1/review/pending"): (None, {"200": ("answers waiting for a clinician", ReviewList)}),
    ("get", "/v1/review/export"): (
        None,
        {"200": ("approved answers as JSONL SFT lines", "application/x-ndjson")},
    ),
    ("post", "/v1/review/{session_id}/approve"): (
        ApproveRequest,
        {
            "200": ("the approved session", ReviewedSession),
            "404": ("no such session", ErrorResponse),
            "409": ("already decided", ErrorResponse),
        },
    ),
    ("post", "/v1/review/{session_id}/reject"): (
        RejectRequest,
        {
            "200": ("the rejected session", ReviewedSession),
            "404": ("no such session", ErrorResponse),
            "409": ("already decided", ErrorResponse),
        },
    ),
    ("get", "/v1/sessions/{session_id}"): (
        None,
        {
            "200": ("what the client may see", SessionStatus),
            "404": ("no such session", ErrorResponse),
        },
    ),
    ("post", "/v1/feedback"): (
        FeedbackRequest,
        {"201": ("stored", FeedbackReceipt), "404": ("no such session", ErrorResponse)},
    ),
    ("get", "/metrics"): (None, {"200": ("Prometheus text format", "text/plain")}),
}


# Query parameters the routes bound themselves (a 400 outside these, never a 5xx).
QUERY_BOUNDS = {
    ("/v1/review/pending", "limit"): {"minimum": 1, "maximum": 1000},
    ("/v1/review/pending", "offset"): {"minimum": 0, "maximum": 1_000_000},  # limits default
}


def _media(schema_or_type: Any, schemas: dict[str, Any]) -> dict[str, Any]:
    if isinstance(schema_or_type, str):
        return {schema_or_type: {"schema": {"type": "string"}}}
    return {JSON: {"schema": {"$ref": f"#/components/schemas/{schema_or_type.__name__}"}}}


def contract(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document of ``app`` with the table above written into it."""
    spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
    models = {ErrorResponse, KServeError}
    for request_model, answers in OPERATIONS.values():
        if request_model is not None:
            models.add(request_model)
        models.update(m for _, m in answers.values() if not isinstance(m, str))
    _, defs = models_json_schema(
        [(m, "validation" if m in _request_models() else "serialization") for m in models],
        ref_template="#/components/schemas/{model}",
    )
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(defs.get("$defs", {}))
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            request_model, answers = OPERATIONS.get((method, path), (None, {}))
            if request_model is not None:
                op["requestBody"] = {"required": True, "content": _media(request_model, schemas)}
            responses = op.setdefault("responses", {})
            for status, (description, model) in answers.items():
                responses[status] = {"description": description, "content": _media(model, schemas)}
                if method == "post" and path.endswith("completions") and status == "200":
                    # each event is a chunk object, the last one the text [DONE]
                    responses[status]["content"][SSE] = {"schema": {}}
            for param in op.get("parameters", []):
                bounds = QUERY_BOUNDS.get((path, param["name"]))
                if bounds is not None:
                    param["schema"] = {**param.get("schema", {}), **bounds}
            kserve_route = path.startswith(("/v1/models", "/v2"))
            for status, description in DOOR_ERRORS.items():
                content = _media(ErrorResponse, schemas)
                if kserve_route:  # the door answers in the OpenAI shape, kserve in its own
                    either = [content[JSON]["schema"], _media(KServeError, schemas)[JSON]["schema"]]
                    content = {JSON: {"schema": {"anyOf": either}}}
                responses[status] = responses.get(status) or {}
                responses[status].update(description=description, content=content)
    return spec


def _request_models() -> set[type[BaseModel]]:
    return {m for m, _ in OPERATIONS.values() if m is not None}


def publish(app: FastAPI) -> None:
    """Serve ``contract(app)`` as ``app.openapi()`` (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = contract(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
