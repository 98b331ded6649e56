"""Text normalisation: Unicode NFC, dedupe keys, MedQA flags, writing-system tags, POJ <-> Tâi-lô.

Romanised Taigi mixes precomposed and combining diacritics (``ó`` vs ``o`` + U+0301, POJ's
``o͘`` with U+0358); NFC makes equal text compare equal. Dedupe keys go further (NFKC, lower
case, no punctuation or spaces, no leading exam numbering) so that reformatted copies of one
question still match.

POJ <-> Tâi-lô goes through ``convert_romanization`` only, backed by the maintained ``kesi``
library. It was chosen over ``taibun`` by measurement on 2,000 ChhoeTaigi rows (docs/data.md):
kesi agrees with the dictionary's own POJ/KIP columns on 97-98 % of rows in both directions,
taibun on 90 % and only converts Tâi-lô -> POJ.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Literal

Script = Literal["hanji", "tailo", "poj", "zh", "mixed"]


def nfc(text: str) -> str:
    """NFC-normalised text with surrounding whitespace trimmed."""
    return unicodedata.normalize("NFC", text).strip()


# --- MedQA question flags ---------------------------------------------------------------------

# Leading exam numbering: "12.", "12．", "(12)", "12、", or "12 " followed by the question.
_NUM_PUNCT = re.compile(r"^\s*[(（]?(\d{1,3})[)）]?\s*[.．、:：]\s*")
_NUM_PAREN = re.compile(r"^\s*[(（](\d{1,3})[)）]\s*")
_NUM_SPACE = re.compile(r"^\s*(\d{1,3})\s+")
# "16 歲", "16 個月", "3 mg": after a space, a unit means the digits were an amount.
_UNIT_START = re.compile(
    r"^(?:歲|個|週|周|天|日|月|年|小時|分|公|次|名|位|種|項|倍|度|cm|mm|kg|mg|ml)", re.I
)
# "73.32歲男性" is question 73 about a 32-year-old; "8.5，" or "3.2 g/dL" is a decimal value.
_AGE_AFTER_NUMBER = re.compile(r"^\d+\s*(?:歲|個|週|周|天|日|月|年|小時|名|位)")

# A question that needs a figure the data does not include.
_FIGURE = re.compile(
    r"(?:如|見|附|下|上|左|右)\s*圖"
    r"|圖\s*(?:[A-Za-z一二三四五六七八九十0-9]|[示中片所])"
    r"|圖[^，。？；\s]{0,4}如下"
    r"|下述\S{0,6}圖"
    r"|\bfig(?:ure|\.)",
    re.I,
)
# A question that continues the previous one.
_CHAINED = re.compile(r"^[\s(（\[【]{0,2}(?:承上題|承上|接上題|續上題|同上題)")


def leading_number(text: str) -> tuple[str | None, str]:
    """Split off exam numbering: ``("12", rest)`` or ``(None, text)`` when there is none.

    Real MedQA-Taiwan items start with "30.一位45歲…", "36 26 歲不孕女性…" or "73.32歲男性…",
    but also with ages ("16 歲男孩…") and values ("3.2 g/dL", "8.5，"): those are not numbering.
    """
    m = _NUM_PUNCT.match(text) or _NUM_PAREN.match(text)
    spaced = m is None
    m = m or _NUM_SPACE.match(text)
    if m is None:
        return None, text
    rest = text[m.end() :]
    if spaced and _UNIT_START.match(rest):
        return None, text
    if rest[:1].isdigit() and not _AGE_AFTER_NUMBER.match(rest):
        return None, text
    return m.group(1), rest.strip()


def needs_figure(text: str) -> bool:
    """True when the question refers to a figure (如圖, 附圖, 圖 A, 心電圖如下 …)."""
    return bool(_FIGURE.search(text))


def is_chained(text: str) -> bool:
    """True when the question (numbering stripped) opens by pointing back: 承上題, (承上)…"""
    return bool(_CHAINED.match(text))


# --- Dedupe keys ------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1 << 16)
def dedupe_key(text: str) -> str:
    """Comparison form: NFKC, lower case, no leading numbering, no punctuation/space/symbols."""
    text = unicodedata.normalize("NFKC", text)
    _, text = leading_number(text)
    return "".join(ch for ch in text.lower() if unicodedata.category(ch)[0] in "LNM")


# --- Writing systems --------------------------------------------------------------------------

# Characters common in Taigi Hàn-jī and rare in Mandarin text.
_TAIGI_HANJI = set("佇咧毋袂閣遮遐啥恁阮伊欲予佮攏猶按怎媠囡仔厝敢較袂曷𪜶咱真濟遮爾彼个箍喙跤骹")
_LATIN_TONE = re.compile(r"[\u0300-\u036f\u207f]")
# POJ spellings that Tâi-lô never uses (o͘, ⁿ, ch/chh, oa/oe) and vice versa (ts, nn, oo, ua).
_POJ_MARK = re.compile(r"o\u0358|\u207f|\bchh?|oa|oe", re.I)
_TL_MARK = re.compile(r"\btsh?|nn\b|oo|ua|ue", re.I)


def is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return 0x3400 <= cp <= 0x9FFF or 0x20000 <= cp <= 0x3134F or 0xF900 <= cp <= 0xFAFF


def detect_script(text: str) -> Script:
    """Tag a text with its writing system: Hàn-jī Taigi, Tâi-lô, POJ, Mandarin or mixed.

    A heuristic for the data report and for sources that do not say (chat): Latin-letter text
    is romanised Taigi (POJ when it has POJ-only spellings), CJK text is Taigi Hàn-jī when it has
    Taigi function characters (佇, 毋, 袂 …) and Mandarin otherwise; both in quantity is mixed.
    """
    text = unicodedata.normalize("NFD", text)
    cjk = sum(1 for ch in text if is_cjk(ch))
    latin = sum(1 for ch in text if "a" <= ch.lower() <= "z")
    if cjk and latin and min(cjk, latin) / (cjk + latin) >= 0.2:
        return "mixed"
    if latin > cjk:
        poj = len(_POJ_MARK.findall(text))
        tl = len(_TL_MARK.findall(text))
        return "poj" if poj > tl else "tailo"
    if any(ch in _TAIGI_HANJI for ch in text):
        return "hanji"
    return "zh"


# --- POJ <-> Tâi-lô ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _kesi():
    import kesi  # imported lazily: ~0.1 s, needed only for romanised sources

    return kesi


def convert_romanization(text: str, target: Literal["tailo", "poj"]) -> str:
    """Convert romanised Taigi (POJ or Tâi-lô, either works as input) to ``target``, NFC.

    Hàn-jī and punctuation pass through. Raises ``ValueError`` for text kesi cannot parse.
    """
    kesi = _kesi()
    try:
        sentence = kesi.Ku(nfc(text))
        converted = sentence.TL() if target == "tailo" else sentence.POJ()
        return nfc(converted.lomaji)
    except Exception as err:  # kesi raises its own error types for unparseable syllables
        raise ValueError(f"cannot convert {text!r} to {target}: {err}") from err
