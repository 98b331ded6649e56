"""Which model version answered a request: how the predictor says it and how the guard reads it.

On a cluster one guard (the KServe transformer) fronts the predictor, and Knative splits the
*predictor's* traffic between the stable and the canary revision (``canaryTrafficPercent``). The
guard's own configured version cannot tell the two apart, so every answer names its version:

* TaigiMed's predictor adds the header ``x-taigimed-model-version`` to every response (errors
  included); its version comes from ``--model-version``, else ``TAIGIMED_MODEL_VERSION``, else
  the serve config (the manifests set the env var per revision);
* vLLM cannot add headers, but puts its *first* ``--served-model-name`` in every response's
  ``model`` field (``OpenAIServingModels.model_name`` in vllm/entrypoints/openai/serving_models.py
  returns ``base_model_paths[0].name``; any listed name is accepted in a request). The vLLM
  runtime is therefore started with ``--served-model-name taigimed-<version> taigimed``, and the
  guard parses ``<version>`` back out of ``model``.

Only label-safe strings are accepted (see ``LABEL_RE``), so a misbehaving upstream cannot blow up
the number of Prometheus series.
"""

from __future__ import annotations

import os
import re

HEADER = "x-taigimed-model-version"
ENV = "TAIGIMED_MODEL_VERSION"
# A version label: registry versions look like "v3"; allow dots, dashes and underscores too.
LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def is_label(value: str | None) -> bool:
    """True when ``value`` is usable as a ``model_version`` label."""
    return bool(value) and LABEL_RE.fullmatch(value) is not None


def resolve(cli_value: str | None, config_value: str) -> str:
    """The predictor's own version: command line, else ``TAIGIMED_MODEL_VERSION``, else config."""
    for value in (cli_value, os.environ.get(ENV), config_value):
        if value:
            return value
    return config_value


def from_model_field(model: object, model_name: str) -> str | None:
    """``<version>`` from a response's ``model`` of the form ``<model_name>-<version>``, or None.

    ``model_name`` is the name the guard serves (``taigimed``); a bare ``taigimed`` (no version)
    or any other shape gives None.
    """
    prefix = f"{model_name}-"
    if isinstance(model, str) and model.startswith(prefix):
        version = model[len(prefix) :]
        if is_label(version):
            return version
    return None


def answered_by(header: str | None, model: object, model_name: str) -> str | None:
    """The version that answered: the predictor's header, else vLLM's ``model`` field, else None
    (the caller then falls back to its configured version)."""
    if header is not None and is_label(header.strip()):
        return header.strip()
    return from_model_field(model, model_name)
