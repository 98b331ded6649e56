"""Is a model's answer fit to show? Echo, loop, broken characters, off-language.

A minimal, pure check the guard runs on a grounded answer before showing it; when it fails,
the guard shows the approved passage itself. The evaluation area (#13) is writing the shared
detectors for the answer-quality set; until those are on main this module is the guard's own,
kept small on purpose (and to be replaced by them, not grown beside them).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass

from taigimed.data.normalise import is_cjk

# Characters that exist only in Simplified Chinese (their Traditional forms differ) and are
# common in health text; a Taigi Hàn-jī answer has none of them.
SIMPLIFIED_ONLY = set("们这个说来时么没为会还发对过问题医药头热饮觉让给应该样经开关系请")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class Verdict:
    """``ok`` or the reasons an answer is not fit to show (``echo``, ``loop``, ...)."""

    reasons: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.reasons


def _bigrams(text: str) -> set[str]:
    text = _SPACE.sub("", text)
    return {text[i : i + 2] for i in range(len(text) - 1)}


def echo_share(answer: str, prompt: str, passages: str = "") -> float:
    """Share of the answer's character pairs copied from the prompt (instructions, question)
    that are not also in the passages: copying a passage is answering, copying the prompt is
    echoing."""
    pairs = _bigrams(answer)
    if not pairs:
        return 0.0
    copied = (pairs & _bigrams(prompt)) - _bigrams(passages)
    return len(copied) / len(pairs)


def is_loop(answer: str, n: int = 6, max_repeats: int = 3) -> bool:
    """A phrase of ``n`` characters said ``max_repeats`` times or more, or an answer whose
    ``n``-grams are mostly repeats: a small model stuck on one phrase."""
    text = _SPACE.sub("", answer)
    grams = [text[i : i + n] for i in range(len(text) - n + 1)]
    if not grams:
        return False
    counts = Counter(grams)
    return counts.most_common(1)[0][1] >= max_repeats or len(counts) / len(grams) < 0.5


def broken_share(answer: str) -> float:
    """Share of characters that are replacement marks, controls or unassigned code points."""
    chars = [c for c in answer if not c.isspace()]
    if not chars:
        return 0.0
    bad = sum(c == "\ufffd" or unicodedata.category(c) in ("Cc", "Cs", "Co", "Cn") for c in chars)
    return bad / len(chars)


def han_share(answer: str) -> float:
    """Share of Han characters among the answer's letters (Latin letters count against)."""
    letters = [c for c in answer if c.isalpha()]
    return sum(is_cjk(c) for c in letters) / len(letters) if letters else 0.0


def check_answer(answer: str, prompt: str, passages: str = "", min_han: int = 8) -> Verdict:
    """The reasons ``answer`` should not be shown; empty when it may be."""
    reasons = []
    han = sum(is_cjk(c) for c in answer)
    if han < min_han:
        reasons.append("too_short")
    if echo_share(answer, prompt, passages) >= 0.5:
        reasons.append("echo")
    if is_loop(answer):
        reasons.append("loop")
    if broken_share(answer) > 0.02:
        reasons.append("broken_characters")
    if han_share(answer) < 0.6 or len(SIMPLIFIED_ONLY & set(answer)) >= 2:
        reasons.append("off_language")
    return Verdict(tuple(reasons))
