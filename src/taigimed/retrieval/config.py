"""Retrieval configuration (``<profile>/retrieval.yaml``): sources, fusion, confidence rule.

One file is read by the pipeline's index step (which sources, how to fuse), by the guard (how
many passages, when a match is good enough to answer from) and by the quality evaluation, so
the served configuration is the evaluated one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from taigimed.config import ConfigError
from taigimed.retrieval.index import Hit, IndexSettings
from taigimed.retrieval.knowledge import SourceKind


@dataclass
class SourceSpec:
    """One JSONL file of knowledge: ``passages`` (knowledge base, leaflets) or ``reviewed``
    (answers approved in the review queue)."""

    path: str
    kind: SourceKind = "passages"


@dataclass
class Confidence:
    """When the best hit is good enough to answer from. Both must hold: the cosine keeps
    paraphrases in, the token overlap keeps out questions e5 finds vaguely "health-like".
    Chosen on the tune split of data/knowledge/questions.jsonl only (docs/retrieval.md)."""

    min_dense: float = 0.885  # cosine of question and passage (e5 cosines sit in 0.75-0.95)
    min_overlap: float = 0.2  # share of the question's bigrams found in the passage

    def accepts(self, hit: Hit | None) -> bool:
        return hit is not None and hit.dense >= self.min_dense and hit.overlap >= self.min_overlap

    def validate(self) -> None:
        if not (0.0 <= self.min_dense <= 1.0 and 0.0 <= self.min_overlap <= 1.0):
            raise ConfigError("confidence.min_dense and min_overlap must be between 0 and 1")


@dataclass
class RetrievalConfig:
    """Everything about retrieval one profile decides."""

    sources: list[SourceSpec] = field(
        default_factory=lambda: [
            SourceSpec("data/knowledge/passages.jsonl", "passages"),
            SourceSpec("data/demo/reviewed_answers.jsonl", "reviewed"),
        ]
    )
    questions: str = "data/knowledge/questions.jsonl"  # the recall@k set (tune + held-out)
    top_k: int = 3  # passages retrieved per question (and shown as sources)
    index: IndexSettings = field(default_factory=IndexSettings)
    confidence: Confidence = field(default_factory=Confidence)

    def validate(self) -> None:
        if self.top_k < 1:
            raise ConfigError("top_k must be at least 1")
        if not self.sources:
            raise ConfigError("sources must name at least one knowledge file")
