"""The state one guard process shares between its proxy and its routers.

One ``GuardContext`` per process, built by ``taigimed.serve.guard.build_guard_app``: the
config, the metrics, the review store, the served guardrail policy, admission and the HTTP
client to the predictor. Routers and the proxy take it; none of them builds its own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx

from taigimed import guardrails
from taigimed.serve import openai_schema as oa
from taigimed.serve.admission import Admission
from taigimed.serve.config import ServeConfig
from taigimed.serve.decision import chain_from_settings, policy_from_settings
from taigimed.serve.metrics import GuardMetrics
from taigimed.serve.review_store import NewSession, ReviewStore
from taigimed.triage.chain import TriageChain


@dataclass
class GuardContext:
    cfg: ServeConfig
    metrics: GuardMetrics
    store: ReviewStore
    policy: guardrails.GuardPolicy
    admission: Admission
    client: httpx.AsyncClient
    knowledge: Any = None  # taigimed.retrieval.serving.LiveKnowledge when an index is served
    chain: TriageChain | None = None  # the triage chain (None: the phrase rules on the last turn)

    @classmethod
    def create(cls, cfg: ServeConfig, predictor_url: str) -> GuardContext:
        metrics = GuardMetrics(cfg.model_version)
        store = ReviewStore(cfg.review.store_url)
        admission = Admission(
            cfg.limits, metrics, cfg.auth.api_tokens(), cfg.auth.reviewer_tokens()
        )
        # the predictor's door may want a token too (TAIGIMED_PREDICTOR_TOKENS): send the first
        predictor_tokens = cfg.auth.predictor_tokens()
        headers = {"authorization": f"Bearer {predictor_tokens[0]}"} if predictor_tokens else {}
        client = httpx.AsyncClient(
            base_url=predictor_url.rstrip("/"),
            headers=headers,
            timeout=cfg.limits.predictor_timeout_s,
            limits=httpx.Limits(max_connections=cfg.limits.max_inflight + 8),
        )
        metrics.backlog.labels(cfg.model_version).set(store.backlog())
        knowledge = load_knowledge(cfg.retrieval.index, store) if cfg.retrieval.index else None
        policy = policy_from_settings(cfg.policy)
        chain = chain_from_settings(cfg.policy, policy)
        return cls(cfg, metrics, store, policy, admission, client, knowledge, chain)

    async def close(self) -> None:
        await self.client.aclose()
        self.store.close()

    async def save_session(self, new: NewSession) -> str:
        """Write the session before answering. A local SQLite commit (WAL) takes well under a
        millisecond, less than handing it to a thread; a network database goes to a thread."""
        if self.store.url.startswith("sqlite"):
            return self.store.create(new)
        return await asyncio.to_thread(self.store.create, new)

    def unavailable(self, message: str) -> oa.APIError:
        """503 with Retry-After: the predictor could not be reached."""
        return oa.APIError(
            503, message, type="service_unavailable", headers=self.admission.retry_after()
        )

    def predictor_failed(self, err: httpx.HTTPError) -> oa.APIError:
        """The 503 for a failed predictor call, saying which failure: httpx's timeouts carry an
        empty message, and 「predictor unreachable: 」 sent an operator looking for a dead pod
        when the predictor was alive but slower than ``limits.predictor_timeout_s``."""
        if isinstance(err, httpx.TimeoutException):
            seconds = self.cfg.limits.predictor_timeout_s
            return self.unavailable(
                f"predictor did not answer within {seconds:g} s ({type(err).__name__}); "
                "it may be overloaded: retry later, or raise limits.predictor_timeout_s"
            )
        return self.unavailable(f"predictor unreachable: {type(err).__name__}: {err}")


def load_knowledge(folder: str, store: ReviewStore) -> Any:
    """The served retrieval index, with every approval already in the review store added."""
    from taigimed.retrieval.serving import LiveKnowledge

    knowledge = LiveKnowledge.load(folder)
    knowledge.sync(store.approved_sessions())
    return knowledge
