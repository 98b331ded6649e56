"""Text folding before any triage rule or PII pattern runs.

People type the same symptom many ways: full-width digits from a phone keyboard, Tâi-lô or
POJ with or without tone marks or with tone numbers, variant characters (疼/痛, 喙/嘴, 袂/𣍐).
A rule written once should match all of them, so every rule (and the phrase it is written as)
goes through ``fold`` first. Folding is lossy on purpose and never shown to anyone.
"""

from __future__ import annotations

import re
import unicodedata

# Variant characters folded to one form. Left: what people write; right: the form rules use.
# Only characters whose variants mean the same thing in a medical message are folded.
VARIANTS: dict[str, str] = {
    "疼": "痛",
    "葯": "藥",
    "喙": "嘴",
    "𣍐": "袂",
    "脣": "唇",
    "骹": "跤",
    "腳": "跤",
    "脚": "跤",
    "睭": "睛",
    "珠": "睛",  # 目珠 = 目睭 (eyes); 珠 has no other sense in these messages
    "眩": "暈",  # 頭眩 = 頭暈 (dizzy)
    "烏": "黑",
    "着": "著",
    "裏": "裡",
    "佇": "在",
    "踮": "在",
    "甲": "到",  # 痛甲 = 痛到 (so much that); 甲 as armour/first never reaches a triage rule
    "𪜶": "怹",
    "欲": "要",
    "卜": "要",
    "嚨喉": "喉嚨",
    "攏": "都",
    "週": "周",
    "禮拜": "周",
    "艙": "袂",
    "閣": "擱",
    "嗽": "咳",
    "汘": "汗",  # a common slip for 汗 (sweat)
}

# POJ spellings rewritten as Tâi-lô, applied to lower-case, tone-free Latin text.
# Order matters: "chh" before "ch", "oa"/"oe" only where they are vowels.
_POJ_TO_TAILO: tuple[tuple[str, str], ...] = (
    ("chh", "tsh"),
    ("ch", "ts"),
    ("oa", "ua"),
    ("oe", "ue"),
    ("eng", "ing"),
    ("ek", "ik"),
)
_TONE_NUMBER = re.compile(r"(?<=[a-z])[1-9](?![0-9])")
_COMBINING = re.compile(r"[\u0300-\u0357\u0359-\u036f]")
_SEPARATORS = re.compile(r"[\s\-‐‑‒–—_·・]+")
_LATIN_RUN = re.compile(r"[a-z][a-z\-\s]*")


def _fold_romanisation(run: str) -> str:
    """Tone numbers dropped (a1-pa5 -> a-pa), POJ folded to Tâi-lô (chh -> tsh)."""
    run = _TONE_NUMBER.sub("", run)
    for poj, tailo in _POJ_TO_TAILO:
        run = run.replace(poj, tailo)
    return run


def fold(text: str, variants: bool = True) -> str:
    """The form every triage rule matches against.

    NFKC (full-width Ｆ１２ and ３８．６ become F12 and 38.6), lower case, tone diacritics
    removed, the POJ nasal ⁿ and dotted o͘ spelled as in Tâi-lô (nn, oo), tone numbers after a
    syllable dropped, POJ consonants and vowels written as Tâi-lô, whitespace and hyphens
    removed (so bē-kuè, bē kuè and bekue meet), and variant characters folded (``variants``).
    """
    text = text.replace("ⁿ", "nn").replace("ᴺ", "nn")  # before NFKC, which makes ⁿ a plain n
    text = unicodedata.normalize("NFKC", text).lower()
    text = unicodedata.normalize("NFD", text)
    text = _COMBINING.sub("", text)  # tone marks; the POJ dot (U+0358) is kept for the next line
    text = text.replace("o\u0358", "oo").replace("\u0358", "")
    text = unicodedata.normalize("NFC", text)
    text = _TONE_NUMBER.sub("", text)
    text = _LATIN_RUN.sub(lambda m: _fold_romanisation(m.group(0)), text)
    text = _SEPARATORS.sub("", text)
    if variants:
        for variant, canonical in VARIANTS.items():
            if variant != canonical:
                text = text.replace(variant, canonical)
    return text
