"""Perplexity per writing system and chrF translation scoring."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from taigimed.eval.config import GenConfig, LMConfig
from taigimed.eval.gen import chrf, evaluate_gen, load_translations
from taigimed.eval.io import EvalDataError
from taigimed.eval.lm import LMText, evaluate_lm, load_lm_texts
from taigimed.models import load_causal_lm, load_tokenizer

TEXTS = [
    LMText("1", "目睭哭甲腫腫。", "hanji"),
    LMText("2", "湯猶閣足燒，慢慢仔啉。", "hanji"),
    LMText("3", "伊的血壓較懸，食物愛較汫。", "hanji"),
    LMText("4", "Ba̍k-tsiu khàu kah tsíng-tsíng.", "tailo"),
    LMText("5", "Thng iáu-koh tsiok sio, bān-bān-á lim.", "tailo"),
]


class UniformLM(torch.nn.Module):
    """Test double: every token equally likely, so perplexity must equal the vocabulary size."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.vocab = vocab

    def forward(self, input_ids, **_):
        return SimpleNamespace(logits=torch.zeros(*input_ids.shape, self.vocab))


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def test_uniform_model_perplexity_is_vocabulary_size(tokenizer):
    metrics = evaluate_lm(UniformLM(len(tokenizer)), tokenizer, TEXTS, LMConfig(), progress=False)
    assert metrics["ppl_hanji"] == pytest.approx(len(tokenizer), rel=1e-4)
    assert metrics["ppl_tailo"] == pytest.approx(len(tokenizer), rel=1e-4)
    assert metrics["lm_tokens_hanji"] > 0 and metrics["lm_tokens_tailo"] > 0


def test_perplexity_does_not_depend_on_batching(tiny_model_dir, tokenizer):
    model = load_causal_lm(tiny_model_dir, device="cpu")
    one = evaluate_lm(model, tokenizer, TEXTS, LMConfig(batch_size=1), progress=False)
    many = evaluate_lm(model, tokenizer, TEXTS, LMConfig(batch_size=4), progress=False)
    for key in ("ppl_hanji", "ppl_tailo"):
        assert many[key] == pytest.approx(one[key], rel=1e-4)
        assert 1.0 < one[key] < 10 * len(tokenizer)


def test_script_without_text_gives_no_number(tokenizer):
    metrics = evaluate_lm(UniformLM(len(tokenizer)), tokenizer, TEXTS[:3], LMConfig(), False)
    assert "ppl_tailo" not in metrics and "ppl_hanji" in metrics


def test_lm_file_rejects_unknown_script(tmp_path):
    path = tmp_path / "taigi_lm.jsonl"
    path.write_text(json.dumps({"id": "a", "text": "好", "script": "klingon"}) + "\n")
    with pytest.raises(EvalDataError, match=rf"{path}:1: script 'klingon'"):
        load_lm_texts(path)


def test_chrf_orders_translations():
    ref = ["伊的血壓較懸，食物愛較汫。"]
    assert chrf(ref, ref) == pytest.approx(100.0)
    assert chrf(["伊的血壓較懸。"], ref) > chrf(["今仔日天氣好。"], ref)


def test_translation_generation_and_samples(tiny_model_dir, tokenizer, tmp_path):
    path = tmp_path / "taigi_translation.jsonl"
    rows = [
        {"id": "a", "source": "眼睛哭得腫腫的。", "reference": "目睭哭甲腫腫。"},
        {"id": "b", "source": "湯還很燙，慢慢喝。", "reference": "湯猶閣足燒，慢慢仔啉。"},
        {"id": "c", "source": "他的血壓比較高。", "reference": "伊的血壓較懸。"},
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    items = load_translations(path)
    model = load_causal_lm(tiny_model_dir, device="cpu")
    cfg = GenConfig(max_new_tokens=4, batch_size=2, samples_in_report=2)
    metrics, samples = evaluate_gen(model, tokenizer, items, cfg, progress=False)
    assert 0.0 <= metrics["chrf"] <= 100.0 and metrics["gen_items"] == 3
    assert [s["id"] for s in samples] == ["a", "b"]
    assert samples[0]["reference"] == "目睭哭甲腫腫。"


def test_translation_file_requires_reference(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"id": "a", "source": "好"}) + "\n")
    with pytest.raises(EvalDataError, match=rf"{path}:1: missing field 'reference'"):
        load_translations(path)
