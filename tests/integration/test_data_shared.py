"""Data preparation on real public samples (../shared/data) and on the repo's demo data.

The shared samples are real MedQA-Taiwan and ChhoeTaigi files; they are absent from a fresh
clone, so these tests skip with a message then. The demo test runs the demo config exactly as
``make demo`` does.
"""

from __future__ import annotations

import csv
import random
import re
import unicodedata
from pathlib import Path

import pytest

from taigimed.config import load_config
from taigimed.data.config import DataConfig
from taigimed.data.dedupe import DuplicateIndex
from taigimed.data.normalise import convert_romanization, dedupe_key
from taigimed.data.prepare import prepare
from taigimed.data.readers import read_chhoetaigi, read_medqa
from taigimed.utils import REPO_ROOT, read_json, read_jsonl

STAGE_FILES = ["stage1_train", "stage1_val", "stage2_train", "stage2_val"]


@pytest.fixture(scope="module")
def medqa_dev(shared_dir) -> Path:
    path = shared_dir / "data/medqa_tw/dev.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} absent: the MedQA-Taiwan sample lives only beside the repo")
    return path


@pytest.fixture(scope="module")
def chhoetaigi_csv(shared_dir) -> Path:
    path = shared_dir / "data/chhoetaigi/ChhoeTaigi_iTaigiHoataiTuichiautian.csv"
    if not path.is_file():
        pytest.skip(f"{path} absent: the ChhoeTaigi sample lives only beside the repo")
    return path


def test_all_medqa_tw_dev_records_load_and_flags_are_counted(medqa_dev):
    out = read_medqa(medqa_dev, "medqa_tw")
    assert out.report.read == 1412 and out.report.bad == []
    flags = {k: sum(r.flags[k] for r in out.records) for k in ("figure", "chained", "numbered")}
    # Hand-checked rules (docs/data.md): 如圖/附圖/圖 A/心電圖如下, 承上題, "12." / "36 ".
    assert flags == {"figure": 71, "chained": 34, "numbered": 160}
    assert all(set(r.options) == set("ABCD") for r in out.records)


def test_all_chhoetaigi_rows_load(chhoetaigi_csv):
    out = read_chhoetaigi(chhoetaigi_csv, "chhoetaigi")
    assert out.report.read == 19775 and out.report.bad == []
    assert out.notes["no_romanization"] == 12
    first = out.records[0]
    assert (first.zh, first.hanji, first.tailo) == ("討厭", "𤺪呢", "siān-neh")


def test_kesi_matches_chhoetaigi_romanisation_on_2000_rows(chhoetaigi_csv):
    """Pins the library choice (docs/data.md): POJ <-> Tâi-lô agreement with the dictionary."""
    with chhoetaigi_csv.open(encoding="utf-8-sig", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["PojUnicode"] and r["KipUnicode"]]
    sample = random.Random(0).sample(rows, 2000)

    def same(a: str, b: str) -> bool:
        norm = [re.sub(r"\s+", " ", unicodedata.normalize("NFC", x)).strip() for x in (a, b)]
        return norm[0] == norm[1]

    to_tl = sum(
        same(convert_romanization(r["PojUnicode"], "tailo"), r["KipUnicode"]) for r in sample
    )
    to_poj = sum(
        same(convert_romanization(r["KipUnicode"], "poj"), r["PojUnicode"]) for r in sample
    )
    assert to_tl / 2000 >= 0.96
    assert to_poj / 2000 >= 0.97


def assert_no_eval_question_in_training(out: Path) -> None:
    eval_items = read_jsonl(out / "eval/medqa_mcq.jsonl")
    index = DuplicateIndex(threshold=0.8)
    for item in eval_items:
        index.add(item["id"], item["question"] + "".join(item["options"].values()))
    keys = {dedupe_key(item["question"]) for item in eval_items}
    for name in STAGE_FILES:
        for ex in read_jsonl(out / f"{name}.jsonl"):
            if ex["task"] != "medqa_mcq":
                continue
            user = next(m["content"] for m in ex["messages"] if m["role"] == "user")
            lines = user.split("\n")
            question = lines[0]
            options = "".join(line[3:] for line in lines if re.match(r"^[A-E]\. ", line))
            assert index.match(question + options) is None, (name, ex["id"])
            assert dedupe_key(question) not in keys or len(dedupe_key(question)) < 12


def replay_fraction(out: Path) -> float:
    rows = read_jsonl(out / "stage2_train.jsonl")
    return sum(ex["id"].startswith("replay:") for ex in rows) / len(rows)


def test_prepare_on_real_samples(medqa_dev, chhoetaigi_csv, tiny_model_dir, tmp_path):
    overrides = [
        f"sources={{medqa_tw: {{reader: medqa, paths: ['{medqa_dev}']}}, "
        f"itaigi: {{reader: chhoetaigi, paths: ['{chhoetaigi_csv}'], max_records: 3000}}}}",
        f"tokenizer='{tiny_model_dir}'",
        "medqa.eval_size=200",
        "taigi.directions=[dict_lookup,hanji_to_tailo]",
        "max_tokens=1024",
    ]
    cfg = load_config(DataConfig, None, overrides)
    out = tmp_path / "data"
    report = prepare(cfg, out)
    medqa = report["sources"]["medqa_tw"]
    assert medqa["read"] == 1412 and medqa["balanced"]
    assert medqa["dropped"]["medqa_figure"] == 71
    assert medqa["dropped"]["medqa_chained"] == 34 - 1  # one chained question also has a figure
    assert medqa["dropped"]["medqa_empty_question"] == 1  # a line that is only "52."
    assert report["medqa_flags"]["numbered"] == 160
    assert report["sources"]["itaigi"]["dropped"]["max_records"] == 19775 - 3000
    assert report["eval"]["medqa_mcq"] == 200
    assert_no_eval_question_in_training(out)
    assert abs(replay_fraction(out) - 0.2) <= 0.01


def test_demo_prepare_end_to_end(smollm2_dir, tmp_path):
    """`taigimed prepare --config configs/demo-cpu/data.yaml` on data/demo (as `make demo`)."""
    if not (REPO_ROOT / "data/demo/medqa_demo.jsonl").is_file():
        pytest.skip("data/demo is absent")
    cfg = load_config(
        DataConfig, REPO_ROOT / "configs/demo-cpu/data.yaml", [f"tokenizer='{smollm2_dir}'"]
    )
    out = tmp_path / "data"
    report = prepare(cfg, out)
    for name in [*STAGE_FILES, "eval/medqa_mcq", "eval/taigi_lm", "eval/taigi_translation"]:
        assert read_jsonl(out / f"{name}.jsonl"), name
    for name in ["data_report.json", "data_report.md", "manifest.json", "plots/lengths_stage2.png"]:
        assert (out / name).is_file(), name
    assert read_json(out / "data_report.json")["sources"] == report["sources"]
    assert all(src["balanced"] and src["malformed"] == 0 for src in report["sources"].values())
    # The demo README's quirks: 3 figure, 3 chained, 3 numbered, 2 near-duplicate pairs.
    assert report["medqa_flags"] == {"questions": 64, "figure": 3, "chained": 3, "numbered": 3}
    assert report["sources"]["medqa"]["dropped"] == {
        "duplicate_exact": 2,
        "medqa_chained": 3,
        "medqa_figure": 3,
    }
    assert_no_eval_question_in_training(out)
    assert abs(replay_fraction(out) - cfg.replay_fraction) <= 0.01
    scripts = report["stages"]["stage2_train"]["by_script"]
    assert {"hanji", "tailo", "zh"} <= set(scripts)
