"""The state one guard process shares between its proxy and its routers.

One ``GuardContext`` per process, built by ``taigimed.serve.guard.build_guard_app``: the
config, the metrics, the review store, the served guardrail policy, admission and the HTTP
client to the predictor. Routers and the proxy take it; none of them builds its own.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

from taigimed import guardrails
from taigimed.serve import openai_schema as oa
from taigimed.serve.admission import Admission
from taigimed.serve.config import ServeConfig
from taigimed.serve.decision import policy_from_settings
from taigimed.serve.metrics import GuardMetrics
from taigimed.serve.review_store import NewSession, ReviewStore


@dataclass
class GuardContext:
    cfg: ServeConfig
    metrics: GuardMetrics
    store: ReviewStore
    policy: guardrails.GuardPolicy
    admission: Admission
    client: httpx.AsyncClient

    @classmethod
    def create(cls, cfg: ServeConfig, predictor_url: str) -> GuardContext:
        metrics = GuardMetrics(cfg.model_version)
        store = ReviewStore(cfg.review.store_url)
        admission = Admission(
            cfg.limits, metrics, cfg.auth.api_tokens(), cfg.auth.reviewer_tokens()
        )
        client = httpx.AsyncClient(
            base_url=predictor_url.rstrip("/"),
            timeout=cfg.limits.predictor_timeout_s,
            limits=httpx.Limits(max_connections=cfg.limits.max_inflight + 8),
        )
        metrics.backlog.labels(cfg.model_version).set(store.backlog())
        return cls(cfg, metrics, store, policy_from_settings(cfg.policy), admission, client)

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
