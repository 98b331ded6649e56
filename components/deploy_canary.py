from kfp import dsl

from components.image import TAIGIMED_IMAGE


@dsl.component(base_image=TAIGIMED_IMAGE)
def deploy_canary(version: str, registry_root: str, gitops_repo: str, rollout_plan: str) -> str:
    """Start the new version's canary in the GitOps prod overlay (champion only on promotion);
    with no GitOps repo, make it champion at once.

    Args:
        version: the registered version.
        registry_root: file:// or s3:// registry root.
        gitops_repo: a git checkout or URL of the repo holding manifests/overlays/prod; empty
            locally.
        rollout_plan: rollout plan YAML path; empty for the default plan.
    Returns:
        what was done, in words.
    """
    from taigimed.pipeline.steps import deploy_canary_step

    return deploy_canary_step(version, registry_root, gitops_repo, rollout_plan)
