"""Training throughput against TRL's ``SFTTrainer`` (padding-free BFD packing), same everything.

Both arms train stage 1 of the demo for one epoch over the same examples, back to back in one
run, each in its own process (so peak RSS is the arm's own):

* ``taigimed``: ``taigimed train``'s recipe (:class:`taigimed.train.recipe.StageRecipe`, the
  ``configs/demo-cpu/train.yaml`` settings): first-fit-decreasing bins of ``max_seq_len``, a
  micro-batch of ``batch_size`` bins as one unpadded row with per-example attention and the
  shared system prompt held once, loss only over the positions that predict a target;
* ``trl``: ``trl.SFTTrainer`` with ``packing=True, packing_strategy="bfd"`` (which turns on
  padding-free batches): ``per_device_train_batch_size`` = the same ``batch_size`` packed
  sequences of the same ``max_length`` flattened into one row with ``position_ids``.

Held the same: the base model (SmolLM2-135M-Instruct converted from the packaged GGUF), the
LoRA settings (rank, alpha, dropout, target modules, seeded init), the tokenised examples (ids
and assistant-only labels from :func:`taigimed.train.formatting.load_sft_examples`, given to
TRL as ``input_ids`` + ``completion_mask``), fp32 on CPU, AdamW with the same learning rate,
weight decay and gradient clipping, and the recipe's own warm-up + cosine schedule (passed to
TRL as its optimizer/scheduler pair, so the two learning-rate curves are the same function).
Each arm trains every example exactly once (one epoch), so both train the same tokens; the
step counts are those of each packer (they agree when both find the same number of bins).

Throughput = the examples' tokens / wall seconds of the training loop (data collation, forward,
backward, optimizer; not model loading or dataset preparation; the recipe's checkpoint writes
are switched off because TRL's arm saves nothing). Equal loss is checked on what both arms can
be compared on: the validation loss before training (same model, must match), after training
(same examples, same schedule), and the mean training loss of the epoch; per-step losses come
from different bins in each arm, so only their curves are reported, not compared step by step.

Writes ``bench/results/train_vs_trl.json``. Needs ``.venv-bench`` (``make bench-env``)::

    .venv-bench/bin/python bench/train_vs_trl.py [--examples 0] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import _common

from taigimed.config import load_config
from taigimed.train.config import TrainConfig
from taigimed.utils import REPO_ROOT, setup_logging, write_json

RESULT = _common.RESULTS / "train_vs_trl.json"
GOAL = 1.2
# Relative tolerances for "equal loss" (see the module docstring for why these three figures).
TOL_VAL_BEFORE = 0.001  # same model, same examples: only float noise
TOL_VAL_AFTER = 0.03  # same data and schedule; dropout draws and bin order differ
TOL_MEAN_TRAIN = 0.05  # each step averages other bins, so the epoch mean is the fair figure
# A micro-batch of 4 bins of 512 tokens holds ~3-4 GB of fp32 activations; on the shared 2-core
# machine (up to 8 people, ~4 GB a process) the bench trains one bin per step. Both arms get it.
SHARED_MACHINE_OVERRIDES = ("batch_size=1",)


def load_cfg(args: argparse.Namespace) -> TrainConfig:
    overrides = ["stage1.max_steps=0", f"stage1.epochs={args.epochs}", "checkpoint_every=0"]
    return load_config(TrainConfig, args.config, overrides + list(args.set or []))


def subset_data(source: Path, examples: int, out: Path) -> Path:
    """Stage-1 train (first ``examples`` lines, 0 = all) and val files in a fresh data dir."""
    out.mkdir(parents=True, exist_ok=True)
    lines = (source / "stage1_train.jsonl").read_text(encoding="utf-8").splitlines(True)
    (out / "stage1_train.jsonl").write_text(
        "".join(lines[:examples] if examples else lines), encoding="utf-8"
    )
    shutil.copy(source / "stage1_val.jsonl", out / "stage1_val.jsonl")
    return out


# ---- the arms (each runs in its own process) ----------------------------------------------
def arm_taigimed(cfg: TrainConfig, data: Path, epochs: int) -> dict[str, Any]:
    """The recipe's own setup and train loop, timed around ``train()``."""
    from taigimed.train.recipe import StageRecipe

    out = Path(tempfile.mkdtemp(prefix="bench-taigimed-"))
    recipe = StageRecipe(cfg, 1, data, out / "stage1", cfg.base_model)
    recipe.preflight()
    recipe.setup()
    recipe.save_checkpoint = lambda: None  # I/O is not what is measured (TRL saves nothing)
    started = time.perf_counter()
    recipe.train()
    seconds = time.perf_counter() - started
    val_after = recipe.evaluate()
    shutil.rmtree(out, ignore_errors=True)
    return {
        "steps": recipe.step,
        "tokens": sum(r["tokens"] for r in recipe.history),
        "computed_positions": sum(r["computed_tokens"] for r in recipe.history),
        "target_tokens": sum(r["target_tokens"] for r in recipe.history),
        "train_seconds": round(seconds, 2),
        "loss_curve": [round(r["loss"], 4) for r in recipe.history],
        "lr_curve": [r["lr"] for r in recipe.history],
        "val_loss_before": recipe.val_loss_before,
        "val_loss_after": val_after,
    }


def arm_trl(cfg: TrainConfig, data: Path, epochs: int) -> dict[str, Any]:
    """TRL's SFTTrainer with BFD packing (padding-free) on the same tokenised examples."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from taigimed.models import load_tokenizer, resolve_model
    from taigimed.train.formatting import IGNORE_INDEX, load_sft_examples
    from taigimed.train.packing import collate_padded
    from taigimed.train.recipe import StageRecipe, token_loss

    settings = cfg.stage(1)
    model_dir = resolve_model(cfg.base_model)
    tokenizer = load_tokenizer(model_dir)
    examples, _ = load_sft_examples(data / "stage1_train.jsonl", tokenizer, cfg.max_seq_len)
    val, _ = load_sft_examples(data / "stage1_val.jsonl", tokenizer, cfg.max_seq_len)
    val = val[: cfg.eval_examples]
    dataset = Dataset.from_dict(
        {
            "input_ids": [e.input_ids for e in examples],
            "completion_mask": [[int(x != IGNORE_INDEX) for x in e.labels] for e in examples],
        }
    )

    torch.manual_seed(cfg.seed)
    base = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=torch.float32, attn_implementation="sdpa"
    )
    lora = cfg.lora
    model = get_peft_model(
        base,
        LoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            bias="none",
            task_type="CAUSAL_LM",
        ),
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        trainable, lr=settings.learning_rate, weight_decay=cfg.weight_decay
    )
    # The recipe's schedule, read from the recipe itself (one source); total set once packed.
    schedule = SimpleNamespace(cfg=cfg, total_steps=1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: StageRecipe.lr_factor(schedule, step)
    )

    @torch.no_grad()
    def val_loss() -> float:
        model.eval()
        total = count = 0.0
        for i in range(0, len(val), cfg.batch_size):
            batch = collate_padded(val[i : i + cfg.batch_size], tokenizer.pad_token_id)
            total += token_loss(model, batch).item()
            count += batch.target_tokens
        model.train()
        return total / max(1.0, count)

    val_before = val_loss()
    out = tempfile.mkdtemp(prefix="bench-trl-")
    args = SFTConfig(
        output_dir=out,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        num_train_epochs=epochs,
        max_grad_norm=cfg.max_grad_norm,
        learning_rate=settings.learning_rate,
        weight_decay=cfg.weight_decay,
        packing=True,
        packing_strategy="bfd",
        padding_free=True,
        max_length=cfg.max_seq_len,
        completion_only_loss=True,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        fp16=False,
        seed=cfg.seed,
        data_seed=cfg.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        optimizers=(optimizer, scheduler),
    )
    # Optimizer steps of the whole run: the dataloader is one epoch (an earlier version used it
    # alone, so TRL's schedule decayed twice as fast and its later losses were higher).
    schedule.total_steps = epochs * len(trainer.get_train_dataloader()) // cfg.grad_accum
    packed_lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    logs = [r for r in trainer.state.log_history if "loss" in r and "step" in r]
    val_after = val_loss()
    shutil.rmtree(out, ignore_errors=True)
    return {
        "steps": trainer.state.global_step,
        "tokens": sum(packed_lengths) * epochs,  # every packed sequence once per epoch
        "packed_sequences": len(packed_lengths),
        "target_tokens": sum(sum(m[1:]) for m in dataset["completion_mask"]) * epochs,
        "train_seconds": round(seconds, 2),
        "loss_curve": [round(r["loss"], 4) for r in logs],
        "lr_curve": [r.get("learning_rate") for r in logs],
        "val_loss_before": val_before,
        "val_loss_after": val_after,
        "attn_implementation": base.config._attn_implementation,
    }


ARMS = {"taigimed": arm_taigimed, "trl": arm_trl}


def run_one_arm(args: argparse.Namespace) -> int:
    setup_logging("WARNING")
    cfg = load_cfg(args)
    result = ARMS[args.arm](cfg, args.data, args.epochs)
    result["peak_rss_mb"] = _common.peak_rss_mb()
    result["tokens_per_s"] = round(result["tokens"] / result["train_seconds"], 1)
    Path(args.arm_out).write_text(json.dumps(result))
    print(
        f"{args.arm}: {result['steps']} steps, {result['tokens']} tokens in "
        f"{result['train_seconds']} s = {result['tokens_per_s']} tokens/s, "
        f"peak RSS {result['peak_rss_mb']} MB, val loss {result['val_loss_before']:.4f} -> "
        f"{result['val_loss_after']:.4f}",
        flush=True,
    )
    return 0


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-12)


def compare_losses(ours: dict[str, Any], peer: dict[str, Any]) -> dict[str, Any]:
    """The three equal-loss checks, each with its tolerance and verdict."""
    mean_ours = sum(ours["loss_curve"]) / len(ours["loss_curve"])
    mean_peer = sum(peer["loss_curve"]) / len(peer["loss_curve"])
    checks = {
        "val_loss_before": (ours["val_loss_before"], peer["val_loss_before"], TOL_VAL_BEFORE),
        "val_loss_after": (ours["val_loss_after"], peer["val_loss_after"], TOL_VAL_AFTER),
        "mean_train_loss": (mean_ours, mean_peer, TOL_MEAN_TRAIN),
    }
    out: dict[str, Any] = {}
    for name, (a, b, tol) in checks.items():
        out[name] = {
            "taigimed": round(a, 4),
            "trl": round(b, 4),
            "relative_difference": round(rel(a, b), 4),
            "tolerance": tol,
            "agree": rel(a, b) <= tol,
        }
    out["all_agree"] = all(v["agree"] for v in out.values())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, help="prepared data dir (default: prepare the demo)")
    parser.add_argument("--config", type=Path, default=REPO_ROOT / "configs/demo-cpu/train.yaml")
    parser.add_argument("--examples", type=int, default=4, help="stage-1 examples (0 = all)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs over them (both arms)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="rounds of both arms; even rounds run TRL first"
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=list(SHARED_MACHINE_OVERRIDES),
        help="train config overrides for both arms, key=value (default: %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=RESULT)
    parser.add_argument("--arm", choices=sorted(ARMS), help=argparse.SUPPRESS)
    parser.add_argument("--arm-out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.arm:
        return run_one_arm(args)
    skip = _common.missing_module_line("trl", "train_vs_trl")
    if skip:
        print(skip)
        return 0
    setup_logging("WARNING")

    workdir = Path(tempfile.mkdtemp(prefix="bench-train-vs-trl-"))
    data = subset_data(_common.demo_data(args.data), args.examples, workdir / "data")
    extra = ["--data", str(data), "--config", str(args.config), "--epochs", str(args.epochs)]
    if args.set:
        extra += ["--set", *args.set]
    runs: dict[str, list[dict[str, Any]]] = {"taigimed": [], "trl": []}
    with _common.LoadSampler() as load:
        for r in range(args.rounds):
            order = ("taigimed", "trl") if r % 2 == 0 else ("trl", "taigimed")
            for arm in order:
                runs[arm].append(_common.run_arm(Path(__file__), arm, extra))
    shutil.rmtree(workdir, ignore_errors=True)

    def total(arm: str) -> dict[str, Any]:
        tokens = sum(x["tokens"] for x in runs[arm])
        seconds = sum(x["train_seconds"] for x in runs[arm])
        return {
            "tokens_per_s": round(tokens / seconds, 1),
            "peak_rss_mb": max(x["peak_rss_mb"] for x in runs[arm]),
            "steps": runs[arm][0]["steps"],
            "tokens": runs[arm][0]["tokens"],
        }

    ours, peer = total("taigimed"), total("trl")
    losses = compare_losses(runs["taigimed"][0], runs["trl"][0])
    speedup = round(ours["tokens_per_s"] / peer["tokens_per_s"], 3)
    cfg = load_cfg(args)
    output = {
        "speedup_vs_trl": speedup,
        "goal": GOAL,
        "meets_goal": speedup >= GOAL and losses["all_agree"],
        "equal_loss": losses,
        "same_tokens": ours["tokens"] == peer["tokens"],
        "taigimed": ours,
        "trl": peer,
        "runs": runs,
        "load": load.summary(),
        "setup": {
            "model": cfg.base_model,
            "data": "stage1_train.jsonl of the demo data (configs/demo-cpu/data.yaml)",
            "epochs": args.epochs,
            "examples": args.examples or "all",
            "max_seq_len": cfg.max_seq_len,
            "batch_size": cfg.batch_size,
            "grad_accum": cfg.grad_accum,
            "learning_rate": cfg.stage(1).learning_rate,
            "lora": {
                "rank": cfg.lora.rank,
                "alpha": cfg.lora.alpha,
                "dropout": cfg.lora.dropout,
                "target_modules": cfg.lora.target_modules,
            },
            "precision": "fp32, CPU",
            "rounds": args.rounds,
            "trl_settings": "SFTTrainer, packing=True, packing_strategy=bfd, padding_free=True, "
            "completion_only_loss=True (completion_mask = the recipe's labels), sdpa attention",
            **_common.environment(),
        },
    }
    write_json(args.out, output)
    print(
        json.dumps(
            {
                "speedup_vs_trl": speedup,
                "taigimed_tokens_per_s": ours["tokens_per_s"],
                "trl_tokens_per_s": peer["tokens_per_s"],
                "equal_loss": losses["all_agree"],
                "load_avg": output["load"]["load_avg_1min_mean"],
            }
        )
        + f" -> {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
