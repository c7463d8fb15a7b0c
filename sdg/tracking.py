"""MLflow for a run: flattened params without secrets, metrics, artifacts, tags for comparison."""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sdg

__all__ = ["MlflowTracker", "default_tracking_uri", "flatten", "git_commit"]

# Defence in depth: the config holds no key by design, but a key-like name is never logged even if added.
_SECRET_NAME = re.compile(r"(^|[._])(api_key|apikey|token|secret|password)$", re.IGNORECASE)


def default_tracking_uri(launch_dir: Path | None = None) -> str:
    return f"sqlite:///{(launch_dir or Path.cwd()).resolve() / 'outputs' / 'mlflow.db'}"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'generation': {'temperature': 0.7}} -> {'generation.temperature': 0.7}, secret-named keys dropped."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if _SECRET_NAME.search(name):
            continue
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def git_commit(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class MlflowTracker:
    """One MLflow run per sdg run (and per --multirun job); ended FAILED when the run raises."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path) -> None:
        import mlflow

        self.mlflow = mlflow
        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        self.tracking_uri = tracking_uri
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            artifact_root.mkdir(parents=True, exist_ok=True)
            self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifact_root.as_uri())
        else:
            self.experiment_id = found.experiment_id
        self.run_id: str | None = None

    def start(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        all_tags = {"sdg.version": sdg.__version__, "git.commit": git_commit(), **tags}
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        self.run_id = run.info.run_id
        params = {k: ("null" if v is None else str(v))[:6000] for k, v in params.items()}
        entities = [self.mlflow.entities.Param(k, v) for k, v in sorted(params.items())]
        for i in range(0, len(entities), 100):
            self.client.log_batch(self.run_id, params=entities[i : i + 100])
        return self.run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        self.log_steps([(step, metrics)])

    def log_steps(self, steps: list[tuple[int, Mapping[str, float]]]) -> None:
        """Metrics at several steps (a series over time) in as few database writes as possible."""
        import time

        now = int(time.time() * 1000)
        entities = [
            self.mlflow.entities.Metric(k, float(v), now, step)
            for step, metrics in steps
            for k, v in sorted(metrics.items())
        ]
        for i in range(0, len(entities), 900):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=entities[i : i + 900])

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def end(self, status: str) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)
