from kfp import dsl
from kfp.dsl import Dataset, Markdown, Output

from components.image import TAIGIMED_IMAGE


@dsl.component(base_image=TAIGIMED_IMAGE)
def prepare(
    profile: str,
    overrides: str,
    replay_fraction: float,
    fingerprint: str,
    base_model: str,
    data: Output[Dataset],
    report: Output[Markdown],
):
    """Clean, deduplicate and split the sources into stage datasets and eval sets.

    Args:
        profile: config folder, e.g. configs/demo-cpu (uses its data.yaml).
        overrides: space-separated key=value overrides for data.yaml.
        replay_fraction: share of stage-2 training examples replayed from stage 1 (0.2 = 20%).
        base_model: the model trained (the pipeline's base_model): the length filter counts
            tokens with its tokenizer.
        fingerprint: content hash of configs and sources; only here so that KFP's cache never
            reuses a result for changed data or config.
        data: stage1/stage2 JSONL, eval sets and the data report.
        report: the data report as Markdown.
    """
    import shutil
    from pathlib import Path

    from taigimed.pipeline.steps import prepare_step

    prepare_step(
        profile, overrides, data.path, replay_fraction=replay_fraction, base_model=base_model
    )
    shutil.copyfile(Path(data.path) / "data_report.md", report.path)
