from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import TAIGIMED_IMAGE


@dsl.component(base_image=TAIGIMED_IMAGE)
def train_stage1(
    profile: str,
    base_model: str,
    overrides: str,
    data: Input[Dataset],
    model: Output[Model],
    metrics: Output[Metrics],
):
    """Stage 1: LoRA on medical QA from the base model, merged into model1.

    Args:
        profile: config folder (uses its train.yaml).
        base_model: model name, directory or hub id; empty means train.yaml's base_model.
        overrides: space-separated key=value overrides for train.yaml.
        data: the prepare step's output.
        model: stage folder (adapter/, merged/, metrics.json, loss.png, MODEL_CARD.md).
        metrics: training metrics for the KFP UI.
    """
    from taigimed.pipeline.steps import train_step

    result = train_step(profile, 1, data.path, base_model, model.path, overrides)
    for name in ("last_loss", "val_loss_after", "tokens_per_s", "trainable_params"):
        if isinstance(result.get(name), int | float):
            metrics.log_metric(name, float(result[name]))


@dsl.component(base_image=TAIGIMED_IMAGE)
def train_stage2(
    profile: str,
    overrides: str,
    data: Input[Dataset],
    stage1: Input[Model],
    model: Output[Model],
    metrics: Output[Metrics],
):
    """Stage 2: a new LoRA on stage 1's merged model with Taigi data plus medical replay.

    Args:
        profile: config folder (uses its train.yaml).
        overrides: space-separated key=value overrides for train.yaml.
        data: the prepare step's output.
        stage1: stage 1's output; training starts from its merged/ weights.
        model: stage folder with the merged candidate in merged/.
        metrics: training metrics for the KFP UI.
    """
    from pathlib import Path

    from taigimed.pipeline.steps import train_step

    base = str(Path(stage1.path) / "merged")
    result = train_step(profile, 2, data.path, base, model.path, overrides)
    for name in ("last_loss", "val_loss_after", "tokens_per_s", "trainable_params"):
        if isinstance(result.get(name), int | float):
            metrics.log_metric(name, float(result[name]))
