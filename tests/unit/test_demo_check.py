"""``make demo``'s own check: the printed answer must not be an echo of the prompt."""

from __future__ import annotations

from taigimed.demo import QUESTION, answer_check
from taigimed.eval.answers import DEFAULT_ECHO_PROMPT

DISCLAIMER = "⚠️ 這是一般衛教資訊，毋是診斷；若症狀無好轉抑是變較嚴重，請緊去看醫生。"


def test_the_old_demo_answer_is_an_echo() -> None:
    # what make demo printed before retrieval: the 135M model repeating its instructions
    old = "我是台語醫療衛教助理，用台語漢字簡單回答，毋通做診斷，嚴重的症狀愛叫人去看醫生。"
    # served with the prompt it was trained on (the model spec's; issue 13's demo champion)
    assert answer_check(old + DISCLAIMER, QUESTION, DEFAULT_ECHO_PROMPT) == ["echo"]
    assert answer_check(QUESTION + DISCLAIMER, QUESTION) == ["echo"]


def test_advice_from_a_passage_is_an_answer() -> None:
    passage = "咳嗽閣嚨喉小可仔疼，會使用燒的鹽水漱喙，加啉燒水、加歇睏。"
    assert answer_check(passage + DISCLAIMER, QUESTION, DEFAULT_ECHO_PROMPT) == []
