"""What a stage leaves for people: the loss plot and the model card.

(``metrics.json`` is written by the recipe with ``taigimed.utils.write_json``; this module turns
those metrics into a picture and a card.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from taigimed.config import dump_yaml
from taigimed.utils import atomic_open


def plot_loss(metrics: dict[str, Any], path: Path) -> None:
    """Training loss per optimizer step (raw and smoothed), validation loss before/after."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = metrics["loss_curve"]
    steps = [point["step"] for point in curve]
    losses = [point["loss"] for point in curve]
    smooth, value = [], None
    for loss in losses:
        value = loss if value is None else 0.8 * value + 0.2 * loss
        smooth.append(value)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(steps, losses, color="#9ab", linewidth=1, label="train loss (per step)")
    ax.plot(steps, smooth, color="#137", linewidth=2, label="train loss (EMA 0.8)")
    val_before, val_after = metrics.get("val_loss_before"), metrics.get("val_loss_after")
    if val_before is not None and val_after is not None and steps:
        ax.scatter(
            [0, steps[-1]], [val_before, val_after], color="#c40", zorder=3, label="val loss"
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss (nats / assistant token)")
    mode = "packed" if metrics.get("packing") else "padded"
    ax.set_title(
        f"stage {metrics['stage']}: {Path(str(metrics['base_model'])).name} "
        f"({mode}, {metrics.get('tokens_per_s', 0):.0f} tokens/s)"
    )
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png")
    plt.close(fig)


def batching(metrics: dict[str, Any]) -> str:
    """How the stage batched its examples, in words (with the compute a shared prefix saved)."""
    if not metrics["packing"]:
        return "padded (one example per row)"
    text = "packed (per-example attention)"
    tokens, computed = metrics.get("train_tokens"), metrics.get("computed_tokens")
    if metrics.get("share_prefix") and tokens and computed is not None:
        text += f"; shared prefixes held once: {computed:,} of {tokens:,} tokens computed"
    return text


def model_card(metrics: dict[str, Any], config: Any) -> str:
    """Markdown card: base, data hashes, config, commit, tracking run, results, limits."""
    data_rows = "\n".join(
        f"| `{name}` | {info['examples']} | `{info['sha256']}` |"
        for name, info in metrics["data"].items()
    )

    def fmt(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    results = [
        ("optimizer steps", metrics["steps"]),
        (
            "train loss first -> last",
            f"{fmt(metrics['first_loss'])} -> {fmt(metrics['last_loss'])}",
        ),
        (
            "val loss before -> after",
            f"{fmt(metrics['val_loss_before'])} -> {fmt(metrics['val_loss_after'])}",
        ),
        ("training tokens/s", f"{metrics['tokens_per_s']:.1f}"),
        ("trainable parameters", f"{metrics['trainable_params']:,} of {metrics['total_params']:,}"),
        ("peak memory (MB)", fmt(metrics["peak_memory_mb"])),
        ("train wall time (s)", fmt(metrics["train_seconds"])),
    ]
    result_rows = "\n".join(f"| {k} | {v} |" for k, v in results)
    notes = f"\n> **Note:** {metrics['device_note']}\n" if metrics.get("device_note") else ""
    stage_text = (
        "Stage 1: medical chat SFT on the base model."
        if metrics["stage"] == 1
        else "Stage 2: Taigi SFT (plus a replay slice of stage-1 data) on stage 1's merged model."
    )
    return f"""# TaigiMed stage {metrics["stage"]} model

{stage_text} LoRA adapter trained with `taigimed train`, then merged into the base weights.
{notes}
| | |
| --- | --- |
| base model | `{metrics["base_model"]}` |
| base model licence | {metrics.get("base_licence") or "-"} |
| base weights sha256 | `{metrics["base_weights_sha256"]}` |
| merged weights sha256 | `{metrics.get("merged_weights_sha256", "-")}` |
| git commit | `{metrics["git_commit"]}` |
| MLflow run | `{metrics.get("mlflow_run_id") or "not tracked (MLFLOW_TRACKING_URI unset)"}` |
| device | {metrics["device"]} (quantization: {metrics["quantization"]}) |
| batches | {batching(metrics)} |

## Data

| file | examples | sha256 |
| --- | --- | --- |
{data_rows}

## Results

| | |
| --- | --- |
{result_rows}

![loss](loss.png)

## Training configuration

```yaml
{dump_yaml(config).rstrip()}
```

## Intended use and limits

A research prototype of a Taiwanese Hokkien medical *advisor*: general health information only.
It can be wrong, it is not a clinician, and it must be served behind TaigiMed's guardrails
(disclaimer, red-flag escalation, referral of prescription questions). Check the evaluation
report and the promotion gate before any use.
"""
