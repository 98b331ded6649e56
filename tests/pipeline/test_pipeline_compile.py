"""The pipeline compiles, and the tracked compiled YAML is current."""

from __future__ import annotations

import yaml

from taigimed.pipeline.run import COMPILED_FILE, load_pipeline_module


def compiled_text(tmp_path) -> str:
    out = load_pipeline_module().compile_pipeline(tmp_path / "p.yaml")
    return out.read_text(encoding="utf-8")


def test_compiled_yaml_is_current(tmp_path):
    fresh = compiled_text(tmp_path)
    assert COMPILED_FILE.is_file(), "run `make compile` and commit the result"
    assert COMPILED_FILE.read_text(encoding="utf-8") == fresh, (
        "pipelines/compiled/taigimed_pipeline.yaml is stale: run `make compile` and commit it"
    )


def test_gpu_steps_carry_kubernetes_settings(tmp_path):
    docs = list(yaml.safe_load_all(compiled_text(tmp_path)))
    spec, platform = docs[0], docs[1]
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    for name in ("exec-train-stage1", "exec-train-stage2", "exec-evaluate"):
        k8s = executors[name]
        assert k8s["nodeSelector"]["labels"] == {"taigimed.io/accelerator": "nvidia-gpu"}
        assert k8s["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert k8s["pvcMount"][0]["mountPath"] == "/cache"
        secrets = {s["secretName"] for s in k8s["secretAsEnv"]}
        assert secrets == {"taigimed-hub", "taigimed-s3"}
        container = spec["deploymentSpec"]["executors"][name]["container"]
        assert container["resources"]["accelerator"]["resourceCount"] == "1"
    # the index is built before the evaluation, which scores grounded answers on it; register
    # and deploy-canary only run inside the gate-passed branch, register with that same index
    root_tasks = spec["root"]["dag"]["tasks"]
    assert "build-index" in root_tasks and not {"register", "deploy-canary"} & set(root_tasks)
    evaluate = root_tasks["evaluate"]["inputs"]["artifacts"]["index"]["taskOutputArtifact"]
    assert evaluate["producerTask"] == "build-index"
    branches = spec["components"]["comp-condition-branches-1"]["dag"]["tasks"]
    gated = {name: set(spec["components"][f"comp-{name}"]["dag"]["tasks"]) for name in branches}
    assert {"register", "deploy-canary"} in gated.values()
    register = spec["components"]["comp-condition-2"]["dag"]["tasks"]["register"]
    assert register["inputs"]["artifacts"]["index"] == {
        "componentInputArtifact": "pipelinechannel--build-index-index"
    }
    assert {"mark-rejected"} in gated.values()
    condition = branches["condition-2"]["triggerPolicy"]["condition"]
    assert "pipelinechannel--gate-passed" in condition and "true" in condition


def test_retries_on_training(tmp_path):
    spec = next(yaml.safe_load_all(compiled_text(tmp_path)))
    task = spec["root"]["dag"]["tasks"]["train-stage1"]
    assert task["retryPolicy"]["maxRetryCount"] == 2


def test_override_parameters_keep_their_shell_quoting():
    from taigimed.pipeline.cli import parse_params
    from taigimed.pipeline.steps import split_overrides

    params = parse_params(["replay_fraction=0.3", "gate_overrides='metrics={a: {min: 1}}' x=1"])
    assert params["replay_fraction"] == 0.3
    assert split_overrides(params["gate_overrides"]) == ["metrics={a: {min: 1}}", "x=1"]
