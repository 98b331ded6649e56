"""``taigimed retrieval build|search|eval``: the index outside the pipeline.

build:  read the sources of retrieval.yaml (plus --reviewed exports), embed, save to --out.
search: print the top-k passages for a question, with their scores and whether the guard
        would answer from the first one.
eval:   recall@k per split (tune, held-out) on the questions of retrieval.yaml; --out writes JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from taigimed.config import ConfigError, load_config

log = logging.getLogger(__name__)
DEFAULT_CONFIG = Path("configs/demo-cpu/retrieval.yaml")


def register(subparsers: Any) -> None:
    """Add ``retrieval`` to the ``taigimed`` command."""
    parser = subparsers.add_parser(
        "retrieval",
        help="retrieval index over approved knowledge: build, search, eval (recall@k)",
        description="Hybrid BM25 (character bigrams) + e5 index over the knowledge base and "
        "approved review answers (docs/retrieval.md).",
    )
    parser.add_argument("action", choices=["build", "search", "eval"])
    parser.add_argument("question", nargs="?", help="the question (search)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="(%(default)s)")
    parser.add_argument("--index", type=Path, help="a saved index folder (search, eval)")
    parser.add_argument("--out", type=Path, help="index folder (build) or report JSON (eval)")
    parser.add_argument(
        "--reviewed", type=Path, action="append", default=[], help="review export JSONL (build)"
    )
    parser.add_argument("-k", type=int, default=None, help="passages to show (search)")
    parser.add_argument("overrides", nargs="*", default=[], help="key=value config overrides")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from taigimed.retrieval.build import build_index
    from taigimed.retrieval.config import RetrievalConfig
    from taigimed.retrieval.index import HybridIndex, IndexFileError
    from taigimed.retrieval.knowledge import KnowledgeError, read_sources
    from taigimed.retrieval.recall import evaluate_retrieval, read_questions

    overrides = [o for o in args.overrides if "=" in o]
    try:
        cfg = load_config(RetrievalConfig, args.config, overrides)
        if args.action == "build":
            if not args.out:
                raise ConfigError("build needs --out FOLDER")
            manifest = build_index(cfg, args.out, args.reviewed)
            print(json.dumps(manifest, ensure_ascii=False, indent=2))
            return 0
        if args.index:
            index = HybridIndex.load(args.index)
        else:
            index = HybridIndex.build(read_sources((s.path, s.kind) for s in cfg.sources))
        if args.action == "search":
            if not args.question:
                raise ConfigError("search needs a question")
            for rank, hit in enumerate(index.search(args.question, args.k or cfg.top_k), 1):
                sure = "answer-from" if rank == 1 and cfg.confidence.accepts(hit) else ""
                print(f"{rank}. {hit.passage.id} {hit.passage.title} {hit.source()} {sure}")
                print(f"   {hit.passage.hanji}")
            return 0
        report = evaluate_retrieval(index, read_questions(cfg.questions), cfg.confidence)
        text = json.dumps(report, ensure_ascii=False, indent=2)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text + "\n", encoding="utf-8")
        print(text)
        return 0
    except (ConfigError, KnowledgeError, IndexFileError, OSError) as err:
        log.error("%s", err)
        return 1
