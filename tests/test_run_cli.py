"""`python -m sdg.run` as a user runs it: a real subprocess, the sim it starts, Ray, MLflow on sqlite, datasets."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest

REPO = Path(__file__).resolve().parents[1]


def sdg(*args: str, cwd: Path, env: dict[str, str] | None = None, module: str = "sdg.run", timeout: float = 180):
    environment = {**os.environ, "RAY_AUTH_MODE": "disabled", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _mlflow_runs(cwd: Path):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{cwd / 'outputs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sdg")
    runs = client.search_runs([experiment.experiment_id])
    return [run for run in runs if run.data.tags.get("sdg.role") != "sweep"]  # not a sweep's parent run


def _dataset_dirs(cwd: Path) -> list[Path]:
    # Run folders of single runs and sweeps, not MLflow's artifact copies (outputs/mlartifacts/.../dataset).
    return sorted(p for p in cwd.glob("outputs/**/dataset") if "mlartifacts" not in p.parts)


@pytest.mark.slow
def test_run_against_sim_writes_dataset_and_mlflow_run(tmp_path: Path) -> None:
    done = sdg(
        "client=sim",
        "stage.num_samples=40",
        "client.sim.p429=0.2",
        "ray.num_workers=2",
        "output.formats=[jsonl]",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    (folder,) = _dataset_dirs(tmp_path)
    dataset = datasets.load_from_disk(str(folder))
    assert len(dataset) == 40 and list(dataset["index"]) == list(range(40))
    assert (folder / "README.md").read_text().count("num_429") == 1
    assert (folder.parent / "dataset.jsonl").exists()
    (run,) = _mlflow_runs(tmp_path)
    params, metrics = run.data.params, run.data.metrics
    assert params["generation.temperature"] == "0.7" and params["client.max_concurrent_requests"] == "32"
    assert params["stage.num_samples"] == "40"
    for name in (
        "samples_per_s",
        "requests_per_s",
        "output_tokens_per_s",
        "num_429",
        "num_retries",
        "num_failed_samples",
        "latency_p50_s",
        "latency_p95_s",
        "latency_p99_s",
        "wall_s",
    ):
        assert name in metrics, name
    assert metrics["num_429"] == metrics["sim_r429"] > 0
    assert metrics["num_attempts"] == metrics["sim_requests"]
    assert run.data.tags["hydra.overrides"].startswith("client=sim stage.num_samples=40")
    assert run.info.status == "FINISHED"
    import mlflow

    history = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}").get_metric_history(
        run.info.run_id, "limiter_concurrency"
    )
    assert history and all(1 <= point.value <= 32 for point in history)
    assert [point.step for point in history] == sorted(point.step for point in history)
    assert "dataset:" in done.stdout and "mlflow ui" in done.stdout


@pytest.mark.slow
def test_multirun_makes_one_mlflow_run_per_job_and_compare_shows_them(tmp_path: Path) -> None:
    done = sdg(
        "-m",
        "client=sim",
        "stage.num_samples=10",
        "generation.temperature=0.2,0.9",
        "ray.num_workers=0",  # in-process: this test is about sweeps and MLflow, not Ray
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    runs = _mlflow_runs(tmp_path)
    assert sorted(run.data.params["generation.temperature"] for run in runs) == ["0.2", "0.9"]
    assert len({run.data.tags["sdg.sweep"] for run in runs}) == 1
    shown = sdg(module="sdg.compare", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    header, _, *rows = shown.stdout.splitlines()
    assert "generation.temperature" in header and "samples_per_s" in header
    assert len(rows) == 2 and {"0.2", "0.9"} <= set(" ".join(rows).split())
    plotted = sdg("--plot", str(tmp_path / "t.png"), module="sdg.compare", cwd=tmp_path)
    assert plotted.returncode == 0 and (tmp_path / "t.png").stat().st_size > 1000
