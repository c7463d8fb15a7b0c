"""The driver's side of a run: hands out small batches in index order, writes what comes back, judges it.

Workers pull: each holds a few batches and gets the next as one comes back, so a slow worker holds little of
the run and a lost worker's batches go to whoever asks next. Only the driver writes the part files, and only
rows of a batch that came back whole: a lost batch is asked again and written once.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sdg.client.stats import ClientStats
from sdg.execution.base import ExecutionFailed
from sdg.execution.parts import ROWS_PER_PART, RotatingPartWriter
from sdg.execution.shard import BatchResult, add_stats
from sdg.execution.stop import BudgetSpent, EndpointUnusable, StopRule

__all__ = ["Batch", "Dispatcher"]

MAX_TRIES = 3  # a batch lost with this many workers is not a passing loss: it kills them


@dataclass
class Batch:
    batch_id: int
    indexes: list[int]
    tries: int = 0


class Dispatcher:
    """Batches out, results in; raises `EndpointUnusable` when the run must stop (see `StopRule`)."""

    def __init__(
        self,
        indexes: Sequence[int],
        batch_size: int,
        parts_dir: Path,
        attempt_tag: str,
        rows_per_part: int = ROWS_PER_PART,
        stop_rule: StopRule | None = None,
    ) -> None:
        self._indexes = indexes
        self._batch_size = max(1, batch_size)
        self._next = 0
        self._ids = itertools.count()
        self._again: deque[Batch] = deque()
        self._out: dict[int, Batch] = {}
        self.writer = RotatingPartWriter(parts_dir, attempt_tag, rows_per_part)
        self.stop_rule = stop_rule or StopRule()
        self.stats = ClientStats()
        self.tasks_done = 0
        self.tasks_failed = 0
        self.batches_lost = 0
        self.batches_by_node: Counter[str] = Counter()

    def next_batch(self) -> Batch | None:
        """A lost batch first, else the next indexes; None when everything is handed out."""
        if self._again:
            batch = self._again.popleft()
        elif self._next < len(self._indexes):
            end = min(self._next + self._batch_size, len(self._indexes))
            batch = Batch(next(self._ids), list(self._indexes[self._next : end]))
            self._next = end
        else:
            return None
        self._out[batch.batch_id] = batch
        return batch

    def has_work(self) -> bool:
        return bool(self._again) or self._next < len(self._indexes)

    @property
    def finished(self) -> bool:
        return not self.has_work() and not self._out

    def lost(self, batch: Batch, why: str) -> None:
        """The batch's worker died (or its result was lost): hand it out again, to whichever worker asks."""
        if self._out.pop(batch.batch_id, None) is None:
            return
        self.batches_lost += 1
        batch.tries += 1
        if batch.tries >= MAX_TRIES:
            raise ExecutionFailed(
                f"samples {batch.indexes[0]}..{batch.indexes[-1]} were lost with {batch.tries} workers in a row "
                f"(last: {why})"
            )
        self._again.append(batch)

    def accept(self, result: BatchResult) -> None:
        """Write a batch's rows (once), count them, and stop the run if the endpoint is unusable."""
        if self._out.pop(result.batch_id, None) is None:
            return  # not outstanding: written already or handed out again; never write an index twice
        self.writer.write_lines(result.lines, result.num_rows)
        add_stats(self.stats, result.stats)
        self.batches_by_node[result.node] += 1
        for kind in result.kinds:
            self.tasks_done += 1
            self.tasks_failed += kind is not None
            why = self.stop_rule.observe(kind, result.errors.get(kind) if kind else None)
            if why is not None:
                raise EndpointUnusable(why)
        why = self.stop_rule.observe_spend(self.stats, self.tasks_done)
        if why is not None:
            raise BudgetSpent(why)

    def add_stats(self, stats: ClientStats) -> None:
        add_stats(self.stats, stats)

    def snapshot(self) -> dict[str, float]:
        return {
            "tasks_done": self.tasks_done,
            "tasks_failed": self.tasks_failed,
            "attempts": self.stats.attempts,
            "status_429": self.stats.status_429,
        }

    def close(self) -> None:
        self.writer.close()
