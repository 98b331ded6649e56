"""``taigimed train --stage 1|2 --config ... --data ... --out ...``: one stage per call."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train one LoRA/QLoRA stage and merge it (stage 1: medical, stage 2: Taigi)",
        description="Train one stage: LoRA (or QLoRA on CUDA) on the stage's chat data, loss on "
        "assistant tokens only, then merge the adapter into the base. Writes adapter/, merged/, "
        "metrics.json, loss.png, MODEL_CARD.md and checkpoints/ under --out.",
        epilog="example: taigimed train --stage 1 --config configs/demo-cpu/train.yaml "
        "--data runs/demo/data --out runs/demo/stage1 lora.rank=16",
    )
    parser.add_argument("--stage", type=int, choices=[1, 2], required=True, help="1 or 2")
    parser.add_argument("--config", type=Path, required=True, help="train.yaml of a profile")
    parser.add_argument(
        "--data", type=Path, required=True, help="prepared data dir (stage*_train.jsonl ...)"
    )
    parser.add_argument("--out", type=Path, required=True, help="stage output dir")
    parser.add_argument(
        "--base",
        help="base model (default: the config's base_model for stage 1; "
        "<out>/../stage1/merged for stage 2)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint in --out"
    )
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. lora.rank=16")
    parser.set_defaults(func=run)


def default_base(stage: int, out: Path, config_base: str) -> str:
    """Stage 1 starts from the configured base; stage 2 from stage 1's merged model."""
    if stage == 1:
        return config_base
    return str(out.parent / "stage1" / "merged")


def run(args: argparse.Namespace) -> int:
    from taigimed.config import ConfigError, load_config
    from taigimed.models import ModelResolutionError
    from taigimed.train.config import TrainConfig
    from taigimed.train.recipe import train_stage

    try:
        cfg = load_config(TrainConfig, args.config, args.overrides)
        base = args.base or default_base(args.stage, args.out, cfg.base_model)
        if args.stage == 2 and not args.base and not Path(base).is_dir():
            raise ConfigError(
                f"stage 2 starts from stage 1's merged model, expected at {base}; run stage 1 "
                "first or pass --base"
            )
        metrics = train_stage(cfg, args.stage, args.data, args.out, base, resume=args.resume)
    except (ConfigError, ModelResolutionError, ValueError, FileNotFoundError) as err:
        log.error("%s", err)
        return 1
    print(
        f"stage {args.stage}: loss {metrics['first_loss']:.3f} -> {metrics['last_loss']:.3f}, "
        f"{metrics['tokens_per_s']:.0f} tokens/s; merged model in {args.out / 'merged'}"
    )
    return 0
