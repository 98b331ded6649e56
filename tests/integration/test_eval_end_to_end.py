"""evaluate -> gate -> register, as the pipeline runs them, and SmolLM2 on real MedQA questions."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from taigimed.cli import main
from taigimed.config import load_config
from taigimed.eval.config import EvalConfig, GateConfig
from taigimed.eval.evaluate import evaluate_model
from taigimed.eval.gate import gate
from taigimed.registry import Registry, RegistryError

MCQ = [
    {
        "id": f"m{i}",
        "question": q,
        "options": opts,
        "answer_idx": ans,
        "answer": opts[ans],
        "flags": {"figure": False, "chained": False, "numbered": False},
    }
    for i, (q, opts, ans) in enumerate(
        [
            (
                "高血壓病人最重要的生活調整？",
                {"A": "減鹽", "B": "喝糖水", "C": "不動", "D": "停藥"},
                "A",
            ),
            ("量血壓前應該？", {"A": "運動", "B": "喝咖啡", "C": "講電話", "D": "靜坐五分鐘"}, "D"),
            (
                "發燒的成人首先？",
                {"A": "多喝水休息", "B": "吃抗生素", "C": "洗冰水", "D": "喝酒", "E": "熬夜"},
                "A",
            ),
        ]
    )
]
LM = [
    {"id": "1", "text": "目睭哭甲腫腫。", "script": "hanji"},
    {"id": "2", "text": "伊的血壓較懸，食物愛較汫。", "script": "hanji"},
    {"id": "3", "text": "Ba̍k-tsiu khàu kah tsíng-tsíng.", "script": "tailo"},
]
TRANSLATION = [{"id": "t1", "source": "湯還很燙，慢慢喝。", "reference": "湯猶閣足燒，慢慢仔啉。"}]


def write_eval_dir(root: Path) -> Path:
    eval_dir = root / "data" / "eval"
    eval_dir.mkdir(parents=True)
    for name, rows in (
        ("medqa_mcq.jsonl", MCQ),
        ("taigi_lm.jsonl", LM),
        ("taigi_translation.jsonl", TRANSLATION),
    ):
        (eval_dir / name).write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        )
    return eval_dir


FAST = ["gen.max_new_tokens=4", "safety.max_new_tokens=4", "mcq.batch_questions=2"]


def test_evaluate_gate_register_on_a_tiny_model(tmp_path, tiny_model_dir, repo_root):
    eval_dir = write_eval_dir(tmp_path)
    cfg = load_config(EvalConfig, repo_root / "configs/demo-cpu/eval.yaml", FAST)
    out = tmp_path / "eval"
    record = evaluate_model(tiny_model_dir, eval_dir, cfg, out, progress=False)

    for key in ("medqa_accuracy", "ppl_hanji", "ppl_tailo", "chrf", "safety_pass_rate"):
        assert isinstance(record[key], float), key
    assert record["medqa_questions"] == 3.0
    assert record["breakdown"]["medqa"]["num_options"]["5"]["n"] == 1
    assert record["meta"]["safety_suite"] == "safety_suite_v1.jsonl"
    assert json.loads((out / "metrics.json").read_text())["chrf"] == record["chrf"]
    for name in ("report.md", "report.html", "mcq_predictions.jsonl", "safety_results.jsonl"):
        assert (out / name).is_file(), name
    assert (out / "plots" / "medqa_accuracy.png").is_file()

    # the gate reads the file the evaluation wrote; a random tiny model is not a medical advisor
    rules = load_config(GateConfig, repo_root / "configs/demo-cpu/gate.yaml")
    verdict = gate(record, rules, champion=None, base=record)
    assert [row.metric for row in verdict.table] == list(rules.metrics)
    registry = Registry(f"file://{tmp_path / 'registry'}")
    if not verdict.passed:
        with pytest.raises(RegistryError, match="failed the gate"):
            registry.register(tiny_model_dir, record, verdict, "card")
        assert registry.list() == []


def test_evaluate_cli_fails_clearly_on_empty_eval_set(tmp_path, caplog):
    eval_dir = write_eval_dir(tmp_path)
    (eval_dir / "medqa_mcq.jsonl").write_text("")
    with caplog.at_level(logging.ERROR):
        code = main(
            [
                "evaluate",
                "--model",
                "tiny-random-llama",
                "--eval-dir",
                str(eval_dir),
                "--out",
                str(tmp_path / "out"),
                "tasks=[mcq]",
            ]
        )
    assert code == 1
    assert "medqa_mcq.jsonl: multiple-choice file is empty" in caplog.text
    assert not (tmp_path / "out" / "metrics.json").exists()


@pytest.mark.slow
def test_smollm2_scores_real_medqa_subset(tmp_path, smollm2_dir, shared_dir, repo_root):
    """40 real Taiwan MedQA questions through the CLI with SmolLM2 (the full 1,412: docs)."""
    dev = shared_dir / "data/medqa_tw/dev.jsonl"
    out = tmp_path / "eval"
    args = ["evaluate", "--model", str(smollm2_dir), "--eval-dir", str(dev.parent)]
    args += ["--config", str(repo_root / "configs/demo-cpu/eval.yaml"), "--out", str(out)]
    args += ["tasks=[mcq]", "mcq.file=dev.jsonl", "mcq.max_questions=40"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["medqa_questions"] == 40.0
    assert 0.0 <= metrics["medqa_accuracy"] <= 1.0
    assert metrics["medqa_tied_questions"] < 5  # a real model has preferences
    rows = [json.loads(line) for line in (out / "mcq_predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 40 and all(len(r["scores"]) == 4 for r in rows)
