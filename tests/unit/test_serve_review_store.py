"""The review store: decisions, feedback and export, and records that outlive the process."""

from __future__ import annotations

import pytest

from taigimed.serve.review_store import Conflict, NewSession, NotFound, ReviewStore


def new(status: str = "needs_review", draft: str = "多啉水，歇睏。") -> NewSession:
    return NewSession(
        model_version="v1",
        status=status,
        question="感冒欲按怎？",
        messages=[{"role": "user", "content": "感冒欲按怎？"}],
        draft_answer=draft,
        final_answer=None if status == "needs_review" else draft,
        confidence=0.2,
        review_reasons=["low_confidence<0.35"],
        categories=[],
    )


@pytest.fixture
def store(tmp_path):
    s = ReviewStore(f"sqlite:///{tmp_path / 'review.db'}")
    yield s
    s.close()


def test_approve_edit_reject_and_conflicts(store):
    a, b, c = store.create(new()), store.create(new()), store.create(new("answered"))
    assert [p["session_id"] for p in store.pending()] == [a, b]
    assert store.backlog() == 2
    approved = store.approve(a, "dr-lin", "多啉燒水，好好仔歇睏。", None)
    assert approved["status"] == "approved" and approved["final_answer"].startswith("多啉燒水")
    assert store.reject(b, "dr-lin", "wrong advice")["review_note"] == "wrong advice"
    assert store.backlog() == 0
    with pytest.raises(Conflict):
        store.approve(b, "dr-lin", None, None)
    with pytest.raises(Conflict):
        store.reject(c, "dr-lin", "x")
    with pytest.raises(NotFound):
        store.get("missing")


def test_export_is_sft_lines_of_approved_answers_only(store):
    a, b = store.create(new()), store.create(new())
    store.approve(a, "dr", None, "fine as is")
    store.reject(b, "dr", "no")
    lines = list(store.approved())
    assert [line["id"] for line in lines] == [f"review-{a}"]
    line = lines[0]
    assert line["source"] == "clinician_review" and line["edited"] is False
    assert line["messages"][-1] == {"role": "assistant", "content": "多啉水，歇睏。"}
    assert any(m["role"] == "user" for m in line["messages"])


def test_feedback_needs_a_known_session_and_a_valid_rating(store):
    sid = store.create(new("answered"))
    added = store.add_feedback(sid, "up", "多謝")
    assert store.get(sid)["feedback"][0]["rating"] == "up"
    # The guard labels the feedback metric with the version that answered the session.
    assert added.model_version == "v1"
    with pytest.raises(NotFound):
        store.add_feedback("missing", "up", None)
    with pytest.raises(ValueError):
        store.add_feedback(sid, "sideways", None)


def test_records_survive_a_new_store_on_the_same_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'nested' / 'review.db'}"
    first = ReviewStore(url)
    sid = first.create(new())
    first.approve(sid, "dr", "ok", None)
    snapshot = first.get(sid)
    first.close()
    second = ReviewStore(url)
    assert second.get(sid) == snapshot
    assert second.count() == 1
    second.close()


def test_scores_and_problem_reports_are_stored_with_the_session(store):
    sid = store.create(new("answered"))
    store.add_feedback(sid, None, None, score=4)
    store.add_feedback(sid, "down", "聽無", category="hard_to_understand")
    feedback = store.get(sid)["feedback"]
    assert [(f["rating"], f["score"], f["category"]) for f in feedback] == [
        (None, 4, None),
        ("down", None, "hard_to_understand"),
    ]
    assert feedback[1]["comment"] == "聽無"
    for bad in ({"score": 0}, {"score": 6}, {"score": True}, {"category": "rude"}, {}):
        with pytest.raises(ValueError):
            store.add_feedback(sid, None, None, **bad)


def test_a_feedback_table_from_before_scores_is_upgraded_in_place(tmp_path):
    """A review.db written by the previous release (rating NOT NULL, no score/category)."""
    import sqlite3

    path = tmp_path / "old.db"
    first = ReviewStore(f"sqlite:///{path}")
    sid = first.create(new("answered"))
    first.close()
    con = sqlite3.connect(path)
    con.executescript(
        "DROP TABLE feedback;"
        "CREATE TABLE feedback (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " session_id VARCHAR(40) NOT NULL REFERENCES sessions(id), rating VARCHAR(8) NOT NULL,"
        " comment TEXT, created_at DATETIME);"
        "CREATE INDEX ix_feedback_session_id ON feedback (session_id);"
        f"INSERT INTO feedback (session_id, rating, comment, created_at)"
        f" VALUES ('{sid}', 'up', 'old', '2026-11-30 10:00:00');"
    )
    con.commit()
    con.close()
    upgraded = ReviewStore(f"sqlite:///{path}")
    upgraded.add_feedback(sid, None, None, score=2)
    assert [(f["rating"], f["score"], f["comment"]) for f in upgraded.get(sid)["feedback"]] == [
        ("up", None, "old"),
        (None, 2, None),
    ]
    upgraded.close()


def test_history_is_decisions_newest_first_and_stats_count_them(store):
    import datetime as dt

    a, b, c, d = (store.create(new()) for _ in range(4))
    store.approve(a, "dr-lin", None, None)
    store.approve(b, "dr-tan", "改過的回答", None)
    store.reject(c, "dr-lin", "毋著")
    history = store.history()
    assert [(h["session_id"], h["status"], h["reviewer"]) for h in history] == [
        (c, "rejected", "dr-lin"),
        (b, "approved", "dr-tan"),
        (a, "approved", "dr-lin"),
    ]
    assert [h["edited"] for h in history] == [False, True, False]
    assert history[0]["review_note"] == "毋著" and history[0]["messages"][0]["role"] == "user"
    now = dt.datetime.now(dt.UTC)
    stats = store.review_stats(now + dt.timedelta(seconds=60), now - dt.timedelta(hours=1))
    assert stats["backlog"] == 1 and stats["decisions_today"] == 3
    assert 59 <= stats["median_wait_s"] <= 61 and stats["oldest_wait_s"] == stats["median_wait_s"]
    assert stats["by_version"] == {"v1": {"approved": 2, "rejected": 1, "rejection_rate": 1 / 3}}
    tomorrow = store.review_stats(now, now + dt.timedelta(hours=1))
    assert tomorrow["decisions_today"] == 0
    assert [p["session_id"] for p in store.pending()] == [d]


def test_a_store_made_before_sources_existed_gets_the_column(tmp_path):
    """Review databases written by an older guard open, and keep sources from then on."""
    import sqlite3

    from taigimed.serve.review_store import NewSession, ReviewStore

    path = tmp_path / "old.db"
    ReviewStore(f"sqlite:///{path}").close()
    with sqlite3.connect(path) as conn:
        conn.execute("ALTER TABLE sessions DROP COLUMN sources")
    store = ReviewStore(f"sqlite:///{path}")
    sources = [{"id": "KB015", "title": "咳嗽佮嚨喉疼", "score": 0.03}]
    sid = store.create(
        NewSession("v1", "answered", "q", [], "a", "a", 0.9, [], [], sources=sources)
    )
    assert store.get(sid)["sources"] == sources
    store.close()
