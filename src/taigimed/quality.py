"""Degenerate-output detectors and a confidence score built on them (pure functions).

One module for the evaluation task (``taigimed.eval.answers``) and the serving guard, so the
gate and the review queue call an answer degenerate for the same reasons:

* **echo**: the answer is mostly a copy of the system prompt or of the question (a small model
  that parrots its instructions scores a *high* mean log-prob: it has seen that text);
* **repetition**: a loop (``你是台語醫療衛教助理！你是台語醫療衛教助理！...``), seen as few
  distinct character n-grams or one chunk repeated back to back;
* **broken characters**: U+FFFD (bytes cut in the middle of a character) or an unpaired
  surrogate;
* **empty**: nothing but whitespace and punctuation;
* **simplified**: written in Simplified characters (the advisor writes Traditional Hàn-jī);
* **off-script**: mostly Latin letters for a question asked in Hàn-jī or Mandarin (drifted into
  English).

Nothing here imports torch or a web framework; every threshold is a field of ``QualitySettings``
(set on the dev split of the answer-quality set, never on its held-out split).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

REPLACEMENT_CHAR = "\ufffd"
# One chunk repeated at least twice more right after itself: 5+ of one character (？？？？？,
# 痴痴痴痴痴) or 2+ characters three times in a row.
_BACK_TO_BACK = re.compile(r"(.)\1{4,}|(.{2,}?)\2{2,}", re.DOTALL)


@dataclass
class QualitySettings:
    """Thresholds of the detectors (dev-split choices, documented in docs/evaluation.md)."""

    echo_share: float = 0.5  # runs copied from the prompt or question cover more than this share
    echo_min_chars: int = 6  # a shorter common run is a shared phrase, not a copy
    repetition_n: int = 3  # character n-grams for distinct-n
    distinct_floor: float = 0.5  # distinct-n below this is a loop
    repetition_min_ngrams: int = 12  # shorter answers are not judged by distinct-n
    loop_share: float = 0.4  # back-to-back repeats covering this share of the answer: a loop
    simplified_share: float = 0.6  # of the characters that tell the scripts apart
    simplified_min_chars: int = 2
    off_script_share: float = 0.6  # Latin letters among letters, for a Hàn-jī/Mandarin question


@dataclass
class ConfidenceWeights:
    """How much each degenerate signal lowers confidence (a factor on exp(mean log-prob))."""

    echo: float = 0.1
    repetition: float = 0.1
    broken: float = 0.3
    off_script: float = 0.3
    simplified: float = 0.5
    empty: float = 0.0


@dataclass
class AnswerSignals:
    """What the detectors found in one answer; ``degenerate`` when any flag is set."""

    empty: bool
    echo: bool
    repetitive: bool
    broken: bool
    simplified: bool
    off_script: bool
    echo_share: float
    distinct_n: float
    loop_share: float
    simplified_share: float
    flags: list[str] = field(default_factory=list)

    @property
    def degenerate(self) -> bool:
        return bool(self.flags)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "degenerate": self.degenerate}


def _content(text: str) -> str:
    """Text without whitespace and punctuation: what the shares are measured on."""
    return "".join(ch for ch in text if not ch.isspace() and unicodedata.category(ch)[0] != "P")


def is_empty(text: str) -> bool:
    """Nothing a person could read: no letter, digit or ideograph."""
    return not any(ch.isalnum() for ch in text)


def has_broken_char(text: str) -> bool:
    """U+FFFD or a lone surrogate: a character was cut or mis-decoded somewhere."""
    return any(ch == REPLACEMENT_CHAR or 0xD800 <= ord(ch) <= 0xDFFF for ch in text)


def trim_partial_char(text: str) -> str:
    """Drop the U+FFFD run a decoder leaves when generation stopped inside a character.

    Called only on text that ended at ``max_tokens``: the bytes of the last character were not
    all generated, so the reply ends at the last whole character instead.
    """
    return text.rstrip(REPLACEMENT_CHAR)


def copied_share(answer: str, source: str, min_run: int = 6, allowed: str = "") -> float:
    """Share of the answer's content covered by runs of ``min_run`` or more characters copied
    from ``source`` (read left to right, longest run first at each position). Runs that
    ``allowed`` also holds do not count (a grounded answer may copy its passages). Unlike one
    longest run, this catches a question said twice and a prompt parroted in pieces."""
    a, src, ok = _content(answer), _content(source), _content(allowed)
    if not a or not src:
        return 0.0
    covered = i = 0
    while i < len(a):
        run = 0
        while i + run < len(a) and a[i : i + run + 1] in src:
            run += 1
        if run >= min_run:
            if not (ok and a[i : i + run] in ok):
                covered += run
            i += run
        else:
            i += 1
    return covered / len(a)


def echo_share(answer: str, sources: Iterable[str], min_run: int = 6, allowed: str = "") -> float:
    """Largest share of the answer's content copied from one source (``copied_share``)."""
    return max((copied_share(answer, s, min_run, allowed) for s in sources if s), default=0.0)


def _visible(text: str) -> str:
    """Text without whitespace, punctuation kept: a run of ？？？？ is a loop too."""
    return "".join(ch for ch in text if not ch.isspace())


def distinct_n(text: str, n: int = 3) -> tuple[float, int]:
    """(unique / total character n-grams, total) on the visible text; 1.0 when there are none."""
    content = _visible(text)
    grams = [content[i : i + n] for i in range(len(content) - n + 1)]
    if not grams:
        return 1.0, 0
    return len(set(grams)) / len(grams), len(grams)


def loop_share(text: str) -> float:
    """Share of the visible text inside back-to-back repeats of one chunk (3+ times in a row)."""
    content = _visible(text)
    if not content:
        return 0.0
    covered = sum(m.end() - m.start() for m in _BACK_TO_BACK.finditer(content))
    return covered / len(content)


@lru_cache(maxsize=1)
def _converters() -> tuple[Any, Any]:
    import opencc

    return opencc.OpenCC("s2t"), opencc.OpenCC("t2s")


def simplified_share(text: str) -> tuple[float, int]:
    """(share of Simplified-marked characters among script-marked ones, how many were marked).

    A character is Traditional-marked when OpenCC's t2s changes it (這, 會, 愛) and
    Simplified-marked when s2t changes it (这, 会, 爱). A few characters are valid in both and
    s2t still changes them (台, 里, 后); a Traditional answer has many more Traditional-marked
    characters than these, so the share stays low.
    """
    s2t, t2s = _converters()
    simp = trad = 0
    for ch in set(text):
        if not ("\u3400" <= ch <= "\u9fff"):
            continue
        count = text.count(ch)
        if t2s.convert(ch) != ch:
            trad += count
        elif s2t.convert(ch) != ch:
            simp += count
    marked = simp + trad
    return (simp / marked if marked else 0.0), simp


def latin_share(text: str) -> float:
    """Share of ASCII Latin letters among all letters and ideographs."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return 0.0
    return sum(ch.isascii() for ch in letters) / len(letters)


def answer_signals(
    answer: str,
    question: str = "",
    system_prompt: str = "",
    script: str = "hanji",
    settings: QualitySettings | None = None,
    allowed: str = "",
) -> AnswerSignals:
    """Run every detector on one answer.

    ``script`` is how the question was written (``hanji``, ``tailo``, ``zh``): a Tâi-lô question
    may be answered in Latin letters, the others may not. ``allowed`` is text the answer may
    copy without it counting as echo (the passages of a grounded answer).
    """
    s = settings or QualitySettings()
    empty = is_empty(answer)
    share = echo_share(answer, [system_prompt, question], s.echo_min_chars, allowed)
    echo = not empty and share > s.echo_share
    distinct, grams = distinct_n(answer, s.repetition_n)
    loops = loop_share(answer)
    repetitive = not empty and (
        (grams >= s.repetition_min_ngrams and distinct < s.distinct_floor) or loops >= s.loop_share
    )
    broken = has_broken_char(answer)
    simp_share, simp_count = simplified_share(answer)
    simplified = simp_count >= s.simplified_min_chars and simp_share > s.simplified_share
    off_script = script != "tailo" and not empty and latin_share(answer) > s.off_script_share
    flags = [
        name
        for name, on in (
            ("empty", empty),
            ("echo", echo),
            ("repetition", repetitive),
            ("broken", broken),
            ("simplified", simplified),
            ("off_script", off_script),
        )
        if on
    ]
    return AnswerSignals(
        empty,
        echo,
        repetitive,
        broken,
        simplified,
        off_script,
        share,
        distinct,
        loops,
        simp_share,
        flags,
    )


def confidence(
    token_logprobs: Sequence[float] | None,
    signals: AnswerSignals,
    weights: ConfidenceWeights | None = None,
) -> float | None:
    """exp(mean token log-prob) lowered by a factor per degenerate signal, in [0, 1].

    Mean log-prob alone is highest when the model copies text it has seen (its own prompt), so
    it ranks parroted answers as the most trustworthy. Each flag multiplies the score by its
    weight; the echo factor also scales with how much was copied, so a half-copied answer is
    lowered less than a whole copy. ``None`` without log-probs (the guard then holds nothing
    on confidence alone).
    """
    w = weights or ConfidenceWeights()
    if not token_logprobs:
        return None
    finite = [lp for lp in token_logprobs if math.isfinite(lp)]
    if not finite:
        return 0.0
    score = math.exp(min(0.0, sum(finite) / len(finite)))
    if signals.empty:
        score *= w.empty
    if signals.echo:
        score *= w.echo + (1 - w.echo) * (1 - min(1.0, signals.echo_share))
    if signals.repetitive:
        score *= w.repetition
    if signals.broken:
        score *= w.broken
    if signals.off_script:
        score *= w.off_script
    if signals.simplified:
        score *= w.simplified
    return max(0.0, min(1.0, score))
