"""Training throughput: packed rows vs the padded baseline, same data, same model, one run.

Three modes train one epoch over the same examples (a seeded subset of the demo's stage-2 train
set, which mixes short Taigi look-ups with long replayed medical questions) with the same LoRA
model and optimizer settings as ``configs/demo-cpu/train.yaml``:

* ``padded`` (the baseline, ``packing: false``): ``batch_size`` rows, one example each, padded
  to the longest example of the batch;
* ``packed`` (the default path, ``packing: true``): the same examples in bins, each micro-batch
  one unpadded row with per-example attention, the micro-batch's shared prefix (system prompt
  and role header) held once;
* ``packed_no_sharing`` (``share_prefix: false``): the same rows with every example whole, so
  the gain of packing alone and of prefix sharing can be told apart.

Steps of the modes are interleaved in proportion to their progress, so load from other processes
on the machine hits all alike. Throughput counts the examples' own tokens (no padding; a shared
prefix once per example, as the unshared row holds it) per second of forward + backward +
optimizer step: every mode trains exactly these tokens. Collation is included, model loading
is not.

Writes ``bench/results/train_throughput.json`` with a top-level ``speedup`` (packed / padded)
and ``speedup_packing_only`` (packed_no_sharing / padded).

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
    padded = DataPlan(lengths, cfg.batch_size, False, cfg.max_seq_len, cfg.seed)
    packed = DataPlan(lengths, cfg.batch_size, True, cfg.max_seq_len, cfg.seed)
    plans = {"padded": padded, "packed": packed, "packed_no_sharing": packed}
    if args.max_len_reference:  # the padded plan's batches, every row padded to max_seq_len
        plans["padded_max_len"] = padded

    def step(mode: str, cursor: int) -> tuple[float, int, int]:
        started = time.perf_counter()
        if mode == "padded_max_len":
            rows = [examples[row[0]] for row in plans[mode].rows(cursor)]
            batch = collate_padded(rows, pad_id, width=cfg.max_seq_len)
        else:
            batch = make_batch(plans[mode], examples, cursor, pad_id, mode == "packed")
        loss = token_loss(model, batch)
        (loss / max(1, batch.target_tokens)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - started, batch.real_tokens, batch.computed_tokens

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
            f"{mode:17s} step {done[mode]:3d}/{plans[mode].batches_per_epoch}: "
            f"{tokens / seconds:7.0f} tokens/s"
        )

    result: dict = {}
    for mode, t in totals.items():
        t["tokens_per_s"] = round(t["tokens"] / t["seconds"], 1)
        # slots = positions computed: padded rows include their padding; a packed row with a
        # shared prefix holds it once, so its slots are fewer than its tokens.
        t["slots_per_token"] = round(t["slots"] / t["tokens"], 4)
        t["seconds"] = round(t["seconds"], 2)
        result[mode] = t

    def ratio(mode: str, baseline: str = "padded") -> float:
        return round(result[mode]["tokens_per_s"] / result[baseline]["tokens_per_s"], 3)

    def cost_per_slot(mode: str) -> float:
        return result[mode]["seconds"] / result[mode]["slots"]

    output = {
        "speedup": ratio("packed"),
        "target": 1.5,
        "baseline": "padded: one example per row, padded to the longest example of its batch "
        "(the `packing: false` mode)",
        "speedup_packing_only": ratio("packed_no_sharing"),
        "speedup_of_prefix_sharing": ratio("packed", "packed_no_sharing"),
        "padded": result["padded"],
        "packed": result["packed"],
        "packed_no_sharing": result["packed_no_sharing"],
        # What removing the baseline's padding alone would give.
        "padding_ceiling": round(result["padded"]["slots_per_token"], 3),
        # ... and what removing padding plus the repeated prefixes would give.
        "compute_ceiling": round(
            result["padded"]["slots_per_token"] / result["packed"]["slots_per_token"], 3
        ),
        # Seconds per computed position of each packed mode / seconds per padded slot (pad or
        # not): 1.0 means a packed position costs what a padded slot costs, so packing gains
        # exactly the positions it removes. Attention to a shared prefix makes positions of
        # the shared row a little dearer.
        "slot_cost_vs_padded": {
            mode: round(cost_per_slot(mode) / cost_per_slot("padded"), 3)
            for mode in ("packed", "packed_no_sharing")
        },
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
        output["speedup_vs_max_len_padding"] = ratio("packed", "padded_max_len")
    write_json(args.out, output)
    headline = ("speedup", "speedup_packing_only", "padding_ceiling", "compute_ceiling", *extra)
    print(json.dumps({k: output[k] for k in headline}))
    print(
        ", ".join(f"{mode} {t['tokens_per_s']} tokens/s" for mode, t in result.items())
        + f" -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
