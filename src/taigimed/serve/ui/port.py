"""What the pages and the desk API need from the guard, and nothing more.

Kept apart so the UI does not depend on how the guard is built inside: when the guard is split
into a decision module, a proxy and routers, only ``DeskPort.from_guard`` follows it.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from taigimed.serve.config import ServeConfig
from taigimed.serve.review_store import ReviewStore


@dataclass
class DeskPort:
    cfg: ServeConfig
    store: ReviewStore
    # Raises the guard's 401 APIError unless the request carries a reviewer bearer token.
    authorize_reviewer: Callable[[Request], None]
    reviewer_tokens: set[str]
    api_tokens: set[str]

    @classmethod
    def from_guard(cls, guard: Any) -> DeskPort:
        return cls(
            cfg=guard.cfg,
            store=guard.store,
            authorize_reviewer=lambda request: guard._authorize(request, guard.reviewer_tokens),
            reviewer_tokens=set(guard.reviewer_tokens),
            api_tokens=set(guard.api_tokens),
        )

    def reviewer_token_ok(self, token: str) -> bool:
        """The same check as the bearer header, for the desk's no-JavaScript login form."""
        if not self.reviewer_tokens:
            return True
        given = token.strip().encode()
        return any(hmac.compare_digest(given, t.encode()) for t in self.reviewer_tokens)
