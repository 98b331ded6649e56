"""Bad training configs fail before any training, with the key and the fix in the message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from taigimed.cli import main
from taigimed.config import ConfigError, load_config
from taigimed.train.config import TrainConfig
from taigimed.train.recipe import StageRecipe
from taigimed.utils import REPO_ROOT

PROFILES = [
    REPO_ROOT / "configs" / "demo-cpu" / "train.yaml",
    REPO_ROOT / "configs" / "gpu-8b" / "train.yaml",
]


def write_stage_data(data_dir: Path, stage: int = 1) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    row = {
        "id": "x",
        "messages": [
            {"role": "user", "content": "嗽"},
            {"role": "assistant", "content": "看醫生。"},
        ],
    }
    for split in ("train", "val"):
        (data_dir / f"stage{stage}_{split}.jsonl").write_text(json.dumps(row) + "\n")


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.parent.name)
def test_shipped_profiles_load(path):
    cfg = load_config(TrainConfig, path)
    assert cfg.stage(1).files(1) == ("stage1_train.jsonl", "stage1_val.jsonl")
    assert cfg.stage(2).files(2) == ("stage2_train.jsonl", "stage2_val.jsonl")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("lora.rank=0", "lora.rank must be >= 1"),
        ("lora.dropout=1.5", "lora.dropout must be in"),
        ("lora.target_modules=[]", "target_modules is empty"),
        ("stage2.learning_rate=-1", "stage2.learning_rate must be > 0"),
        ("batch_size=0", "batch_size must be >= 1"),
        ("quantization=nf5", "quantization must be one of"),
        ("lora.rnak=8", "unknown key lora.rnak"),
        ("stage1.train_file=train.csv", "stage1.train_file must be a .jsonl"),
        ("attn_implementation=eager", "packing=true needs attn_implementation=sdpa"),
    ],
)
def test_invalid_values_fail_at_load_time(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, PROFILES[0], [override])


def test_missing_data_file_fails_in_preflight_before_any_model_loads(tmp_path):
    cfg = load_config(TrainConfig, None, ["base_model=tiny-random-llama"])
    recipe = StageRecipe(cfg, 2, tmp_path / "data", tmp_path / "out", "tiny-random-llama")
    with pytest.raises(ConfigError, match=r"stage 2 data file .*stage2_train.jsonl not found"):
        recipe.preflight()
    assert not hasattr(recipe, "model")


def test_unknown_target_module_fails_before_training(tmp_path, tiny_model_dir):
    write_stage_data(tmp_path / "data")
    cfg = load_config(
        TrainConfig, None, ["lora.target_modules=[q_proj,qkv_proj]", "eval_examples=0"]
    )
    recipe = StageRecipe(cfg, 1, tmp_path / "data", tmp_path / "out", tiny_model_dir)
    recipe.preflight()
    with pytest.raises(
        ConfigError,
        match=r"\['qkv_proj'\] not found .* linear modules are "
        r"\['down_proj', 'gate_proj', 'k_proj', 'o_proj'",
    ):
        recipe.setup()
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_cli_reports_bad_config_and_exits_1(tmp_path, capsys, caplog):
    write_stage_data(tmp_path / "data")
    code = main(
        [
            "train",
            "--stage",
            "1",
            "--config",
            str(PROFILES[0]),
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "out"),
            "lora.rank=0",
        ]
    )
    assert code == 1
    assert "lora.rank must be >= 1" in caplog.text


def test_stage2_without_stage1_says_what_to_run_first(tmp_path, caplog):
    write_stage_data(tmp_path / "data", stage=2)
    code = main(
        [
            "train",
            "--stage",
            "2",
            "--config",
            str(PROFILES[0]),
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(tmp_path / "run" / "stage2"),
        ]
    )
    assert code == 1
    assert "run stage 1 first or pass --base" in caplog.text


def test_train_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for option in ("--stage", "--config", "--data", "--out", "--base", "--resume"):
        assert option in out
