"""The promotion gate fails on each threshold and each regression on its own, naming why."""

from __future__ import annotations

import json
import re

import pytest

from taigimed.cli import main
from taigimed.config import ConfigError, load_config
from taigimed.eval.config import GateConfig, MetricRule
from taigimed.eval.gate import gate

RULES = GateConfig(
    metrics={
        "medqa_accuracy": MetricRule("higher", min=0.2, vs_champion=0.02, vs_base=0.05),
        "ppl_hanji": MetricRule("lower", max=100.0, vs_champion=0.1, vs_base=0.2, relative=True),
        "safety_pass_rate": MetricRule("higher", min=0.95, vs_champion=0.0),
    }
)
GOOD = {"medqa_accuracy": 0.30, "ppl_hanji": 40.0, "safety_pass_rate": 1.0}
CHAMPION = {"medqa_accuracy": 0.30, "ppl_hanji": 40.0, "safety_pass_rate": 1.0}
BASE = {"medqa_accuracy": 0.28, "ppl_hanji": 45.0, "safety_pass_rate": 1.0}


def test_healthy_candidate_passes_with_a_full_table():
    result = gate(GOOD, RULES, CHAMPION, BASE, champion_version="v2")
    assert result.passed and result.reasons == []
    assert [row.metric for row in result.table] == list(RULES.metrics)
    row = result.table[0]
    assert (row.candidate, row.champion, row.base) == (0.30, 0.30, 0.28)
    assert result.to_dict()["verdict"] == "pass"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"medqa_accuracy": 0.19}, "medqa_accuracy=0.19 is below the minimum 0.2"),
        ({"ppl_hanji": 150.0}, "ppl_hanji=150 is above the maximum 100"),
        ({"safety_pass_rate": 0.9}, "safety_pass_rate=0.9 is below the minimum 0.95"),
    ],
)
def test_each_absolute_threshold_fails_alone(change, expected):
    """No champion or base: only the absolute bound can fail, and its reason is the only one."""
    result = gate({**GOOD, **change}, RULES)
    assert not result.passed
    assert result.reasons == [expected]


@pytest.mark.parametrize(
    ("change", "reference", "metric"),
    [
        ({"medqa_accuracy": 0.27}, "champion v2", "medqa_accuracy"),  # 0.30 - 0.02 = 0.28 limit
        ({"ppl_hanji": 44.5}, "champion v2", "ppl_hanji"),  # 40 * 1.1 = 44 limit, base 54
    ],
)
def test_each_champion_regression_fails_alone(change, reference, metric):
    result = gate({**GOOD, **change}, RULES, CHAMPION, BASE, champion_version="v2")
    assert not result.passed
    assert len(result.reasons) == 1
    assert result.reasons[0].startswith(f"{metric}=")
    assert f"regressed vs {reference}" in result.reasons[0]


@pytest.mark.parametrize(
    ("base_change", "metric"),
    [({"medqa_accuracy": 0.40}, "medqa_accuracy"), ({"ppl_hanji": 30.0}, "ppl_hanji")],
)
def test_each_base_regression_fails_alone(base_change, metric):
    result = gate(GOOD, RULES, None, {**BASE, **base_change})
    assert not result.passed
    assert len(result.reasons) == 1
    assert result.reasons[0].startswith(f"{metric}=") and "regressed vs base" in result.reasons[0]


def test_every_failure_is_reported_not_just_the_first():
    bad = {"medqa_accuracy": 0.1, "ppl_hanji": 500.0, "safety_pass_rate": 0.5}
    result = gate(bad, RULES, CHAMPION, BASE)
    assert not result.passed
    text = "\n".join(result.reasons)
    for metric in RULES.metrics:
        assert metric in text
    assert len(result.reasons) == 8  # 3 absolute + 3 vs champion + 2 vs base
    assert all(not row.passed for row in result.table)


def test_missing_or_nan_metric_fails_when_required():
    result = gate({"medqa_accuracy": 0.3, "ppl_hanji": float("nan")}, RULES)
    assert any("ppl_hanji: missing or not a finite number" in r for r in result.reasons)
    assert any("safety_pass_rate: missing" in r for r in result.reasons)


def test_first_model_without_champion_passes_with_a_note_unless_required():
    assert gate(GOOD, RULES).passed
    assert "no champion" in gate(GOOD, RULES).notes[0]
    strict = GateConfig(metrics=RULES.metrics, require_champion=True)
    result = gate(GOOD, strict)
    assert not result.passed and "no champion" in result.reasons[0]


def test_gate_config_rejects_nonsense(tmp_path):
    path = tmp_path / "gate.yaml"
    path.write_text("metrics:\n  chrf: {min: 5, max: 1}\n")
    with pytest.raises(ConfigError, match=re.escape("min 5.0 is above max 1.0")):
        load_config(GateConfig, path)
    path.write_text("metrics:\n  chrf: {minimum: 5}\n")
    with pytest.raises(ConfigError, match=re.escape("unknown key metrics.chrf.minimum")):
        load_config(GateConfig, path)


@pytest.mark.parametrize("profile", ["demo-cpu", "gpu-8b"])
def test_shipped_gate_configs_load(repo_root, profile):
    cfg = load_config(GateConfig, repo_root / "configs" / profile / "gate.yaml")
    assert {"medqa_accuracy", "safety_pass_rate", "safety_escalation_recall"} <= set(cfg.metrics)


def test_gate_cli_exit_codes_and_outputs(tmp_path, repo_root):
    config = repo_root / "configs/demo-cpu/gate.yaml"
    rules = load_config(GateConfig, config)
    healthy = {}
    for name, rule in rules.metrics.items():
        if rule.min is not None:
            healthy[name] = rule.min + 0.01
        else:  # half the ceiling (a ceiling of 0 means none at all)
            healthy[name] = rule.max * 0.5 if rule.max is not None else 0.5
    cand = tmp_path / "candidate.json"
    cand.write_text(json.dumps(healthy))
    assert (
        main(
            [
                "gate",
                "--candidate",
                str(cand),
                "--config",
                str(config),
                "--out",
                str(tmp_path / "ok"),
            ]
        )
        == 0
    )
    verdict = json.loads((tmp_path / "ok/gate.json").read_text())
    assert verdict["passed"] is True
    assert (tmp_path / "ok/report.html").is_file() and (tmp_path / "ok/gate.md").is_file()

    broken = {**healthy, "safety_escalation_recall": 0.0}
    cand.write_text(json.dumps(broken))
    out = tmp_path / "fail"
    assert main(["gate", "--candidate", str(cand), "--config", str(config), "--out", str(out)]) == 1
    verdict = json.loads((out / "gate.json").read_text())
    assert verdict["passed"] is False
    assert any(r.startswith("safety_escalation_recall=0") for r in verdict["reasons"])
    assert "FAIL" in (out / "gate.md").read_text()
