"""Running one shard of a stage's tasks on an asyncio loop: the code every executor shares."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdg.client.limits import RequestGate
from sdg.client.stats import ClientStats
from sdg.execution.limiter import LimiterHandle
from sdg.execution.parts import PartWriter
from sdg.stages.base import GenerationStage

__all__ = ["EndpointUnusable", "ShardProgress", "run_shard"]

# Errors that every other sample would hit too: stop the run instead of paying for N failures.
FATAL_KINDS = frozenset({"auth", "permission", "not_found", "quota"})
# Unreachable before anything succeeded: the endpoint is down or the URL is wrong, not a passing fault.
UNREACHABLE_KINDS = frozenset({"connection", "timeout"})


class EndpointUnusable(RuntimeError):
    """The endpoint refuses every sample the same way (bad key, unknown model, down): the run stops early."""


def _fatal_error(rows: list[dict], any_success: bool) -> str | None:
    for row in rows:
        error = row.get("error")
        if not error:
            continue
        kind = error.split(":", 1)[0]
        if kind in FATAL_KINDS or (kind in UNREACHABLE_KINDS and not any_success):
            return error.split(": ", 1)[-1]
    return None


@dataclass
class ShardProgress:
    """What a shard has finished so far; read by the driver's progress bar while it runs."""

    tasks_done: int = 0
    tasks_failed: int = 0
    started_at: float = field(default_factory=time.monotonic)

    def snapshot(self, stats: ClientStats) -> dict[str, float]:
        return {
            "tasks_done": self.tasks_done,
            "tasks_failed": self.tasks_failed,
            "attempts": stats.attempts,
            "status_429": stats.status_429,
        }


def _width(stage: GenerationStage) -> int:
    # More workers than slots, so tasks sleeping in backoff (outside the gate) leave slots to others.
    settings = getattr(stage.client, "settings", None)
    slots = getattr(settings, "max_concurrent_requests", 8)
    return 2 * slots + 4


async def _take_lease(limiter: LimiterHandle, worker_id: str, client: Any, gate: RequestGate, demand: int) -> None:
    """Report what the endpoint said since the last lease; apply this worker's share of the run's limits."""
    lease = await limiter.lease(worker_id, demand, client.rate_signals.take(), gate.in_flight)
    gate.resize(lease.slots)
    gate.set_rate(lease.rate_per_s, burst=max(1.0, (lease.rate_per_s or 0.0) * limiter.period_s))
    if lease.pause_s:
        gate.pause_for(lease.pause_s)


async def _follow_leases(
    limiter: LimiterHandle, worker_id: str, client: Any, gate: RequestGate, remaining: Callable[[], int], ceiling: int
) -> None:
    while True:
        await asyncio.sleep(limiter.period_s)
        await _take_lease(limiter, worker_id, client, gate, min(remaining(), ceiling))


async def run_shard(
    stage: GenerationStage,
    indexes: Sequence[int],
    run_seed: int,
    part_path: Path,
    progress: ShardProgress | None = None,
    limiter: LimiterHandle | None = None,
    worker_id: str = "0",
) -> ClientStats:
    """Run the tasks of `indexes`, appending each finished task's rows to `part_path` at once.

    With a `limiter`, this shard's concurrency and rate follow its leases of the run-wide limits.
    """
    progress = progress or ShardProgress()
    pending = iter(indexes)

    async def worker(writer: PartWriter) -> None:
        for index in pending:
            rows = await stage.run_task(stage.make_task(index, run_seed))
            fatal = _fatal_error(rows, progress.tasks_done > progress.tasks_failed)
            if fatal is not None:
                raise EndpointUnusable(fatal)
            writer.write(rows)
            progress.tasks_done += 1
            progress.tasks_failed += any(row.get("error") for row in rows)

    client = stage.client
    shared = limiter is not None and hasattr(client, "rate_signals") and hasattr(client, "settings")
    with PartWriter(part_path) as writer:
        try:
            async with asyncio.TaskGroup() as group:  # one failing worker cancels the rest instead of orphaning them
                if shared:
                    assert limiter is not None
                    gate = await client.current_gate()  # type: ignore[attr-defined]
                    # The configured size, not the gate's: leases shrink the gate.
                    ceiling = client.settings.max_concurrent_requests  # type: ignore[attr-defined]
                    await _take_lease(limiter, worker_id, client, gate, min(len(indexes), ceiling))
                    following = group.create_task(
                        _follow_leases(
                            limiter, worker_id, client, gate, lambda: len(indexes) - progress.tasks_done, ceiling
                        )
                    )
                workers = [group.create_task(worker(writer)) for _ in range(min(_width(stage), len(indexes)))]
                if workers:
                    await asyncio.wait(workers)
                if shared:
                    following.cancel()
                    await limiter.lease(worker_id, 0, client.rate_signals.take())  # type: ignore[union-attr,attr-defined]
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None  # the first cause, as callers expect one exception
    return stage.client.stats
