"""Direct patching of the InferenceService, for clusters without Argo CD.

Git stays the record: ``taigimed rollout --apply kube`` still commits every transition to the
overlay, and then sends the same change to the API server as a JSON merge patch. The patch
body is a pure function (``isvc_patch``) so that what would be sent is tested without a
cluster; ``KubePatcher`` is the thin I/O edge over the kubernetes client.
"""

from __future__ import annotations

import logging
from typing import Any

from taigimed.rollout.overlay import STATE_CONFIGMAP, VERSION_ENV, RolloutState

log = logging.getLogger(__name__)

GROUP = "serving.kserve.io"
VERSION = "v1beta1"
PLURAL = "inferenceservices"


def isvc_patch(state: RolloutState) -> dict[str, Any]:
    """JSON merge patch that puts ``state`` on the InferenceService's predictor.

    It carries the same three fields as the overlay's inferenceservice-patch.yaml. A merge patch
    replaces the ``env`` list whole: the predictor's model ``env`` holds only the version
    variable (runtime settings live in the ServingRuntime), so nothing else is lost.
    """
    return {
        "spec": {
            "predictor": {
                "canaryTrafficPercent": state.canary_percent,
                "model": {
                    "storageUri": state.serving_storage_uri,
                    "env": [{"name": VERSION_ENV, "value": state.serving_version}],
                },
            }
        }
    }


def state_configmap_patch(state: RolloutState) -> dict[str, Any]:
    """Merge patch for the ``taigimed-rollout`` ConfigMap (the state, as in rollout.yaml)."""
    return {"data": state.to_configmap_data()}


class KubePatcher:
    """Apply a rollout state to a live cluster (kubeconfig or in-cluster service account).

    Needs only what the namespace's ``taigimed-pipeline`` Role grants: patch
    inferenceservices and the ``taigimed-rollout`` ConfigMap.
    """

    def __init__(self, name: str, namespace: str, custom_api: Any = None, core_api: Any = None):
        self.name = name
        self.namespace = namespace
        if custom_api is None or core_api is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()
            except config.ConfigException:
                config.load_kube_config()
            custom_api = custom_api or client.CustomObjectsApi()
            core_api = core_api or client.CoreV1Api()
        self.custom_api = custom_api
        self.core_api = core_api

    def __call__(self, state: RolloutState) -> None:
        self.custom_api.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, self.name, isvc_patch(state)
        )
        self.core_api.patch_namespaced_config_map(
            STATE_CONFIGMAP, self.namespace, state_configmap_patch(state)
        )
        log.info(
            "patched %s/%s: %s at %s%%",
            self.namespace,
            self.name,
            state.serving_version,
            state.canary_percent,
        )
