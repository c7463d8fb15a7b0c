"""Execution on Ray as it fails in practice: a worker or the limiter SIGKILLed, two nodes, a stale cluster file.

One two-node local cluster (`ray.cluster_utils.Cluster`) serves the whole module; the CLI runs join it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import datasets
import psutil
import pytest

from sdg.client import AsyncOpenAIClient, GenerationConfig
from sdg.execution.local import LocalExecutor
from sdg.execution.parts import part_files, read_rows
from sdg.execution.ray_executor import RayExecutor
from sdg.execution.stop import EndpointUnusable, StopRule
from sdg.pipeline import Pipeline
from sdg.stages import QAMultilingualSyntheticStage


def _stage(sim, num_samples: int, slots: int = 8, **generation) -> QAMultilingualSyntheticStage:
    client = AsyncOpenAIClient(
        base_url=sim.base_url, api_key_env=None, base_delay=0.01, max_delay=0.05, max_concurrent_requests=slots
    )
    return QAMultilingualSyntheticStage(
        prompt="Generate a Q&A pair about science in {language}.",
        languages=["English", "French"],
        client=client,
        model_name="sim-model",
        num_samples=num_samples,
        generation_config=GenerationConfig(max_tokens=16, **generation),
    )


def _ray_processes(name: str) -> list[psutil.Process]:
    """This test session's Ray processes whose title names `name` (other people's Ray is not ours to kill)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if name in " ".join(proc.cmdline()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _rows_in(parts_dir: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in part_files(parts_dir))


def _kill_when(parts_dir: Path, at_rows: int, name: str, killed: list[int], timeout: float = 60) -> threading.Thread:
    """In the background: once `at_rows` rows are written, SIGKILL one Ray process titled `name`."""

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _rows_in(parts_dir) >= at_rows and (targets := _ray_processes(name)):
                targets[0].send_signal(signal.SIGKILL)
                killed.append(targets[0].pid)
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@pytest.fixture(scope="module")
def cluster():
    """A head and one more node on this machine, each with its own raylet and object store."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():  # the session's single-node Ray: this module needs two nodes
        ray.shutdown()
    two = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    two.add_node(num_cpus=1)
    two.wait_for_nodes()
    ray.init(address=two.address)
    yield two
    ray.shutdown()
    two.shutdown()


def test_two_nodes_return_rows_and_only_the_driver_writes_parts(cluster, sim_factory, tmp_path) -> None:
    sim = sim_factory(latency_ms=50)  # a few seconds of work: every worker is up long before the end
    result = (
        Pipeline("t")
        .add_stage(_stage(sim, 600))
        .run_detailed(RayExecutor(4), seed=2, output_dir=tmp_path, progress=False)
    )
    assert list(result.dataset["index"]) == list(range(600)) and not any(result.dataset["error"])
    assert len(result.batches_by_node) == 2  # both nodes did work ...
    parts = part_files(tmp_path / "parts")
    assert [p.name.rsplit("-", 1)[1] for p in parts] == ["0000.jsonl"]  # ... and one writer, the driver, wrote it
    assert sorted(row["index"] for row in read_rows(parts)) == list(range(600))


def test_limiter_actor_sigkilled_the_run_finishes_within_its_limit(cluster, sim_factory, tmp_path) -> None:
    sim = sim_factory(latency_ms=40)
    killed: list[int] = []
    watcher = _kill_when(tmp_path / "parts", 60, "_LimiterActor", killed)
    result = (
        Pipeline("t")
        .add_stage(_stage(sim, 600, slots=6))
        .run_detailed(RayExecutor(2), output_dir=tmp_path, progress=False)
    )
    watcher.join()
    assert killed, "the limiter was not killed mid-run"
    assert list(result.dataset["index"]) == list(range(600)) and not any(result.dataset["error"])
    assert sim.stats()["max_inflight"] <= 6  # the restarted limiter still holds the run to its limit
    assert result.num_worker_restarts == 0


def test_worker_sigkilled_mid_run_exit_0_every_index_once(cluster, tmp_path) -> None:
    n = 600
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sdg.run",
            "client=sim",
            "client.sim.latency_ms=30",
            "client.max_concurrent_requests=8",
            f"stage.num_samples={n}",
            "ray.num_workers=2",
            f"ray.address={cluster.address}",
            "mlflow.enabled=false",
            "output.progress=false",
        ],
        cwd=tmp_path,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed: list[int] = []
    deadline = time.monotonic() + 120
    while not killed and time.monotonic() < deadline and process.poll() is None:
        parts = list(tmp_path.glob("outputs/runs/*/*/parts"))
        if parts and _rows_in(parts[0]) >= n // 4 and (workers := _ray_processes("_BatchWorker")):
            workers[0].send_signal(signal.SIGKILL)
            killed.append(workers[0].pid)
        time.sleep(0.05)
    stdout, stderr = process.communicate(timeout=180)
    assert killed, f"no worker killed mid-run; stderr: {stderr}"
    assert process.returncode == 0, stderr
    (folder,) = tmp_path.glob("outputs/runs/*/*/dataset")
    dataset = datasets.load_from_disk(str(folder))
    assert list(dataset["index"]) == list(range(n)) and not any(dataset["error"])
    written = [row["index"] for row in read_rows(part_files(folder.parent / "parts"))]
    assert sorted(written) == list(range(n))  # each index written exactly once, none twice
    metrics = json.loads((folder.parent / "metrics.json").read_text())
    assert metrics["num_worker_restarts"] >= 1, stdout + stderr
    assert "lost during the run and restarted" in stdout


def test_stale_cluster_file_does_not_stop_a_local_run(cluster, tmp_path) -> None:
    """A killed `ray start` head leaves /tmp/ray/ray_current_cluster naming a dead address; null must ignore it."""
    temp_root = Path(tempfile.mkdtemp(prefix="sdg-", dir="/tmp"))  # short: Ray's socket paths live under it
    try:
        (temp_root / "ray").mkdir()
        (temp_root / "ray" / "ray_current_cluster").write_text("127.0.0.1:9\n")
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "sdg.run",
                "client=sim",
                "stage.num_samples=20",
                "ray.num_workers=1",
                "mlflow.enabled=false",
                "output.progress=false",
            ],
            cwd=tmp_path,
            env={**os.environ, "RAY_AUTH_MODE": "disabled", "TMPDIR": str(temp_root), "RAY_TMPDIR": str(temp_root)},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert "on Ray, 1 workers" in done.stdout
        assert list((temp_root / "ray").glob("session_*"))  # it started its own instance there
    finally:
        shutil.rmtree(temp_root, ignore_errors=True)


def test_systematic_400_stops_the_run_once_for_the_run(sim, tmp_path) -> None:
    """n=200 is over the sim's maximum of 128: every request is a 400; the run stops after the first 20."""
    stage = _stage(sim, 500, n=200)
    with pytest.raises(EndpointUnusable, match=r"first 20 samples all failed the same way.*'n'"):
        Pipeline("t").add_stage(stage).run_detailed(LocalExecutor(), output_dir=tmp_path, progress=False)
    assert 20 <= sim.stats()["r400"] < 100
    assert _rows_in(tmp_path / "parts") >= 20  # rows written before the stop are kept


def test_a_reasoning_model_that_spends_max_tokens_thinking_stops_the_run(sim_factory, tmp_path) -> None:
    """Every answer is null content with the thinking cut at max_tokens: 20 empty answers stop the run."""
    sim = sim_factory(reasoning=True, reasoning_words=48)
    stage = _stage(sim, 300)  # max_tokens=16: all spent on reasoning
    with pytest.raises(EndpointUnusable, match=r"first 20 samples all failed the same way.*generation\.max_tokens"):
        Pipeline("t").add_stage(stage).run_detailed(LocalExecutor(), output_dir=tmp_path, progress=False)
    assert 20 <= sim.stats()["requests"] < 100  # not 300 paid-for empty answers
    assert _rows_in(tmp_path / "parts") >= 20


def test_stop_rule_judges_the_whole_run_on_typed_kinds() -> None:
    rule = StopRule()
    assert rule.observe(None) is None
    assert rule.observe("connection", "connection: refused") is None  # another sample succeeded: passing fault
    assert StopRule().observe("connection", "connection: refused") == "refused"  # before any success: down
    assert StopRule().observe("auth", "auth: HTTP 401 check MY_KEY") == "HTTP 401 check MY_KEY"
    assert StopRule().observe("quota") == "quota"
    mixed = StopRule(systematic_after=3)
    assert [mixed.observe(k) for k in ("bad_request", "server_error", "bad_request", "bad_request")] == [None] * 4
    same = StopRule(systematic_after=3)
    assert [same.observe("bad_request", "bad_request: HTTP 400") for _ in range(3)][-1].endswith("HTTP 400")
    late = StopRule(systematic_after=3)
    late.observe(None)
    assert [late.observe("bad_request") for _ in range(5)] == [None] * 5  # one success: not systematic
    assert StopRule(systematic_after=2).observe("parse_error") is None  # not the endpoint's refusal


def test_auto_workers_choose_this_process_where_ray_cannot_help() -> None:
    from sdg.config import RunConfig
    from sdg.run import choose_workers

    cfg = RunConfig()
    cfg.client.kind, cfg.client.max_concurrent_requests = "sim", 32
    workers, why = choose_workers(cfg, 40)
    assert workers == 0 and "40 samples < 200" in why
    workers, why = choose_workers(cfg, 5000)
    assert workers >= 2 and "auto" in why
    cfg.client.kind, cfg.client.max_concurrent_requests = "local", 1
    workers, why = choose_workers(cfg, 5000)
    assert workers == 0 and "one request at a time" in why
    cfg.ray.num_workers = 3
    assert choose_workers(cfg, 10) == (3, "ray.num_workers=3")
