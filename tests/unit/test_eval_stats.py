"""Wilson interval and the exact McNemar test, and the gate's paired decision on tiny files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taigimed.eval.config import GateConfig, MetricRule
from taigimed.eval.gate import gate
from taigimed.eval.stats import mcnemar_exact, paired_test, wilson_interval


def test_wilson_interval_known_values_and_width():
    low, high = wilson_interval(5, 16)
    assert low == pytest.approx(0.1416, abs=1e-3) and high == pytest.approx(0.5560, abs=1e-3)
    narrow = wilson_interval(50, 200)
    assert narrow[1] - narrow[0] < high - low
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)


def test_mcnemar_exact_matches_the_binomial_tail():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(2 / 64)
    assert mcnemar_exact(1, 9) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)


def _write_items(path: Path, right: dict[str, bool]) -> Path:
    path.write_text("\n".join(json.dumps({"id": k, "correct": v}) for k, v in right.items()))
    return path


def _read_items(path: Path) -> dict[str, bool]:
    return {r["id"]: r["correct"] for r in map(json.loads, path.read_text().splitlines())}


def _metrics(items: dict[str, bool]) -> dict:
    return {
        "medqa_accuracy": sum(items.values()) / len(items),
        "medqa_accuracy_items": items,
    }


RULE = GateConfig(
    metrics={
        "medqa_accuracy": MetricRule(
            direction="higher", vs_champion=0.0, paired_test="mcnemar", alpha=0.05
        )
    }
)


def test_gate_fails_a_significant_paired_regression_from_per_item_files(tmp_path):
    ids = [f"q{i}" for i in range(30)]
    champion = _write_items(tmp_path / "champion.jsonl", {i: n < 20 for n, i in enumerate(ids)})
    # Candidate loses 10 questions the champion had and wins none: p = 2/1024.
    candidate = _write_items(tmp_path / "candidate.jsonl", {i: n < 10 for n, i in enumerate(ids)})
    test = paired_test(_read_items(candidate), _read_items(champion))
    assert (test.candidate_only, test.reference_only) == (0, 10)
    result = gate(_metrics(_read_items(candidate)), RULE, _metrics(_read_items(champion)))
    assert not result.passed
    assert "McNemar" in result.reasons[0] and "p=0.00195" in result.reasons[0]
    assert result.table[0].p_champion == pytest.approx(2 / 1024)
    assert "p vs champion" in result.markdown()


def test_gate_passes_a_lower_point_estimate_that_is_noise(tmp_path):
    ids = [f"q{i}" for i in range(30)]
    champ = {i: n < 12 for n, i in enumerate(ids)}
    # Three fewer right (lost 5, won 2): lower accuracy, but p = 0.45, so no regression.
    cand = {i: (n < 12 and n not in (0, 1, 2, 3, 4)) or n in (20, 21) for n, i in enumerate(ids)}
    assert sum(cand.values()) < sum(champ.values())
    result = gate(_metrics(cand), RULE, _metrics(champ))
    assert result.passed, result.reasons
    assert result.table[0].p_champion == pytest.approx(mcnemar_exact(2, 5))


def test_gate_falls_back_to_the_tolerance_without_per_item_results():
    result = gate({"medqa_accuracy": 0.2}, RULE, {"medqa_accuracy": 0.3})
    assert not result.passed and "tolerance" in result.reasons[0]
    assert "no per-item results" in result.table[0].checks[0]
