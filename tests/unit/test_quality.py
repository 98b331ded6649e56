"""Degenerate-output detectors and confidence on hand-made answers: each moves the right way."""

from __future__ import annotations

import pytest

from taigimed.quality import (
    answer_signals,
    confidence,
    distinct_n,
    echo_share,
    has_broken_char,
    is_empty,
    simplified_share,
    trim_partial_char,
)

SYSTEM = "你是台語醫療衛教助理。用台語漢字簡單回答，毋通做診斷，嚴重的症狀愛叫人去看醫生。"
QUESTION = "我這兩工咧咳嗽，喉嚨嘛小可仔痛，愛按怎照顧家己？"
GOOD = "咳嗽、喉嚨痛會使加啉溫水、加歇睏，用溫鹽水漱喙，莫食冰的。若是發燒無退，愛去看醫生。"
PARROT = "我是台語醫療衛教助理，用台語漢字簡單回答，毋通做診斷，嚴重的症狀愛叫人去看醫生。"
LOOP = "你是台語醫療衛教助理！" * 6


def test_echo_share_grows_with_the_copied_part():
    assert echo_share(GOOD, [SYSTEM, QUESTION]) < 0.3
    assert echo_share(PARROT, [SYSTEM, QUESTION]) > 0.9
    half = GOOD[:30] + SYSTEM[:25]
    assert echo_share(GOOD, [SYSTEM]) < echo_share(half, [SYSTEM]) < echo_share(PARROT, [SYSTEM])


def test_echo_counts_every_copied_run_not_only_the_longest():
    # a grounded 135M model said its question twice: one run covers only half of that
    twice = "糖尿病的傷口為什麼不容易好？糖尿病的傷口為什麼不容易好？"
    assert echo_share(twice, ["糖尿病的傷口為什麼不容易好？"]) == 1.0
    # the prompt parroted in pieces, with words of its own between them
    pieces = "伊講：用台語漢字簡單回答。阮毋知。嚴重的症狀愛叫人去看醫生。"
    assert echo_share(pieces, [SYSTEM]) > 0.5
    # a run the passages also hold is answering from them, not echoing the question
    passage = "糖尿病的傷口愛保持清氣，若紅腫化膿愛去看醫生。"
    answer = "糖尿病的傷口愛保持清氣，若紅腫化膿愛去看醫生。"
    assert echo_share(answer, ["糖尿病的傷口愛按怎照顧？"], allowed=passage) == 0.0


def test_flags_name_what_is_wrong():
    assert answer_signals(GOOD, QUESTION, SYSTEM).flags == []
    assert answer_signals(PARROT, QUESTION, SYSTEM).flags == ["echo"]
    assert answer_signals(QUESTION, QUESTION, SYSTEM).flags == ["echo"]  # repeats the question
    assert "repetition" in answer_signals(LOOP, QUESTION, "").flags
    assert answer_signals(GOOD + "\ufffd", QUESTION, SYSTEM).flags == ["broken"]
    assert answer_signals(" 。！ ", QUESTION, SYSTEM).flags == ["empty"]
    simplified = "这个你要多喝水，多休息，发烧要看医生。"
    assert answer_signals(simplified, QUESTION).flags == ["simplified"]
    english = "Drink warm water and rest; see a doctor if the fever stays."
    assert answer_signals(english, QUESTION, script="hanji").flags == ["off_script"]
    tailo = "Ke lim sio-tsuí, ke hioh-khùn, huat-sio bô thè tō ài khì khuànn i-sing."
    assert answer_signals(tailo, "Kám-mōo ài án-tsuánn?", script="tailo").flags == []


def test_distinct_n_falls_for_a_loop():
    good, _ = distinct_n(GOOD)
    loop, _ = distinct_n(LOOP)
    assert loop < 0.5 < good


def test_broken_and_empty_and_trim():
    assert has_broken_char("好\ufffd") and has_broken_char("a\ud800b") and not has_broken_char(GOOD)
    assert is_empty("  ，。 ") and not is_empty("好")
    assert trim_partial_char("加啉水\ufffd\ufffd") == "加啉水"
    assert trim_partial_char(GOOD) == GOOD


def test_simplified_share_does_not_flag_taigi_words_valid_in_both_scripts():
    share, _ = simplified_share("阮後生佇台北讀冊，講台語講甲真好，這个囡仔足乖。")
    assert share < 0.5
    assert simplified_share("这个问题你要多喝水")[0] > 0.9


@pytest.mark.parametrize("bad", [PARROT, LOOP, GOOD + "\ufffd", " 。"])
def test_confidence_is_lower_for_a_degenerate_answer_with_the_same_logprobs(bad):
    logprobs = [-0.1] * 20  # the parrot is *more* sure of itself than a real answer
    good = confidence([-0.8] * 20, answer_signals(GOOD, QUESTION, SYSTEM))
    worse = confidence(logprobs, answer_signals(bad, QUESTION, SYSTEM))
    assert good is not None and worse is not None
    assert worse < good
    assert confidence(None, answer_signals(GOOD, QUESTION, SYSTEM)) is None


def test_the_guard_image_installs_what_the_detectors_import(repo_root):
    """The guard computes confidence with these detectors; OpenCC must be in its image, at the
    same pin as the eval side."""
    guard = (repo_root / "serving/requirements-guard.txt").read_text().splitlines()
    main = (repo_root / "requirements.txt").read_text().splitlines()
    pin = next(line.split()[0] for line in main if line.startswith("opencc=="))
    assert pin in guard
