"""The retrieval index as the guard serves it: loaded with its version, grown by approvals.

``LiveKnowledge`` wraps the index a model version was registered with (``versions/vN/index``)
and the serving rule saved in it (top-k, confidence), so the guard answers with exactly the
configuration the pipeline built and evaluated. A clinician's approval (or edit) of a held
answer goes in at once through ``add_approved``; approvals already in the review store are
added at start-up, so a restart loses none. Rejected answers are never added.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from taigimed.retrieval.config import Confidence, RetrievalConfig
from taigimed.retrieval.grounding import Grounding, ground
from taigimed.retrieval.index import HybridIndex
from taigimed.retrieval.knowledge import Passage, strip_disclaimer

log = logging.getLogger(__name__)


def index_beside_model(model_dir: str | Path) -> Path | None:
    """``<registry>/versions/vN/index`` for a model served from ``versions/vN/model``: the
    index registered with the version being served, when there is one."""
    candidate = Path(model_dir).resolve().parent / "index"
    return candidate if (candidate / "manifest.json").is_file() else None


def passage_from_session(session: dict[str, Any]) -> Passage | None:
    """An approved review-store session (``ReviewStore.approve``'s result) as a passage."""
    if session.get("status") != "approved" or not session.get("final_answer"):
        return None
    text = strip_disclaimer(session["final_answer"])
    if not text:
        return None
    reviewer, when = session.get("reviewer"), session.get("reviewed_at")
    question = session.get("question") or ""
    return Passage(
        id=f"review:{session['session_id']}",
        topic="clinician_review",
        title=question[:40] or "clinician-approved answer",
        hanji=text,
        source=f"clinician review by {reviewer} at {when}",
        reviewer=reviewer,
        approved_at=when,
        question=question,
        origin="clinician_review",
    )


class LiveKnowledge:
    """The served index plus its rule; thread-safe adds (the index swaps state atomically)."""

    def __init__(self, index: HybridIndex) -> None:
        self.index = index
        rule = index.serving or {}
        defaults = RetrievalConfig()
        self.cfg = RetrievalConfig(
            sources=defaults.sources,
            top_k=int(rule.get("top_k", defaults.top_k)),
            confidence=Confidence(**rule.get("confidence", {})),
        )

    @classmethod
    def load(cls, folder: str | Path) -> LiveKnowledge:
        index = HybridIndex.load(folder)
        log.info("retrieval index %s: %d passages (%s)", folder, len(index), index.serving)
        return cls(index)

    def ground(self, question: str) -> Grounding:
        return ground(self.index, self.cfg, question)

    def add_approved(self, session: dict[str, Any]) -> Passage | None:
        """Add one approved session's answer; returns the passage (None if not approved)."""
        passage = passage_from_session(session)
        if passage is not None:
            self.index.add(passage)
            log.info("approved answer %s is now retrievable", passage.id)
        return passage

    def sync(self, approved_sessions: list[dict[str, Any]]) -> int:
        """Add approvals the index does not hold yet (at start-up); returns how many."""
        added = 0
        for session in approved_sessions:
            if self.index.get(f"review:{session['session_id']}") is None:
                added += self.add_approved(session) is not None
        return added
