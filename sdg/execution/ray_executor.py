"""Run a stage's shards on Ray workers: one async actor per shard, each with its own client and loop."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sdg.client.stats import ClientStats
from sdg.execution.base import ExecutionReport, Executor, ProgressCallback, part_path, shard_indexes
from sdg.execution.limiter import LimiterHandle, RunLimiter, limiter_settings_for
from sdg.execution.shard import ShardProgress, run_shard
from sdg.stages.base import GenerationStage

__all__ = ["RayExecutor", "ensure_ray"]

POLL_S = 0.5


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join the Ray session of this process, or start/join one (address None starts a local one)."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    kwargs: dict[str, Any] = {
        "address": address,
        "include_dashboard": False,
        "log_to_driver": True,
        "logging_level": "WARNING",
    }
    if address is None:
        kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
    # ray.init installs its own SIGTERM handler (abort with a core dump); keep the caller's clean shutdown.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if in_main_thread else None
    ray.init(**kwargs)
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


class _ShardWorker:
    """A Ray actor running one shard; async, so `snapshot` answers while `run` is busy."""

    def __init__(
        self, stage: GenerationStage, environment: Mapping[str, str], limiter: LimiterHandle | None, worker_id: str
    ) -> None:
        # Secrets (the API key) arrive as arguments, held in memory only, never through runtime_env or files.
        os.environ.update(environment)
        self.stage = stage
        self.progress = ShardProgress()
        self.limiter = limiter
        self.worker_id = worker_id

    async def run(self, indexes: list[int], run_seed: int, path: str) -> ClientStats:
        return await run_shard(self.stage, indexes, run_seed, Path(path), self.progress, self.limiter, self.worker_id)

    async def snapshot(self) -> dict[str, float]:
        return self.progress.snapshot(self.stage.client.stats)


class RayExecutor(Executor):
    """Shards tasks over `num_workers` Ray actors.

    Part files are written by the workers: on a multi-node cluster the run directory must be on a
    file system every node sees. Actors ask for no CPU: they wait on the network, not compute.
    """

    def __init__(
        self,
        num_workers: int = 2,
        address: str | None = None,
        environment: Mapping[str, str] | None = None,
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"ray.num_workers={num_workers} must be >= 1")
        self.num_workers = num_workers
        self.address = address
        self.environment = dict(environment or {})

    def run(
        self,
        stage: GenerationStage,
        indexes: Sequence[int],
        run_seed: int,
        parts_dir: Path,
        attempt_tag: str,
        on_progress: ProgressCallback | None = None,
    ) -> ExecutionReport:
        import ray

        ensure_ray(self.address)
        worker_cls = ray.remote(num_cpus=0, max_restarts=0)(_ShardWorker)
        shards = shard_indexes(indexes, self.num_workers)
        settings = limiter_settings_for(stage.client)
        limiter = ray.remote(num_cpus=0)(RunLimiter).remote(settings) if settings else None
        handle = LimiterHandle(limiter, settings.lease_period_s) if limiter and settings else None
        started = time.perf_counter()
        actors = [worker_cls.remote(stage, self.environment, handle, str(i)) for i in range(len(shards))]
        try:
            ray.get([actor.snapshot.remote() for actor in actors])  # all workers up: the clock starts now
            startup_s = time.perf_counter() - started
            pending = {
                actor.run.remote(shard, run_seed, str(part_path(parts_dir, attempt_tag, i))): actor
                for i, (actor, shard) in enumerate(zip(actors, shards, strict=True))
            }
            results: list[ClientStats] = []
            snapshots: dict = {}
            while pending:
                done, _ = ray.wait(list(pending), num_returns=len(pending), timeout=POLL_S)
                for ref in done:
                    try:
                        results.append(ray.get(ref))
                    except ray.exceptions.RayTaskError as exc:
                        raise exc.cause from None  # the worker's own error, not Ray's wrapper with its traceback
                    pending.pop(ref)
                if on_progress:
                    self._report(actors, results, pending, snapshots, on_progress)
            history = ray.get(limiter.get_history.remote()) if limiter else []
            return ExecutionReport(sum(results, ClientStats()), history, startup_s)
        finally:
            for actor in [*actors, *([limiter] if limiter else [])]:
                ray.kill(actor)

    @staticmethod
    def _report(
        actors: list, results: list[ClientStats], pending: dict, snapshots: dict, on_progress: ProgressCallback
    ) -> None:
        """Sum the latest snapshot of running workers and the final stats of finished ones; never blocks long."""
        import ray

        running = list(set(pending.values()))
        refs = {actor.snapshot.remote(): actor for actor in running}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=POLL_S)
        for ref in ready:
            snapshots[refs[ref]] = ray.get(ref)
        total: dict[str, float] = {}
        for actor in running:
            for key, value in snapshots.get(actor, {}).items():
                total[key] = total.get(key, 0) + value
        for stats in results:
            total["attempts"] = total.get("attempts", 0) + stats.attempts
            total["status_429"] = total.get("status_429", 0) + stats.status_429
            total["tasks_done"] = total.get("tasks_done", 0) + stats.requests
            total["tasks_failed"] = total.get("tasks_failed", 0) + stats.failures
        on_progress(total)
