"""PII scrubbing that holds on the ways people actually type numbers.

Everything a user writes is scrubbed before it is logged, stored, counted or exported. Matching
runs on a normalised copy (NFKC per character: full-width Ｆ１２３ and ０９１２ become F123 and
0912) and allows the separators people put inside numbers (spaces, dots, dashes, brackets);
the replacement is made on the original text, so everything that is not PII stays as written.

Kinds: Taiwan national IDs and resident certificate numbers (both formats, **checksum
verified**, so a random letter and nine digits is left alone), NHI card numbers (12 digits),
mobile and landline numbers (with or without +886), e-mail, street addresses (縣/市/區/鄉/鎮 …
路/街/段/巷/弄 … 號) and dates of birth (a date next to 生日/出生/民國…年生/DOB).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

PLACEHOLDERS = {
    "email": "[EMAIL]",
    "national_id": "[NATIONAL_ID]",
    "nhi_card": "[NHI_CARD]",
    "phone": "[PHONE]",
    "address": "[ADDRESS]",
    "birth_date": "[BIRTH_DATE]",
}

# Letter codes of the national ID checksum (I, O, W, X, Y, Z are out of alphabetical order).
_LETTER_CODES = dict(zip("ABCDEFGHJKLMNPQRSTUVXYWZIO", range(10, 36), strict=True))

_SEP = r"[\s.\-‐‑–—_/()]?"  # one separator a person might type between digit groups
_D = rf"(?:{_SEP}\d)"

_EMAIL = re.compile(r"[\w.+-]+\s?@\s?[\w-]+(?:\s?\.\s?[\w-]+)+")
# A letter, then 1/2 (citizens) or 8/9 (new resident certificates), then 8 digits; or two letters
# (old resident certificates: the second is A-D) and 8 digits.
_TW_ID = re.compile(rf"(?<![A-Za-z0-9])[A-Za-z]{_SEP}(?:[1289]|[A-Da-d]){_D}{{8}}(?!\s?\d)")
# Numbers inside a word (a hex session id, an order code) are not phone or card numbers.
_NHI = re.compile(rf"(?<![0-9A-Za-z])\d{_D}{{11}}(?![0-9A-Za-z])")
_PHONE = re.compile(
    r"(?<![0-9A-Za-z+])(?:"
    rf"(?:\+|00)?886{_SEP}\(?0?\)?{_SEP}9{_D}{{8}}"  # +886 9xx xxx xxx
    rf"|09{_D}{{8}}"  # 09xx xxx xxx
    rf"|(?:\+|00)?886{_SEP}\(?0?\)?{_SEP}[2-8]{_D}{{6,8}}"  # +886 2 xxxx xxxx
    rf"|\(?0[2-8]\d?\)?{_SEP}\d{{3,4}}{_SEP}\d{{3,4}}"  # (02) 2345-6789, 049-2345678
    r")(?![0-9A-Za-z])"
)
_NUM = r"[\d一二三四五六七八九十〇零]+"
_PLACE = r"[\u4e00-\u9fff]{1,4}?"
_ADDRESS = re.compile(
    rf"(?:{_PLACE}[縣市])?(?:{_PLACE}[區鄉鎮市])?(?:{_PLACE}[村里](?:{_NUM}鄰)?)?"
    rf"(?:[\u4e00-\u9fff\d]{{1,4}}?(?:路|街|大道))(?:{_NUM}段)?(?:{_NUM}巷)?(?:{_NUM}弄)?"
    rf"\s?{_NUM}(?:之{_NUM})?\s?號(?:\s?{_NUM}\s?樓(?:之{_NUM})?)?"
    rf"|(?:{_PLACE}[縣市]){_PLACE}[區鄉鎮市]{_PLACE}[村里](?:{_NUM}鄰)?(?:{_NUM}號)?"
)
_DATE = (
    r"(?:(?:19|20)\d{2}|民國\s?\d{2,3}|\d{2,3})\s?[年/\-.]\s?\d{1,2}\s?[月/\-.]\s?\d{1,2}\s?日?"
    r"|(?:19|20)\d{6}"
)
_BIRTH = re.compile(
    rf"(?:生日|出生(?:日期|年月日)?|出世|生於|DOB|D\.O\.B\.|date of birth|birthday|born)"
    rf"\s?(?:是|:|：|on)?\s?(?:{_DATE})"
    rf"|(?:{_DATE})\s?(?:出生|出世|生(?![病氣活理]))"
)


def _valid_national_id(raw: str) -> bool:
    """The ID checksum: letter code digits weighted 1 and 9, then 8..1, then the check digit."""
    chars = [c for c in raw.upper() if c.isalnum()]
    if len(chars) != 10 or chars[0] not in _LETTER_CODES:
        return False
    code = _LETTER_CODES[chars[0]]
    if chars[1].isalpha():  # old resident certificate: the second letter's code, last digit
        if chars[1] not in "ABCD":
            return False
        chars[1] = str(_LETTER_CODES[chars[1]] % 10)
    if not all(c.isdigit() for c in chars[1:]):
        return False
    digits = [int(c) for c in chars[1:]]
    total = code // 10 + (code % 10) * 9
    total += sum(d * w for d, w in zip(digits[:8], range(8, 0, -1), strict=True)) + digits[8]
    return total % 10 == 0


def _normalised_with_map(text: str) -> tuple[str, list[int]]:
    """NFKC character by character, with the original index of every normalised character."""
    out, where = [], []
    for i, ch in enumerate(text):
        folded = unicodedata.normalize("NFKC", ch)
        out.append(folded)
        where.extend([i] * len(folded))
    return "".join(out), where


Rule = tuple[str, re.Pattern[str], Callable[[str], bool] | None]
RULES: tuple[Rule, ...] = (
    ("email", _EMAIL, None),
    ("birth_date", _BIRTH, None),
    ("national_id", _TW_ID, _valid_national_id),
    ("phone", _PHONE, None),
    ("nhi_card", _NHI, None),
    ("address", _ADDRESS, None),
)


def find_pii(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, kind)`` spans in the **original** text, earlier rules winning overlaps."""
    norm, where = _normalised_with_map(text)
    taken: list[tuple[int, int, str]] = []
    for kind, pattern, valid in RULES:
        for m in pattern.finditer(norm):
            if valid is not None and not valid(m.group(0)):
                continue
            start, end = where[m.start()], where[m.end() - 1] + 1
            if any(start < e and s < end for s, e, _ in taken):
                continue
            taken.append((start, end, kind))
    return sorted(taken)


def scrub_pii(text: str) -> str:
    """Replace every PII span with its placeholder ([NATIONAL_ID], [PHONE], [ADDRESS], ...)."""
    out, last = [], 0
    for start, end, kind in find_pii(text):
        out += [text[last:start], PLACEHOLDERS[kind]]
        last = end
    out.append(text[last:])
    return "".join(out)
