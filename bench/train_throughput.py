"""Training throughput: packed rows vs the padded baseline, same data, same model, one run.

Both modes train one epoch over the same examples (a seeded subset of the demo's stage-2 train
set, which mixes short Taigi look-ups with long replayed medical questions) with the same LoRA
model and optimizer settings as ``configs/demo-cpu/train.yaml``: packed micro-batches are one
row of several whole examples with per-example attention, padded ones are ``batch_size`` rows
padded to their longest example. Steps of the two modes are
interleaved in proportion to their progress, so load from other processes on the machine hits
both alike. Throughput counts real (non-pad) tokens per second of forward + backward + optimizer
step; collation is included, model loading is not.

Writes ``bench/results/train_throughput.json`` with a top-level ``speedup`` (packed / padded).

    python bench/train_throughput.py [--data runs/demo/data] [--examples 96] [--max-len-reference]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import tempfile
import time
from pathlib import Path

import torch

from taigimed.config import load_config
from taigimed.models import load_tokenizer, resolve_model
from taigimed.train.config import TrainConfig
from taigimed.train.formatting import load_sft_examples
from taigimed.train.packing import DataPlan, collate_padded, make_batch
from taigimed.train.qlora import apply_lora, load_base_model, prepare_for_training
from taigimed.train.recipe import token_loss
from taigimed.utils import REPO_ROOT, git_commit, setup_logging, write_json

RESULT = REPO_ROOT / "bench" / "results" / "train_throughput.json"


def demo_data(data_dir: Path | None) -> Path:
    """Use a prepared data dir, or prepare the demo data into a temporary one."""
    if data_dir is not None:
        return data_dir
    from taigimed.data.config import DataConfig
    from taigimed.data.prepare import prepare

    out = Path(tempfile.mkdtemp(prefix="taigimed-bench-")) / "data"
    prepare(load_config(DataConfig, REPO_ROOT / "configs/demo-cpu/data.yaml"), out)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="prepared data dir (default: prepare the demo)")
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "configs/demo-cpu/train.yaml")
    parser.add_argument("--file", default="stage2_train.jsonl", help="which stage file to use")
    parser.add_argument("--examples", type=int, default=96, help="examples in the timed epoch")
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument(
        "--max-len-reference",
        action="store_true",
        help="also time the padded batches padded to max_seq_len (slow; a reference only)",
    )
    args = parser.parse_args()
    setup_logging("WARNING")

    cfg = load_config(TrainConfig, args.config)
    data = demo_data(args.data)
    model_dir = resolve_model(cfg.base_model)
    tokenizer = load_tokenizer(model_dir)
    examples, _ = load_sft_examples(data / args.file, tokenizer, cfg.max_seq_len)
    random.Random(cfg.seed).shuffle(examples)
    examples = examples[: args.examples]
    lengths = [len(e) for e in examples]

    torch.manual_seed(cfg.seed)
    model = apply_lora(
        prepare_for_training(load_base_model(model_dir), False, cfg.gradient_checkpointing),
        cfg.lora,
    )
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    pad_id = tokenizer.pad_token_id
    plans = {
        mode: DataPlan(lengths, cfg.batch_size, mode == "packed", cfg.max_seq_len, cfg.seed)
        for mode in ("padded", "packed")
    }
    if args.max_len_reference:  # the padded plan's batches, every row padded to max_seq_len
        plans["padded_max_len"] = plans["padded"]

    def step(mode: str, cursor: int) -> tuple[float, int, int]:
        started = time.perf_counter()
        if mode == "padded_max_len":
            rows = [examples[row[0]] for row in plans[mode].rows(cursor)]
            batch = collate_padded(rows, pad_id, width=cfg.max_seq_len)
        else:
            batch = make_batch(plans[mode], examples, cursor, pad_id)
        loss = token_loss(model, batch)
        (loss / max(1, batch.target_tokens)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started, batch.real_tokens, batch.input_ids.numel()

    for mode in plans:  # warm-up (allocator, kernels); not timed
        step(mode, 0)
    totals = {mode: {"seconds": 0.0, "tokens": 0, "slots": 0, "steps": 0} for mode in plans}
    done = dict.fromkeys(plans, 0)
    while any(done[m] < plans[m].batches_per_epoch for m in plans):
        # Run whichever mode is further behind, as a fraction of its epoch.
        mode = min(
            (m for m in plans if done[m] < plans[m].batches_per_epoch),
            key=lambda m: done[m] / plans[m].batches_per_epoch,
        )
        seconds, tokens, slots = step(mode, done[mode])
        done[mode] += 1
        t = totals[mode]
        t["seconds"] += seconds
        t["tokens"] += tokens
        t["slots"] += slots
        t["steps"] += 1
        print(
            f"{mode:6s} step {done[mode]:3d}/{plans[mode].batches_per_epoch}: "
            f"{tokens / seconds:7.0f} tokens/s"
        )

    result: dict = {}
    for mode, t in totals.items():
        t["tokens_per_s"] = round(t["tokens"] / t["seconds"], 1)
        t["padding_fraction"] = round(1 - t["tokens"] / t["slots"], 4)
        t["seconds"] = round(t["seconds"], 2)
        result[mode] = t
    speedup = result["packed"]["tokens_per_s"] / result["padded"]["tokens_per_s"]
    output = {
        "speedup": round(speedup, 3),
        "target": 1.5,
        "baseline": "padded: one example per row, padded to the longest example of its batch "
        "(the `packing: false` mode)",
        "padded": result["padded"],
        "packed": result["packed"],
        # What removing the baseline's padding alone would give.
        "padding_ceiling": round(1 / (1 - result["padded"]["padding_fraction"]), 3),
        # Seconds per packed token / seconds per padded slot (pad or not): 1.0 means a packed
        # token costs what a padded slot costs, so packing gains exactly the padding it removes.
        "packed_token_cost_vs_padded_slot": round(
            (result["packed"]["seconds"] / result["packed"]["slots"])
            / (result["padded"]["seconds"] / result["padded"]["slots"]),
            3,
        ),
        "setup": {
            "model": cfg.base_model,
            "data_file": args.file,
            "examples": len(examples),
            "tokens": sum(lengths),
            "example_tokens_min_median_max": [
                min(lengths),
                sorted(lengths)[len(lengths) // 2],
                max(lengths),
            ],
            "max_seq_len": cfg.max_seq_len,
            "batch_size": cfg.batch_size,
            "lora": {"rank": cfg.lora.rank, "target_modules": cfg.lora.target_modules},
            "device": "cpu",
            "threads": torch.get_num_threads(),
            "machine": platform.machine(),
            "torch": torch.__version__,
            "git_commit": git_commit(),
        },
    }
    extra: tuple[str, ...] = ()
    if "padded_max_len" in result:  # reference: fixed shapes, no dynamic padding
        extra = ("speedup_vs_max_len_padding",)
        output["padded_max_len"] = result["padded_max_len"]
        output["speedup_vs_max_len_padding"] = round(
            result["packed"]["tokens_per_s"] / result["padded_max_len"]["tokens_per_s"], 3
        )
    write_json(args.out, output)
    print(json.dumps({k: output[k] for k in ("speedup", "padding_ceiling", *extra)}))
    print(
        f"padded {result['padded']['tokens_per_s']} tokens/s, packed "
        f"{result['packed']['tokens_per_s']} tokens/s -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
