"""The guard's pages and the desk's read-only API, in process (no predictor is called).

The browser behaviour is tested in tests/integration/test_ui_browser.py; this pins the HTTP
contract around it: headers, the fixed list of static files, what the page config may hold,
auth on the desk routes, and the feedback extension.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from fastapi.testclient import TestClient

from taigimed.serve.config import ServeConfig
from taigimed.serve.guard import build_guard_app
from taigimed.serve.review_store import NewSession
from taigimed.serve.ui.desk_api import day_start
from taigimed.serve.ui.render import WRONG_TOKEN, urgency_key

REVIEWER = "reviewer-secret"
AUTH = {"Authorization": f"Bearer {REVIEWER}"}


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.setenv("TAIGIMED_API_TOKENS", "")
    monkeypatch.setenv("TAIGIMED_REVIEWER_TOKENS", REVIEWER)
    cfg = ServeConfig()
    cfg.review.store_url = f"sqlite:///{tmp_path / 'review.db'}"
    app, guard = build_guard_app(cfg, "http://127.0.0.1:9")
    with TestClient(app) as client:
        yield client, guard


def held(guard, question: str = "懷孕會使食藥仔無？", reasons=("topic:懷孕",), conf=0.5) -> str:
    return guard.store.create(
        NewSession(
            model_version="v7",
            status="needs_review",
            question=question,
            messages=[{"role": "user", "content": question}],
            draft_answer="<b>草稿</b>",
            final_answer=None,
            confidence=conf,
            review_reasons=list(reasons),
            categories=[],
        )
    )


def test_pages_carry_the_security_headers_and_no_inline_script(app):
    client, _ = app
    for path in ("/ui/", "/ui/review", "/ui/static/chat.js", "/ui/config.json"):
        resp = client.get(path)
        assert resp.status_code == 200, path
        csp = resp.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert "unsafe-inline" not in csp and resp.headers["x-content-type-options"] == "nosniff"
    for page in ("/ui/", "/ui/review"):
        html = client.get(page).text
        assert "<script>" not in html and "<script " in html  # only <script src=...>
        assert not re.search(r"\son[a-z]+=", html)  # no inline event handlers
    assert client.get("/ui", follow_redirects=False).headers["location"] == "/ui/"


def test_only_the_listed_static_files_are_served(app):
    client, _ = app
    assert client.get("/ui/static/style.css").headers["content-type"].startswith("text/css")
    for name in ("..%2Fpages.py", "pages.py", "nope.js", "..%2F..%2Fguard.py"):
        assert client.get(f"/ui/static/{name}").status_code == 404, name


def test_page_config_has_the_limits_and_no_secret(app):
    client, _ = app
    config = client.get("/ui/config.json").json()
    assert config["limits"]["temperature"] == {"min": 0.0, "max": 2.0}
    assert config["limits"]["top_p"] == {"min_exclusive": 0.0, "max": 1.0}
    assert config["auth_required"] is False
    assert "not_taigi" in config["problem_categories"]
    assert REVIEWER not in client.get("/ui/config.json").text


def test_desk_routes_need_the_reviewer_token(app):
    client, guard = app
    sid = held(guard)
    for path in ("/v1/review/history", "/v1/review/stats"):
        assert client.get(path).status_code == 401
    assert (
        client.post(f"/v1/review/{sid}/reject", json={"reviewer": "dr", "reason": "no"}).status_code
        == 401
    )
    client.post(f"/v1/review/{sid}/reject", json={"reviewer": "dr", "reason": "毋著"}, headers=AUTH)
    history = client.get("/v1/review/history", headers=AUTH).json()["data"]
    assert [(h["session_id"], h["reviewer"], h["status"]) for h in history] == [
        (sid, "dr", "rejected")
    ]
    stats = client.get("/v1/review/stats?tz_offset_minutes=-480", headers=AUTH).json()
    assert stats["by_version"]["v7"]["rejection_rate"] == 1.0 and stats["decisions_today"] == 1
    for bad in ("limit=0", "limit=5000", "offset=-1", "offset=1000000000000000000000"):
        assert client.get(f"/v1/review/history?{bad}", headers=AUTH).status_code in (400, 422)
    assert client.get("/v1/review/stats?tz_offset_minutes=9999", headers=AUTH).status_code == 400


def test_desk_without_javascript_shows_the_queue_escaped_after_a_right_token(app):
    client, guard = app
    sid = held(guard, question="<script>alert(1)</script>懷孕")
    wrong = client.post("/ui/review", data={"reviewer": "dr", "token": "nope"})
    assert wrong.status_code == 401 and WRONG_TOKEN in wrong.text and sid not in wrong.text
    right = client.post("/ui/review", data={"reviewer": "dr", "token": REVIEWER})
    assert right.status_code == 200 and f'data-session="{sid}"' in right.text
    assert "<script>alert" not in right.text and "&lt;script&gt;alert(1)" in right.text
    assert "&lt;b&gt;草稿" in right.text
    assert right.headers["cache-control"] == "no-store"


def test_feedback_takes_a_score_and_a_problem_report_and_stays_compatible(app):
    client, guard = app
    sid = held(guard)
    assert client.post("/v1/feedback", json={"session_id": sid, "rating": "up"}).status_code == 201
    score = client.post("/v1/feedback", json={"session_id": sid, "score": 5})
    assert score.status_code == 201 and score.json()["rating"] is None
    report = {"session_id": sid, "category": "unsafe", "comment": "電話 0912345678"}
    assert client.post("/v1/feedback", json=report).status_code == 201
    stored = guard.store.get(sid)["feedback"]
    assert [(f["rating"], f["score"], f["category"]) for f in stored] == [
        ("up", None, None),
        (None, 5, None),
        (None, None, "unsafe"),
    ]
    assert stored[2]["comment"] == "電話 [PHONE]"
    for bad in ({"score": 9}, {"score": "5"}, {"score": 4.0}, {"category": "rude"}, {}):
        resp = client.post("/v1/feedback", json={"session_id": sid, **bad})
        assert resp.status_code == 400, bad
        assert resp.json()["error"]["message"]
    # Only thumbs count in the feedback metric the rollout reads (negative-feedback share).
    metrics = client.get("/metrics").text
    assert 'taigimed_feedback_total{model_version="v7",rating="up"} 1.0' in metrics


def test_urgent_first_is_topic_then_low_confidence_then_oldest():
    items = [
        {"review_reasons": ["low_confidence<0.35"], "confidence": 0.1, "created_at": "1"},
        {"review_reasons": ["topic:癌"], "confidence": 0.9, "created_at": "3"},
        {"review_reasons": ["topic:懷孕"], "confidence": 0.9, "created_at": "2"},
        {"review_reasons": ["low_confidence<0.35"], "confidence": 0.3, "created_at": "0"},
    ]
    assert [i["created_at"] for i in sorted(items, key=urgency_key)] == ["2", "3", "1", "0"]


def test_today_starts_at_the_reviewers_midnight():
    now = dt.datetime(2026, 12, 1, 20, 0, tzinfo=dt.UTC)  # 04:00 on 2 December in Taiwan
    assert day_start(now, -480) == dt.datetime(2026, 12, 1, 16, 0, tzinfo=dt.UTC)
    assert day_start(now, 0) == dt.datetime(2026, 12, 1, 0, 0, tzinfo=dt.UTC)
