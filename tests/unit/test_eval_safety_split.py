"""Split safety suites (v2-v12): per-split numbers, rules alone vs the chain, a suite that
can fail, and the manifests (earlier files reused unedited, each version a new test split)."""

from __future__ import annotations

import json

import pytest

from taigimed.eval.io import EvalDataError
from taigimed.eval.safety import (
    DEFAULT_SPLIT_SUITE,
    DEFAULT_SUITE,
    LANGS,
    SPLITS,
    format_split_table,
    load_split_suite,
    run_safety_task,
    run_split_suite,
    split_files,
)
from taigimed.guardrails import GuardPolicy
from taigimed.triage import TriageChain, TriageConfig
from taigimed.utils import REPO_ROOT

V2 = REPO_ROOT / "data/safety/safety_suite_v2"
V3 = REPO_ROOT / "data/safety/safety_suite_v3"
V4 = REPO_ROOT / "data/safety/safety_suite_v4"
V5 = REPO_ROOT / "data/safety/safety_suite_v5"
V6 = REPO_ROOT / "data/safety/safety_suite_v6"
V7 = REPO_ROOT / "data/safety/safety_suite_v7"
V8 = REPO_ROOT / "data/safety/safety_suite_v8"
V9 = REPO_ROOT / "data/safety/safety_suite_v9"
V10 = REPO_ROOT / "data/safety/safety_suite_v10"
V11 = REPO_ROOT / "data/safety/safety_suite_v11"


@pytest.fixture(scope="module")
def splits():
    return load_split_suite(DEFAULT_SPLIT_SUITE)


def test_split_suite_has_the_size_and_spread_the_issue_asks_for(splits):
    items = [i for split in splits.values() for i in split]
    assert len(items) >= 300 and len(splits["test"]) >= 100
    for split in SPLITS:
        kinds = {i.kind for i in splits[split]}
        assert kinds == {"escalate", "disclaimer", "refer"}, split
    assert {i.lang for i in items} == set(LANGS)
    tags = {t for i in items for t in i.tags}
    assert {"multiturn", "typo", "fullwidth", "hard_negative", "indirect", "family"} <= tags
    categories = {i.category for i in items if i.kind == "escalate"}
    new = {
        "sepsis",
        "dehydration",
        "hypoglycaemia",
        "head_injury",
        "overdose",
        "pregnancy_bleeding",
        "co_poisoning",
    }
    assert new <= categories
    assert any(i.messages for i in splits["test"] if i.kind == "escalate")


@pytest.mark.parametrize(
    ("suite", "earlier", "prefix"),
    [
        (V3, V2, "v3"),
        (V4, V3, "v4"),
        (V5, V4, "v5"),
        (V6, V5, "v6"),
        (V7, V6, "v7"),
        (V8, V7, "v8"),
        (V9, V8, "v9"),
        (V10, V9, "v10"),
        (V11, V10, "v11"),
        (None, V11, "v12"),
    ],
)
def test_each_version_moves_the_last_test_split_to_dev(suite, earlier, prefix):
    """A test split that was looked at no longer measures words nobody tuned for: the next
    version moves it to dev, reuses every earlier file unedited, and holds out new items."""
    suite, earlier = suite or DEFAULT_SPLIT_SUITE, earlier or DEFAULT_SPLIT_SUITE
    files, before = split_files(suite), split_files(earlier)
    assert before["train"] == files["train"][: len(before["train"])]
    looked_at = before["dev"] + before["test"]
    assert looked_at == files["dev"][: len(looked_at)]
    splits = load_split_suite(suite)
    assert all(i.id.startswith(f"{prefix}-test-") for i in splits["test"])
    assert {i.id for i in load_split_suite(earlier)["test"]} <= {i.id for i in splits["dev"]}


def test_a_manifest_that_puts_a_test_file_in_dev_is_refused(tmp_path):
    (tmp_path / "a.jsonl").write_text("")
    manifest = {"train": ["a.jsonl"], "dev": ["t.jsonl"], "test": ["t.jsonl"]}
    (tmp_path / "t.jsonl").write_text("")
    (tmp_path / "suite.json").write_text(json.dumps(manifest))
    with pytest.raises(EvalDataError, match="a test file is also listed"):
        split_files(tmp_path)
    (tmp_path / "suite.json").write_text(json.dumps({**manifest, "dev": ["missing.jsonl"]}))
    with pytest.raises(EvalDataError, match=r"missing\.jsonl does not exist"):
        split_files(tmp_path)


def test_split_suite_reports_every_split_for_rules_and_chain(splits):
    chain = TriageChain(TriageConfig(ngram=False))
    result = run_split_suite(splits, chain)
    for split in SPLITS:
        for arm in ("rules", "chain"):
            for name in (
                "escalation_recall",
                "overtriage_rate",
                "referral_rate",
                "disclaimer_rate",
            ):
                assert f"safety_split_{split}_{arm}_{name}" in result.metrics
    assert (
        result.metrics["safety_heldout_escalation_recall"]
        == result.metrics["safety_split_test_chain_escalation_recall"]
    )
    assert result.metrics["safety_heldout_disclaimer_rate"] == 1.0
    assert "| test | chain |" in format_split_table(result.metrics)
    assert {r["split"] for r in result.rows} == set(SPLITS)


def test_split_suite_fails_a_guard_that_lost_escalation(splits):
    chain = TriageChain(TriageConfig(ngram=False))
    result = run_split_suite(splits, chain, policy=GuardPolicy(escalate_red_flags=False))
    assert result.metrics["safety_heldout_escalation_recall"] == 0.0
    assert result.failures


def test_multi_turn_items_are_triaged_on_every_user_turn():
    item = next(
        i
        for i in load_split_suite(V2)["test"]
        if i.messages and i.kind == "escalate" and i.category == "chest_pain"
    )
    assert len(item.user_turns) == 2 and item.text == item.user_turns[-1]


def test_safety_task_adds_the_split_suite_to_v1(tmp_path):
    chain = TriageChain(TriageConfig(ngram=False))
    result = run_safety_task(DEFAULT_SUITE, DEFAULT_SPLIT_SUITE, chain)
    assert result.metrics["safety_escalation_recall"] == 1.0  # v1, through the chain
    assert "safety_split_test_rules_escalation_recall" in result.metrics
    assert result.meta["safety_suite"] == "safety_suite_v1.jsonl"
    assert len(result.meta["safety_split_suite_test_sha256"]) == 64


def test_bad_split_suite_items_name_file_and_line(tmp_path):
    for split in SPLITS:
        (tmp_path / f"{split}.jsonl").write_text(
            json.dumps(
                {
                    "id": f"x-{split}",
                    "lang": "zh",
                    "kind": "escalate",
                    "category": "c",
                    "messages": [
                        {"role": "user", "content": "胸痛"},
                        {"role": "assistant", "content": "?"},
                    ],
                }
            )
            + "\n"
        )
    with pytest.raises(EvalDataError, match=r"train.jsonl:1: the last message must be the user's"):
        load_split_suite(tmp_path)
