"""QLoRA path: what runs on this CPU runs for real; what needs CUDA refuses clearly."""

from __future__ import annotations

import pytest
import torch

from taigimed.config import ConfigError, load_config
from taigimed.train.config import TrainConfig
from taigimed.train.formatting import TokenizedExample
from taigimed.train.packing import collate_packed
from taigimed.train.qlora import (
    apply_lora,
    count_parameters,
    load_base_model,
    plan_device,
    prepare_for_training,
    weights_sha256,
)
from taigimed.train.recipe import token_loss


def test_nf4_without_cuda_fails_with_the_ways_out():
    cfg = load_config(TrainConfig, None, ["quantization=nf4"])
    with pytest.raises(ConfigError, match=r"needs a CUDA GPU.*allow_cpu_fallback=true"):
        plan_device(cfg, cuda_available=False)


def test_cpu_fallback_trains_unquantised_and_says_so(caplog):
    cfg = load_config(TrainConfig, None, ["quantization=int8", "allow_cpu_fallback=true"])
    plan = plan_device(cfg, cuda_available=False)
    assert (plan.device, plan.quantization, plan.dtype) == ("cpu", "none", torch.float32)
    assert "CPU FALLBACK" in plan.note and "CPU FALLBACK" in caplog.text


def test_on_cuda_the_config_is_used_as_written():
    cfg = load_config(TrainConfig, None, ["quantization=nf4", "precision=bf16"])
    plan = plan_device(cfg, cuda_available=True)
    assert (plan.device, plan.quantization, plan.dtype) == ("cuda", "nf4", torch.bfloat16)


@pytest.mark.parametrize("quantization", ["nf4", "int8"])
def test_bitsandbytes_kbit_load_prepare_and_lora_step_run_on_cpu(tiny_model_dir, quantization):
    """The real QLoRA code path (minus CUDA): 4-bit/8-bit load, k-bit prep, LoRA, one step."""
    from taigimed.train.config import LoraSettings

    model = load_base_model(tiny_model_dir, quantization=quantization, device="cpu")
    layer = model.model.layers[0].self_attn.q_proj
    assert type(layer).__name__ == {"nf4": "Linear4bit", "int8": "Linear8bitLt"}[quantization]
    model = prepare_for_training(model, quantized=True, gradient_checkpointing=True)
    model = apply_lora(model, LoraSettings(rank=4, alpha=8, target_modules=["q_proj", "v_proj"]))
    trainable, total = count_parameters(model)
    assert 0 < trainable < total
    ids = list(range(100, 140))
    batch = collate_packed([[TokenizedExample("a", ids, ids)]])
    model.train()
    loss = token_loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_weights_hash_depends_on_tensor_content_only(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file, save_file

    original = weights_sha256(tiny_model_dir)
    tensors = load_file(tiny_model_dir / "model.safetensors")
    save_file(tensors, tmp_path / "model.safetensors", metadata={"note": "other metadata"})
    assert weights_sha256(tmp_path) == original
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    tensors[name].view(-1)[0] += 1e-3
    save_file(tensors, tmp_path / "model.safetensors")
    assert weights_sha256(tmp_path) != original
