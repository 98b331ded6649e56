"""The knowledge base the team ships, and the one reader every source goes through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taigimed.retrieval.knowledge import KnowledgeError, read_source, read_sources
from taigimed.retrieval.recall import read_questions
from taigimed.retrieval.text import normalise, tokens
from taigimed.utils import REPO_ROOT

KB = REPO_ROOT / "data/knowledge/passages.jsonl"
TOPICS = {
    "cold", "fever", "cough", "diarrhoea", "blood_pressure", "diabetes_diet", "medicines",
    "sleep", "falls", "elderly_care", "see_doctor", "call_119",
}  # fmt: skip


def test_knowledge_base_covers_every_topic_in_two_languages() -> None:
    passages = read_source(KB)
    assert len(passages) >= 80
    assert {p.topic for p in passages} == TOPICS
    assert all(p.mandarin and p.hanji and p.source for p in passages)
    # Taigi Hàn-jī, not Mandarin: the Taigi function words appear throughout
    taigi = sum(
        any(
            w in p.hanji
            for w in ("愛", "毋", "袂", "佮", "咧", "莫", "抑是", "閣", "嘛", "會使", "會當")
        )
        for p in passages
    )
    assert taigi == len(passages)
    assert all(p.reviewer is None for p in passages)  # written by the team, not a clinician


def test_reviewed_answers_load_as_clinician_approved_passages() -> None:
    passages = read_source(REPO_ROOT / "data/demo/reviewed_answers.jsonl", "reviewed")
    assert len(passages) == 6
    first = passages[0]
    assert first.origin == "clinician_review" and first.reviewer == "dr-demo"
    assert first.id == "review:sess-demo-0001" and first.approved_at == "2026-11-20T10:00:00Z"
    assert "⚠️" not in first.hanji and first.question.startswith("我感冒")


def test_review_export_shape_loads_too(tmp_path: Path) -> None:
    line = {
        "id": "review-abc", "messages": [
            {"role": "system", "content": "s"}, {"role": "user", "content": "咳嗽按怎？"},
            {"role": "assistant", "content": "加啉燒水。⚠️ 這是一般衛教資訊"}],
        "reviewer": "dr-lin", "reviewed_at": "2026-12-01T10:00:00+00:00",
    }  # fmt: skip
    path = tmp_path / "export.jsonl"
    path.write_text(json.dumps(line, ensure_ascii=False) + "\n", encoding="utf-8")
    (passage,) = read_source(path, "reviewed")
    assert (passage.id, passage.hanji, passage.question) == (
        "review:abc",
        "加啉燒水。",
        "咳嗽按怎？",
    )


def test_bad_records_are_reported_with_file_and_line(tmp_path: Path) -> None:
    good = json.loads(KB.read_text(encoding="utf-8").splitlines()[0])
    lines = [
        json.dumps(good, ensure_ascii=False),
        "{not json",
        json.dumps({**good, "id": "KB900", "hanji": ""}, ensure_ascii=False),
        json.dumps({k: v for k, v in good.items() if k != "reviewer"}, ensure_ascii=False),
        json.dumps(good, ensure_ascii=False),  # duplicate id
    ]
    path = tmp_path / "leaflets.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(KnowledgeError) as err:
        read_source(path)
    problems = err.value.problems
    assert [p.split(": ", 1)[0] for p in problems] == [f"{path}:{n}" for n in (2, 3, 4, 5)]
    assert "invalid JSON" in problems[0] and "'hanji'" in problems[1]
    assert "reviewer" in problems[2] and "already used on line 1" in problems[3]


def test_a_rejected_review_never_loads(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    rec = {"question": "q", "answer": "a", "reviewer": "dr", "status": "rejected"}
    path.write_text(json.dumps(rec) + "\n", encoding="utf-8")
    with pytest.raises(KnowledgeError, match=r"r.jsonl:1: status 'rejected'"):
        read_source(path, "reviewed")


def test_ids_must_be_unique_across_sources(tmp_path: Path) -> None:
    copy = tmp_path / "copy.jsonl"
    copy.write_text(KB.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    with pytest.raises(KnowledgeError, match="KB001' is also in"):
        read_sources([(KB, "passages"), (copy, "passages")])


def test_questions_name_real_passages_and_keep_a_held_out_split() -> None:
    questions = read_questions(REPO_ROOT / "data/knowledge/questions.jsonl")
    ids = {
        p.id
        for p in read_sources(
            [(KB, "passages"), (REPO_ROOT / "data/demo/reviewed_answers.jsonl", "reviewed")]
        )
    }
    assert {pid for q in questions for pid in q.answers()} <= ids
    held = [q for q in questions if q.split == "heldout"]
    assert len(held) >= 20 and any(q.passage is None for q in held)
    assert not {q.question for q in held} & {q.question for q in questions if q.split == "tune"}


def test_tokens_are_hanji_bigrams_and_toneless_tailo_syllables() -> None:
    assert tokens("咳嗽，喉嚨疼") == ["咳嗽", "喉嚨", "嚨疼"]
    assert tokens("燒") == ["燒"]
    assert normalise("Sàu-tshuì") == "sau-tshui"
    assert tokens("Sàu-tshuì ê") == ["sau", "tshui", "sau|tshui", "e"]
    assert tokens("３８度") == ["38", "度"]
