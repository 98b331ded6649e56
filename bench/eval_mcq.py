"""Benchmark: MedQA scoring throughput, batched against one option at a time, same model, one run.

Scores the same questions three ways with SmolLM2-135M and checks they agree:

* ``one_by_one``: one forward pass per (question, option), the naive baseline;
* ``batched_full``: all options of ``batch_questions`` questions as whole sequences per pass;
* ``batched``: the default path: each prompt once, its KV cache reused for every option.

Writes ``bench/results/eval_mcq.json`` with questions/s for each and the top-level ``speedup``
(batched ÷ one-by-one). Target >= 3. Usage::

    python bench/eval_mcq.py [--questions 60] [--batch-questions 8]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from taigimed.eval.config import MCQConfig
from taigimed.eval.mcq import encode, load_mcq, option_logprobs
from taigimed.models import SMOLLM2_NAME, load_causal_lm, load_tokenizer, resolve_model
from taigimed.utils import REPO_ROOT, write_json

SHARED_DEV = REPO_ROOT.parent / "shared" / "data" / "medqa_tw" / "dev.jsonl"
DEMO_DEV = REPO_ROOT / "data" / "demo" / "medqa_demo.jsonl"


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=60, help="questions scored each way")
    parser.add_argument("--batch-questions", type=int, default=8)
    parser.add_argument("--data", type=Path, help="MedQA JSONL (default ../shared dev set)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/eval_mcq.json")
    args = parser.parse_args()

    data = args.data or (SHARED_DEV if SHARED_DEV.is_file() else DEMO_DEV)
    model_dir = resolve_model(SMOLLM2_NAME)
    tokenizer = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir, device="cpu")
    items = load_mcq(data, max_questions=args.questions)
    cfg = MCQConfig(batch_questions=args.batch_questions)
    encoded = [encode(tokenizer, item, cfg) for item in items]
    n = len(encoded)

    # warm-up (first-call allocations) on two questions, not timed
    option_logprobs(model, tokenizer, encoded[:2], cfg, mode="batched", progress=False)

    runs = {}
    scores = {}
    for name, mode, share in (
        ("one_by_one", "one_by_one", False),
        ("batched_full", "batched", False),
        ("batched", "batched", True),
    ):
        c = dataclasses.replace(cfg, share_prompt_cache=share)
        scores[name], seconds = timed(
            lambda mode=mode, c=c: option_logprobs(model, tokenizer, encoded, c, mode=mode)
        )
        runs[name] = {"seconds": round(seconds, 2), "questions_per_s": round(n / seconds, 4)}
        print(f"{name}: {n} questions in {seconds:.1f} s ({n / seconds:.3f} q/s)", flush=True)

    def max_diff(a, b):
        return max(
            abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True)
        )

    result = {
        "benchmark": "eval_mcq",
        "speedup": round(
            runs["batched"]["questions_per_s"] / runs["one_by_one"]["questions_per_s"], 2
        ),
        "speedup_batched_full": round(
            runs["batched_full"]["questions_per_s"] / runs["one_by_one"]["questions_per_s"], 2
        ),
        "target_speedup": 3.0,
        "runs": runs,
        "max_abs_logprob_diff_vs_one_by_one": {
            k: round(max_diff(scores[k], scores["one_by_one"]), 6)
            for k in ("batched", "batched_full")
        },
        "model": SMOLLM2_NAME,
        "data": str(data.name),
        "questions": n,
        "options": sum(len(e.options) for e in encoded),
        "mean_prompt_tokens": round(sum(len(e.prompt) for e in encoded) / n, 1),
        "mean_continuation_tokens": round(
            sum(len(c) for e in encoded for c in e.options) / sum(len(e.options) for e in encoded),
            1,
        ),
        "batch_questions": args.batch_questions,
        "continuation": cfg.continuation,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "note": "CPU shared with other jobs: absolute q/s vary with load; the ratio is taken "
        "within one run on the same questions",
    }
    write_json(args.out, result)
    print(json.dumps({"speedup": result["speedup"], "out": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
