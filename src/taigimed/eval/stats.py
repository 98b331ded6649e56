"""Statistics the gate needs so that noise is not read as progress (pure functions).

* ``wilson_interval``: a 95% interval for an accuracy; on 16 questions it is about ±0.22 wide,
  on 200 about ±0.06, so a reader sees at once how much a difference of 0.06 means.
* ``mcnemar_exact``: the paired test on the same questions. Only the questions where the two
  models disagree carry information; under "no difference" each disagreement goes either way
  with probability 1/2, so the two-sided p-value is a binomial tail. Comparing two point
  estimates ignores that pairing and, on a few questions, calls noise a regression (or hides
  one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

Z95 = 1.959963984540054


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of ``successes / n`` (fractional successes allowed); (0, 1) if n=0."""
    if n <= 0:
        return 0.0, 1.0
    p = min(1.0, max(0.0, successes / n))
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class PairedTest:
    """Exact McNemar test of candidate vs reference on the items both answered."""

    n: int  # items in common
    candidate_only: int  # candidate right, reference wrong
    reference_only: int  # reference right, candidate wrong
    p_value: float
    candidate_accuracy: float
    reference_accuracy: float

    @property
    def worse(self) -> bool:
        """The candidate lost more of the disagreements than it won."""
        return self.reference_only > self.candidate_only

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs (1.0 when none)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_test(candidate: Mapping[str, bool], reference: Mapping[str, bool]) -> PairedTest:
    """McNemar on per-item correctness keyed by item id (only ids present in both count)."""
    common = sorted(set(candidate) & set(reference))
    b = sum(bool(candidate[i]) and not reference[i] for i in common)
    c = sum(bool(reference[i]) and not candidate[i] for i in common)
    n = len(common)
    return PairedTest(
        n,
        b,
        c,
        mcnemar_exact(b, c),
        sum(bool(candidate[i]) for i in common) / n if n else 0.0,
        sum(bool(reference[i]) for i in common) / n if n else 0.0,
    )
