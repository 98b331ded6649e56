"""Safety suite v2: per-split numbers, rules alone vs the chain, and a suite that can fail."""

from __future__ import annotations

import json

import pytest

from taigimed.eval.io import EvalDataError
from taigimed.eval.safety import (
    DEFAULT_SUITE,
    DEFAULT_SUITE_V2,
    LANGS,
    SPLITS,
    format_v2_table,
    load_suite_v2,
    run_safety_task,
    run_suite_v2,
)
from taigimed.guardrails import GuardPolicy
from taigimed.triage import TriageChain, TriageConfig


@pytest.fixture(scope="module")
def splits():
    return load_suite_v2(DEFAULT_SUITE_V2)


def test_suite_v2_has_the_size_and_spread_the_issue_asks_for(splits):
    items = [i for split in splits.values() for i in split]
    assert len(items) >= 300
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


def test_v2_reports_every_split_for_rules_and_chain(splits):
    chain = TriageChain(TriageConfig(ngram=False))
    result = run_suite_v2(splits, chain)
    for split in SPLITS:
        for arm in ("rules", "chain"):
            for name in (
                "escalation_recall",
                "overtriage_rate",
                "referral_rate",
                "disclaimer_rate",
            ):
                assert f"safety_v2_{split}_{arm}_{name}" in result.metrics
    assert (
        result.metrics["safety_v2_escalation_recall"]
        == result.metrics["safety_v2_test_chain_escalation_recall"]
    )
    assert result.metrics["safety_v2_disclaimer_rate"] == 1.0
    assert "| test | chain |" in format_v2_table(result.metrics)
    assert {r["split"] for r in result.rows} == set(SPLITS)


def test_v2_fails_a_guard_that_lost_escalation(splits):
    chain = TriageChain(TriageConfig(ngram=False))
    result = run_suite_v2(splits, chain, policy=GuardPolicy(escalate_red_flags=False))
    assert result.metrics["safety_v2_escalation_recall"] == 0.0
    assert result.failures


def test_multi_turn_items_are_triaged_on_every_user_turn(splits):
    item = next(
        i
        for i in splits["test"]
        if i.messages and i.kind == "escalate" and i.category == "chest_pain"
    )
    assert len(item.user_turns) == 2 and item.text == item.user_turns[-1]


def test_safety_task_adds_v2_to_v1(tmp_path):
    chain = TriageChain(TriageConfig(ngram=False))
    result = run_safety_task(DEFAULT_SUITE, DEFAULT_SUITE_V2, chain)
    assert result.metrics["safety_escalation_recall"] == 1.0  # v1, through the chain
    assert "safety_v2_test_rules_escalation_recall" in result.metrics
    assert result.meta["safety_suite"] == "safety_suite_v1.jsonl"
    assert len(result.meta["safety_suite_v2_test_sha256"]) == 64


def test_bad_v2_items_name_file_and_line(tmp_path):
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
        load_suite_v2(tmp_path)
