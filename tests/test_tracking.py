"""MLflow tracking: the dataset as a run input, sweeps nested under one parent, the store created under a lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import datasets

from sdg.tracking import MlflowTracker, default_tracking_uri, sqlite_path

REPO = Path(__file__).resolve().parents[1]


def test_default_store_is_an_absolute_sqlite_path(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    uri = default_tracking_uri(Path("."))
    assert uri == f"sqlite:///{tmp_path.resolve()}/outputs/mlflow.db"  # sqlite:////abs/...: works from any folder
    assert sqlite_path(uri) == tmp_path.resolve() / "outputs" / "mlflow.db"
    assert sqlite_path("http://127.0.0.1:5000") is None


def test_dataset_is_a_run_input_with_path_rows_digest_and_card(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MlflowTracker(uri, "sdg", tmp_path / "artifacts")
    tracker.start("sdg", {"generation.temperature": 0.7, "seed": None}, {"hydra.overrides": ""})
    folder = tmp_path / "run" / "dataset"
    dataset = datasets.Dataset.from_dict({"index": [0, 1, 2], "text": ["a", "b", "c"], "error": [None, None, "x"]})
    dataset.save_to_disk(str(folder))
    (folder / "README.md").write_text("# sdg\n\n3 rows\n")
    tracker.log_dataset(dataset, folder, name="sdg")
    tracker.end("FINISHED")

    run = tracker.client.get_run(tracker.run_id)
    assert run.data.params == {"generation.temperature": "0.7", "seed": "null"}
    (logged,) = run.inputs.dataset_inputs
    assert logged.dataset.name == "sdg" and logged.dataset.digest
    assert json.loads(logged.dataset.source) == {"uri": str(folder.resolve())}
    assert json.loads(logged.dataset.profile)["num_rows"] == 3
    assert {t.key: t.value for t in logged.tags} == {"mlflow.data.context": "generated"}
    assert [a.path for a in tracker.client.list_artifacts(tracker.run_id, "dataset")] == ["dataset/README.md"]
    assert "parentRunId" not in str(run.data.tags)  # a single run is not nested


_FIRST_RUN = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from sdg.tracking import MlflowTracker

    root = Path(sys.argv[1])
    tracker = MlflowTracker(f"sqlite:///{root / 'mlflow.db'}", "sdg", root / "mlartifacts")
    job = sys.argv[2]
    tracker.start("sdg", {"job": job}, {"sdg.sweep": str(root / "multirun" / "s"), "sdg.run_dir": f"{root}/{job}"})
    tracker.log_steps([(0, {"limiter_concurrency": 1.0}), (100, {"limiter_concurrency": 2.0})])
    tracker.end("FINISHED")
    """
)


def test_simultaneous_first_runs_on_a_new_store_all_succeed(tmp_path: Path) -> None:
    """Without the lock, two of three die with `duplicate column name: step` (or `table ... already exists`)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _FIRST_RUN, str(tmp_path), str(job)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for job in range(3)
    ]
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], outputs

    tracker = MlflowTracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "sdg", tmp_path / "mlartifacts")
    runs = tracker.client.search_runs([tracker.experiment_id])
    parents = [r for r in runs if r.data.tags.get("sdg.role") == "sweep"]
    children = [r for r in runs if r not in parents]
    assert len(parents) == 1 and len(children) == 3  # one parent for the sweep, found by every job
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    assert sorted(r.info.run_name for r in children) == ["sdg #0", "sdg #1", "sdg #2"]
    history = tracker.client.get_metric_history(children[0].info.run_id, "limiter_concurrency")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (100, 2.0)]


def test_flattened_params_never_carry_a_credential_header() -> None:
    from sdg.tracking import flatten

    config = {"client": {"default_headers": {"X-Api-Key": "k1", "Authorization": "Bearer k2", "X-Team": "sdg"}}}
    flat = flatten(config)
    assert flat == {"client.default_headers.X-Team": "sdg"}
    assert "generation.max_tokens" in flatten({"generation": {"max_tokens": 8}})  # not a secret: kept
