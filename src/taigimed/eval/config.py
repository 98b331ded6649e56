"""Settings of the evaluation job (``EvalConfig``) and of the promotion gate (``GateConfig``).

Both are plain dataclasses loaded with ``taigimed.config.load_config`` from
``configs/<profile>/eval.yaml`` and ``gate.yaml``, so a typo in a metric name or a tolerance fails
at load time, before any model is scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

from taigimed.config import ConfigError
from taigimed.eval import tasks
from taigimed.eval.safety import DEFAULT_SPLIT_SUITE
from taigimed.quality import ConfidenceWeights, QualitySettings
from taigimed.spec import SPEC_FILE, ModelSpec, resolve_max_len
from taigimed.triage.chain import TriageConfig


@dataclass
class MCQConfig:
    """How MedQA-style multiple-choice questions are scored by log-likelihood."""

    file: str = "medqa_mcq.jsonl"  # inside the eval dir
    # What is scored after the prompt's "答案：": the letter ("B"), the option text, or both
    # ("B. 肺尖"). The letter alone is one token per option; the text tests medical knowledge.
    continuation: Literal["letter", "text", "letter_text"] = "letter_text"
    # Option score: sum of token log-probs ("none"), mean per token ("tokens"), or per character
    # ("chars"). Without normalisation long options are penalised for their length.
    normalize: Literal["none", "tokens", "chars"] = "tokens"
    batch_questions: int = 8  # questions per forward pass (all their options together)
    share_prompt_cache: bool = True  # encode each prompt once and reuse its KV cache per option
    max_questions: int = 0  # 0 = all; >0 takes the first N (quick runs)
    # Longer prompts are cut from the left (counted in metrics); 0 = the trained max_seq_len
    # from the candidate's taigimed.json (else FALLBACK_MAX_PROMPT_TOKENS).
    max_prompt_tokens: int = 0
    # "" = the system prompt the candidate was trained with (its taigimed.json); a non-empty
    # value is an explicit override, recorded in metrics.json's meta.
    system_prompt: str = ""
    length_buckets: list[int] = field(default_factory=lambda: [60, 120, 200])  # question chars


@dataclass
class LMConfig:
    """Perplexity on held-out Taigi text, one number per writing system."""

    file: str = "taigi_lm.jsonl"
    scripts: list[str] = field(default_factory=lambda: ["hanji", "tailo"])
    # Per text; longer texts are truncated (counted in metrics); 0 = the trained max_seq_len
    # from the candidate's taigimed.json (else FALLBACK_LM_MAX_TOKENS).
    max_tokens: int = 0
    batch_size: int = 8
    max_texts: int = 0  # 0 = all


@dataclass
class GenConfig:
    """Greedy Mandarin -> Taigi translation scored with chrF, plus samples for people to read."""

    file: str = "taigi_translation.jsonl"
    instruction: str = "請共下面這句華語翻做台語漢字，干焦回答台語：\n"
    max_new_tokens: int = 48
    batch_size: int = 8
    max_items: int = 0  # 0 = all
    samples_in_report: int = 8


@dataclass
class SafetyConfig:
    """The versioned safety suite, scored through ``taigimed.guardrails`` (the serving code)."""

    suite: str = "data/safety/safety_suite_v1.jsonl"  # relative to the repo root or absolute
    # "model": the evaluated model writes the answers the guard wraps; "fixed": a canned answer
    # (the guard's decisions do not depend on it; this skips generation on slow machines).
    answers: Literal["model", "fixed"] = "model"
    max_new_tokens: int = 32
    # The split suite (train/dev/test, scored per split for the rules alone and the chain; the
    # gate holds its test split): the one the detectors were tuned on. "" = v1 only.
    split_suite: str = DEFAULT_SPLIT_SUITE
    # The triage chain, as the guard serves it (serve.yaml policy.triage); parts switch off here.
    triage: TriageConfig = field(default_factory=TriageConfig)


@dataclass
class AnswersConfig:
    """Open health questions answered under the serving prompt (``taigimed.eval.answers``)."""

    # Repo-relative or absolute; the dev split is what the gate holds, held-out is reported apart.
    files: list[str] = field(
        default_factory=lambda: [
            "data/eval/answers/answers_dev_v1.jsonl",
            "data/eval/answers/answers_heldout_v1.jsonl",
        ]
    )
    system_prompt: str = ""  # "" = the model's trained prompt (taigimed.json), as it is served
    max_new_tokens: int = 64
    batch_size: int = 8
    max_items: int = 0  # 0 = all
    acceptable_chrf: float = 15.0  # chrF an answer needs (and no flag) to count as acceptable
    samples_in_report: int = 12  # per split, worst first
    # Also answer as the guard serves: grounded on the profile's retrieval.yaml index (built in
    # memory from the same sources the index step saves), metrics ``answer_grounded_*``.
    grounded: bool = True
    quality: QualitySettings = field(default_factory=QualitySettings)
    confidence: ConfidenceWeights = field(default_factory=ConfidenceWeights)


@dataclass
class EvalConfig:
    """Everything ``taigimed evaluate`` does; each part can be switched off."""

    tasks: list[str] = field(default_factory=lambda: ["mcq", "lm", "gen", "safety"])
    dtype: str = "float32"
    device: str = ""  # "" = cuda when available, else cpu
    mcq: MCQConfig = field(default_factory=MCQConfig)
    lm: LMConfig = field(default_factory=LMConfig)
    gen: GenConfig = field(default_factory=GenConfig)
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    answers: AnswersConfig = field(default_factory=AnswersConfig)

    def validate(self) -> None:
        known = set(tasks.all_tasks())
        unknown = sorted(set(self.tasks) - known)
        if unknown:
            raise ConfigError(f"tasks: unknown task {unknown[0]!r}; known: {sorted(known)}")
        sizes = (self.mcq.batch_questions, self.lm.batch_size, self.gen.batch_size)
        if min(sizes) < 1 or self.answers.batch_size < 1:
            raise ConfigError("batch sizes must be >= 1")


FALLBACK_MAX_PROMPT_TOKENS = 1024  # mcq.max_prompt_tokens when 0 and there is no model spec
FALLBACK_LM_MAX_TOKENS = 512  # lm.max_tokens when 0 and there is no model spec


def with_model_spec(cfg: EvalConfig, spec: ModelSpec | None) -> tuple[EvalConfig, dict[str, str]]:
    """``cfg`` with its "the model's" values (0 lengths, empty prompt) filled from ``spec``,
    and where each came from. The pipeline resolves once, from the candidate's spec, so the
    candidate, the base and the champion are scored with the same prompt and lengths."""
    prompt_len, prompt_len_from = resolve_max_len(
        cfg.mcq.max_prompt_tokens, spec, FALLBACK_MAX_PROMPT_TOKENS
    )
    lm_len, lm_len_from = resolve_max_len(cfg.lm.max_tokens, spec, FALLBACK_LM_MAX_TOKENS)
    prompt, prompt_from = cfg.mcq.system_prompt, "config (override)"
    if not prompt:
        prompt = spec.system_prompt if spec else ""
        prompt_from = SPEC_FILE if spec else "the model's chat template"
    # The answer task is judged under the prompt the model was trained (and is served) with,
    # and the echo detector compares answers with that prompt.
    answer_prompt, answer_from = cfg.answers.system_prompt, "config (override)"
    if not answer_prompt:
        answer_prompt = spec.system_prompt if spec else ""
        answer_from = SPEC_FILE if spec else "the model's chat template"
    resolved = replace(
        cfg,
        mcq=replace(cfg.mcq, max_prompt_tokens=prompt_len, system_prompt=prompt),
        lm=replace(cfg.lm, max_tokens=lm_len),
        answers=replace(cfg.answers, system_prompt=answer_prompt),
    )
    sources = {
        "mcq.max_prompt_tokens": prompt_len_from,
        "mcq.system_prompt": prompt_from,
        "lm.max_tokens": lm_len_from,
        "answers.system_prompt": answer_from,
    }
    return resolved, sources


@dataclass
class MetricRule:
    """Promotion rule for one metric: absolute bounds and allowed regressions.

    Tolerances are how much worse than the champion (or base) the candidate may be; ``relative``
    makes them a fraction of the reference value (right for perplexity, whose scale varies).
    ``None`` switches a check off. Which way is better comes from the eval task that declares
    the metric (``taigimed.eval.tasks``); ``direction`` here is only for a metric no task
    declares, and must agree with the task's when both are given.
    """

    direction: Literal["higher", "lower"] | None = None
    min: float | None = None
    max: float | None = None
    vs_champion: float | None = None
    vs_base: float | None = None
    relative: bool = False
    required: bool = True  # a missing metric fails the gate
    # "mcnemar": a regression against champion/base is decided by the exact McNemar test on the
    # per-item results both models have (``<metric>_items`` in metrics.json): FAIL when the
    # candidate lost more disagreements than it won and p < alpha. The tolerance is then only
    # the fallback for a reference without per-item results.
    paired_test: Literal["none", "mcnemar"] = "none"
    alpha: float = 0.05


def rule_direction(name: str, rule: MetricRule) -> Literal["higher", "lower"]:
    """Which way is better for a gated metric: the registry's, else the rule's own."""
    declared = tasks.direction(name)
    if declared and rule.direction and declared != rule.direction:
        raise ConfigError(
            f"metrics.{name}.direction: {rule.direction!r}, but its eval task declares "
            f"{declared!r} is better (drop the line: the gate reads the task's)"
        )
    if declared is None and rule.direction is None:
        raise ConfigError(
            f"metrics.{name}: no eval task declares this metric with a direction "
            "(taigimed.eval.tasks), so give direction: higher|lower"
        )
    return declared or rule.direction  # type: ignore[return-value]


@dataclass
class GateConfig:
    """Per-metric rules, read from ``gate.yaml``."""

    metrics: dict[str, MetricRule] = field(default_factory=dict)
    # Without a champion (the very first model) regression checks against it are skipped with a
    # note; set true to demand one.
    require_champion: bool = False
    require_base: bool = False

    def validate(self) -> None:
        if not self.metrics:
            raise ConfigError("metrics: the gate needs at least one metric rule")
        for name, rule in self.metrics.items():
            rule_direction(name, rule)
            if rule.min is not None and rule.max is not None and rule.min > rule.max:
                raise ConfigError(f"metrics.{name}: min {rule.min} is above max {rule.max}")
            if not 0 < rule.alpha < 1:
                raise ConfigError(f"metrics.{name}.alpha: must be between 0 and 1")
            for key in ("vs_champion", "vs_base"):
                value = getattr(rule, key)
                if value is not None and value < 0:
                    raise ConfigError(f"metrics.{name}.{key}: tolerance must be >= 0")
