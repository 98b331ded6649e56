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
