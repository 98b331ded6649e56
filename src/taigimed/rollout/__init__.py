"""Canary rollout of a registered model version through the GitOps prod overlay.

``plan`` (the YAML plan), ``overlay`` (state in git), ``analysis`` (Prometheus checks),
``machine`` (the state machine), ``kube`` (direct patching), ``cli`` (``taigimed rollout``).
"""
