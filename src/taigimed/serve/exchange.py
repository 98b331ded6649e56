"""How the two OpenAI routes differ, and nothing else: chat ``/chat/completions`` and legacy
``/completions`` through the guard.

The proxy (``taigimed.serve.proxy``) is written once; it asks a ``Route`` for the few things
that depend on the route: how to read the request into a conversation, the body sent to the
predictor, and where the answer's text and log-probs sit in the predictor's response and in
each streamed chunk. Response bodies and chunks come from ``openai_schema`` (``completion_body``,
``ChunkStream``), which already handles both shapes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from taigimed import guardrails
from taigimed.serve import openai_schema as oa
from taigimed.serve.admission import Admission, Tracker
from taigimed.serve.config import ServeConfig

# Sampling fields passed on to the predictor as they are, when the client set them.
_PASSED_ON = ("max_tokens", "temperature", "top_p", "seed", "stop", "ignore_eos")


@dataclass
class Exchange:
    """One request through the proxy, after the pre-request hook read and checked it."""

    route: Route
    req: Any  # oa.ChatCompletionRequest | oa.CompletionRequest
    model: str  # the served model name the client asked for
    question: str  # the last user message, PII scrubbed: what the guardrails judge
    messages: list[dict[str, str]]  # the conversation sent on (scrubbed, system prompt added)
    tracker: Tracker
    id: str = ""
    created: int = field(default_factory=oa.now)

    def chunks(self) -> oa.ChunkStream:
        return oa.ChunkStream(self.route.chat, self.id, self.model, self.created)


@dataclass
class UpstreamAnswer:
    """The parts of a predictor answer the guard acts on, whatever the route."""

    text: str
    token_logprobs: list[float]
    finish_reason: str
    usage: dict[str, int]
    client_logprobs: Any  # the route's logprobs object when the client asked for it, else None


@dataclass(frozen=True)
class Route:
    name: str  # the metrics ``route`` label
    chat: bool
    request_type: type[oa.SamplingFields]
    path: str  # under the OpenAI prefix, here and at the predictor
    id_prefix: str

    def read(
        self, raw: bytes, cfg: ServeConfig, admission: Admission, tracker: Tracker
    ) -> Exchange:
        """Parse and check the request; scrub PII from everything sent on or stored."""
        req = oa.parse_request(self.request_type, raw)
        model = _check_model(req.model, cfg.model_name)
        if self.chat:
            question, messages = _chat_conversation(req, cfg, admission)
        else:
            admission.check_prompt(req, len(req.prompt))
            question = guardrails.scrub_pii(req.prompt)
            messages = [{"role": "user", "content": question}]
        return Exchange(self, req, model, question, messages, tracker, oa.new_id(self.id_prefix))

    def upstream_body(self, ex: Exchange, stream: bool) -> dict[str, Any]:
        """The predictor request: always with log-probs (the confidence needs them)."""
        req = ex.req
        body: dict[str, Any] = {"model": ex.model}
        if self.chat:
            body.update(messages=ex.messages, logprobs=True, top_logprobs=req.top_logprobs or 0)
        else:
            body.update(prompt=ex.question, logprobs=req.logprobs or 0)
        body["stream"] = stream
        for key in _PASSED_ON:
            value = getattr(req, key)
            if value not in (None, []):
                body[key] = value
        if req.max_completion_tokens:
            body["max_tokens"] = req.max_completion_tokens
        if req.top_k != -1:
            body["top_k"] = req.top_k
        if stream:
            body["stream_options"] = {"include_usage": True}
        return body

    def read_answer(self, ex: Exchange, data: dict[str, Any]) -> UpstreamAnswer:
        """Text, log-probs, finish reason and usage of a whole predictor answer."""
        choice = data["choices"][0]
        text, token_lps, client_lps = self.read_choice(ex, choice)
        usage = data.get("usage") or {}
        return UpstreamAnswer(
            text, token_lps, choice.get("finish_reason") or "stop", usage, client_lps
        )

    def read_choice(self, ex: Exchange, choice: dict[str, Any]) -> tuple[str, list[float], Any]:
        """(text, token log-probs, the client's logprobs object) of one choice, whole or a
        streamed chunk's (chat: ``message`` or ``delta``; completions: ``text``)."""
        lp = choice.get("logprobs") or {}
        if self.chat:
            message = choice.get("message") or choice.get("delta") or {}
            content = lp.get("content") or []
            client = {"content": content} if ex.req.logprobs else None
            return message.get("content") or "", [t["logprob"] for t in content], client
        token_lps = [x for x in lp.get("token_logprobs") or [] if x is not None]
        client = lp if ex.req.logprobs is not None else None
        return choice.get("text") or "", token_lps, client


CHAT = Route("chat", True, oa.ChatCompletionRequest, "chat/completions", "chatcmpl")
COMPLETIONS = Route("completions", False, oa.CompletionRequest, "completions", "cmpl")


def _check_model(name: str | None, served: str) -> str:
    if name is None:
        return served
    if name != served:
        raise oa.APIError(
            404,
            f"The model `{name}` does not exist. Served models: {served}",
            type="NotFoundError",
            param="model",
        )
    return name


def _chat_conversation(
    req: oa.ChatCompletionRequest, cfg: ServeConfig, admission: Admission
) -> tuple[str, list[dict[str, str]]]:
    """The question (last user turn) and the scrubbed conversation with the system prompt."""
    if len(req.messages) > cfg.limits.max_messages:
        raise oa.APIError(
            400,
            f"{len(req.messages)} messages; the limit is {cfg.limits.max_messages}",
            param="messages",
        )
    messages = [
        {"role": "system" if m.role == "developer" else m.role, "content": m.text()}
        for m in req.messages
    ]
    admission.check_prompt(req, sum(len(m["content"]) for m in messages))
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users:
        raise oa.APIError(400, "messages must contain at least one user message", param="messages")
    scrubbed = [{**m, "content": guardrails.scrub_pii(m["content"])} for m in messages]
    if cfg.system_prompt and not any(m["role"] == "system" for m in scrubbed):
        scrubbed.insert(0, {"role": "system", "content": cfg.system_prompt})
    return guardrails.scrub_pii(users[-1]), scrubbed
