"""Build the index a model version serves: the configured sources plus approved answers.

The pipeline's index step calls ``build_index``: every source in ``retrieval.yaml`` (the
knowledge base, a hospital's leaflets, the demo's reviewed answers) plus any review-queue
exports handed in, read through the one reader, embedded, saved with its content hash.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from taigimed.retrieval.config import RetrievalConfig
from taigimed.retrieval.index import Embedder, HybridIndex
from taigimed.retrieval.knowledge import read_sources

log = logging.getLogger(__name__)


def resolve(path: str, home: Path | None) -> Path:
    """A config path relative to the project home (the repo, or the image's /app)."""
    candidate = Path(path)
    if candidate.is_absolute() or home is None:
        return candidate
    return home / candidate


def serving_rule(cfg: RetrievalConfig) -> dict[str, Any]:
    """What the guard needs from retrieval.yaml: how many passages, when to trust the best."""
    return {"top_k": cfg.top_k, "confidence": asdict(cfg.confidence)}


def build_in_memory(
    cfg: RetrievalConfig,
    extra_reviewed: Sequence[str | Path] = (),
    home: Path | None = None,
    embedder: Embedder | None = None,
) -> tuple[HybridIndex, list[Path]]:
    """Read and embed every source; the index (with the serving rule) and the files read.
    The evaluation grounds answers on this, the index step saves it: one build, two uses."""
    sources = [(resolve(s.path, home), s.kind) for s in cfg.sources]
    sources += [(Path(p), "reviewed") for p in extra_reviewed if Path(p).is_file()]
    passages = read_sources(sources)
    log.info("indexing %d passages from %d sources", len(passages), len(sources))
    index = HybridIndex.build(passages, embedder=embedder, settings=cfg.index)
    # the rule the guard serves travels with the index it was evaluated on
    index.serving = serving_rule(cfg)
    return index, [path for path, _ in sources]


def build_index(
    cfg: RetrievalConfig,
    out_dir: str | Path,
    extra_reviewed: Sequence[str | Path] = (),
    home: Path | None = None,
    embedder: Embedder | None = None,
) -> dict[str, Any]:
    """Read, embed and save; returns the manifest (passages, origins, content_hash)."""
    index, sources = build_in_memory(cfg, extra_reviewed, home, embedder)
    manifest = index.save(out_dir)
    manifest["sources"] = [str(path) for path in sources]
    return manifest
