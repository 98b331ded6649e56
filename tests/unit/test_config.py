"""The config loader: YAML + key=value overrides, with early, located errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from taigimed.config import ConfigError, dump_yaml, load_config


@dataclass
class Lora:
    rank: int = 8
    alpha: float = 16.0
    targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class Job:
    name: str
    lora: Lora = field(default_factory=Lora)
    mode: Literal["padded", "packed"] = "packed"
    data: Path | None = None
    weights: dict[str, float] = field(default_factory=dict)

    def validate(self) -> None:
        if self.lora.rank <= 0:
            raise ConfigError(f"lora.rank must be positive, got {self.lora.rank}")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "job.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_then_overrides_fill_nested_typed_fields(tmp_path):
    path = write(tmp_path, "name: demo\nlora:\n  rank: 4\ndata: a/b.jsonl\n")
    cfg = load_config(Job, path, ["lora.alpha=32", "lora.targets=[k_proj]", "weights.x=1"])
    assert cfg.name == "demo"
    assert cfg.lora == Lora(rank=4, alpha=32.0, targets=["k_proj"])
    assert cfg.data == Path("a/b.jsonl")
    assert cfg.weights == {"x": 1.0}
    assert isinstance(cfg.lora.alpha, float)


def test_unknown_key_names_file_and_dotted_key(tmp_path):
    path = write(tmp_path, "name: demo\nlora:\n  rnak: 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(Job, path)
    assert str(path) in str(err.value)
    assert "lora.rnak" in str(err.value)


def test_wrong_type_is_rejected_at_load_time(tmp_path):
    path = write(tmp_path, "name: demo\nlora:\n  rank: eight\n")
    with pytest.raises(ConfigError, match=r"lora\.rank must be an integer"):
        load_config(Job, path)


def test_literal_and_bool_are_not_loosened(tmp_path):
    with pytest.raises(ConfigError, match="mode must be one of"):
        load_config(Job, None, ["name=x", "mode=streaming"])
    with pytest.raises(ConfigError, match="must be an integer"):
        load_config(Job, None, ["name=x", "lora.rank=true"])


def test_missing_required_key_and_validate_hook(tmp_path):
    with pytest.raises(ConfigError, match="missing required key name"):
        load_config(Job, None)
    with pytest.raises(ConfigError, match=r"lora\.rank must be positive"):
        load_config(Job, None, ["name=x", "lora.rank=0"])


def test_bad_override_syntax_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="key=value"):
        load_config(Job, None, ["name"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(Job, tmp_path / "nope.yaml")


def test_dump_round_trips(tmp_path):
    cfg = load_config(Job, None, ["name=台語", "data=x.jsonl"])
    again = load_config(Job, write(tmp_path, dump_yaml(cfg)))
    assert again == cfg
