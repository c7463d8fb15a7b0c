"""A worker's side of a run: batches of tasks on one asyncio loop, under its lease of the run-wide limits.

The code every executor shares. A worker (a Ray actor, or the driver's own loop in-process) runs the batches
it is handed concurrently through one client; it writes nothing: each batch comes back as JSON lines plus
what the driver needs to judge it (each sample's error kind) and the client stats spent since the last batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from sdg.client.limits import RequestGate
from sdg.client.stats import ClientStats
from sdg.execution.limiter import LimiterHandle
from sdg.execution.parts import encode_rows
from sdg.stages.base import GenerationStage

__all__ = ["BatchResult", "BatchRunner", "add_stats", "task_outcome"]

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    """One batch's rows (JSON lines) and what the driver judges and counts them by."""

    batch_id: int
    lines: bytes
    num_rows: int
    # Per task, in the order they finished: None for a success, else its error kind ("unknown" without one).
    kinds: list[str | None]
    # The first error text of each kind in this batch (for the message of a stop).
    errors: dict[str, str]
    # The client's counters since this worker's previous result (or since it started).
    stats: ClientStats
    worker: str = "0"
    node: str = ""


def task_outcome(rows: list[dict[str, Any]]) -> tuple[str | None, str | None]:
    """(error kind, error text) of a task's rows; (None, None) when none failed. The kind is the typed column."""
    for row in rows:
        if row.get("error"):
            return row.get("error_kind") or "unknown", row["error"]
    return None, None


def add_stats(total: ClientStats, more: ClientStats) -> None:
    """`total += more`, in place (summing thousands of batches with `+` would copy the latencies each time)."""
    for spec in fields(total):
        value = getattr(more, spec.name)
        if isinstance(value, list):
            getattr(total, spec.name).extend(value)
        elif isinstance(value, Counter):
            getattr(total, spec.name).update(value)
        else:
            setattr(total, spec.name, getattr(total, spec.name) + value)


class _StatsCursor:
    """What a client's cumulative stats added since the last call: shipped with each batch, so nothing counts twice."""

    def __init__(self) -> None:
        self._shipped: dict[str, Any] = {}

    def since_last(self, stats: ClientStats) -> ClientStats:
        delta: dict[str, Any] = {}
        for spec in fields(stats):
            now, before = getattr(stats, spec.name), self._shipped.get(spec.name)
            if isinstance(now, list):
                delta[spec.name] = now[before or 0 :]
                self._shipped[spec.name] = len(now)
            elif isinstance(now, Counter):
                delta[spec.name] = now - (before or Counter())
                self._shipped[spec.name] = Counter(now)
            else:
                delta[spec.name] = now - (before or 0)
                self._shipped[spec.name] = now
        return ClientStats(**delta)


async def _take_lease(limiter: LimiterHandle, worker_id: str, client: Any, gate: RequestGate, demand: int) -> None:
    """Report what the endpoint said since the last lease; apply this worker's share of the run's limits."""
    lease = await limiter.lease(worker_id, demand, client.rate_signals.take(), gate.in_flight)
    gate.resize(lease.slots)
    gate.set_rate(lease.rate_per_s, burst=max(1.0, (lease.rate_per_s or 0.0) * limiter.period_s))
    if lease.pause_s:
        gate.pause_for(lease.pause_s)


# A news-triggered lease follows the previous one after at least this long: a burst of 429s is one lease, not 100.
MIN_LEASE_GAP_S = 0.02


async def _follow_leases(
    limiter: LimiterHandle,
    worker_id: str,
    client: Any,
    gate: RequestGate,
    remaining: Callable[[], int],
    ceiling: int,
    news: asyncio.Event,
) -> None:
    """A lease every period, or sooner when the client has news (a 429, an empty window, a new limit)."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(news.wait(), limiter.period_s)
        news.clear()
        await _take_lease(limiter, worker_id, client, gate, min(remaining(), ceiling))
        await asyncio.sleep(MIN_LEASE_GAP_S)


class BatchRunner:
    """Runs the batches handed to one worker, all on one loop and one client, following the run's leases.

    Its demand on the run's limiter is the number of tasks it holds and has not finished: a worker between
    batches asks for nothing, so its slots go to the others.
    """

    def __init__(self, stage: GenerationStage, limiter: LimiterHandle | None = None, worker_id: str = "0") -> None:
        self.stage = stage
        self.limiter = limiter
        self.worker_id = worker_id
        self.node = ""
        self.pending = 0
        self._started: asyncio.Future[None] | None = None
        self._following: asyncio.Task[None] | None = None
        self._cursor = _StatsCursor()

    def _shared(self) -> bool:
        client = self.stage.client
        return self.limiter is not None and hasattr(client, "rate_signals") and hasattr(client, "settings")

    async def _start(self) -> None:
        """The first lease before the first request, then a lease every period (once per worker)."""
        if self._started is not None:
            return await asyncio.shield(self._started)
        self._started = asyncio.get_running_loop().create_future()
        try:
            if self._shared():
                assert self.limiter is not None
                client = self.stage.client
                news = asyncio.Event()
                gate = await client.current_gate(on_news=news.set)  # type: ignore[attr-defined]
                # The configured size, not the gate's: leases shrink the gate.
                ceiling = client.settings.max_concurrent_requests  # type: ignore[attr-defined]
                await _take_lease(self.limiter, self.worker_id, client, gate, min(self.pending, ceiling))
                self._following = asyncio.create_task(
                    _follow_leases(self.limiter, self.worker_id, client, gate, lambda: self.pending, ceiling, news)
                )
                self._following.add_done_callback(_log_failure)
        finally:
            self._started.set_result(None)

    async def run_batch(self, batch_id: int, indexes: Sequence[int], run_seed: int) -> BatchResult:
        stage = self.stage
        self.pending += len(indexes)
        chunks: list[bytes] = []
        kinds: list[str | None] = []
        errors: dict[str, str] = {}
        num_rows = 0

        async def one(index: int) -> None:
            nonlocal num_rows
            try:
                rows = await stage.run_task(stage.make_task(index, run_seed))
            finally:
                self.pending -= 1
            chunks.append(encode_rows(rows))
            num_rows += len(rows)
            kind, error = task_outcome(rows)
            kinds.append(kind)
            if kind is not None and error is not None:
                errors.setdefault(kind, error)

        try:
            await self._start()
            async with asyncio.TaskGroup() as group:  # a stage's own bug cancels the batch instead of orphaning it
                for index in indexes:
                    group.create_task(one(index))
        except ExceptionGroup as failed:
            raise failed.exceptions[0] from None  # the first cause, as callers expect one exception
        return BatchResult(
            batch_id=batch_id,
            lines=b"".join(chunks),
            num_rows=num_rows,
            kinds=kinds,
            errors=errors,
            stats=self.stats_since_last(),
            worker=self.worker_id,
            node=self.node,
        )

    def stats_since_last(self) -> ClientStats:
        stats = getattr(self.stage.client, "stats", None)
        return self._cursor.since_last(stats) if isinstance(stats, ClientStats) else ClientStats()

    async def finish(self) -> ClientStats:
        """Stop following leases, give this worker's slots back, close connections, hand in the stats not shipped."""
        client = self.stage.client
        if self._following is not None:
            self._following.cancel()
            self._following = None
            if self.limiter is not None and self._shared():
                await self.limiter.lease(self.worker_id, 0, client.rate_signals.take())  # type: ignore[attr-defined]
        aclose = getattr(client, "aclose", None)
        if aclose is not None:
            await aclose()
        return self.stats_since_last()


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("sdg: this worker stopped following the run's limiter: %s", task.exception())
