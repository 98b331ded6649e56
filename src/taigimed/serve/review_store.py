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
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

STATUSES = ("answered", "escalated", "referred", "needs_review", "approved", "rejected")
RATINGS = ("up", "down")
SCORES = range(1, 6)  # the 1-5 rating a patient may give an answer
# What a patient can report about an answer ("report a problem" on the chat page).
PROBLEM_CATEGORIES = ("wrong", "unsafe", "hard_to_understand", "not_taigi", "other")
DECIDED = ("approved", "rejected")


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
    rating: Mapped[str | None] = mapped_column(String(8), nullable=True)  # up | down | none
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    score: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 1-5
    category: Mapped[str | None] = mapped_column(String(32), nullable=True)  # a reported problem
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
        _upgrade_feedback_table(self.engine)
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

    def add_feedback(
        self,
        session_id: str,
        rating: str | None,
        comment: str | None,
        score: int | None = None,
        category: str | None = None,
    ) -> FeedbackAdded:
        """Store one piece of feedback: a thumb (``rating``), a 1-5 ``score``, a reported
        problem (``category`` + ``comment``), or several at once; at least one must be given.
        Return its id and the session's model version (the guard labels the feedback metric
        with the version that answered, which may not be the guard's own)."""
        check_feedback(rating, score, category)
        with self._write_lock, self._sessions.begin() as db:
            session = db.get(SessionRow, session_id)
            if session is None:
                raise NotFound(session_id)
            fb = FeedbackRow(
                session_id=session_id,
                rating=rating,
                comment=comment,
                score=score,
                category=category,
            )
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
        if not (0 < limit < 2**63 and 0 <= offset < 2**63):  # SQL integers are 64-bit
            raise ValueError(f"limit {limit} / offset {offset} outside the 64-bit range")
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

    def history(self, limit: int = 100, offset: int = 0) -> list[dict]:
        """Decided sessions, newest decision first: the review desk's audit trail.

        A session can be decided once (a second decision is a ``Conflict``), so these rows are
        the record of who decided what, when, for which model version; nothing rewrites them.
        """
        with self._sessions() as db:
            rows = db.scalars(
                select(SessionRow)
                .where(SessionRow.status.in_(DECIDED))
                .order_by(SessionRow.reviewed_at.desc(), SessionRow.id)
                .limit(limit)
                .offset(offset)
            ).all()
            return [{**_session_dict(r, []), "edited": _edited(r)} for r in rows]

    def review_stats(self, now: dt.datetime, day_start: dt.datetime) -> dict[str, Any]:
        """Counters for the review desk: the queue now, decisions since ``day_start``, and the
        rejection rate of each model version over all its decisions."""
        with self._sessions() as db:
            waiting = db.scalars(
                select(SessionRow.created_at).where(SessionRow.status == "needs_review")
            ).all()
            today = db.scalar(
                select(func.count())
                .select_from(SessionRow)
                .where(SessionRow.status.in_(DECIDED), SessionRow.reviewed_at >= day_start)
            )
            by_version = db.execute(
                select(SessionRow.model_version, SessionRow.status, func.count())
                .where(SessionRow.status.in_(DECIDED))
                .group_by(SessionRow.model_version, SessionRow.status)
            ).all()
        waits = [(now - _aware(created)).total_seconds() for created in waiting]
        versions: dict[str, dict[str, Any]] = {}
        for version, status, n in by_version:
            versions.setdefault(version, {"approved": 0, "rejected": 0})[status] = n
        for counts in versions.values():
            counts["rejection_rate"] = counts["rejected"] / (
                counts["approved"] + counts["rejected"]
            )
        return {
            "backlog": len(waits),
            "median_wait_s": _median(waits),
            "oldest_wait_s": max(waits) if waits else None,
            "decisions_today": today,
            "by_version": dict(sorted(versions.items())),
        }

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


def check_feedback(rating: str | None, score: int | None, category: str | None) -> None:
    """Raise ``ValueError`` with the reason when a piece of feedback is not one we store."""
    if rating is None and score is None and category is None:
        raise ValueError("feedback needs a rating, a score or a problem category")
    if rating is not None and rating not in RATINGS:
        raise ValueError("rating must be 'up' or 'down'")
    if score is not None and (type(score) is not int or score not in SCORES):
        raise ValueError("score must be an integer from 1 to 5")
    if category is not None and category not in PROBLEM_CATEGORIES:
        raise ValueError(f"category must be one of {', '.join(PROBLEM_CATEGORIES)}")


def _edited(row: SessionRow) -> bool:
    return row.status == "approved" and row.final_answer != row.draft_answer


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


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
        "messages": list(row.messages or []),
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
            {
                "rating": f.rating,
                "score": f.score,
                "category": f.category,
                "comment": f.comment,
                "created_at": _iso(f.created_at),
            }
            for f in feedback
        ],
    }


def _aware(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; they were stored as UTC."""
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else _aware(value).isoformat()


def _upgrade_feedback_table(engine: Engine) -> None:
    """Bring a feedback table written before scores and problem reports up to date.

    Adds the ``score`` and ``category`` columns and lets ``rating`` be empty (a score or a
    report comes without a thumb). SQLite cannot drop NOT NULL in place, so there the table is
    copied into the new shape in one transaction; rows and ids are kept.
    """
    columns = {c["name"]: c for c in inspect(engine).get_columns("feedback")}
    if "score" in columns and columns["rating"]["nullable"]:
        return
    with engine.begin() as conn:
        if engine.dialect.name != "sqlite":
            for name, kind in (("score", "INTEGER"), ("category", "VARCHAR(32)")):
                if name not in columns:
                    conn.execute(text(f"ALTER TABLE feedback ADD COLUMN {name} {kind}"))
            conn.execute(text("ALTER TABLE feedback ALTER COLUMN rating DROP NOT NULL"))
            return
        conn.execute(text("ALTER TABLE feedback RENAME TO feedback_before_upgrade"))
        conn.execute(text("DROP INDEX IF EXISTS ix_feedback_session_id"))
        FeedbackRow.__table__.create(conn)
        conn.execute(
            text(
                "INSERT INTO feedback (id, session_id, rating, comment, created_at) "
                "SELECT id, session_id, rating, comment, created_at FROM feedback_before_upgrade"
            )
        )
        conn.execute(text("DROP TABLE feedback_before_upgrade"))


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
