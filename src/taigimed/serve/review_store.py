"""Sessions, clinician reviews and feedback, stored through SQLAlchemy.

Every answer the guard gives (or holds back) is a *session*: the scrubbed question, the model's
draft, the confidence, the status (answered, escalated, referred, needs_review, approved,
rejected), the clinician's decision, and feedback. The guard writes a session before it answers,
in one transaction, so a session id a client has seen always exists, even if the process is
killed a moment later.

Locally the URL is a SQLite file in WAL mode (``synchronous=NORMAL``: a committed transaction
survives the process being killed; only an OS crash can lose the last commits). On a cluster it
is a PostgreSQL URL. Text is PII-scrubbed by the caller before it reaches this module.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

STATUSES = ("answered", "escalated", "referred", "needs_review", "approved", "rejected")


class FeedbackAdded(NamedTuple):
    """What ``ReviewStore.add_feedback`` stored: the feedback id and its session's version."""

    id: int
    model_version: str


class Base(DeclarativeBase):
    pass


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class SessionRow(Base):
    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)
    model_version: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), index=True)
    question: Mapped[str] = mapped_column(Text)  # scrubbed last user message
    messages: Mapped[list] = mapped_column(JSON)  # scrubbed conversation sent to the model
    draft_answer: Mapped[str | None] = mapped_column(Text, nullable=True)  # model's words
    final_answer: Mapped[str | None] = mapped_column(Text, nullable=True)  # what the user gets
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    review_reasons: Mapped[list] = mapped_column(JSON, default=list)  # why it was held
    categories: Mapped[list] = mapped_column(JSON, default=list)  # red-flag categories
    reviewer: Mapped[str | None] = mapped_column(String(128), nullable=True)
    review_note: Mapped[str | None] = mapped_column(Text, nullable=True)  # reject reason / note
    reviewed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    # retrieved passages the answer was built on: [{id, title, score, ...}] (taigimed.sources)
    sources: Mapped[list | None] = mapped_column(JSON, nullable=True, default=list)


class FeedbackRow(Base):
    __tablename__ = "feedback"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id"), index=True)
    rating: Mapped[str] = mapped_column(String(8))
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_utcnow)


class NotFound(KeyError):
    """No session with that id."""


class Conflict(ValueError):
    """The session is not in a state that allows the requested change."""


@dataclass
class NewSession:
    model_version: str
    status: str
    question: str
    messages: list[dict[str, str]]
    draft_answer: str | None
    final_answer: str | None
    confidence: float | None
    review_reasons: list[str]
    categories: list[str]
    sources: list[dict[str, Any]] = field(default_factory=list)


class ReviewStore:
    """Transactions over the sessions/feedback tables; safe to call from worker threads."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _make_engine(url)
        Base.metadata.create_all(self.engine)
        _add_missing_columns(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_lock = threading.Lock()  # SQLite has one writer; keep it orderly

    def close(self) -> None:
        self.engine.dispose()

    # -- writes (each one transaction) ----------------------------------------------------
    def create(self, new: NewSession) -> str:
        if new.status not in STATUSES:
            raise ValueError(f"unknown status {new.status!r}")
        session_id = uuid.uuid4().hex
        row = SessionRow(id=session_id, **new.__dict__)
        with self._write_lock, self._sessions.begin() as db:
            db.add(row)
        return session_id

    def approve(self, session_id: str, reviewer: str, answer: str | None, note: str | None) -> dict:
        """Approve a held answer, optionally edited; the edited text is what users get."""
        with self._write_lock, self._sessions.begin() as db:
            row = self._pending(db, session_id)
            row.status = "approved"
            row.final_answer = answer if answer else row.draft_answer
            row.reviewer, row.review_note = reviewer, note
            row.reviewed_at = row.updated_at = _utcnow()
            return _session_dict(row, [])

    def reject(self, session_id: str, reviewer: str, reason: str) -> dict:
        with self._write_lock, self._sessions.begin() as db:
            row = self._pending(db, session_id)
            row.status = "rejected"
            row.reviewer, row.review_note = reviewer, reason
            row.reviewed_at = row.updated_at = _utcnow()
            return _session_dict(row, [])

    def add_feedback(self, session_id: str, rating: str, comment: str | None) -> FeedbackAdded:
        """Store a vote; return its id and the session's model version (the guard labels the
        feedback metric with the version that answered, which may not be the guard's own)."""
        if rating not in ("up", "down"):
            raise ValueError("rating must be 'up' or 'down'")
        with self._write_lock, self._sessions.begin() as db:
            session = db.get(SessionRow, session_id)
            if session is None:
                raise NotFound(session_id)
            fb = FeedbackRow(session_id=session_id, rating=rating, comment=comment)
            db.add(fb)
            db.flush()
            return FeedbackAdded(fb.id, session.model_version)

    # -- reads ----------------------------------------------------------------------------
    def get(self, session_id: str) -> dict:
        with self._sessions() as db:
            row = db.get(SessionRow, session_id)
            if row is None:
                raise NotFound(session_id)
            feedback = db.scalars(
                select(FeedbackRow)
                .where(FeedbackRow.session_id == session_id)
                .order_by(FeedbackRow.id)
            ).all()
            return _session_dict(row, feedback)

    def pending(self, limit: int = 100, offset: int = 0) -> list[dict]:
        with self._sessions() as db:
            rows = db.scalars(
                select(SessionRow)
                .where(SessionRow.status == "needs_review")
                .order_by(SessionRow.created_at, SessionRow.id)
                .limit(limit)
                .offset(offset)
            ).all()
            return [_session_dict(r, []) for r in rows]

    def backlog(self) -> int:
        with self._sessions() as db:
            return db.scalar(
                select(func.count())
                .select_from(SessionRow)
                .where(SessionRow.status == "needs_review")
            )

    def count(self) -> int:
        with self._sessions() as db:
            return db.scalar(select(func.count()).select_from(SessionRow))

    def approved(self, since: dt.datetime | None = None) -> Iterator[dict]:
        """Approved sessions in review order, as SFT training lines (data contract shape)."""
        query = select(SessionRow).where(SessionRow.status == "approved")
        if since is not None:
            query = query.where(SessionRow.reviewed_at >= since)
        with self._sessions() as db:
            for row in db.scalars(query.order_by(SessionRow.reviewed_at, SessionRow.id)):
                yield training_line(row)

    def approved_sessions(self) -> list[dict]:
        """Approved sessions as session dicts (question, final answer, reviewer, time): what
        the guard adds to its live retrieval index at start-up."""
        query = select(SessionRow).where(SessionRow.status == "approved")
        with self._sessions() as db:
            rows = db.scalars(query.order_by(SessionRow.reviewed_at, SessionRow.id)).all()
            return [_session_dict(r, []) for r in rows]

    def _pending(self, db: Session, session_id: str) -> SessionRow:
        row = db.get(SessionRow, session_id)
        if row is None:
            raise NotFound(session_id)
        if row.status != "needs_review":
            raise Conflict(f"session {session_id} is {row.status}, not waiting for review")
        return row


def training_line(row: SessionRow) -> dict[str, Any]:
    """One reviewed answer in the SFT line format the data area reads (INTERFACES.md)."""
    messages = [m for m in row.messages if m.get("role") in ("system", "user", "assistant")]
    messages.append({"role": "assistant", "content": row.final_answer or ""})
    return {
        "id": f"review-{row.id}",
        "source": "clinician_review",
        "task": "medical_qa",
        "script": "mixed",
        "messages": messages,
        "reviewer": row.reviewer,
        "reviewed_at": _iso(row.reviewed_at),
        "model_version": row.model_version,
        "edited": row.final_answer != row.draft_answer,
    }


def _session_dict(row: SessionRow, feedback: Any) -> dict[str, Any]:
    return {
        "session_id": row.id,
        "status": row.status,
        "model_version": row.model_version,
        "question": row.question,
        "draft_answer": row.draft_answer,
        "final_answer": row.final_answer,
        "confidence": row.confidence,
        "review_reasons": list(row.review_reasons or []),
        "categories": list(row.categories or []),
        "reviewer": row.reviewer,
        "review_note": row.review_note,
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
        "reviewed_at": _iso(row.reviewed_at),
        "sources": list(row.sources or []),
        "feedback": [
            {"rating": f.rating, "comment": f.comment, "created_at": _iso(f.created_at)}
            for f in feedback
        ],
    }


def _iso(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; they were stored as UTC
        value = value.replace(tzinfo=dt.UTC)
    return value.isoformat()


def _add_missing_columns(engine: Engine) -> None:
    """A store created before a column existed gets it (``create_all`` adds tables, not
    columns): today only ``sessions.sources``."""
    from sqlalchemy import inspect, text

    present = {c["name"] for c in inspect(engine).get_columns("sessions")}
    if "sources" not in present:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE sessions ADD COLUMN sources JSON"))


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).expanduser().parent.mkdir(parents=True, exist_ok=True)
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(
        url, connect_args={"check_same_thread": False, "timeout": 30}, json_serializer=_dumps
    )

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_conn: Any, _: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)
