"""Experiment tracking: MLflow when ``MLFLOW_TRACKING_URI`` is set, nothing otherwise.

The recipe always talks to a ``Tracker``; without the environment variable it is a no-op, so a
laptop run needs no server and no extra package. With it set, params (the flattened config),
per-step metrics and the stage's artifacts (metrics.json, loss.png, MODEL_CARD.md) go to the
server, and the run id is written into the model card. A resumed stage continues the same
MLflow run (its id is kept in the checkpoint).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from taigimed.config import ConfigError

log = logging.getLogger(__name__)

MAX_PARAM_CHARS = 500


def flatten(data: Any, prefix: str = "") -> dict[str, str]:
    """``{"lora": {"rank": 8}}`` -> ``{"lora.rank": "8"}`` (MLflow params are flat strings)."""
    if isinstance(data, dict):
        out: dict[str, str] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out
    return {prefix.rstrip("."): str(data)[:MAX_PARAM_CHARS]}


class Tracker:
    """The no-op tracker (used when ``MLFLOW_TRACKING_URI`` is unset)."""

    run_id: str | None = None
    uri: str | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_artifacts(self, paths: list[Path]) -> None:
        pass

    def finish(self, status: str = "FINISHED") -> None:
        pass


class MlflowTracker(Tracker):
    """One MLflow run per training stage."""

    def __init__(self, uri: str, experiment: str, run_name: str, run_id: str | None = None):
        try:
            import mlflow
        except ImportError as err:
            raise ConfigError(
                f"MLFLOW_TRACKING_URI={uri} is set but mlflow is not installed; "
                "`pip install mlflow-skinny` (see requirements.txt) or unset the variable"
            ) from err
        self.mlflow = mlflow
        self.uri = uri
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(experiment)
        run = mlflow.start_run(run_id=run_id) if run_id else mlflow.start_run(run_name=run_name)
        self.run_id = run.info.run_id
        log.info("MLflow run %s at %s (experiment %s)", self.run_id, uri, experiment)

    def log_params(self, params: dict[str, Any]) -> None:
        self.mlflow.log_params(flatten(params))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifacts(self, paths: list[Path]) -> None:
        for path in paths:
            if path.is_file():
                self.mlflow.log_artifact(str(path))

    def finish(self, status: str = "FINISHED") -> None:
        self.mlflow.end_run(status=status)


def make_tracker(experiment: str, run_name: str, run_id: str | None = None) -> Tracker:
    """MLflow when ``MLFLOW_TRACKING_URI`` is set, else the no-op tracker."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not uri:
        return Tracker()
    return MlflowTracker(uri, experiment, run_name, run_id)
