"""Chat formatting: the loss covers assistant tokens exactly, nothing else."""

from __future__ import annotations

import json

import pytest

from taigimed.models import load_tokenizer
from taigimed.train.formatting import IGNORE_INDEX, load_sft_examples, tokenize_chat


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_assistant_only_mask_is_exact_on_a_known_example(tokenizer):
    messages = [
        {"role": "system", "content": "你是醫療助理。"},
        {"role": "user", "content": "頭殼痛欲按怎？"},
        {"role": "assistant", "content": "加啉水，歇睏一下。"},
    ]
    input_ids, labels, truncated = tokenize_chat(tokenizer, messages, max_len=512)

    prompt = (
        "<|im_start|>system\n你是醫療助理。<|im_end|>\n"
        "<|im_start|>user\n頭殼痛欲按怎？<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    answer = [*ids(tokenizer, "加啉水，歇睏一下。"), tokenizer.convert_tokens_to_ids("<|im_end|>")]
    trailer = ids(tokenizer, "\n")
    assert not truncated
    assert input_ids == ids(tokenizer, prompt) + answer + trailer
    # Exactly the answer and its end-of-turn token carry loss; prompt and trailing newline do not.
    assert labels == [IGNORE_INDEX] * len(ids(tokenizer, prompt)) + answer + [IGNORE_INDEX] * len(
        trailer
    )


def test_every_assistant_turn_is_a_target_and_user_turns_are_not(tokenizer):
    messages = [
        {"role": "user", "content": "Q one"},
        {"role": "assistant", "content": "A one"},
        {"role": "user", "content": "Q two"},
        {"role": "assistant", "content": "A two"},
    ]
    input_ids, labels, _ = tokenize_chat(tokenizer, messages, max_len=512)
    target_text = tokenizer.decode([t for t in labels if t != IGNORE_INDEX])
    assert target_text == "A one<|im_end|>A two<|im_end|>"
    assert len(input_ids) == len(labels)


def test_truncation_is_reported_and_answerless_examples_are_listed(tmp_path, tokenizer):
    long_prompt = "症狀 " * 300
    path = tmp_path / "stage1_train.jsonl"
    rows = [
        {
            "id": "ok",
            "messages": [
                {"role": "user", "content": "嗽"},
                {"role": "assistant", "content": "看醫生。"},
            ],
        },
        {
            "id": "too-long",
            "messages": [
                {"role": "user", "content": long_prompt},
                {"role": "assistant", "content": "好。"},
            ],
        },
    ]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    examples, report = load_sft_examples(path, tokenizer, max_len=64)
    assert [e.id for e in examples] == ["ok"]
    assert report.dropped == ["too-long"]  # listed, not silently lost
    assert all(len(e) <= 64 for e in examples)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "a", "messages": [{"role": "user", "content": "q"}]}', "at least one user and"),
        (
            '{"id": "a", "messages": [{"role": "user", "content": "q"}, '
            '{"role": "assistant", "content": "  "}]}',
            "empty assistant message",
        ),
        ('{"id": "a", "messages": [{"role": "doctor", "content": "q"}]}', "role must be one of"),
        ("{not json", "invalid JSON"),
    ],
)
def test_bad_lines_fail_with_file_and_line(tmp_path, tokenizer, line, message):
    path = tmp_path / "stage1_train.jsonl"
    good = (
        '{"id": "g", "messages": [{"role": "user", "content": "q"}, '
        '{"role": "assistant", "content": "a"}]}'
    )
    path.write_text(good + "\n" + line + "\n")
    with pytest.raises(ValueError, match=rf"stage1_train.jsonl:2: .*{message}"):
        load_sft_examples(path, tokenizer, max_len=128)
