"""``DataConfig``: what ``taigimed prepare`` reads and how it turns it into stage datasets.

Loaded with ``taigimed.config.load_config(DataConfig, path, overrides)``; every setting is
documented in ``configs/demo-cpu/data.yaml``. Validation happens at load time so that a typo
in a reader name or a replay fraction of 2.0 fails before any data is read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from taigimed.config import ConfigError

ReaderName = Literal["medqa", "parallel", "chhoetaigi", "moe_sentences", "chat", "reviewed"]

# Where each reader's examples go unless a source says otherwise: medical -> stage 1,
# Taigi -> stage 2.
DEFAULT_STAGE: dict[str, int] = {
    "medqa": 1,
    "reviewed": 1,
    "parallel": 2,
    "chhoetaigi": 2,
    "moe_sentences": 2,
    "chat": 2,
}

ALL_DIRECTIONS = (
    "zh_to_hanji",
    "hanji_to_zh",
    "hanji_to_tailo",
    "tailo_to_hanji",
    "tailo_to_poj",
    "dict_lookup",
    "dict_reverse",
)


@dataclass
class SourceConfig:
    """One input: which reader parses it and which files it has."""

    reader: ReaderName
    paths: list[Path] = field(default_factory=list)
    # Stage the examples go to; None = the reader's default (medical 1, Taigi 2).
    stage: Literal[1, 2] | None = None
    # A missing file fails the run when required; otherwise the source is skipped and reported.
    required: bool = True
    # Keep at most this many records (after reading, before anything else); None = all.
    max_records: int | None = None

    @property
    def target_stage(self) -> int:
        return self.stage if self.stage is not None else DEFAULT_STAGE[self.reader]


@dataclass
class MedQAConfig:
    """How MedQA questions are cleaned and held out."""

    # Questions that refer to a figure that the data does not include (如圖, 附圖 ...).
    figure: Literal["drop", "keep"] = "drop"
    # Questions that depend on the previous question (承上題).
    chained: Literal["drop", "keep"] = "drop"
    # Leading exam numbering such as "12." or "36 " before the question text.
    question_numbers: Literal["strip", "keep"] = "strip"
    # Questions held out (by seed) into eval/medqa_mcq.jsonl, never trained on.
    eval_size: int = 200


@dataclass
class TaigiConfig:
    """Which instruction directions are generated from the Taigi sources."""

    directions: list[str] = field(default_factory=lambda: list(ALL_DIRECTIONS))
    # Rows of parallel / MOE sentence sources held out for eval/taigi_*.jsonl.
    eval_size: int = 50


@dataclass
class DedupeConfig:
    """Exact and near-duplicate removal (character n-gram Jaccard on normalised text)."""

    ngram: int = 3
    # Two texts whose n-gram Jaccard similarity is at least this are near-duplicates.
    near_threshold: float = 0.8
    # Texts shorter than this (normalised characters) are compared exactly only: n-gram
    # overlap of two-character dictionary words says nothing.
    near_min_chars: int = 12


@dataclass
class DataConfig:
    """Everything ``taigimed prepare`` needs."""

    sources: dict[str, SourceConfig] = field(default_factory=dict)
    # System prompt put first in every training example.
    system_prompt: str = "你是台語醫療衛教助理。請用台語漢字回答，毋是診斷，有需要請去看醫生。"
    seed: int = 1234
    # Share of each stage's (non-eval) examples kept for validation.
    val_fraction: float = 0.05
    # Share of stage-2 *train* examples that are replayed stage-1 train examples:
    # replay / (taigi + replay). 0.2 keeps 20 % medical data in stage 2 against forgetting.
    replay_fraction: float = 0.2
    # Tokenizer used for the length filter: a model name or directory (taigimed.models).
    tokenizer: str = "smollm2-135m-instruct"
    # Examples longer than this many tokens (chat template applied) are dropped and counted.
    max_tokens: int = 512
    # The run fails when a source's share of malformed records exceeds this.
    max_error_rate: float = 0.05
    medqa: MedQAConfig = field(default_factory=MedQAConfig)
    taigi: TaigiConfig = field(default_factory=TaigiConfig)
    dedupe: DedupeConfig = field(default_factory=DedupeConfig)

    def validate(self) -> None:
        """Reject settings that cannot work, naming the key."""
        if not self.sources:
            raise ConfigError("sources is empty: list at least one input (see docs/data.md)")
        for name, src in self.sources.items():
            if not src.paths:
                raise ConfigError(f"sources.{name}.paths is empty")
            if src.max_records is not None and src.max_records < 1:
                raise ConfigError(f"sources.{name}.max_records must be >= 1 or null")
        for key in ("val_fraction", "max_error_rate"):
            value = getattr(self, key)
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"{key} must be in [0, 1), got {value}")
        if not 0.0 <= self.replay_fraction < 1.0:
            raise ConfigError(
                f"replay_fraction must be in [0, 1) (share of stage-2 train that is replayed "
                f"stage-1 data), got {self.replay_fraction}"
            )
        if self.max_tokens < 16:
            raise ConfigError(f"max_tokens must be >= 16, got {self.max_tokens}")
        unknown = sorted(set(self.taigi.directions) - set(ALL_DIRECTIONS))
        if unknown:
            raise ConfigError(
                f"taigi.directions has unknown {unknown[0]!r}; known: {', '.join(ALL_DIRECTIONS)}"
            )
        if not 0.0 < self.dedupe.near_threshold <= 1.0:
            raise ConfigError("dedupe.near_threshold must be in (0, 1]")
        if self.dedupe.ngram < 1:
            raise ConfigError("dedupe.ngram must be >= 1")
        if self.medqa.eval_size < 0 or self.taigi.eval_size < 0:
            raise ConfigError("medqa.eval_size and taigi.eval_size must be >= 0")


def resolve_source_path(path: Path, base: Path | None = None) -> Path:
    """A source path as given, or relative to ``base`` (the config's repo) when not found."""
    if path.is_absolute() or path.exists() or base is None:
        return path
    candidate = base / path
    return candidate if candidate.exists() else path
