"""What `taigimed rollout --apply kube` sends to the API server (no cluster here: the patch
bodies are pure functions; KubePatcher is exercised with recording API objects)."""

from __future__ import annotations

import dataclasses

import yaml

from taigimed.rollout.kube import KubePatcher, isvc_patch, state_configmap_patch
from taigimed.rollout.overlay import RolloutState, render_patch

STABLE = RolloutState("v1", "s3://m/v1")
CANARY = dataclasses.replace(
    STABLE,
    phase="canary",
    canary_version="v2",
    canary_storage_uri="s3://m/v2",
    canary_percent=10,
    step_index=0,
)


def test_patch_body_carries_uri_version_and_percent():
    body = isvc_patch(CANARY)
    predictor = body["spec"]["predictor"]
    assert predictor["canaryTrafficPercent"] == 10
    assert predictor["model"]["storageUri"] == "s3://m/v2"
    assert predictor["model"]["env"] == [{"name": "TAIGIMED_MODEL_VERSION", "value": "v2"}]


def test_patch_body_equals_the_overlay_patch_spec():
    """Git and the direct patch must never disagree about what prod runs."""
    for state in (
        STABLE,
        CANARY,
        dataclasses.replace(CANARY, phase="rolling_back", canary_percent=0),
    ):
        assert isvc_patch(state)["spec"] == yaml.safe_load(render_patch(state))["spec"]


def test_rollback_patch_sends_zero_percent_to_canary():
    drained = dataclasses.replace(CANARY, phase="rolling_back", canary_percent=0)
    assert isvc_patch(drained)["spec"]["predictor"]["canaryTrafficPercent"] == 0


class Recorder:
    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        return lambda *args: self.calls.append((name, args))


def test_patcher_targets_the_named_inference_service_and_state_configmap():
    custom, core = Recorder(), Recorder()
    KubePatcher("taigimed", "taigimed-prod", custom_api=custom, core_api=core)(CANARY)
    ((name, args),) = custom.calls
    assert name == "patch_namespaced_custom_object"
    assert args[:5] == (
        "serving.kserve.io",
        "v1beta1",
        "taigimed-prod",
        "inferenceservices",
        "taigimed",
    )
    assert args[5] == isvc_patch(CANARY)
    ((name, args),) = core.calls
    assert name == "patch_namespaced_config_map"
    assert args == ("taigimed-rollout", "taigimed-prod", state_configmap_patch(CANARY))
