"""Loading the frozen base for training: full precision, or 4-bit NF4 / 8-bit (QLoRA).

QLoRA (Dettmers et al. 2023, arXiv:2305.14314) keeps the frozen base weights in 4-bit NormalFloat
and trains only the LoRA matrices in 16/32-bit. The path here is the standard one:
``BitsAndBytesConfig`` -> ``from_pretrained(quantization_config=...)`` ->
``peft.prepare_model_for_kbit_training`` (freezes the base, upcasts norms, enables gradient
checkpointing) -> ``get_peft_model``.

bitsandbytes' quantised *training* is meant for CUDA. ``plan_device`` therefore refuses an
``nf4``/``int8`` config on a machine without CUDA, unless the config says
``allow_cpu_fallback: true``, in which case the run trains unquantised in fp32 and says so
loudly (and writes it into metrics and the model card). The loading functions themselves do not
check for CUDA, so the tests can run the real 4-bit load + k-bit preparation on a CPU (which
bitsandbytes 0.50 supports, slowly).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from taigimed.config import ConfigError
from taigimed.train.config import LoraSettings, TrainConfig
from taigimed.train.packing import register_packed_attention

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class DevicePlan:
    """Where and how this run trains, after looking at the hardware."""

    device: str
    quantization: str  # what is actually used: none | nf4 | int8
    dtype: torch.dtype
    note: str = ""  # a fallback that happened, for metrics and the model card


def plan_device(cfg: TrainConfig, cuda_available: bool | None = None) -> DevicePlan:
    """Pick device, quantisation and dtype; fail clearly when the config cannot run here."""
    cuda = torch.cuda.is_available() if cuda_available is None else cuda_available
    device = "cuda" if cuda else "cpu"
    dtype = DTYPES[cfg.precision]
    if cfg.quantization != "none" and not cuda:
        if not cfg.allow_cpu_fallback:
            raise ConfigError(
                f"quantization: {cfg.quantization} (QLoRA) needs a CUDA GPU for training, and "
                "none is visible here. Use a GPU machine, set quantization=none, or set "
                "allow_cpu_fallback=true to train this config unquantised in fp32 on the CPU"
            )
        note = (
            f"CPU FALLBACK: config asked for quantization={cfg.quantization} but no CUDA GPU is "
            "available; training unquantised in fp32 instead"
        )
        log.warning("!" * 20 + " %s " + "!" * 20, note)
        return DevicePlan("cpu", "none", torch.float32, note)
    if dtype == torch.float16 and not cuda:
        raise ConfigError("precision: fp16 training is only supported on CUDA; use fp32 or bf16")
    return DevicePlan(device, cfg.quantization, dtype)


def bnb_config(quantization: str, compute_dtype: torch.dtype) -> Any:
    """The bitsandbytes settings for ``nf4`` (QLoRA 4-bit, double-quantised) or ``int8``."""
    from transformers import BitsAndBytesConfig

    if quantization == "nf4":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype,
        )
    if quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    raise ValueError(f"unknown quantization {quantization!r}")


def load_base_model(
    model_dir: str | Path,
    quantization: str = "none",
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    attn_implementation: str = "sdpa",
) -> Any:
    """Load the frozen base, quantised through bitsandbytes when asked.

    ``sdpa`` loads as :data:`~taigimed.train.packing.PACKED_SDPA`: the same SDPA for ordinary
    batches, plus per-example attention for packed ones (``eager`` cannot take packed batches).
    """
    from transformers import AutoModelForCausalLM

    if attn_implementation == "sdpa":
        attn_implementation = register_packed_attention()
    kwargs: dict[str, Any] = {"dtype": dtype, "attn_implementation": attn_implementation}
    if quantization != "none":
        kwargs["quantization_config"] = bnb_config(quantization, dtype)
        kwargs["device_map"] = {"": device}
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    if quantization == "none":
        model.to(device)
    return model


def prepare_for_training(model: Any, quantized: bool, gradient_checkpointing: bool) -> Any:
    """Freeze the base; k-bit preparation for quantised bases; optional checkpointing."""
    ckpt_kwargs = {"use_reentrant": False}
    if quantized:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs=ckpt_kwargs,
        )
    else:
        for param in model.parameters():
            param.requires_grad_(False)
        if gradient_checkpointing:
            enable = getattr(model, "activation_checkpointing_enable", None) or (
                model.gradient_checkpointing_enable
            )
            enable(gradient_checkpointing_kwargs=ckpt_kwargs)
    model.config.use_cache = False
    return model


def linear_module_names(model: Any) -> list[str]:
    """Short names of the Linear-like modules LoRA can target (q_proj, v_proj, ...)."""
    names = set()
    for full_name, module in model.named_modules():
        kind = type(module).__name__
        if kind in ("Linear", "Linear4bit", "Linear8bitLt") and "lm_head" not in full_name:
            names.add(full_name.rsplit(".", 1)[-1])
    return sorted(names)


def check_target_modules(model: Any, targets: list[str]) -> None:
    """Fail before training when a LoRA target does not exist in this model."""
    available = linear_module_names(model)
    unknown = [t for t in targets if t not in available]
    if unknown:
        raise ConfigError(
            f"lora.target_modules: {unknown} not found in this model; "
            f"its linear modules are {available}"
        )


def apply_lora(model: Any, lora: LoraSettings) -> Any:
    """Wrap the frozen base with fresh LoRA adapters (B starts at zero: output unchanged)."""
    from peft import LoraConfig, get_peft_model

    check_target_modules(model, lora.target_modules)
    config = LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def count_parameters(model: Any) -> tuple[int, int]:
    """``(trainable, total)`` parameters (4-bit weights count as their logical size)."""
    trainable = total = 0
    for param in model.parameters():
        n = param.numel()
        if param.__class__.__name__ == "Params4bit":
            n *= 2  # two 4-bit values per stored byte
        total += n
        if param.requires_grad:
            trainable += n
    return trainable, total


def weights_sha256(model_dir: str | Path) -> str:
    """Content hash of a model's tensors (names, dtypes, shapes, bytes) in its safetensors files.

    Independent of sharding and file metadata, so stage 1's ``merged/`` and the directory stage 2
    loads hash the same exactly when their weights are the same.
    """
    from safetensors import safe_open

    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no *.safetensors weights to hash")
    where: dict[str, Path] = {}
    for path in files:
        with safe_open(path, framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118  (safe_open has keys(), not __iter__)
                where[name] = path
    digest = hashlib.sha256()
    for name in sorted(where):
        with safe_open(where[name], framework="pt") as handle:
            tensor = handle.get_tensor(name).contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
