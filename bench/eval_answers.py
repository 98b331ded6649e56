"""Benchmark: answer-quality task cost on the demo model, batched against one-by-one, one run.

Answers the same questions of the answer-quality set (dev split) twice with SmolLM2-135M, greedy,
under the serving system prompt: in left-padded batches (what ``taigimed evaluate`` does) and
one question at a time. Reports answers/s of each, the ratio (the machine is shared: only the
ratio of arms measured in the same run means something, with the load average beside it), and
how many answers came out identical (greedy decoding; left padding may flip a near-tie).

Writes ``bench/results/eval_answers.json``. Usage::

    python bench/eval_answers.py [--answers 16] [--batch-size 8] [--max-new-tokens 32]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

from taigimed.eval.answers import (
    chat_prompt,
    generate_answers,
    load_answer_items,
    resolve_system_prompt,
)
from taigimed.eval.config import AnswersConfig
from taigimed.models import SMOLLM2_NAME, load_causal_lm, load_tokenizer, resolve_model
from taigimed.utils import REPO_ROOT, write_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--answers", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench/results/eval_answers.json")
    args = parser.parse_args(argv)

    cfg = AnswersConfig()
    items = [i for i in load_answer_items([REPO_ROOT / f for f in cfg.files]) if i.split == "dev"]
    items = items[: args.answers]
    model_dir = resolve_model(SMOLLM2_NAME)
    tokenizer = load_tokenizer(model_dir)
    model = load_causal_lm(model_dir, dtype="float32", device="cpu")
    system = resolve_system_prompt(cfg)
    prompts = [chat_prompt(tokenizer, system, i.question) for i in items]
    generate_answers(model, tokenizer, prompts[:2], 4, 2)  # warm-up

    load_before = os.getloadavg()
    runs, texts = {}, {}
    for arm, batch in (("one_by_one", 1), ("batched", args.batch_size)):
        start = time.perf_counter()
        out = generate_answers(model, tokenizer, prompts, args.max_new_tokens, batch)
        seconds = time.perf_counter() - start
        runs[arm] = {"seconds": round(seconds, 2), "answers_per_s": round(len(out) / seconds, 4)}
        texts[arm] = [g.text for g in out]
    load_after = os.getloadavg()
    same = sum(a == b for a, b in zip(texts["one_by_one"], texts["batched"], strict=True))
    result = {
        "benchmark": "eval_answers",
        "speedup": round(runs["batched"]["answers_per_s"] / runs["one_by_one"]["answers_per_s"], 2),
        "runs": runs,
        "identical_answers": same,
        "answers": len(items),
        "batch_size": args.batch_size,
        "max_new_tokens": args.max_new_tokens,
        "model": SMOLLM2_NAME,
        "load_average_1m": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)},
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "note": "shared 2-core machine: compare the arms of this run, not absolute answers/s",
    }
    write_json(args.out, result)
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
