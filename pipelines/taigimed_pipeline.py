"""The whole TaigiMed flow as one Kubeflow pipeline.

    prepare -> train stage 1 (medical) -> train stage 2 (Taigi + replay, from stage 1's model)
            -> evaluate (candidate, base, champion) -> gate
            -> pass: build-index -> register -> deploy-canary
               fail: mark-rejected (the run still succeeds)

build-index embeds the knowledge base and every approved review answer (retrieval.yaml); the
registry stores that index beside the model under the same version.

The same definition is compiled to ``pipelines/compiled/taigimed_pipeline.yaml`` for the
Kubeflow Pipelines UI and run locally by ``taigimed pipeline run --local`` through kfp.local.
Kubernetes settings (GPU node selector and toleration, resources, model cache PVC, secrets,
retries) come from kfp-kubernetes; the local runner ignores them.

Run ``python pipelines/taigimed_pipeline.py --output pipelines/compiled/taigimed_pipeline.yaml``
(or ``make compile``) after changing it; a test fails while the compiled file is stale.
"""

import argparse
import sys
from pathlib import Path

from kfp import compiler, dsl, kubernetes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from components import (
    build_index,
    deploy_canary,
    evaluate,
    gate,
    mark_rejected,
    prepare,
    register,
    train_stage1,
    train_stage2,
)

PIPELINE_NAME = "taigimed-two-stage"

# Cluster settings. Names match manifests/ (PVC, secrets) and terraform/ (node labels, taints).
GPU_NODE_LABEL = ("taigimed.io/accelerator", "nvidia-gpu")
GPU_TAINT = {
    "key": "nvidia.com/gpu",
    "operator": "Equal",
    "value": "present",
    "effect": "NoSchedule",
}
MODEL_CACHE_PVC = "taigimed-model-cache"
MODEL_CACHE_PATH = "/cache"
HUB_SECRET = "taigimed-hub"  # key: token -> HF_TOKEN
S3_SECRET = "taigimed-s3"  # keys: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (docs/cluster.md)


def on_gpu(task: dsl.PipelineTask, memory: str = "48G") -> dsl.PipelineTask:
    """Schedule a step on the GPU node: one GPU, the node's taint tolerated, the model cache."""
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    task.set_cpu_limit("8").set_memory_limit(memory).set_memory_request("16G")
    kubernetes.add_node_selector(task, label_key=GPU_NODE_LABEL[0], label_value=GPU_NODE_LABEL[1])
    kubernetes.add_toleration(task, **GPU_TAINT)
    return with_cluster_access(task)


def with_cluster_access(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Model cache PVC, hub token and object-store credentials (by reference, never inlined)."""
    # The image sets TAIGIMED_CACHE=/cache and HF_HOME=/cache/hf (pipelines/Dockerfile); env
    # set here would also apply to kfp.local runs and send a laptop's cache to /cache.
    kubernetes.mount_pvc(task, pvc_name=MODEL_CACHE_PVC, mount_path=MODEL_CACHE_PATH)
    kubernetes.use_secret_as_env(
        task, secret_name=HUB_SECRET, secret_key_to_env={"token": "HF_TOKEN"}, optional=True
    )
    kubernetes.use_secret_as_env(
        task,
        secret_name=S3_SECRET,
        secret_key_to_env={
            "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
        },
        optional=True,
    )
    return task


def retried(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Transient failures (a preempted node, an object-store hiccup) get two more tries;
    training resumes from its last checkpoint on the PVC."""
    return task.set_retry(num_retries=2, backoff_duration="60s", backoff_factor=2)


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Two-stage LoRA/QLoRA fine-tuning of a Taigi medical advisor, gated evaluation, "
    "registration and canary deployment.",
)
def taigimed_pipeline(
    profile: str = "configs/demo-cpu",
    # "" = the profile's train.yaml base_model (configs/demo-cpu: SmolLM2, demo-cpu-gemma: Gemma
    # 3 270M, gpu-8b: TAIDE 8B); a name here overrides the profile for the whole run.
    base_model: str = "",
    data_overrides: str = "",
    replay_fraction: float = 0.2,
    train_overrides: str = "",
    eval_overrides: str = "",
    gate_overrides: str = "",
    retrieval_overrides: str = "",
    registry_root: str = "file:///tmp/taigimed-registry",
    gitops_repo: str = "",
    rollout_plan: str = "",
    fingerprint: str = "",
) -> str:
    """Returns the gate's reasons (empty when the candidate passed)."""
    data = prepare(
        profile=profile,
        overrides=data_overrides,
        replay_fraction=replay_fraction,
        fingerprint=fingerprint,
        base_model=base_model,
    ).set_display_name("prepare data")
    with_cluster_access(data)

    stage1 = train_stage1(
        profile=profile,
        base_model=base_model,
        overrides=train_overrides,
        data=data.outputs["data"],
    ).set_display_name("train stage 1 (medical)")
    retried(on_gpu(stage1))

    stage2 = train_stage2(
        profile=profile,
        overrides=train_overrides,
        data=data.outputs["data"],
        stage1=stage1.outputs["model"],
    ).set_display_name("train stage 2 (Taigi + replay)")
    retried(on_gpu(stage2))

    # Built beside training, before the evaluation: the grounded answers are scored on the
    # very index the version is registered (and served) with, overrides included.
    knowledge = build_index(profile=profile, overrides=retrieval_overrides).set_display_name(
        "build retrieval index"
    )
    knowledge.set_caching_options(False)  # approved answers may have changed since

    scores = evaluate(
        profile=profile,
        base_model=base_model,
        registry_root=registry_root,
        overrides=eval_overrides,
        data=data.outputs["data"],
        candidate=stage2.outputs["model"],
        index=knowledge.outputs["index"],
    ).set_display_name("evaluate candidate, base, champion")
    scores.set_caching_options(False)  # reads the registry's champion, which changes between runs
    retried(on_gpu(scores, memory="32G"))

    verdict = gate(
        profile=profile, overrides=gate_overrides, results=scores.outputs["results"]
    ).set_display_name("promotion gate")
    verdict.set_caching_options(False)  # the champion may have changed since the last run

    with dsl.If(verdict.outputs["passed"] == True, name="gate-passed"):  # noqa: E712
        version = register(
            registry_root=registry_root,
            candidate=stage2.outputs["model"],
            results=scores.outputs["results"],
            verdict=verdict.outputs["verdict"],
            index=knowledge.outputs["index"],
        ).set_display_name("register")
        version.set_caching_options(False)
        with_cluster_access(version)
        deploy = deploy_canary(
            version=version.output,
            registry_root=registry_root,
            gitops_repo=gitops_repo,
            rollout_plan=rollout_plan,
        ).set_display_name("deploy canary")
        deploy.set_caching_options(False)
        with_cluster_access(deploy)
    with dsl.Else(name="gate-failed"):
        mark_rejected(reasons=verdict.outputs["reasons"]).set_display_name("rejected")

    return verdict.outputs["reasons"]


def compile_pipeline(output: Path) -> Path:
    """Compile to KFP IR YAML (what the Kubeflow Pipelines UI uploads)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(taigimed_pipeline, str(output))
    return output


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Compile the TaigiMed pipeline to YAML.")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(__file__).parent / "compiled" / "taigimed_pipeline.yaml",
        help="where to write the compiled pipeline (default %(default)s)",
    )
    print(compile_pipeline(parser.parse_args().output))
