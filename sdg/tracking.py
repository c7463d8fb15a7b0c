"""MLflow for a run: flattened params without secrets, metrics, the dataset as a run input, sweeps grouped.

The sqlite store is created and migrated under a file lock beside it (`mlflow.db.lock`): MLflow's first
migration of a new store is not safe against itself, and simultaneous first runs otherwise die with
`duplicate column name: step`.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import sdg

__all__ = [
    "SWEEP_TAG",
    "MlflowTracker",
    "default_tracking_uri",
    "flatten",
    "git_commit",
    "open_store",
    "sqlite_path",
    "store_lock",
]

# Defence in depth: the config holds no key by design, but a key-like name is never logged even if added.
_SECRET_NAME = re.compile(r"(^|[._-])(api[-_]?key|token|secret|password|authorization|cookie)$", re.IGNORECASE)

SWEEP_TAG = "sdg.sweep"  # the Hydra sweep folder: shared by a sweep's runs and by their parent run
_ROLE_TAG = "sdg.role"  # "sweep" on the parent run of a sweep
_PARENT_TAG = "mlflow.parentRunId"  # how the MLflow UI nests runs under a parent
_DATASET_CONTEXT_TAG = "mlflow.data.context"
_LOCK_TIMEOUT_S = 120.0


def default_tracking_uri(launch_dir: Path | None = None) -> str:
    """sqlite at outputs/mlflow.db, as an absolute path: the printed `mlflow ui` line works from anywhere."""
    return f"sqlite:///{(launch_dir or Path.cwd()).resolve() / 'outputs' / 'mlflow.db'}"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (None for any other store)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])


@contextlib.contextmanager
def store_lock(tracking_uri: str, timeout: float = _LOCK_TIMEOUT_S) -> Iterator[None]:
    """Exclusive across processes for a sqlite store (a `.lock` file beside it); nothing for other stores."""
    path = sqlite_path(tracking_uri)
    if path is None:
        yield
        return
    from filelock import FileLock

    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock", timeout=timeout):
        yield


def open_store(tracking_uri: str) -> Any:
    """An MlflowClient whose store exists at the current schema: created or migrated under the store lock."""
    import mlflow

    with store_lock(tracking_uri):
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        client.search_experiments(max_results=1)  # opens the store: tables created or migrated now, locked
    return client


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


def _quoted(value: str) -> str:
    """A string literal for an MLflow filter."""
    return f'"{value}"' if "'" in value else f"'{value}'"


class MlflowTracker:
    """One MLflow run per sdg run (and per --multirun job); ended FAILED when the run raises.

    A run tagged `sdg.sweep` (a Hydra --multirun job) is nested under one parent run per sweep, found or
    created under the store lock, so the UI lists and compares a sweep's runs together.
    """

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path) -> None:
        import mlflow

        self.mlflow = mlflow
        self.tracking_uri = tracking_uri
        self.client = open_store(tracking_uri)
        with store_lock(tracking_uri):  # two first runs must not both create the experiment
            found = self.client.get_experiment_by_name(experiment)
            if found is None:
                artifact_root.mkdir(parents=True, exist_ok=True)
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=artifact_root.as_uri())
            else:
                self.experiment_id = found.experiment_id
        self.run_id: str | None = None
        self.parent_run_id: str | None = None

    def start(self, run_name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> str:
        all_tags = {"sdg.version": sdg.__version__, "git.commit": git_commit(), **tags}
        sweep = tags.get(SWEEP_TAG)
        if sweep:
            self.parent_run_id = self._sweep_parent(sweep)
            all_tags[_PARENT_TAG] = self.parent_run_id
            if tags.get("sdg.run_dir"):  # the job's folder in the sweep: "sdg #0", "sdg #1", ...
                run_name = f"{run_name} #{Path(tags['sdg.run_dir']).name}"
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        self.run_id = run.info.run_id
        params = {k: ("null" if v is None else str(v))[:6000] for k, v in params.items()}
        entities = [self.mlflow.entities.Param(k, v) for k, v in sorted(params.items())]
        for i in range(0, len(entities), 100):
            self.client.log_batch(self.run_id, params=entities[i : i + 100])
        return self.run_id

    def _sweep_parent(self, sweep: str) -> str:
        """The sweep's parent run (created by its first job, in whatever process), marked running again."""
        with store_lock(self.tracking_uri):
            found = self.client.search_runs(
                [self.experiment_id],
                filter_string=f"tags.`{SWEEP_TAG}` = {_quoted(sweep)} AND tags.`{_ROLE_TAG}` = 'sweep'",
                max_results=1,
            )
            if found:
                run_id = found[0].info.run_id
                self.client.update_run(run_id, status="RUNNING")
                return run_id
            name = "sweep " + "/".join(Path(sweep).parts[-2:])
            tags = {SWEEP_TAG: sweep, _ROLE_TAG: "sweep", "sdg.version": sdg.__version__}
            return self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        self.log_steps([(step, metrics)])

    def log_steps(self, steps: list[tuple[int, Mapping[str, float]]]) -> None:
        """Metrics at several steps (a series over time, drawn as a chart) in as few database writes as possible."""
        now = int(time.time() * 1000)
        entities = [
            self.mlflow.entities.Metric(k, float(v), now, step)
            for step, metrics in steps
            for k, v in sorted(metrics.items())
        ]
        for i in range(0, len(entities), 900):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=entities[i : i + 900])

    def log_dataset(self, dataset: Any, path: Path, name: str, context: str = "generated") -> None:
        """The run's dataset as an MLflow run input (source path, row count, digest, schema) and its card.

        The card (`<path>/README.md`) goes to the artifacts as `dataset/README.md`.
        """
        import mlflow.data
        from mlflow.entities import Dataset, DatasetInput, InputTag

        with warnings.catch_warnings():  # MLflow registers its local source twice and warns it is ambiguous
            warnings.simplefilter("ignore")
            logged = mlflow.data.from_huggingface(dataset, source=str(path.resolve()), name=name)
            entity = Dataset(**logged.to_dict())
        self.client.log_inputs(self.run_id, [DatasetInput(entity, tags=[InputTag(_DATASET_CONTEXT_TAG, context)])])
        card = path / "README.md"
        if card.exists():
            self.client.log_artifact(self.run_id, str(card), "dataset")

    def log_artifact(self, path: Path) -> None:
        self.client.log_artifact(self.run_id, str(path))

    def end(self, status: str) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, status=status)
        if self.parent_run_id is not None:  # the sweep's end time moves with its last job
            self.client.set_terminated(self.parent_run_id, status="FINISHED")
