from kfp import dsl
from kfp.dsl import Artifact, Input, Model

from components.image import TAIGIMED_IMAGE


@dsl.component(base_image=TAIGIMED_IMAGE)
def register(
    registry_root: str,
    candidate: Input[Model],
    results: Input[Artifact],
    verdict: Input[Artifact],
    index: Input[Artifact],
) -> str:
    """Store the passing candidate as a new registry version (model, card, metrics, verdict,
    and the retrieval index it serves, under the same version).

    Args:
        registry_root: file:// or s3:// registry root.
        candidate: stage 2's output; merged/ is stored.
        results: the evaluate step's output (the candidate's metrics).
        verdict: the gate's gate.json (registering a failed verdict is refused).
        index: the build-index step's output (its hash goes into the model card).
    Returns:
        the new version, e.g. v3.
    """
    from pathlib import Path

    from taigimed.pipeline.steps import register_step

    merged = str(Path(candidate.path) / "merged")
    return register_step(merged, results.path, verdict.path, registry_root, index.path)
