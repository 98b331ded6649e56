"""The guard's checks on a model's answer before it is shown (echo, loop, broken, off-language)."""

from __future__ import annotations

from taigimed.retrieval.grounding import check_answer

SYSTEM = "你是台語醫療衛教助理。請用台語回答，提醒這毋是診斷；緊急症狀請隨時敲 119 抑是去急診。"
QUESTION = "我這兩工咧咳嗽，喉嚨嘛小可仔痛，愛按怎照顧家己？"
PASSAGE = "咳嗽閣嚨喉小可仔疼，會使用燒的鹽水漱喙，加啉燒水、加歇睏。"


def test_a_real_answer_passes_even_when_it_reuses_the_passage() -> None:
    answer = "你會使用燒的鹽水漱喙，加啉燒水、加歇睏。若咳超過兩禮拜，愛去看醫生。"
    assert check_answer(answer, SYSTEM + QUESTION, PASSAGE).ok


def test_echo_of_the_prompt_fails() -> None:
    # what the demo's 135M model printed: its instructions back
    echo = "你是台語醫療衛教助理。請用台語回答，提醒這毋是診斷。"
    assert "echo" in check_answer(echo, SYSTEM + QUESTION, PASSAGE).reasons
    assert "echo" in check_answer(QUESTION, SYSTEM + QUESTION, PASSAGE).reasons


def test_loop_broken_and_off_language_fail() -> None:
    loop = "加啉燒水，加啉燒水，加啉燒水，加啉燒水，加啉燒水。"
    assert "loop" in check_answer(loop, SYSTEM, PASSAGE).reasons
    broken = "加啉燒水\ufffd\ufffd\ufffd加歇睏，\x00嚨喉疼愛看醫生。"
    assert "broken_characters" in check_answer(broken, SYSTEM, PASSAGE).reasons
    simplified = "你应该多喝热水，这个问题要请医生看看。"
    assert "off_language" in check_answer(simplified, SYSTEM, PASSAGE).reasons
    english = "You should drink warm water and rest, 加啉水。"
    assert "off_language" in check_answer(english, SYSTEM, PASSAGE).reasons
    assert "too_short" in check_answer("好。", SYSTEM, PASSAGE).reasons
