from kfp import dsl
from kfp.dsl import Artifact, Output

from components.image import TAIGIMED_IMAGE


@dsl.component(base_image=TAIGIMED_IMAGE)
def build_index(profile: str, overrides: str, index: Output[Artifact]) -> str:
    """Build the retrieval index over the knowledge base and every approved review answer.

    Args:
        profile: config folder (uses its retrieval.yaml: sources, fusion, confidence rule).
        overrides: space-separated key=value overrides for retrieval.yaml.
        index: the saved index (manifest.json with its content hash, passages, vectors, bm25/).
    Returns:
        the index's content hash (sha256), which the registry and the model card record.
    """
    from taigimed.pipeline.steps import index_step

    manifest = index_step(profile, overrides, index.path)
    index.metadata["content_hash"] = manifest["content_hash"]
    index.metadata["passages"] = manifest["passages"]
    return manifest["content_hash"]
