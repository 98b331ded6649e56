from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from components.image import TAIGIMED_IMAGE


@dsl.component(base_image=TAIGIMED_IMAGE)
def evaluate(
    profile: str,
    base_model: str,
    registry_root: str,
    overrides: str,
    data: Input[Dataset],
    candidate: Input[Model],
    index: Input[Artifact],
    results: Output[Artifact],
    metrics: Output[Metrics],
    report: Output[HTML],
):
    """Evaluate candidate, base and champion on the held-out sets (MCQ, perplexity, chrF, safety).

    Args:
        profile: config folder (uses its eval.yaml).
        base_model: the base model the candidate was trained from (for the gate's comparison).
        registry_root: file:// or s3:// registry; its champion is evaluated too.
        overrides: space-separated key=value overrides for eval.yaml.
        data: the prepare step's output (eval/ holds the eval sets).
        candidate: stage 2's output; its merged/ folder is the candidate.
        index: the build-index step's retrieval index (the one registered with the version):
            the candidate's answers are also scored grounded on it.
        results: per-model metrics and reports plus summary.json.
        metrics: the candidate's metrics for the KFP UI.
        report: the candidate's HTML report.
    """
    import shutil
    from pathlib import Path

    from taigimed.eval.report import log_kfp_metrics
    from taigimed.pipeline.steps import evaluate_step

    merged = str(Path(candidate.path) / "merged")
    summary = evaluate_step(
        profile,
        merged,
        data.path,
        base_model,
        registry_root,
        results.path,
        overrides,
        index_dir=index.path,
    )
    log_kfp_metrics(summary["candidate"], metrics)
    shutil.copyfile(Path(results.path) / "candidate" / "report.html", report.path)
