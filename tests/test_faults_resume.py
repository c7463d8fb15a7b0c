"""Nothing lost, nothing leaked: SIGKILL + resume, SIGTERM, a fault mix counted exactly, a planted key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import psutil
import pytest

from tests.test_run_cli import _mlflow_runs, sdg

pytestmark = pytest.mark.slow


def _dataset_dirs(cwd: Path) -> list[Path]:
    return sorted(cwd.glob("outputs/runs/*/*/dataset"))  # not MLflow's artifact copies


def _popen(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sdg.run", *args],
        cwd=cwd,
        env={**os.environ, "RAY_AUTH_MODE": "disabled", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _rows_written(cwd: Path) -> int:
    return sum(p.read_text().count("\n") for p in cwd.glob("outputs/runs/*/*/parts/*.jsonl"))


def _wait_for_rows(cwd: Path, process: subprocess.Popen, at_least: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if (rows := _rows_written(cwd)) >= at_least:
            return rows
        time.sleep(0.05)
    raise AssertionError(f"only {_rows_written(cwd)} rows after {timeout}s; stderr: {process.stderr.read()}")


def _wait_until_quiet(sim, quiet_s: float = 1.0, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        count = sim.stats()["requests"]
        if count != last:
            last, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet_s and sim.stats()["inflight"] == 0:
            return
        time.sleep(0.05)
    raise AssertionError("the endpoint still gets requests a minute after the run was killed")


def test_sigkill_half_way_then_resume_asks_only_what_is_missing(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(latency_ms=60)
    n, slots, workers = 300, 2, 2
    args = [
        "client=openai",
        f"client.base_url={sim.base_url}",
        "client.api_key_env=null",
        "client.api_key_required=false",
        f"client.max_concurrent_requests={slots}",
        f"ray.num_workers={workers}",
        f"stage.num_samples={n}",
        "endpoint.model=sim-model",
    ]
    process = _popen(args, tmp_path)
    _wait_for_rows(tmp_path, process, n // 2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    at_kill = _rows_written(tmp_path)
    _wait_until_quiet(sim)  # Ray stops the workers once it notices their driver died
    done_before = _rows_written(tmp_path)
    print(f"rows at kill {at_kill}, after workers stopped {done_before}")
    asked_before = sim.stats()["requests"]
    assert n // 2 <= done_before < n

    resumed = sdg(*args, "resume=true", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    (folder,) = _dataset_dirs(tmp_path)
    dataset = datasets.load_from_disk(str(folder))
    assert list(dataset["index"]) == list(range(n))  # each index exactly once, in order
    assert not any(dataset["error"])
    # Rows reach the part files when their batch returns to the driver: what the killed run had handed out and
    # not yet got back (each worker holds 3 batches of 4, the automatic size for 1 slot each) is asked again.
    handed_out_at_kill = workers * 3 * 4
    assert sim.stats()["requests"] <= n + handed_out_at_kill
    assert sim.stats()["requests"] - asked_before <= n - done_before
    metrics = _mlflow_runs(tmp_path)[0].data.metrics
    assert metrics["num_requested"] == n - done_before


def test_sigterm_stops_cleanly_and_says_how_to_resume(tmp_path: Path) -> None:
    process = _popen(
        [
            "client=sim",
            "client.sim.latency_ms=50",
            "client.max_concurrent_requests=2",
            "stage.num_samples=400",
            "ray.num_workers=1",
        ],
        tmp_path,
    )
    _wait_for_rows(tmp_path, process, 10)
    children = psutil.Process(process.pid).children(recursive=True)
    sim_children = [c for c in children if "sdg.endpoints.sim" in " ".join(c.cmdline())]
    assert sim_children
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Resume with: python -m sdg.run" in stderr and "resume=" in stderr
    assert "Traceback" not in stderr
    assert not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE for child in sim_children)
    (run,) = _mlflow_runs(tmp_path)
    assert run.info.status == "KILLED"


def test_fault_mix_completes_and_every_fault_is_counted_like_the_sim(tmp_path: Path) -> None:
    done = sdg(
        "client=sim",
        "stage.num_samples=2000",
        "client.sim.p429=0.1",
        "client.sim.p500=0.05",
        "client.sim.p_reset=0.02",
        "client.sim.p_hang=0.01",
        "client.sim.p_malformed=0.01",
        "client.sim.seed=7",
        "client.timeout=2",
        "client.max_retries=8",
        "client.max_delay=0.2",
        "ray.num_workers=2",
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    metrics = _mlflow_runs(tmp_path)[0].data.metrics
    assert metrics["num_429"] == metrics["sim_r429"] > 0
    assert metrics["num_status_500"] == metrics["sim_r500"] > 0
    assert metrics["num_connection_errors"] == metrics["sim_resets"] > 0
    assert metrics["num_timeouts"] == metrics["sim_hangs"] > 0
    assert metrics["num_malformed"] == metrics["sim_malformed"] > 0
    assert metrics["num_attempts"] == metrics["sim_requests"]
    (folder,) = _dataset_dirs(tmp_path)
    dataset = datasets.load_from_disk(str(folder))
    assert list(dataset["index"]) == list(range(2000))
    assert metrics["num_failed_samples"] == sum(1 for e in dataset["error"] if e)


def test_planted_key_is_used_but_never_written(tmp_path: Path, sim_factory) -> None:
    key = "sk-planted-4f1c9e0b7d2a"
    sim = sim_factory(api_key=key)
    done = sdg(
        "client=openai",
        f"client.base_url={sim.base_url}",
        "client.api_key_env=SDG_PLANTED_KEY",
        "endpoint.model=sim-model",
        "stage.num_samples=12",
        "output.formats=[parquet,jsonl]",
        cwd=tmp_path,
        env={"SDG_PLANTED_KEY": key},
    )
    assert done.returncode == 0, done.stderr
    assert sim.stats()["ok"] == 12 and sim.stats()["r401"] == 0  # the key did reach the endpoint
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "mlflow.db" for p in written) and any(p.parent.name == ".hydra" for p in written)
    leaks = [p for p in written if key.encode() in p.read_bytes()]
    assert leaks == []
    assert key not in done.stdout + done.stderr
    ray_logs = Path("/tmp/ray/session_latest/logs")
    if ray_logs.exists():
        assert not [p for p in ray_logs.rglob("*") if p.is_file() and key.encode() in p.read_bytes()]


def test_wrong_key_stops_the_run_at_once_naming_the_variable(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(api_key="the-right-one")
    done = sdg(
        "client=openai",
        f"client.base_url={sim.base_url}",
        "client.api_key_env=SDG_WRONG_KEY",
        "endpoint.model=sim-model",
        "stage.num_samples=50",
        cwd=tmp_path,
        env={"SDG_WRONG_KEY": "nope"},
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("sdg: error: HTTP 401") and "SDG_WRONG_KEY" in last and "Traceback" not in done.stderr
    assert sim.stats()["r401"] < 50  # stopped early instead of asking every sample


def test_unknown_model_names_model_and_url(tmp_path: Path, sim_factory) -> None:
    sim = sim_factory(models=("real-model",))
    done = sdg(
        "client=openai",
        f"client.base_url={sim.base_url}",
        "client.api_key_required=false",
        "endpoint.model=no-such-model",
        "stage.num_samples=5",
        cwd=tmp_path,
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert "no-such-model" in last and sim.base_url in last


def test_refused_connection_fails_after_retries_naming_the_url(tmp_path: Path) -> None:
    done = sdg(
        "client=openai",
        "client.base_url=http://127.0.0.1:9/v1",
        "client.api_key_required=false",
        "client.base_delay=0.01",
        "stage.num_samples=5",
        cwd=tmp_path,
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert "http://127.0.0.1:9/v1" in last and "gave up after 4 attempts" in last


def test_systematic_400_stops_in_one_line_with_the_resume_command(tmp_path: Path) -> None:
    """n=200 is over the sim's maximum (128): every request is a 400, so the run stops after its first 20."""
    done = sdg(
        "client=sim",
        "generation.n=200",
        "stage.num_samples=300",
        "ray.num_workers=0",
        "mlflow.enabled=false",
        "output.progress=false",
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("sdg: error: the first 20 samples all failed the same way") and "'n'" in last
    assert "Resume with: python -m sdg.run" in last and "resume=" in last
    assert 20 <= _rows_written(tmp_path) < 300  # the rows written before the stop are kept
