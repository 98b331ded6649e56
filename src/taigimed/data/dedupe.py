"""Exact and near-duplicate detection on normalised text.

Near-duplicates are pairs whose character n-gram sets have Jaccard similarity at least a
threshold ``t``. Candidates are found by prefix filtering (a standard set-similarity join):
order all n-grams by a fixed global order (rarest first), index only the first
``|B| - ceil(t*|B|) + 1`` n-grams of each text, and probe with the same prefix of the query.
Two texts with Jaccard >= t share at least ``ceil(t*|A|)`` n-grams, so their prefixes must
meet: no near-duplicate is missed, and candidates are scored exactly, so the result is
deterministic (unlike MinHash). Because the prefixes hold the rare n-grams, candidate lists are
short: 1,412 MedQA questions dedupe in a fraction of a second.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable

from taigimed.data.normalise import dedupe_key


def shingles(key: str, n: int) -> frozenset[str]:
    """Character n-grams of a normalised key (the whole key when it is shorter than n)."""
    if len(key) <= n:
        return frozenset([key]) if key else frozenset()
    return frozenset(key[i : i + n] for i in range(len(key) - n + 1))


class DuplicateIndex:
    """Texts seen so far; answers "is this an exact or near duplicate of one of them?"."""

    def __init__(self, ngram: int = 3, threshold: float = 0.8, min_chars: int = 12):
        self.ngram = ngram
        self.threshold = threshold
        self.min_chars = min_chars
        self.rank: dict[str, int] = {}
        self.exact: dict[str, str] = {}
        self.sets: dict[str, list[frozenset[str]]] = defaultdict(list)
        self.postings: dict[str, list[str]] = defaultdict(list)

    def __len__(self) -> int:
        return len(self.exact)

    def fit(self, texts: Iterable[str]) -> DuplicateIndex:
        """Order n-grams rarest first using ``texts`` (call before ``add``; speed only)."""
        if self.exact:
            raise RuntimeError("fit() must come before add(): the prefix order must not change")
        df: Counter[str] = Counter()
        for text in texts:
            df.update(shingles(dedupe_key(text), self.ngram))
        self.rank = {gram: count for gram, count in df.items()}
        return self

    def _prefix(self, grams: frozenset[str]) -> list[str]:
        # Unknown n-grams rank as rarest; ties break on the n-gram itself: a total order.
        ordered = sorted(grams, key=lambda g: (self.rank.get(g, 0), g))
        overlap = math.ceil(self.threshold * len(grams) - 1e-9)
        return ordered[: len(grams) - overlap + 1]

    def add(self, item_id: str, text: str) -> None:
        key = dedupe_key(text)
        self.exact.setdefault(key, item_id)
        if len(key) >= self.min_chars:
            grams = shingles(key, self.ngram)
            self.sets[item_id].append(grams)
            for gram in self._prefix(grams):
                self.postings[gram].append(item_id)

    def match(self, text: str) -> tuple[str, str, float] | None:
        """``(kind, matched_id, similarity)`` for the best duplicate, or None.

        ``kind`` is ``"exact"`` (same normalised key) or ``"near"`` (Jaccard >= threshold).
        """
        key = dedupe_key(text)
        if key in self.exact:
            return "exact", self.exact[key], 1.0
        if len(key) < self.min_chars or not self.sets:
            return None
        grams = shingles(key, self.ngram)
        candidates = sorted({c for g in self._prefix(grams) for c in self.postings.get(g, ())})
        best: tuple[str, str, float] | None = None
        for other in candidates:
            for other_grams in self.sets[other]:
                score = jaccard(grams, other_grams)
                if score >= self.threshold and (best is None or score > best[2]):
                    best = ("near", other, round(score, 4))
        return best


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter) if inter else 0.0
