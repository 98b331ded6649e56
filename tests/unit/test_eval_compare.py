"""Side-by-side comparison of evaluated models (the base-model choice)."""

from __future__ import annotations

import json
import math

import pytest

from taigimed.eval.compare import bits_per_character, characters_per_script, comparison_table, main


def metrics(right: list[bool], **extra) -> dict:
    items = {f"q{i}": r for i, r in enumerate(right)}
    return {
        "medqa_accuracy": sum(right) / len(right),
        "medqa_questions": float(len(right)),
        "medqa_accuracy_items": items,
        **extra,
    }


def test_the_table_pairs_medqa_on_the_same_questions_and_keeps_held_out_apart():
    a = metrics([True] * 2 + [False] * 18, answer_echo_rate=0.8, answer_echo_rate_heldout=0.9)
    b = metrics([True] * 12 + [False] * 8, answer_echo_rate=0.1, answer_echo_rate_heldout=0.2)
    table = comparison_table({"a": a, "b": b})
    assert "0.100 [" in table and "0.600 [" in table
    assert "+10/−0 p=0.002" in table  # ten won, none lost: exact two-sided McNemar 2/2**10
    assert "| answers: echo of prompt or question | 0.800 (0.900) | 0.100 (0.200) |" in table


def test_bits_per_character_makes_two_tokenizers_comparable(tmp_path):
    rows = [{"id": "1", "text": "目睭哭甲腫腫。", "script": "hanji"}]
    (tmp_path / "taigi_lm.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    chars = characters_per_script(tmp_path)
    assert chars == {"hanji": 7}
    # 14 tokens at perplexity 2 and 7 tokens at perplexity 4 are the same 14 bits: 2 per char.
    assert bits_per_character({"lm_tokens_hanji": 14, "ppl_hanji": 2.0}, "hanji", 7) == 2.0
    assert bits_per_character({"lm_tokens_hanji": 7, "ppl_hanji": 4.0}, "hanji", 7) == 2.0
    assert math.isnan(bits_per_character({}, "hanji", 7))


def test_a_bad_lm_record_names_file_and_line(tmp_path):
    (tmp_path / "taigi_lm.jsonl").write_text('{"text": "x", "script": "hanji"}\n{"text": 1}\n')
    with pytest.raises(SystemExit, match=r"taigi_lm.jsonl:2: not an LM record"):
        characters_per_script(tmp_path)


def test_the_cli_refuses_a_model_without_a_name(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["only-a-path.json"])
    assert "expected NAME=path/to/metrics.json" in capsys.readouterr().err
