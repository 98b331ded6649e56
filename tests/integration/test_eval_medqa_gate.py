"""The MedQA gate on a fixed 200-question sample of real MedQA-Taiwan dev (../shared), as
`make demo MEDQA=../shared/data/medqa_tw/dev.jsonl` runs it: the demo file plus the user's file,
200 questions held out by the profile's seed, scored and gated with interval and paired test.

Skipped with a message when ../shared is absent (a fresh clone has only the 16 demo questions).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from taigimed.config import load_config
from taigimed.data.config import DataConfig
from taigimed.data.prepare import prepare
from taigimed.demo import MEDQA_GATE_SIZE, medqa_overrides
from taigimed.eval.config import EvalConfig, GateConfig
from taigimed.eval.evaluate import evaluate_model
from taigimed.eval.gate import gate
from taigimed.pipeline.steps import split_overrides
from taigimed.utils import REPO_ROOT, read_jsonl


def gate_on_medqa_sample(dev: Path, model: Path, tmp_path: Path) -> tuple[list, object]:
    """Prepare demo + ``dev`` with the demo's overrides, score ``model``, gate it vs itself."""
    overrides = split_overrides(medqa_overrides(dev, MEDQA_GATE_SIZE))
    cfg = load_config(DataConfig, REPO_ROOT / "configs/demo-cpu/data.yaml", overrides)
    prepare(cfg, tmp_path / "data")
    questions = read_jsonl(tmp_path / "data/eval/medqa_mcq.jsonl")
    eval_cfg = load_config(EvalConfig, REPO_ROOT / "configs/demo-cpu/eval.yaml", ["tasks=[mcq]"])
    metrics = evaluate_model(model, tmp_path / "data/eval", eval_cfg, tmp_path / "ev")
    thresholds = load_config(GateConfig, REPO_ROOT / "configs/demo-cpu/gate.yaml")
    thresholds.metrics = {"medqa_accuracy": thresholds.metrics["medqa_accuracy"]}
    return questions, gate(metrics, thresholds, champion=metrics, base=metrics)


@pytest.mark.slow
def test_demo_gates_on_200_real_medqa_questions_with_interval_and_paired_test(
    shared_dir, tiny_model_dir, tmp_path
):
    dev = shared_dir / "data/medqa_tw/dev.jsonl"
    if not dev.is_file():
        pytest.skip(f"{dev} is absent")
    questions, result = gate_on_medqa_sample(dev, tiny_model_dir, tmp_path)
    assert len(questions) == MEDQA_GATE_SIZE
    row = result.table[0]
    low, high = row.interval
    assert low <= row.candidate <= high and high - low < 0.15  # 16 questions: ~0.4 wide
    assert row.p_champion == 1.0 and row.p_base == 1.0  # the same per-item results
    assert "McNemar on 200 items" in row.checks[0]
    assert "| medqa_accuracy |" in result.markdown() and result.passed
