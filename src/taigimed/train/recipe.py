"""One training stage, top to bottom: preflight, setup, train, save, merge, report.

  stage 1: base model      --LoRA on stage1_train.jsonl-->     adapter/ --merge--> merged/ = model1
  stage 2: stage 1 merged/ --new LoRA on stage2_train.jsonl--> adapter/ --merge--> merged/

Why a plain PyTorch loop and not ``transformers.Trainer``: every requirement of this stage is a
few visible lines here -- the exact data order as a function of (seed, cursor) so ``--resume``
replays it, packed batches with per-example attention, loss summed over assistant tokens and
divided by the step's token count (so gradient accumulation weighs tokens, not micro-batches),
atomic checkpoints with RNG state, and a simulated crash for tests. With Trainer each of these is
an override or callback whose interaction with the others has to be trusted rather than read.

Each stage directory ends up with ``adapter/``, ``merged/``, ``metrics.json``, ``loss.png``,
``MODEL_CARD.md`` and ``checkpoints/``. Every artifact is written atomically, so a killed run
leaves the earlier ones intact, and a stage that finished is never half-overwritten.
"""

from __future__ import annotations

import logging
import math
import resource
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from taigimed.config import ConfigError, to_dict
from taigimed.models import base_licence, load_tokenizer, resolve_model, write_model_dir
from taigimed.spec import (
    ModelSpec,
    fingerprint,
    read_spec,
    trained_system_prompt,
    with_default_system_prompt,
    write_spec,
)
from taigimed.train import checkpoint as ckpt
from taigimed.train.config import TrainConfig
from taigimed.train.formatting import IGNORE_INDEX, TokenizedExample, load_sft_examples
from taigimed.train.packing import PACKED_SDPA, Batch, DataPlan, collate_padded, make_batch
from taigimed.train.qlora import (
    apply_lora,
    count_parameters,
    load_base_model,
    plan_device,
    prepare_for_training,
    weights_sha256,
)
from taigimed.train.report import model_card, plot_loss
from taigimed.train.tracking import make_tracker
from taigimed.utils import atomic_open, git_commit, sha256_file, write_json

log = logging.getLogger(__name__)

MERGE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class SimulatedCrash(RuntimeError):
    """Raised by the ``stop_after_steps`` test hook to stand in for a killed process."""


def train_stage(
    cfg: TrainConfig,
    stage: int,
    data_dir: Path,
    out_dir: Path,
    base_model: str | Path,
    resume: bool = False,
) -> dict[str, Any]:
    """Train one stage end to end and return its metrics (also written to metrics.json)."""
    return StageRecipe(cfg, stage, data_dir, out_dir, base_model, resume).run()


class StageRecipe:
    """The stage as named steps, so tests can stop after ``setup`` and inspect the model."""

    def __init__(
        self,
        cfg: TrainConfig,
        stage: int,
        data_dir: Path,
        out_dir: Path,
        base_model: str | Path,
        resume: bool = False,
    ):
        self.cfg = cfg
        self.stage = stage
        self.data_dir = Path(data_dir)
        self.out_dir = Path(out_dir)
        self.base_model = base_model
        self.resume = resume
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.history: list[dict[str, Any]] = []
        self.step = 0
        self.cursor = 0  # micro-batches consumed so far (the data-order position)
        self.run_tokens = 0
        self.run_seconds = 0.0

    def run(self) -> dict[str, Any]:
        self.preflight()
        self.setup()
        try:
            self.train()
        except BaseException:
            self.tracker.finish("KILLED")
            raise
        self.save_adapter()
        self.merge()
        return self.finish()

    # ---- 1. preflight: everything that can fail without loading a model -----------------
    def preflight(self) -> None:
        """Fail in seconds, before any training, on a config or input that cannot work."""
        self.cfg.validate()
        self.settings = self.cfg.stage(self.stage)
        train_name, val_name = self.settings.files(self.stage)
        self.train_file = self.data_dir / train_name
        self.val_file = self.data_dir / val_name
        needed = [self.train_file] + ([self.val_file] if self.cfg.eval_examples else [])
        for path in needed:
            if not path.is_file():
                raise ConfigError(
                    f"stage {self.stage} data file {path} not found; run `taigimed prepare "
                    f"--out {self.data_dir}` first, or fix stage{self.stage}.train_file/val_file"
                )
        if not self.resume and ckpt.latest_checkpoint(self.ckpt_dir) is not None:
            raise ConfigError(
                f"{self.ckpt_dir} already holds checkpoints from an earlier run; pass --resume "
                "to continue it, or choose a new --out (nothing was overwritten)"
            )
        self.device_plan = plan_device(self.cfg)
        self.base_dir = resolve_model(self.base_model)

    # ---- 2. setup: data, model, adapter, optimizer, and the resume state ------------------
    def setup(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.tokenizer = load_tokenizer(self.base_dir)
        self.examples, self.format_report = load_sft_examples(
            self.train_file, self.tokenizer, cfg.max_seq_len
        )
        self.val_examples: list[TokenizedExample] = []
        if cfg.eval_examples:
            val, _ = load_sft_examples(self.val_file, self.tokenizer, cfg.max_seq_len)
            self.val_examples = val[: cfg.eval_examples]
        self.plan = DataPlan(
            [len(e) for e in self.examples], cfg.batch_size, cfg.packing, cfg.max_seq_len, cfg.seed
        )
        if self.settings.max_steps:
            self.total_steps = self.settings.max_steps
        else:
            self.total_steps = self.plan.steps_for(self.settings.epochs, cfg.grad_accum)

        dp = self.device_plan
        self.base_sha256 = weights_sha256(self.base_dir)
        model = load_base_model(
            self.base_dir, dp.quantization, dp.dtype, dp.device, cfg.attn_implementation
        )
        model = prepare_for_training(model, dp.quantization != "none", cfg.gradient_checkpointing)
        self.model = apply_lora(model, cfg.lora)
        self.trainable_params, self.total_params = count_parameters(self.model)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            trainable, lr=self.settings.learning_rate, weight_decay=cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.lr_factor)
        self.fingerprint = self.make_fingerprint()

        resumed = ckpt.latest_checkpoint(self.ckpt_dir) if self.resume else None
        run_id = None
        if resumed is not None:
            state = ckpt.load_checkpoint(resumed, self.model, self.optimizer, self.scheduler)
            self.check_fingerprint(state["fingerprint"], resumed)
            self.step, self.cursor = state["step"], state["cursor"]
            self.history = state["history"]
            self.val_loss_before = state["val_loss_before"]
            run_id = state.get("mlflow_run_id")
            log.info("resumed from %s (step %d, cursor %d)", resumed, self.step, self.cursor)
        elif self.resume:
            log.info("--resume: no checkpoint in %s, starting from step 0", self.ckpt_dir)
        self.resumed_from = self.step if resumed is not None else None
        self.tracker = make_tracker(
            cfg.mlflow_experiment, f"{self.out_dir.parent.name}-stage{self.stage}", run_id
        )
        if resumed is None:
            self.tracker.log_params(
                {"stage": self.stage, "base_model": str(self.base_model), **to_dict(cfg)}
            )
            self.val_loss_before = self.evaluate()
        log.info(
            "stage %d: %d examples (%d tokens), %d %s micro-batches/epoch, %d steps; "
            "padding share if unpacked %.0f%%; trainable %s of %s params; %s",
            self.stage,
            len(self.examples),
            sum(len(e) for e in self.examples),
            self.plan.batches_per_epoch,
            "packed" if cfg.packing else "padded",
            self.total_steps,
            100
            * DataPlan(
                [len(e) for e in self.examples], cfg.batch_size, False, cfg.max_seq_len, cfg.seed
            ).padding_fraction(),
            f"{self.trainable_params:,}",
            f"{self.total_params:,}",
            f"{dp.device} {dp.quantization} {dp.dtype}",
        )

    def lr_factor(self, step: int) -> float:
        """Linear warm-up, then cosine or linear decay to 10% of the peak (or constant)."""
        warmup = self.cfg.warmup_steps
        if step < warmup:
            return (step + 1) / warmup
        if self.cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, self.total_steps - warmup))
        if self.cfg.schedule == "linear":
            return 1.0 - 0.9 * progress
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

    def make_fingerprint(self) -> dict[str, Any]:
        """The settings that decide data order and the optimisation path; resume requires them."""
        cfg = self.cfg
        return {
            "stage": self.stage,
            "seed": cfg.seed,
            "batch_size": cfg.batch_size,
            "grad_accum": cfg.grad_accum,
            "packing": cfg.packing,
            "share_prefix": cfg.shares_prefix,
            "max_seq_len": cfg.max_seq_len,
            "lora": to_dict(cfg.lora),
            "stage_settings": to_dict(self.settings),
            "train_sha256": sha256_file(self.train_file),
            "base_weights_sha256": self.base_sha256,
        }

    def check_fingerprint(self, saved: dict[str, Any], where: Path) -> None:
        changed = sorted(k for k in saved if saved[k] != self.fingerprint.get(k))
        if changed:
            raise ConfigError(
                f"cannot resume from {where}: {', '.join(changed)} changed since it was saved "
                "(the data order or model would differ); restore them or start a new --out"
            )

    # ---- 3. train ---------------------------------------------------------------------------
    def train(self) -> None:
        from tqdm.auto import tqdm

        cfg, model = self.cfg, self.model
        model.train()
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc=f"stage {self.stage}",
            unit="step",
            dynamic_ncols=True,
        )
        with bar:
            while self.step < self.total_steps:
                started = time.perf_counter()
                record = self.train_step()
                seconds = time.perf_counter() - started
                self.run_tokens += record["tokens"]
                self.run_seconds += seconds
                record["seconds"] = round(seconds, 4)
                self.history.append(record)
                self.tracker.log_metrics(
                    {
                        "loss": record["loss"],
                        "lr": record["lr"],
                        "tokens_per_s": record["tokens"] / seconds,
                    },
                    step=self.step,
                )
                bar.update(1)
                bar.set_postfix(
                    loss=f"{record['loss']:.3f}", tok_s=f"{self.run_tokens / self.run_seconds:.0f}"
                )
                every = cfg.checkpoint_every
                if self.step == self.total_steps or (every and self.step % every == 0):
                    self.save_checkpoint()
                if cfg.stop_after_steps and self.step == cfg.stop_after_steps:
                    raise SimulatedCrash(f"stop_after_steps={cfg.stop_after_steps} reached")

    def train_step(self) -> dict[str, Any]:
        """One optimizer step over ``grad_accum`` micro-batches; loss = mean over their targets."""
        cfg = self.cfg
        pad_id = self.tokenizer.pad_token_id
        batches = [
            make_batch(self.plan, self.examples, self.cursor + i, pad_id, cfg.shares_prefix)
            for i in range(cfg.grad_accum)
        ]
        self.cursor += cfg.grad_accum
        targets = max(1, sum(b.target_tokens for b in batches))
        loss_sum = 0.0
        for batch in batches:
            batch = batch.to(self.device_plan.device)
            loss = token_loss(self.model, batch)
            (loss / targets).backward()
            loss_sum += loss.item()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {
            "step": self.step,
            "loss": loss_sum / targets,
            "lr": lr,
            "grad_norm": float(grad_norm),
            "tokens": sum(b.real_tokens for b in batches),
            "computed_tokens": sum(b.computed_tokens for b in batches),
            "target_tokens": targets,
        }

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean loss per assistant token on the first ``eval_examples`` val examples."""
        if not self.val_examples:
            return None
        was_training = self.model.training
        self.model.eval()
        total = count = 0.0
        size = self.cfg.batch_size
        for i in range(0, len(self.val_examples), size):
            batch = collate_padded(self.val_examples[i : i + size], self.tokenizer.pad_token_id)
            batch = batch.to(self.device_plan.device)
            total += token_loss(self.model, batch).item()
            count += batch.target_tokens
        self.model.train(was_training)
        return total / max(1.0, count)

    def save_checkpoint(self) -> None:
        state = {
            "cursor": self.cursor,
            "history": self.history,
            "fingerprint": self.fingerprint,
            "val_loss_before": self.val_loss_before,
            "mlflow_run_id": self.tracker.run_id,
        }
        ckpt.save_checkpoint(
            self.ckpt_dir,
            self.step,
            self.model,
            self.optimizer,
            self.scheduler,
            state,
            self.cfg.keep_checkpoints,
        )

    # ---- 4. save the adapter, 5. merge it into the base ------------------------------------
    def save_adapter(self) -> None:
        self.val_loss_after = self.evaluate()
        write_model_dir(self.model, self.tokenizer, self.out_dir / "adapter")

    def merge(self) -> None:
        """Reload the base unquantised, apply the saved adapter, fold it into the weights.

        Merging from the saved adapter (not the in-memory model) proves the adapter on disk
        is complete, and works the same when training used a 4-bit base: the merge happens
        in ``merge_dtype`` so the merged model carries no quantisation error of its own.
        """
        from peft import PeftModel

        del self.model, self.optimizer  # free the training copy first (matters for 8B)
        base = load_base_model(
            self.base_dir, "none", MERGE_DTYPES[self.cfg.merge_dtype], "cpu", "sdpa"
        )
        merged = PeftModel.from_pretrained(base, self.out_dir / "adapter").merge_and_unload()
        spec = self.model_spec()
        self.tokenizer.chat_template = spec.chat_template  # the trained prompt as the default
        write_model_dir(merged, self.tokenizer, self.out_dir / "merged")
        write_spec(self.out_dir / "merged", spec)
        self.merged_sha256 = weights_sha256(self.out_dir / "merged")

    def model_spec(self) -> ModelSpec:
        """What every later stage must agree with: base id, trained prompt, lengths, hashes."""
        earlier = read_spec(self.base_dir)  # stage 2 starts from stage 1's merged model
        prompt = trained_system_prompt(self.train_file)
        template = getattr(self.tokenizer, "chat_template", None)
        return ModelSpec(
            base_model=earlier.base_model if earlier else str(self.base_model),
            system_prompt=prompt,
            max_seq_len=self.cfg.max_seq_len,
            chat_template=with_default_system_prompt(template, prompt),
            stage=self.stage,
            fingerprints={
                "train_sha256": sha256_file(self.train_file),
                "train_config_sha256": fingerprint(to_dict(self.cfg)),
                "base_weights_sha256": self.base_sha256,
                **(
                    {"stage1_train_sha256": earlier.fingerprints.get("train_sha256", "")}
                    if earlier
                    else {}
                ),
            },
        )

    # ---- 6. report ----------------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        metrics = self.metrics()
        write_json(self.out_dir / "metrics.json", metrics)
        plot_loss(metrics, self.out_dir / "loss.png")
        with atomic_open(self.out_dir / "MODEL_CARD.md") as fh:
            fh.write(model_card(metrics, self.cfg))
        self.tracker.log_metrics(
            {k: metrics[k] for k in ("tokens_per_s", "val_loss_after") if metrics[k] is not None}
        )
        self.tracker.log_artifacts(
            [self.out_dir / n for n in ("metrics.json", "loss.png", "MODEL_CARD.md")]
        )
        self.tracker.finish()
        log.info(
            "stage %d done: loss %.3f -> %.3f, val %s -> %s, %.0f tokens/s; wrote %s",
            self.stage,
            metrics["first_loss"],
            metrics["last_loss"],
            _fmt(metrics["val_loss_before"]),
            _fmt(metrics["val_loss_after"]),
            metrics["tokens_per_s"],
            self.out_dir,
        )
        return metrics

    def base_licence(self) -> str:
        """The licence of the original base model (stage 2's base is stage 1's merge of it)."""
        earlier = read_spec(self.base_dir)
        return base_licence(earlier.base_model if earlier else self.base_model)

    def metrics(self) -> dict[str, Any]:
        dp = self.device_plan
        data = {
            self.train_file.name: {
                "sha256": sha256_file(self.train_file),
                "examples": len(self.examples),
            }
        }
        if self.val_examples:
            data[self.val_file.name] = {
                "sha256": sha256_file(self.val_file),
                "examples": len(self.val_examples),
            }
        return {
            "stage": self.stage,
            "base_model": str(self.base_model),
            "base_licence": self.base_licence(),
            "base_dir": str(self.base_dir),
            "base_weights_sha256": self.base_sha256,
            "merged_weights_sha256": self.merged_sha256,
            "packing": self.cfg.packing,
            "share_prefix": self.cfg.shares_prefix,
            "steps": self.step,
            "resumed_from_step": self.resumed_from,
            "first_loss": self.history[0]["loss"] if self.history else None,
            "last_loss": self.history[-1]["loss"] if self.history else None,
            "val_loss_before": self.val_loss_before,
            "val_loss_after": self.val_loss_after,
            "tokens_per_s": self.run_tokens / self.run_seconds if self.run_seconds else 0.0,
            "train_tokens": sum(p["tokens"] for p in self.history),
            # Positions the model ran: fewer than train_tokens when a shared prefix is held once.
            "computed_tokens": sum(p.get("computed_tokens", p["tokens"]) for p in self.history),
            "train_seconds": round(self.run_seconds, 2),
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "peak_memory_mb": peak_memory_mb(dp.device),
            "device": dp.device,
            "quantization": dp.quantization,
            "device_note": dp.note,
            "data": data,
            "format": self.format_report.as_dict(),
            "git_commit": git_commit(),
            "mlflow_run_id": self.tracker.run_id,
            "config": to_dict(self.cfg),
            "loss_curve": self.history,
        }


def token_loss(model: Any, batch: Batch) -> torch.Tensor:
    """Summed cross-entropy over the batch's target (assistant) tokens.

    Summed, not averaged, so the caller can divide by the whole step's target count: with
    gradient accumulation every token then weighs the same, whatever micro-batch it is in.
    The output layer runs only on the positions that predict a target: with a 49k-token
    vocabulary the logits of prompt and padding positions would cost as much as a small model's
    layers and change nothing. (This assumes a plain ``lm_head``, as in Llama-family models;
    models that post-process logits, e.g. with soft-capping, are not supported here.)
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    packed: dict[str, Any] = {}
    if batch.segment_lengths is not None:
        if causal_lm.config._attn_implementation != PACKED_SDPA:
            raise ValueError(
                "a packed batch needs per-example attention: load the model with "
                "taigimed.train.qlora.load_base_model(..., attn_implementation='sdpa'), "
                f"not {causal_lm.config._attn_implementation!r}, or set packing=false"
            )
        packed["segment_lengths"] = batch.segment_lengths
        packed["shared_prefix"] = batch.shared_prefix
    decoder = getattr(causal_lm, causal_lm.base_model_prefix)
    hidden = decoder(
        input_ids=batch.input_ids,
        attention_mask=batch.attention_mask,
        position_ids=batch.position_ids,
        use_cache=False,
        **packed,
    ).last_hidden_state
    targets = batch.labels[:, 1:]
    keep = targets != IGNORE_INDEX
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][keep]).float()
    return F.cross_entropy(logits, targets[keep], reduction="sum")


def peak_memory_mb(device: str) -> float:
    """Peak GPU memory allocated (CUDA) or the process's peak resident memory (CPU), in MB."""
    if device == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
