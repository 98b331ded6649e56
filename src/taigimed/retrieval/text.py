"""Lexical tokens for BM25: character bigrams of Hàn-jī, syllable bigrams of Tâi-lô.

Taigi and Mandarin are written without spaces, and no word segmenter knows Taigi Hàn-jī, so a
question is matched on overlapping character pairs (「咳嗽」「嗽喉」「喉嚨」...). Tâi-lô is
matched the same way one level up: a Tâi-lô syllable is what one Hàn-jī character is, so its
tokens are tone-stripped syllables and syllable pairs (``sau``, ``sau|tsui``). Tones are dropped
because users type Tâi-lô without diacritics or with numbers more often than with them.
"""

from __future__ import annotations

import re
import unicodedata
from itertools import pairwise

from taigimed.data.normalise import is_cjk

# Written-variant pairs people mix freely; mapped to one form before bigrams are taken.
VARIANTS = str.maketrans({"臺": "台", "裏": "裡", "着": "著", "够": "夠"})
_LATIN = re.compile(r"[a-z0-9]+")


def normalise(text: str) -> str:
    """Full-width to half-width, lower case, tones and other diacritics removed."""
    text = unicodedata.normalize("NFKC", text).lower().translate(VARIANTS)
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _runs(text: str) -> list[tuple[str, list[str]]]:
    """Split into ('han', chars) and ('latin', syllables) runs; anything else breaks a run."""
    runs: list[tuple[str, list[str]]] = []
    for piece in re.split(r"(\s+|[^\w-]+)", text):
        if not piece or not piece.strip():
            if runs:
                runs.append(("break", []))
            continue
        for ch_run in re.findall(r"[\u2e80-\U0002ffff]+|[a-z0-9-]+", piece):
            if is_cjk(ch_run[0]):
                runs.append(("han", list(ch_run)))
            else:
                syllables = _LATIN.findall(ch_run)
                if syllables:
                    runs.append(("latin", syllables))
    return runs


def tokens(text: str) -> list[str]:
    """BM25 tokens of ``text``: Hàn-jī bigrams (a lone character stands for itself), Tâi-lô
    syllables and syllable bigrams, digits as words."""
    out: list[str] = []
    for kind, units in _runs(normalise(text)):
        if kind == "han":
            if len(units) == 1:
                out.append(units[0])
            out.extend(a + b for a, b in pairwise(units))
        elif kind == "latin":
            out.extend(units)
            out.extend(f"{a}|{b}" for a, b in pairwise(units))
    return out
