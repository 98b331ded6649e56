"""MedQA scoring: a rigged model scores 100%, a uniform one chance, batching changes nothing,
and bad eval files fail with file:line."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from taigimed.eval.config import MCQConfig
from taigimed.eval.io import EvalDataError
from taigimed.eval.mcq import (
    MCQItem,
    derive_flags,
    encode,
    evaluate_mcq,
    length_bucket,
    load_mcq,
    option_logprobs,
)
from taigimed.models import load_causal_lm, load_tokenizer

# --- test doubles (test-only models) ---------------------------------------------------------


class RiggedOracleLM(torch.nn.Module):
    """Test double: a "model" that knows the right answers.

    At every position whose preceding tokens are a prefix of a gold sequence (prompt + the right
    option's continuation) it puts a high logit on the gold next token; elsewhere all logits are
    equal. Understands left padding (attention_mask) and ``logits_to_keep`` like HF models.
    """

    def __init__(self, gold: list[list[int]], vocab: int) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the scorer a device
        self.vocab = vocab
        self.next_token: dict[tuple[int, ...], int] = {}
        for seq in gold:
            for t in range(len(seq) - 1):
                self.next_token[tuple(seq[: t + 1])] = seq[t + 1]

    def forward(self, input_ids, attention_mask=None, logits_to_keep=0, **_):
        batch, width = input_ids.shape
        keep = logits_to_keep or width
        logits = torch.zeros(batch, keep, self.vocab)
        for r in range(batch):
            pad = 0 if attention_mask is None else int(width - attention_mask[r].sum())
            real = input_ids[r, pad:].tolist()
            for k, t in enumerate(range(width - keep, width)):
                if t < pad:
                    continue
                nxt = self.next_token.get(tuple(real[: t - pad + 1]))
                if nxt is not None:
                    logits[r, k, nxt] = 20.0
        return SimpleNamespace(logits=logits)


class UniformLM(torch.nn.Module):
    """Test double: no preference at all (every logit equal)."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.vocab = vocab

    def forward(self, input_ids, logits_to_keep=0, **_):
        keep = logits_to_keep or input_ids.shape[1]
        return SimpleNamespace(logits=torch.zeros(input_ids.shape[0], keep, self.vocab))


# --- fixtures --------------------------------------------------------------------------------

TOPICS = [
    "高血壓",
    "糖尿病",
    "氣喘",
    "貧血",
    "痛風",
    "肝炎",
    "腎結石",
    "胃潰瘍",
    "甲狀腺",
    "偏頭痛",
]


def synthetic_items(n: int, seed: int = 0) -> list[MCQItem]:
    """Mixed 4- and 5-option questions (A–D and A–E) with the answer letter spread out."""
    rng = random.Random(seed)
    items = []
    for i in range(n):
        k = 5 if i % 3 == 0 else 4
        letters = "ABCDE"[:k]
        answer = letters[i % k]
        topic = TOPICS[i % len(TOPICS)]
        numbers = rng.sample(range(10, 99), k)  # distinct options: none is another's prefix
        options = {
            ch: f"{topic}的處置第{numbers[j]}項{'，需要追蹤' * (j % 2)}"
            for j, ch in enumerate(letters)
        }
        q = f"{i + 1}. 關於{topic}，下列何者正確？" if i % 4 == 0 else f"關於{topic}的敘述{i}？"
        items.append(MCQItem(f"q{i}", q, options, answer, derive_flags(q)))
    return items


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def gold_sequences(tokenizer, items, cfg):
    out = []
    for item in items:
        enc = encode(tokenizer, item, cfg)
        out.append(enc.prompt + enc.options[item.letters.index(item.answer_idx)])
    return out


# --- accuracy ---------------------------------------------------------------------------------


@pytest.mark.parametrize("continuation", ["letter", "text", "letter_text"])
def test_rigged_model_scores_every_question_right(tokenizer, continuation):
    # the oracle has no KV cache, so the whole-sequence batched path is used (the cached path is
    # pinned to the same numbers by test_batched_paths_match_one_by_one_on_a_real_model)
    cfg = MCQConfig(continuation=continuation, batch_questions=4, share_prompt_cache=False)
    items = synthetic_items(12)
    model = RiggedOracleLM(gold_sequences(tokenizer, items, cfg), len(tokenizer))
    for mode in ("batched", "one_by_one"):
        result = evaluate_mcq(model, tokenizer, items, cfg, mode=mode, progress=False)
        assert result.metrics["medqa_accuracy"] == 1.0, mode
        assert [r["predicted"] for r in result.rows] == [i.answer_idx for i in items]


def test_uniform_model_scores_chance(tokenizer):
    items = synthetic_items(30)
    cfg = MCQConfig(batch_questions=8, share_prompt_cache=False)
    result = evaluate_mcq(UniformLM(len(tokenizer)), tokenizer, items, cfg, progress=False)
    chance = sum(1 / len(i.options) for i in items) / len(items)
    assert result.metrics["medqa_chance"] == pytest.approx(chance)
    assert result.metrics["medqa_accuracy"] == pytest.approx(chance, abs=0.02)
    assert result.metrics["medqa_tied_questions"] == len(items)  # no preference = all tied


def test_uniform_model_near_chance_on_real_medqa(tokenizer, shared_dir):
    items = load_mcq(shared_dir / "data/medqa_tw/dev.jsonl", max_questions=200)
    cfg = MCQConfig(continuation="letter", batch_questions=16, share_prompt_cache=False)
    result = evaluate_mcq(UniformLM(len(tokenizer)), tokenizer, items, cfg, progress=False)
    assert result.metrics["medqa_accuracy"] == pytest.approx(0.25, abs=0.05)


def test_batched_paths_match_one_by_one_on_a_real_model(tiny_model_dir, tokenizer):
    """Left padding, cache reuse and option regrouping must not change any score."""
    model = load_causal_lm(tiny_model_dir, device="cpu")
    items = synthetic_items(5)
    cfg = MCQConfig(batch_questions=2)  # uneven last batch, 4- and 5-option questions mixed
    encoded = [encode(tokenizer, i, cfg) for i in items]
    base = option_logprobs(model, tokenizer, encoded, cfg, mode="one_by_one", progress=False)
    for share in (True, False):
        c = dataclasses.replace(cfg, share_prompt_cache=share)
        got = option_logprobs(model, tokenizer, encoded, c, mode="batched", progress=False)
        assert [len(s) for s in got] == [len(i.options) for i in items]
        for a, b in zip(got, base, strict=True):
            assert a == pytest.approx(b, abs=2e-3), f"share_prompt_cache={share}"


def test_breakdown_by_length_and_flags(tokenizer):
    items = synthetic_items(12)
    cfg = MCQConfig(continuation="letter", batch_questions=6, share_prompt_cache=False)
    model = RiggedOracleLM(gold_sequences(tokenizer, items, cfg), len(tokenizer))
    result = evaluate_mcq(model, tokenizer, items, cfg, progress=False)
    b = result.breakdown
    assert set(b) == {"length", "figure", "chained", "numbered", "num_options"}
    assert b["numbered"]["true"]["n"] == 3  # questions 0, 4, 8 carry a number
    assert b["num_options"]["5"]["n"] == 4 and b["num_options"]["4"]["n"] == 8
    assert sum(g["n"] for g in b["length"].values()) == 12


def test_flags_and_length_buckets():
    assert derive_flags("承上題，此病人下一步？")["chained"]
    assert derive_flags("如下圖所示之心電圖")["figure"]
    assert derive_flags("12. 下列何者")["numbered"]
    assert not any(derive_flags("下列何者正確？").values())
    assert [length_bucket(n, [60, 120]) for n in (10, 60, 119, 500)] == [
        "<60",
        "60-120",
        "60-120",
        ">=120",
    ]


# --- bad eval sets ----------------------------------------------------------------------------

GOOD = {"question": "Q?", "options": {"A": "a", "B": "b", "C": "c", "D": "d"}, "answer_idx": "B"}


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_empty_eval_set_fails_clearly(tmp_path):
    path = write(tmp_path / "medqa_mcq.jsonl", [""])
    with pytest.raises(EvalDataError, match=r"medqa_mcq.jsonl: .*empty"):
        load_mcq(path)


def test_missing_eval_set_fails_clearly(tmp_path):
    with pytest.raises(EvalDataError, match="not found"):
        load_mcq(tmp_path / "nope.jsonl")


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("{not json", "invalid JSON"),
        (json.dumps({**GOOD, "answer_idx": "E"}), "answer_idx 'E'"),
        (json.dumps({**GOOD, "options": {"A": "a", "C": "c"}}), "options must be keyed A, B"),
        (json.dumps({**GOOD, "question": ""}), "'question' is empty"),
        (json.dumps({**GOOD, "answer": "a"}), "differs from option B"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "options"}), "'options'"),
        (json.dumps([1, 2]), "expected a JSON object"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad, reason):
    path = write(tmp_path / "medqa_mcq.jsonl", [json.dumps(GOOD), bad])
    with pytest.raises(EvalDataError) as err:
        load_mcq(path)
    assert f"{path}:2" in str(err.value)
    assert reason in str(err.value)


def test_five_option_questions_load(tmp_path):
    five = {**GOOD, "options": {**GOOD["options"], "E": "e"}, "answer_idx": "E", "answer": "e"}
    items = load_mcq(write(tmp_path / "m.jsonl", [json.dumps(GOOD), json.dumps(five)]))
    assert [len(i.options) for i in items] == [4, 5]
