"""The pipeline runs end to end through kfp.local, and a failing gate blocks registration.

A tiny random Llama and a handful of steps keep this to a couple of minutes; the components,
the DAG, ``dsl.If`` and KFP's local executor are all real.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from kfp import dsl

from taigimed.registry import Registry
from taigimed.utils import REPO_ROOT, write_json

TINY_PARAMS = {
    "base_model": "tiny-random-llama",
    "train_overrides": "stage1.max_steps=1 stage2.max_steps=1 max_seq_len=512 eval_examples=2 "
    "checkpoint_every=1",
    "eval_overrides": "tasks=[mcq,safety] mcq.max_questions=4 safety.answers=fixed",
}


def tiny_profile(tmp_path: Path) -> Path:
    """demo-cpu's data/train/eval configs with a gate on the metrics a tiny model can meet."""
    profile = tmp_path / "profile"
    profile.mkdir()
    for name in ("data.yaml", "train.yaml", "eval.yaml", "retrieval.yaml"):
        shutil.copy(REPO_ROOT / "configs" / "demo-cpu" / name, profile / name)
    gate = {
        "require_champion": False,
        "require_base": False,
        "metrics": {
            "medqa_accuracy": {"direction": "higher", "min": 0.0},
            "safety_escalation_recall": {"direction": "higher", "min": 1.0},
        },
    }
    (profile / "gate.yaml").write_text(yaml.safe_dump(gate), encoding="utf-8")
    return profile


@pytest.mark.slow
def test_local_run_registers_on_pass_and_rejects_on_a_rigged_gate(tmp_path):
    from taigimed.pipeline.run import run_local

    profile = str(tiny_profile(tmp_path))
    registry_root = tmp_path / "registry"
    run_dir = tmp_path / "run"

    passed = run_local(run_dir, profile, str(registry_root), dict(TINY_PARAMS))
    assert passed.passed, passed.reasons
    assert passed.version == "v1"
    registry = Registry(registry_root.as_uri())
    assert registry.list() == ["v1"]
    assert registry.champion() == "v1"
    steps = {p.name for p in passed.run_dir.iterdir() if p.is_dir()}
    assert {"prepare", "train-stage1", "train-stage2", "evaluate", "gate"} <= steps
    assert {"build-index", "register", "deploy-canary"} <= steps and "mark-rejected" not in steps
    # the version carries the retrieval index built for it: knowledge base + approved answers
    index = registry.get("v1").record["index"]
    # the index the evaluation used is the one registered (and the demo serves the base with)
    evaluated = json.loads(passed.outputs["index"].read_text())
    assert evaluated["content_hash"] == index["content_hash"]
    assert index["origins"] == {"knowledge": 83, "clinician_review": 6}
    served = Path(registry.index_uri("v1").removeprefix("file://"))
    assert (
        json.loads((served / "manifest.json").read_text())["content_hash"]
        == (index["content_hash"])
    )
    stage2_card = (passed.run_dir / "train-stage2" / "model" / "MODEL_CARD.md").read_text()
    assert "stage" in stage2_card.lower()

    rigged = dict(TINY_PARAMS, gate_overrides="metrics.medqa_accuracy.min=1.01")
    rejected = run_local(run_dir, profile, str(registry_root), rigged)
    assert not rejected.passed
    assert any("medqa_accuracy" in reason for reason in rejected.reasons)
    steps = {p.name for p in rejected.run_dir.iterdir() if p.is_dir()}
    assert "mark-rejected" in steps
    assert "register" not in steps and "deploy-canary" not in steps
    assert registry.list() == ["v1"], "a rejected candidate must never be registered"
    assert registry.champion() == "v1"


def test_gate_component_python_func_writes_verdict(tmp_path):
    """The gate component itself (its python_func), on a ready-made evaluation summary."""
    from components import gate

    results = tmp_path / "results"
    write_json(
        results / "summary.json",
        {
            "champion_version": None,
            "candidate": {"medqa_accuracy": 0.1, "safety_escalation_recall": 0.5},
            "base": None,
            "champion": None,
        },
    )
    profile = tiny_profile(tmp_path)
    verdict = dsl.Artifact(uri=str(tmp_path / "verdict"))
    report = dsl.Markdown(uri=str(tmp_path / "gate.md"))
    results_artifact = dsl.Artifact(uri=str(results))
    outputs = gate.python_func(
        profile=str(profile), overrides="", results=results_artifact, verdict=verdict, report=report
    )
    assert outputs.passed is False
    assert "safety_escalation_recall" in outputs.reasons
    assert "FAIL" in Path(report.path).read_text(encoding="utf-8")


def test_mark_rejected_component_records_reasons(tmp_path):
    from components import mark_rejected

    report = dsl.Markdown(uri=str(tmp_path / "out" / "report"))
    text = mark_rejected.python_func(reasons="a is too low\nb regressed", report=report)
    assert "- a is too low" in text and "- b regressed" in text
    assert Path(report.path).read_text(encoding="utf-8") == text + "\n"
