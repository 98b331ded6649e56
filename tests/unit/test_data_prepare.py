"""``prepare`` end to end on small inline sources (tiny tokenizer): the output contract, leak
freedom, accounting, bad input and the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from taigimed.cli import main
from taigimed.config import load_config
from taigimed.data.config import DataConfig, SourceConfig
from taigimed.data.dedupe import DuplicateIndex
from taigimed.data.normalise import dedupe_key
from taigimed.data.prepare import prepare
from taigimed.data.readers import DataError
from taigimed.utils import read_json, read_jsonl, sha256_file

POOL = "血壓糖尿病發燒咳嗽頭痛腹肚藥醫生急診心臟肺肝腎眼耳鼻喉皮膚骨關節胃腸神經癌症感染疫苗過敏"


SYLLABLES = ["guá", "tsiok", "thiànn", "thâu", "khak", "sio", "kám", "mōo", "pak", "tóo", "ioh"]


def question(rng: random.Random) -> str:
    return "".join(rng.choice(POOL) for _ in range(30)) + "，下列何者正確？"


def medqa_lines(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        options = {k: f"選項{k}{i}" for k in "ABCD"}
        idx = "ABCD"[i % 4]
        out.append(
            {
                "question": question(rng),
                "options": options,
                "answer": options[idx],
                "answer_idx": idx,
            }
        )
    return out


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text(
        "".join(
            (r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows
        ),
        encoding="utf-8",
    )
    return path


def parallel_csv(path: Path, n: int) -> Path:
    rng = random.Random(1)
    rows = ["ID,ZH,HAN,TL,EN,POJ"]
    for i in range(n):
        zh = "".join(rng.choice(POOL) for _ in range(14)) + "。"
        han = "阮" + "".join(rng.choice(POOL) for _ in range(14)) + "。"
        tl = " ".join(rng.choice(SYLLABLES) for _ in range(8))
        rows.append(f"T{i},{zh},{han},{tl}.,I {i}.,")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def sources(tmp_path) -> dict[str, Path]:
    questions = medqa_lines(40)
    questions[3]["question"] = "承上題，" + questions[3]["question"]
    questions[5]["question"] = "胸部X光如附圖，" + questions[5]["question"]
    copy = dict(questions[10], question=questions[10]["question"].replace("，", ", ") + " ")
    medqa = write_jsonl(tmp_path / "medqa.jsonl", [*questions, copy])
    # Reviewed answers whose questions are the MedQA stems: the eval ones must not be trained on.
    reviewed = write_jsonl(
        tmp_path / "reviewed.jsonl",
        [{"question": q["question"], "answer": "請去看醫生，毋是診斷。"} for q in questions],
    )
    chat = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": f"我咧嗽 {i} 工矣"},
                    {"role": "assistant", "content": "加啉水，毋是診斷。"},
                ]
            }
            for i in range(10)
        ],
    )
    return {
        "medqa": medqa,
        "reviewed": reviewed,
        "chat": chat,
        "parallel": parallel_csv(tmp_path / "p.csv", 60),
    }


def make_cfg(sources: dict[str, Path], tokenizer: Path, **overrides) -> DataConfig:
    raw = {
        "sources": {
            "medqa": {"reader": "medqa", "paths": [str(sources["medqa"])]},
            "reviewed": {"reader": "reviewed", "paths": [str(sources["reviewed"])]},
            "chat": {"reader": "chat", "paths": [str(sources["chat"])]},
            "parallel": {"reader": "parallel", "paths": [str(sources["parallel"])]},
        },
        "tokenizer": str(tokenizer),
        "medqa": {"eval_size": 8},
        "taigi": {"eval_size": 10},
        "val_fraction": 0.1,
    }
    cfg = load_config(
        DataConfig, None, [f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in raw.items()]
    )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


STAGE_FILES = ["stage1_train", "stage1_val", "stage2_train", "stage2_val"]


def test_outputs_follow_the_contract(sources, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    report = prepare(make_cfg(sources, tiny_model_dir), out)
    for name in STAGE_FILES:
        rows = read_jsonl(out / f"{name}.jsonl")
        assert rows, name
        for ex in rows:
            assert set(ex) == {"id", "source", "task", "script", "messages"}
            assert ex["script"] in {"hanji", "tailo", "poj", "zh", "mixed"}
            roles = [m["role"] for m in ex["messages"]]
            assert set(roles) <= {"system", "user", "assistant"} and "user" in roles
            assert roles[-1] == "assistant" and ex["messages"][-1]["content"].strip()
        assert len({ex["id"] for ex in rows}) == len(rows)
    mcq = read_jsonl(out / "eval/medqa_mcq.jsonl")
    assert len(mcq) == 8
    for item in mcq:
        assert set(item) == {"id", "question", "options", "answer_idx", "answer", "flags"}
        assert item["options"][item["answer_idx"]] == item["answer"]
        assert set(item["flags"]) == {"figure", "chained", "numbered"}
    lm = read_jsonl(out / "eval/taigi_lm.jsonl")
    assert {x["script"] for x in lm} == {"hanji", "tailo"} and len(lm) == 20
    tr = read_jsonl(out / "eval/taigi_translation.jsonl")
    assert len(tr) == 10 and all(set(x) == {"id", "source", "reference"} for x in tr)
    manifest = read_json(out / "manifest.json")["files"]
    for name, digest in manifest.items():
        assert sha256_file(out / name) == digest
    assert {"data_report.json", "data_report.md", "plots/lengths_stage1.png"} <= set(manifest)
    assert read_json(out / "data_report.json")["mix"] == report["mix"]


def test_nothing_is_dropped_without_being_counted(sources, tiny_model_dir, tmp_path):
    report = prepare(make_cfg(sources, tiny_model_dir), tmp_path / "out")
    medqa = report["sources"]["medqa"]
    assert medqa["read"] == 41
    assert medqa["dropped"] == {"duplicate_exact": 1, "medqa_chained": 1, "medqa_figure": 1}
    assert medqa["eval_held_out"] == 8
    for name, src in report["sources"].items():
        assert src["balanced"], name
        used = (
            sum(src["dropped"].values()) + src["eval_held_out"] + sum(src["records_used"].values())
        )
        assert src["read"] == used
    assert report["medqa_flags"] == {"questions": 41, "chained": 1, "figure": 1}


def test_no_eval_question_reaches_training(sources, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    report = prepare(make_cfg(sources, tiny_model_dir), out)
    # The reviewed source repeats every MedQA stem: those of the 8 eval questions are leaks.
    assert report["sources"]["reviewed"]["dropped"] == {"eval_leak_exact": 8}
    eval_questions = [q["question"] for q in read_jsonl(out / "eval/medqa_mcq.jsonl")]
    index = DuplicateIndex(threshold=0.8)
    for i, q in enumerate(eval_questions):
        index.add(str(i), q)
    keys = {dedupe_key(q) for q in eval_questions}
    for name in STAGE_FILES:
        for ex in read_jsonl(out / f"{name}.jsonl"):
            user = next(m["content"] for m in ex["messages"] if m["role"] == "user")
            stem = user.split("\n")[0]
            assert dedupe_key(stem) not in keys
            assert index.match(stem) is None, (name, ex["id"])
    held = {x["reference"] for x in read_jsonl(out / "eval/taigi_translation.jsonl")}
    for name in STAGE_FILES:
        for ex in read_jsonl(out / f"{name}.jsonl"):
            assert not any(m["content"] in held for m in ex["messages"])


def test_replay_fraction_in_stage2_train(sources, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    cfg = make_cfg(sources, tiny_model_dir, replay_fraction=0.3)
    report = prepare(cfg, out)
    rows = read_jsonl(out / "stage2_train.jsonl")
    replay = [ex for ex in rows if ex["id"].startswith("replay:")]
    assert abs(len(replay) / len(rows) - 0.3) <= 0.01
    assert {ex["source"] for ex in replay} <= {"medqa", "reviewed"}
    assert report["mix"]["replay"] == len(replay)
    assert not any(ex["id"].startswith("replay:") for ex in read_jsonl(out / "stage2_val.jsonl"))


def test_same_seed_same_files_other_seed_other_split(sources, tiny_model_dir, tmp_path):
    cfg = make_cfg(sources, tiny_model_dir)
    first = prepare(cfg, tmp_path / "a")
    prepare(cfg, tmp_path / "b")
    for name in [*STAGE_FILES, "eval/medqa_mcq"]:
        assert (tmp_path / "a" / f"{name}.jsonl").read_bytes() == (
            tmp_path / "b" / f"{name}.jsonl"
        ).read_bytes()
    prepare(make_cfg(sources, tiny_model_dir, seed=99), tmp_path / "c")
    assert read_jsonl(tmp_path / "c/eval/medqa_mcq.jsonl") != read_jsonl(
        tmp_path / "a/eval/medqa_mcq.jsonl"
    )
    assert first["stages"]["stage1_train"]["examples"] > 0


def test_long_examples_are_dropped_and_counted(sources, tiny_model_dir, tmp_path):
    report = prepare(make_cfg(sources, tiny_model_dir, max_tokens=200), tmp_path / "out")
    too_long = report["dropped"]["counts"].get("example_too_long", 0)
    assert too_long > 0
    assert (
        sum(s["examples_dropped"].get("too_long", 0) for s in report["sources"].values())
        == too_long
    )
    kept = [st["tokens"] for st in report["stages"].values() if st["tokens"]["count"]]
    assert kept and all(t["max"] <= 200 for t in kept)


def test_corrupt_lines_fail_past_the_error_rate_with_their_line_numbers(
    sources, tiny_model_dir, tmp_path
):
    lines = sources["chat"].read_text(encoding="utf-8").splitlines()
    lines[2] = '{"messages": [oops'
    lines[6] = '{"messages": []}'
    sources["chat"].write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        prepare(make_cfg(sources, tiny_model_dir), tmp_path / "out")
    assert "2 of 10 records malformed" in str(err.value)
    assert f"{sources['chat']}:3: invalid JSON" in str(err.value)
    assert f"{sources['chat']}:7: field 'messages'" in str(err.value)
    report = prepare(make_cfg(sources, tiny_model_dir, max_error_rate=0.25), tmp_path / "out")
    assert report["malformed"]["count"] == 2
    assert report["malformed"]["records"][0].startswith(f"{sources['chat']}:3:")
    assert report["sources"]["chat"]["malformed"] == 2 and report["sources"]["chat"]["read"] == 8


def test_missing_source_names_the_config_key(sources, tiny_model_dir, tmp_path):
    cfg = make_cfg(sources, tiny_model_dir)
    cfg.sources["chat"].paths = [tmp_path / "nope.jsonl"]
    with pytest.raises(DataError, match=r"sources\.chat\.paths\[0\]: .*nope\.jsonl not found"):
        prepare(cfg, tmp_path / "out")
    cfg.sources["chat"] = SourceConfig(
        reader="chat", paths=[tmp_path / "nope.jsonl"], required=False
    )
    report = prepare(cfg, tmp_path / "out")
    assert report["sources"]["chat"]["files"] == [
        {"path": str(tmp_path / "nope.jsonl"), "missing": True}
    ]


def test_config_rejects_bad_settings(tmp_path):
    from taigimed.config import ConfigError

    path = tmp_path / "data.yaml"
    path.write_text("sources:\n  a: {reader: medqa, paths: [x.jsonl]}\nreplay_fraction: 1.5\n")
    with pytest.raises(ConfigError, match="replay_fraction"):
        load_config(DataConfig, path)
    with pytest.raises(ConfigError, match=r"sources\.a\.reader"):
        load_config(DataConfig, path, ["sources.a.reader=pdf", "replay_fraction=0.2"])
    with pytest.raises(ConfigError, match=r"taigi\.directions"):
        load_config(DataConfig, path, ["replay_fraction=0.2", "taigi.directions=[zh_to_klingon]"])


def test_cli_help_explains_every_input_format(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["prepare", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for word in [
        "--config",
        "--out",
        "key=value",
        "medqa",
        "ID,ZH,HAN,TL,EN,POJ",
        "HoaBun",
        "例句標音",
        "messages",
        "reviewed",
    ]:
        assert word in text


def test_cli_runs_and_prints_a_summary(sources, tiny_model_dir, tmp_path, capsys):
    cfg_path = tmp_path / "data.yaml"
    cfg_path.write_text(
        "sources:\n"
        f"  medqa: {{reader: medqa, paths: ['{sources['medqa']}']}}\n"
        f"  parallel: {{reader: parallel, paths: ['{sources['parallel']}']}}\n"
        f"tokenizer: '{tiny_model_dir}'\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    code = main(
        [
            "prepare",
            "--config",
            str(cfg_path),
            "--out",
            str(out),
            "medqa.eval_size=5",
            "taigi.eval_size=5",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "stage2_train" in text and "medqa_mcq 5" in text
    assert (out / "data_report.md").is_file()
    assert main(["prepare", "--config", str(tmp_path / "missing.yaml")]) == 1
