"""Run a stage on Ray workers that pull small batches; rows come back to the driver, which alone writes them.

Each worker is an async actor with its own client and loop, holding a few batches at a time. A worker that
dies (OOM kill, lost node) is restarted by Ray (`max_restarts`); its batches in flight come back as errors
to the driver, which hands them to whichever worker asks next, so every index is written exactly once.
Batch calls are not retried by Ray (`max_task_retries=0`): a retry would pin the batch to the restarting
actor, while the other workers can take it at once. The run-wide limiter is an actor too, restarted on loss
with its calls retried (`max_task_retries=-1`); it rebuilds its state from the workers' next leases.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdg.client.stats import ClientStats
from sdg.execution.base import ExecutionFailed, ExecutionReport, Executor, ProgressCallback, auto_batch_size
from sdg.execution.dispatch import Batch, Dispatcher
from sdg.execution.limiter import Lease, LimiterHandle, RunLimiter, limiter_settings_for
from sdg.execution.shard import BatchResult, BatchRunner
from sdg.execution.stop import StopRule
from sdg.stages.base import GenerationStage

__all__ = ["RayExecutor", "ensure_ray"]

log = logging.getLogger(__name__)
POLL_S = 0.5
FINISH_TIMEOUT_S = 30.0


def one_line(error: BaseException) -> str:
    """Ray's errors span many lines (tracebacks, hints): the first line that says something."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join this process's Ray session, or start one: address None starts a fresh local instance, always.

    `ray.init(address=None)` would join whatever /tmp/ray/ray_current_cluster names, even a dead cluster a
    killed head left behind; "local" never does. "auto" and "ray://host:port" join a running cluster.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    local = address in (None, "", "local")
    kwargs: dict[str, Any] = {
        "address": "local" if local else address,
        "include_dashboard": False,
        "log_to_driver": True,
        "logging_level": "WARNING",
    }
    if local:
        kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
    else:
        _check_reachable(str(address))  # Ray itself retries a dead address for minutes
    # ray.init installs its own SIGTERM handler (abort with a core dump); keep the caller's clean shutdown.
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if in_main_thread else None
    try:
        ray.init(**kwargs)
    except Exception as exc:
        what = "start a local Ray instance" if local else f"join the Ray cluster at ray.address={address}"
        raise ExecutionFailed(f"could not {what}: {one_line(exc)}") from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _check_reachable(address: str) -> None:
    """Fail in seconds, with one line, when nothing listens where the cluster should be."""
    target: str | None = address
    if address == "auto":
        try:  # where Ray would look: RAY_ADDRESS, then the address file of the last `ray start`
            from ray._private.services import canonicalize_bootstrap_address

            target = canonicalize_bootstrap_address("auto")
        except Exception:
            return  # nothing found: ray.init says so itself, at once
    if not target:
        return
    host, _, port = target.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=3.0).close()
    except OSError as exc:
        raise ExecutionFailed(
            f"could not join the Ray cluster at ray.address={address}: nothing answers at {host}:{port} ({exc}); "
            "start it (ray start --head) or set ray.address=null to run on a fresh local Ray"
        ) from None


class _BatchWorker:
    """A Ray actor running the batches it is handed; async, so several batches share its client and loop."""

    def __init__(
        self, stage: GenerationStage, environment: Mapping[str, str], limiter: LimiterHandle | None, worker_id: str
    ) -> None:
        import ray

        # Secrets (the API key) arrive as arguments, held in memory only, never through runtime_env or files.
        os.environ.update(environment)
        self.runner = BatchRunner(stage, limiter, worker_id)
        self.runner.node = ray.get_runtime_context().get_node_id()

    async def ready(self) -> tuple[str, int]:
        """Which process this is: a restarted actor answers from another one."""
        return self.runner.node, os.getpid()

    async def run_batch(self, batch_id: int, indexes: list[int], run_seed: int) -> BatchResult:
        return await self.runner.run_batch(batch_id, indexes, run_seed)

    async def finish(self) -> ClientStats:
        return await self.runner.finish()


class _LimiterActor:
    """The run's limiter as a Ray actor. Restarted after a loss, it knows nobody's slots yet: for a few lease
    periods it lets each worker keep only what it has in flight, while every worker's next lease tells it
    who holds what; then it shares as before.
    """

    def __init__(self, settings: Any) -> None:
        import ray

        self.limiter = RunLimiter(settings)
        with warnings.catch_warnings():  # Ray's own property trips its deprecation warning
            warnings.simplefilter("ignore")
            restarted = ray.get_runtime_context().was_current_actor_reconstructed
        self._settle_until = time.monotonic() + 3 * settings.period_s if restarted else 0.0

    def lease(self, worker: str, demand: int, signals: Any, in_flight: int = 0) -> Lease:
        lease = self.limiter.lease(worker, demand, signals, in_flight)
        if time.monotonic() < self._settle_until:
            return Lease(min(lease.slots, in_flight), lease.rate_per_s, lease.pause_s)
        return lease

    def get_history(self) -> list[tuple[float, float, float]]:
        return self.limiter.get_history()


@dataclass
class _Slot:
    """One worker as the driver sees it: starting, alive (gets batches), restarting (a probe is out), dead."""

    worker_id: str
    actor: Any
    state: str = "starting"
    in_flight: int = 0
    incarnation: tuple[str, int] | None = None  # (node, pid) of the actor's current process


class RayExecutor(Executor):
    """Hands small batches to `num_workers` Ray actors as they ask; writes what they return.

    Actors ask for no CPU (they wait on the network, not compute) and are spread over the cluster's nodes.
    Only the driver touches the run directory: a multi-node cluster needs no shared file system.
    """

    def __init__(
        self,
        num_workers: int = 2,
        address: str | None = None,
        environment: Mapping[str, str] | None = None,
        *,
        batch_size: int | None = None,
        batches_in_flight: int = 3,
        max_restarts: int = 3,
    ) -> None:
        if num_workers < 1:
            raise ValueError(f"ray.num_workers={num_workers} must be >= 1")
        self.num_workers = num_workers
        self.address = address
        self.environment = dict(environment or {})
        self.batch_size = batch_size
        self.batches_in_flight = max(1, batches_in_flight)
        self.max_restarts = max_restarts

    def run(
        self,
        stage: GenerationStage,
        indexes: Sequence[int],
        run_seed: int,
        parts_dir: Path,
        attempt_tag: str,
        on_progress: ProgressCallback | None = None,
        stop_rule: StopRule | None = None,
    ) -> ExecutionReport:
        import ray

        ensure_ray(self.address)
        settings = limiter_settings_for(stage.client)
        limiter = None
        if settings:
            limiter_cls = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)(_LimiterActor)
            limiter = limiter_cls.remote(settings)
        handle = LimiterHandle(limiter, settings.period_s) if limiter and settings else None
        worker_cls = ray.remote(
            num_cpus=0, max_restarts=self.max_restarts, max_task_retries=0, scheduling_strategy="SPREAD"
        )(_BatchWorker)
        size = self.batch_size or auto_batch_size(stage, self.num_workers, self.batches_in_flight)
        dispatcher = Dispatcher(indexes, size, parts_dir, attempt_tag, stop_rule=stop_rule)
        slots = [
            _Slot(str(i), worker_cls.remote(stage, self.environment, handle, str(i))) for i in range(self.num_workers)
        ]
        try:
            startup_s, restarts = self._drive(dispatcher, slots, run_seed, on_progress)
            for stats in self._finish(slots):
                dispatcher.add_stats(stats)
            history = self._history(limiter)
            return ExecutionReport(
                dispatcher.stats,
                history,
                startup_s,
                num_worker_restarts=restarts,
                batches_by_node=dict(dispatcher.batches_by_node),
            )
        except ray.exceptions.RayError as exc:  # Ray itself failed (not a worker we can replace)
            raise ExecutionFailed(f"Ray failed: {one_line(exc)}") from None
        finally:
            dispatcher.close()
            for actor in [*(slot.actor for slot in slots), *([limiter] if limiter else [])]:
                with contextlib.suppress(Exception):  # Ray already gone: nothing left to stop
                    ray.kill(actor)

    def _drive(
        self, dispatcher: Dispatcher, slots: list[_Slot], run_seed: int, on_progress: ProgressCallback | None
    ) -> tuple[float, int]:
        """Keep every live worker `batches_in_flight` batches busy until all are written; (start-up s, restarts)."""
        import ray

        pending: dict[Any, tuple[_Slot, Batch | None]] = {}
        started = time.perf_counter()
        startup_s: float | None = None
        restarts = 0
        last_error = ""
        last_progress = 0.0

        def probe(slot: _Slot) -> None:
            # Retried by Ray until the actor is back (or out of restarts); batches wait for its answer.
            pending[slot.actor.ready.options(max_task_retries=-1).remote()] = (slot, None)

        for slot in slots:
            probe(slot)
        while not dispatcher.finished:
            for slot in slots:
                while slot.state == "alive" and slot.in_flight < self.batches_in_flight:
                    batch = dispatcher.next_batch()
                    if batch is None:
                        break
                    ref = slot.actor.run_batch.remote(batch.batch_id, batch.indexes, run_seed)
                    pending[ref] = (slot, batch)
                    slot.in_flight += 1
            if not pending:
                raise ExecutionFailed(
                    f"all {len(slots)} Ray workers were lost, {self.max_restarts} restarts each (last: {last_error})"
                )
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            if ready:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=0)
            for ref in ready:
                slot, batch = pending.pop(ref)
                if batch is None:  # a worker's answer to `ready`: up (again), or gone for good
                    try:
                        incarnation = ray.get(ref)
                    except ray.exceptions.RayActorError as exc:
                        slot.state, last_error = "dead", one_line(exc)
                        log.warning("sdg: Ray worker %s is gone for good: %s", slot.worker_id, last_error)
                        continue
                    if slot.incarnation is not None and incarnation != slot.incarnation:
                        restarts += 1
                        log.warning("sdg: Ray worker %s was lost and restarted (%s)", slot.worker_id, last_error)
                    slot.incarnation, slot.state = incarnation, "alive"
                    if startup_s is None:
                        startup_s = time.perf_counter() - started
                    continue
                slot.in_flight -= 1
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    raise exc.cause from None  # the stage's own error, not Ray's wrapper with its traceback
                except ray.exceptions.RayError as exc:
                    last_error = one_line(exc)
                    dispatcher.lost(batch, last_error)  # to whichever worker asks next
                    if isinstance(exc, ray.exceptions.RayActorError) and slot.state == "alive":
                        # Dead, restarting or briefly unreachable: no more batches until it answers again.
                        slot.state = "restarting"
                        probe(slot)
                    continue
                dispatcher.accept(result)
            now = time.perf_counter()
            if on_progress and now - last_progress >= POLL_S:
                last_progress = now
                on_progress(dispatcher.snapshot())
        if on_progress:
            on_progress(dispatcher.snapshot())
        return (startup_s if startup_s is not None else time.perf_counter() - started), restarts

    @staticmethod
    def _finish(slots: list[_Slot]) -> list[ClientStats]:
        """The live workers' last stats; a worker that does not answer in time only costs its last counts."""
        import ray

        refs = [slot.actor.finish.remote() for slot in slots if slot.state == "alive"]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=FINISH_TIMEOUT_S)
        stats = []
        for ref in ready:
            try:
                stats.append(ray.get(ref))
            except ray.exceptions.RayError:
                continue
        return stats

    @staticmethod
    def _history(limiter: Any) -> list[tuple[float, float, float]]:
        import ray

        if limiter is None:
            return []
        try:
            return ray.get(limiter.get_history.remote(), timeout=FINISH_TIMEOUT_S)
        except ray.exceptions.RayError:
            return []
