"""What a training run may ask for, checked before any model is loaded.

``TrainConfig`` is filled from ``configs/<profile>/train.yaml`` by
``taigimed.config.load_config`` (which calls ``validate()``), so a rank of 0 or a negative
learning rate fails at load time with the file and key in the message. Checks that need the
model or the data (an unknown target module, a missing data file) run in
``recipe.preflight`` -- still before the first optimizer step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from taigimed.config import ConfigError

Quantization = Literal["none", "nf4", "int8"]
Precision = Literal["fp32", "bf16", "fp16"]


@dataclass
class LoraSettings:
    """The low-rank adapter: ``W + (alpha / rank) * B @ A`` on each target module."""

    rank: int = 8
    alpha: int = 16
    dropout: float = 0.05
    # Names of nn.Linear modules inside each decoder layer (Llama: q_proj k_proj v_proj o_proj
    # gate_proj up_proj down_proj). Checked against the model before training.
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])

    def validate(self) -> None:
        if self.rank < 1:
            raise ConfigError(f"lora.rank must be >= 1 (got {self.rank}); 8 or 16 is typical")
        if self.alpha <= 0:
            raise ConfigError(f"lora.alpha must be > 0 (got {self.alpha}); 2 * rank is typical")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"lora.dropout must be in [0, 1) (got {self.dropout})")
        if not self.target_modules:
            raise ConfigError(
                "lora.target_modules is empty; name one or more, e.g. [q_proj, v_proj]"
            )


@dataclass
class StageSettings:
    """What differs between stage 1 (medical SFT) and stage 2 (Taigi + replay)."""

    # File names inside the data dir; empty means the contract's stage<N>_train/val.jsonl.
    train_file: str = ""
    val_file: str = ""
    learning_rate: float = 2e-4
    # Optimizer steps; 0 means "run `epochs` passes over the data instead".
    max_steps: int = 0
    epochs: float = 1.0

    def files(self, stage: int) -> tuple[str, str]:
        """``(train, val)`` file names for stage ``stage``."""
        return (
            self.train_file or f"stage{stage}_train.jsonl",
            self.val_file or f"stage{stage}_val.jsonl",
        )

    def check(self, name: str) -> None:
        """Called by ``TrainConfig.validate`` (so errors can say stage1 or stage2)."""
        if self.learning_rate <= 0:
            raise ConfigError(f"{name}.learning_rate must be > 0 (got {self.learning_rate})")
        if self.max_steps < 0:
            raise ConfigError(f"{name}.max_steps must be >= 0 (got {self.max_steps})")
        if self.max_steps == 0 and self.epochs <= 0:
            raise ConfigError(f"{name}: set max_steps > 0 or epochs > 0 (both are 0)")
        for key, value in (("train_file", self.train_file), ("val_file", self.val_file)):
            if value and not value.endswith(".jsonl"):
                raise ConfigError(f"{name}.{key} must be a .jsonl file name (got {value!r})")


@dataclass
class TrainConfig:
    """Everything one ``taigimed train`` run needs besides data and output directories."""

    # Stage 1's base (stage 2's base is stage 1's merged model, given by the caller).
    base_model: str = "smollm2-135m-instruct"
    seed: int = 0
    max_seq_len: int = 512
    batch_size: int = 4
    grad_accum: int = 1
    # true: first-fit-decreasing packing into bins of max_seq_len, each micro-batch flattened
    # into one row with per-example attention (no padding, no cross-example leak);
    # false: the plain baseline, one example per row padded to the longest in the batch.
    packing: bool = True
    # Packed rows only: examples of a micro-batch that open with the same tokens (the system
    # prompt and role header) share ONE copy of them; same logits and gradient, less compute.
    share_prefix: bool = True
    lora: LoraSettings = field(default_factory=LoraSettings)
    stage1: StageSettings = field(default_factory=StageSettings)
    stage2: StageSettings = field(default_factory=lambda: StageSettings(learning_rate=1e-4))
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    # Weights/compute dtype while training. bf16 wants a GPU (or a recent CPU); fp32 is exact.
    precision: Precision = "fp32"
    # QLoRA: load the frozen base in 4-bit NF4 or 8-bit through bitsandbytes (CUDA only).
    quantization: Quantization = "none"
    # On a machine without CUDA, train an nf4/int8 config unquantised in fp32 instead of failing.
    allow_cpu_fallback: bool = False
    gradient_checkpointing: bool = False
    # sdpa (with per-example attention for packed batches) or eager (padded batches only).
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    # Save a resumable checkpoint every N optimizer steps (0: only at the end); keep the last K.
    checkpoint_every: int = 10
    keep_checkpoints: int = 2
    # Validation loss on at most this many val examples before and after training (0: skip).
    eval_examples: int = 32
    # dtype of the merged model written to merged/ (fp32 keeps merge exact; bf16 halves size).
    merge_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    # Test hook: raise SimulatedCrash right after this optimizer step (0: never).
    stop_after_steps: int = 0
    mlflow_experiment: str = "taigimed-train"

    def validate(self) -> None:
        self.lora.validate()
        self.stage1.check("stage1")
        self.stage2.check("stage2")
        checks = [
            (self.max_seq_len >= 32, f"max_seq_len must be >= 32 (got {self.max_seq_len})"),
            (self.batch_size >= 1, f"batch_size must be >= 1 (got {self.batch_size})"),
            (self.grad_accum >= 1, f"grad_accum must be >= 1 (got {self.grad_accum})"),
            (self.warmup_steps >= 0, f"warmup_steps must be >= 0 (got {self.warmup_steps})"),
            (self.max_grad_norm > 0, f"max_grad_norm must be > 0 (got {self.max_grad_norm})"),
            (self.checkpoint_every >= 0, "checkpoint_every must be >= 0 (0: only at the end)"),
            (self.keep_checkpoints >= 1, "keep_checkpoints must be >= 1"),
            (self.eval_examples >= 0, "eval_examples must be >= 0"),
            (self.stop_after_steps >= 0, "stop_after_steps must be >= 0"),
            (
                not (self.packing and self.attn_implementation == "eager"),
                "packing=true needs attn_implementation=sdpa (packed batches run per-example "
                "SDPA attention); set attn_implementation=sdpa or packing=false",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

    @property
    def shares_prefix(self) -> bool:
        """Whether batches hold a shared prefix once: only packed rows can (``share_prefix``)."""
        return self.packing and self.share_prefix

    def stage(self, stage: int) -> StageSettings:
        """The settings of stage 1 or 2."""
        if stage not in (1, 2):
            raise ConfigError(f"stage must be 1 or 2 (got {stage})")
        return self.stage1 if stage == 1 else self.stage2
