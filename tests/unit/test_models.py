"""Model resolution: packaged GGUF -> cached safetensors, tiny models, paths, hub ids."""

from __future__ import annotations

import pytest

from taigimed.models import (
    ModelResolutionError,
    load_causal_lm,
    load_tokenizer,
    resolve_model,
    tiny_llama,
)


def test_smollm2_is_cached_as_trainable_safetensors(smollm2_dir):
    assert (smollm2_dir / "model.safetensors").is_file()
    assert resolve_model("smollm2-135m-instruct") == smollm2_dir
    model = load_causal_lm(smollm2_dir)
    assert not getattr(model, "is_quantized", False)
    assert getattr(model.config, "quantization_config", None) is None
    assert model.num_parameters() > 100_000_000


def test_tiny_model_uses_the_real_chat_template(tiny_model_dir, tmp_path):
    tokenizer = load_tokenizer(tiny_model_dir)
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "你好"}], tokenize=False, add_generation_prompt=True
    )
    assert "<|im_start|>assistant" in text
    model = load_causal_lm(tiny_model_dir)
    assert model.config.hidden_size == 64
    # a different seed gives different weights, the same seed the same ones
    a = load_causal_lm(tiny_llama(tmp_path / "a", seed=1, hidden_size=64))
    b = load_causal_lm(tiny_llama(tmp_path / "b", seed=1, hidden_size=64))
    assert all((p == q).all() for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_local_directory_and_bad_names(tiny_model_dir, tmp_path, monkeypatch):
    assert resolve_model(str(tiny_model_dir)) == tiny_model_dir
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelResolutionError, match=r"no config\.json"):
        resolve_model(tmp_path / "empty")
    with pytest.raises(ModelResolutionError, match="unknown model"):
        resolve_model("not-a-model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelResolutionError, match="local directory"):
        resolve_model("taide/Llama-3.1-TAIDE-LX-8B-Chat")
