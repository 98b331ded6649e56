"""The chain's fast learned part: a softmax classifier over character n-grams of folded text.

The embedding detector (``taigimed.triage.detector``) generalises furthest, but one
multilingual-e5-small query costs ~25 ms on one core of the CPU profile, five times the
guard's triage budget. Characters carry most of a Hàn-jī or Mandarin symptom on their own
(痛, 喘, 昏, 血), and 1-3 character n-grams of the *folded* text (so Tâi-lô, POJ, full-width and
variant spellings meet) catch combinations the phrase lists never wrote down, in well under a
millisecond and with no model to load.

Features are binary (an n-gram is present or not) and L2-normalised per text, so a message
that repeats one word 3,500 times scores like the word said once. Three more features are cue
groups from ``taigimed.guardrails`` (an information or history frame, a doctor's explanation,
words that say something is small or over): n-grams cannot see that 「小可仔流血」 and
"no fever, acting normal" say the same thing, but one feature that fires for both is seen in
enough training items to get its weight. Only n-grams seen in at least
two training texts are kept: the weights file stays small and a typo seen once does not become
a feature. Trained by ``taigimed.triage.train`` on the suite's train split (plus v1); thresholds
chosen on the dev split; the test split is never read.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from taigimed import guardrails
from taigimed.triage.detector import LABELS, CachedDetector, WeightsError, fit_softmax
from taigimed.triage.normalise import fold

DEFAULT_NGRAM_WEIGHTS = Path(__file__).with_name("ngram_weights.json")
NGRAM_SIZES = (1, 2, 3)
MIN_TEXTS = 2  # an n-gram becomes a feature when at least this many training texts hold it
_SKIP = set(" \t\n，。、！？；：,.!?;:「」『』（）()…~～-")


# Cue groups, each one feature: present when any phrase of the group is in the folded text.
CUE_GROUPS: dict[str, tuple[str, ...]] = {
    "cue:info": guardrails.INFO_FRAMES,
    "cue:resolved": guardrails.RESOLVED_FRAMES,
    "cue:reassure": guardrails.REASSURANCE_CUES,
}
CUE_VALUE = 0.5  # a cue's feature value; an n-gram's is 1/sqrt(n-grams in the text)


def ngrams(text: str, sizes: tuple[int, ...] = NGRAM_SIZES) -> set[str]:
    """The distinct character n-grams of the folded text, punctuation dropped."""
    return _folded_ngrams(fold(text), sizes)


def _folded_ngrams(norm: str, sizes: tuple[int, ...] = NGRAM_SIZES) -> set[str]:
    chars = "".join(c for c in norm if c not in _SKIP)
    return {chars[i : i + n] for n in sizes for i in range(len(chars) - n + 1)}


def cues(text: str) -> set[str]:
    """The cue groups with a phrase in ``text`` (matched as the rules match, on folded text)."""
    return _folded_cues(fold(text))


def _folded_cues(norm: str) -> set[str]:
    return {
        name
        for name, phrases in CUE_GROUPS.items()
        if any(guardrails.contains(norm, p, fold) for p in phrases)
    }


@dataclass
class NgramWeights:
    """A trained n-gram classifier: one weight row per kept n-gram, thresholds, provenance."""

    vocab: dict[str, int]  # n-gram -> column of ``weight``
    weight: np.ndarray  # (k, V)
    bias: np.ndarray  # (k,)
    labels: tuple[str, ...] = LABELS
    thresholds: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def features(self, texts: list[str]) -> np.ndarray:
        """(n, V) binary n-gram presence, each row L2-normalised (an empty row stays zero), and
        ``CUE_VALUE`` in the column of each cue group present (weights trained with them)."""
        x = np.zeros((len(texts), len(self.vocab)), dtype=np.float32)
        with_cues = any(name in self.vocab for name in CUE_GROUPS)
        for row, text in enumerate(texts):
            norm = fold(text)  # once per text: n-grams and cues read the same folded form
            columns = [self.vocab[g] for g in _folded_ngrams(norm) if g in self.vocab]
            if columns:
                x[row, columns] = 1.0 / np.sqrt(len(columns))
            if with_cues:
                x[row, [self.vocab[c] for c in _folded_cues(norm) if c in self.vocab]] = CUE_VALUE
        return x

    def probabilities(self, texts: list[str]) -> np.ndarray:
        """(n, k) class probabilities."""
        z = self.features(texts) @ self.weight.T + self.bias
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def to_json(self) -> dict[str, Any]:
        """n-grams sorted with their weights rounded to 4 decimals: small, diffable."""
        order = sorted(self.vocab, key=self.vocab.get)
        return {
            "labels": list(self.labels),
            "thresholds": {k: round(v, 6) for k, v in self.thresholds.items()},
            "meta": self.meta,
            "bias": np.round(self.bias.astype(np.float64), 4).tolist(),
            "ngrams": {
                g: np.round(self.weight[:, self.vocab[g]].astype(np.float64), 4).tolist()
                for g in order
            },
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> NgramWeights:
        grams = list(obj["ngrams"])
        weight = np.asarray([obj["ngrams"][g] for g in grams], dtype=np.float32).T
        return cls(
            vocab={g: i for i, g in enumerate(grams)},
            weight=weight.reshape(len(obj["labels"]), len(grams)),
            bias=np.asarray(obj["bias"], dtype=np.float32),
            labels=tuple(obj["labels"]),
            thresholds={k: float(v) for k, v in obj.get("thresholds", {}).items()},
            meta=dict(obj.get("meta", {})),
        )


def load_ngram_weights(path: str | Path = "") -> NgramWeights:
    path = Path(path) if path else DEFAULT_NGRAM_WEIGHTS
    try:
        return NgramWeights.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError) as exc:
        raise WeightsError(f"{path}: cannot load triage n-gram weights: {exc}") from exc


def fit_ngram(
    texts: list[str], targets: np.ndarray, l2: float = 1e-3, lr: float = 2.0, steps: int = 1500
) -> NgramWeights:
    """Class-balanced softmax regression over the n-grams at least ``MIN_TEXTS`` texts hold.

    No standardisation: the features are already on one scale, and dividing a rare n-gram by
    its tiny spread would give it the largest weight of all."""
    counts = Counter(g for text in texts for g in ngrams(text))
    kept = sorted(g for g, c in counts.items() if c >= MIN_TEXTS) + list(CUE_GROUPS)
    k = len(LABELS)
    probe = NgramWeights({g: i for i, g in enumerate(kept)}, np.zeros((k, len(kept))), np.zeros(k))
    fitted = fit_softmax(
        probe.features(texts), targets, len(LABELS), l2=l2, steps=steps, lr=lr, standardise=False
    )
    probe.weight, probe.bias = fitted.weight, fitted.bias
    return probe


class NgramDetector(CachedDetector):
    """The n-gram classifier behind the chain's common detector interface."""

    def __init__(self, weights: NgramWeights, cache_size: int = 512) -> None:
        super().__init__(weights.thresholds, weights.labels, cache_size)
        self.weights = weights

    def _probabilities(self, text: str) -> tuple[float, ...]:
        return tuple(float(p) for p in self.weights.probabilities([text])[0])
