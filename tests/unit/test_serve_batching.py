"""The continuous batcher on the tiny model: batching must not change what a request gets."""

from __future__ import annotations

import asyncio

import pytest
import torch

from taigimed.models import load_causal_lm, load_tokenizer
from taigimed.serve.batching import (
    ContinuousBatcher,
    FinishEvent,
    Overloaded,
    SamplingParams,
    TokenEvent,
)


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_causal_lm(tiny_model_dir, device="cpu"), load_tokenizer(tiny_model_dir)


def prompt(tokenizer, text: str) -> list[int]:
    return tokenizer(text)["input_ids"]


async def collect(handle):
    tokens, text, logprobs, finish = [], "", [], None
    async for event in handle:
        if isinstance(event, TokenEvent):
            tokens.append(event.token_id)
            text += event.text
            logprobs.append(event.logprob)
        elif isinstance(event, FinishEvent):
            text += event.text_tail
            finish = event
        else:
            raise AssertionError(event)
    return tokens, text, logprobs, finish


def run(lm, requests, max_batch_size: int, stagger_s: float = 0.0):
    model, tokenizer = lm

    async def main():
        batcher = ContinuousBatcher(model, tokenizer, max_batch_size=max_batch_size)
        try:
            handles = []
            for text, params in requests:
                handles.append(batcher.submit(prompt(tokenizer, text), params))
                if stagger_s:
                    await asyncio.sleep(stagger_s)
            return await asyncio.gather(*(collect(h) for h in handles))
        finally:
            batcher.close()

    return asyncio.run(main())


PROMPTS = ["Fever in adults", "How to sleep better when you have a cold and a cough", "Hi"]


def test_batched_and_joined_rows_match_one_at_a_time(lm):
    """Left padding, cache merging and row removal leave every request's tokens unchanged."""
    reqs = [
        (p, SamplingParams(max_tokens=6 + 3 * i, temperature=1.0, seed=i))
        for i, p in enumerate(PROMPTS)
    ]
    solo = run(lm, reqs, max_batch_size=1)
    together = run(lm, reqs, max_batch_size=8)
    joined = run(lm, reqs, max_batch_size=8, stagger_s=0.02)  # later rows join a running batch
    for a, b, c in zip(solo, together, joined, strict=True):
        assert a[0] == b[0] == c[0]
        assert max(abs(x - y) for x, y in zip(a[2], b[2], strict=True)) < 1e-4
        assert a[3].completion_tokens == len(a[0])
    assert [len(r[0]) for r in solo] == [6, 9, 12]


def test_seeded_sampling_is_reproducible_and_seed_dependent(lm):
    one = run(lm, [("Fever", SamplingParams(max_tokens=10, temperature=1.0, seed=7))], 4)
    two = run(lm, [("Fever", SamplingParams(max_tokens=10, temperature=1.0, seed=7))], 4)
    other = run(lm, [("Fever", SamplingParams(max_tokens=10, temperature=1.0, seed=8))], 4)
    assert one[0][0] == two[0][0]
    assert one[0][0] != other[0][0]


def test_a_vanishing_temperature_decodes_greedily_instead_of_failing(lm):
    """6.5e-299 (sent by the schemathesis fuzzer) made logits / temperature inf and the
    softmax NaN: the predictor answered 500. Such a temperature is greedy decoding."""
    tiny = SamplingParams(max_tokens=8, temperature=6.545143448217847e-299, top_k=626158)
    greedy = SamplingParams(max_tokens=8)
    (a, b) = run(lm, [("Fever", tiny), ("Fever", greedy)], 2)
    assert a[0] == b[0] and len(a[0]) == 8


def test_stop_string_truncates_text_and_reports_it(lm):
    params = SamplingParams(max_tokens=24, temperature=1.0, seed=3)
    ((_, text, _, _),) = run(lm, [("Fever", params)], 2)
    stop = text[6:9]
    assert len(stop) == 3
    params.stop = [stop]
    ((_, cut, _, finish),) = run(lm, [("Fever", params)], 2)
    assert cut == text[: text.index(stop)]
    assert finish.finish_reason == "stop" and finish.stop_reason == stop


def test_max_tokens_gives_length_finish(lm):
    ((tokens, _, _, finish),) = run(
        lm, [("Fever", SamplingParams(max_tokens=5, ignore_eos=True))], 2
    )
    assert len(tokens) == 5 and finish.finish_reason == "length"


def test_full_queue_raises_overloaded_and_cancel_frees_the_slot(lm):
    model, tokenizer = lm

    async def main():
        batcher = ContinuousBatcher(model, tokenizer, max_batch_size=1, max_queue=1)
        try:
            long = SamplingParams(max_tokens=1000, ignore_eos=True)
            handles, refused = [], 0
            for _ in range(3):
                try:
                    handles.append(batcher.submit(prompt(tokenizer, "a"), long))
                except Overloaded:
                    refused += 1
            assert refused >= 1
            for h in handles:
                h.cancel()
            finishes = [(await collect(h))[3] for h in handles]
            # A cancelled request leaves the running batch, or is never started: both "abort".
            assert [f.finish_reason for f in finishes] == ["abort"] * len(handles)
            ok = batcher.submit(prompt(tokenizer, "b"), SamplingParams(max_tokens=2))
            return await asyncio.wait_for(collect(ok), timeout=60)
        finally:
            batcher.close()

    tokens, _, _, finish = asyncio.run(main())
    assert len(tokens) == 2 and finish.finish_reason == "length"


def test_max_tokens_inside_a_multibyte_character_ends_at_the_last_whole_one(lm, monkeypatch):
    """好 is two byte-level tokens here; stopping after the first half must not send U+FFFD."""
    _, tokenizer = lm
    halves = tokenizer.encode("好", add_special_tokens=False)
    assert len(halves) == 2 and "\ufffd" in tokenizer.decode(halves[:1])
    script = halves * 2 + halves[:1]  # 好好 + the first bytes of a third 好

    def scripted(self, logits, rows):
        return torch.tensor([script[len(r.generated)] for r in rows], device=logits.device)

    monkeypatch.setattr(ContinuousBatcher, "_sample", scripted)
    params = SamplingParams(max_tokens=len(script), ignore_eos=True)
    ((tokens, text, _, finish),) = run(lm, [("Fever", params)], 2)
    assert tokens == script and finish.finish_reason == "length"
    # text = streamed deltas + the closing tail, which is also what the plain route joins
    assert text == "好好"
    assert "\ufffd" not in finish.text_tail
