"""Normalisation the data pipeline relies on: MedQA flags, dedupe keys, scripts, POJ <-> Tâi-lô."""

from __future__ import annotations

import unicodedata

import pytest

from taigimed.data.normalise import (
    convert_romanization,
    dedupe_key,
    detect_script,
    is_chained,
    leading_number,
    needs_figure,
    nfc,
)


@pytest.mark.parametrize(
    ("text", "number", "rest"),
    [
        ("12. 在家中自行量測血壓時", "12", "在家中自行量測血壓時"),
        ("27.下列何者正確？", "27", "下列何者正確？"),
        ("36 26 歲不孕女性", "36", "26 歲不孕女性"),  # number, then an age
        ("73.32歲男性病人", "73", "32歲男性病人"),  # number glued to an age
        ("1 一位五十歲病患", "1", "一位五十歲病患"),
        ("（3）下列何者", "3", "下列何者"),
        ("65 歲女性，主訴", None, "65 歲女性，主訴"),  # an age, not a number
        ("16 個月男嬰", None, "16 個月男嬰"),
        ("3.2 g/dL ", None, "3.2 g/dL "),  # a value
        ("8.5，尿液", None, "8.5，尿液"),
        ("下列何者正確？", None, "下列何者正確？"),
    ],
)
def test_leading_number_splits_exam_numbering_but_not_ages_or_values(text, number, rest):
    assert leading_number(text) == (number, rest)


def test_figure_questions_are_detected_but_ecg_mentions_are_not():
    assert needs_figure("胸部X光如附圖，最可能的診斷為何？")
    assert needs_figure("經檢查如圖 A、圖 B 所示")
    assert needs_figure("心電圖顯示如下，此時下列何種治療最合適？")
    assert not needs_figure("心電圖呈現左心室肥厚合併ST-T波變化")
    assert not needs_figure("下列何者是高血壓的危險因子？")


def test_chained_questions_are_detected():
    assert is_chained("承上題，下列何者正確？")
    assert is_chained("（承上題）依Parkland formula")
    assert not is_chained("關於承上題型的說明不在開頭，下列何者正確？" * 2)


def test_dedupe_key_ignores_width_punctuation_space_and_numbering():
    a = "5. 糖化血色素（HbA1c）主要反映過去約多久期間的平均血糖？"
    b = "糖化血色素(HbA1c)主要反映過去約多久期間的平均血糖?  "
    assert dedupe_key(a) == dedupe_key(b) == "糖化血色素hba1c主要反映過去約多久期間的平均血糖"


def test_nfc_composes_combining_tone_marks():
    decomposed = unicodedata.normalize("NFD", "Guá thâu-khak tsiok thiànn.")
    assert decomposed != "Guá thâu-khak tsiok thiànn."
    assert nfc(decomposed) == "Guá thâu-khak tsiok thiànn."


@pytest.mark.parametrize(
    ("text", "script"),
    [
        ("我頭很痛。", "zh"),
        ("我頭殼足疼，毋知愛按怎。", "hanji"),
        ("Guá thâu-khak tsiok thiànn.", "tailo"),
        ("Góa thâu-khak chiok thiàⁿ.", "poj"),
        ("「肚子痛」台語講「腹肚疼」，台羅寫做 pak-tóo-thiànn。", "mixed"),
    ],
)
def test_detect_script(text, script):
    assert detect_script(text) == script


@pytest.mark.parametrize(
    ("poj", "tailo"),
    [
        ("Góa thâu-khak chiok thiàⁿ.", "Guá thâu-khak tsiok thiànn."),
        ("tiám-lu-êng-bō͘", "tiám-lu-îng-bōo"),
        ("chhiú-sut", "tshiú-sut"),
    ],
)
def test_convert_romanization_round_trips_poj_and_tailo(poj, tailo):
    assert convert_romanization(poj, "tailo") == nfc(tailo)
    assert convert_romanization(tailo, "poj") == nfc(poj)
