"""The executor interface and what every executor shares: the report, batch sizes, unrecoverable failures."""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sdg.client.stats import ClientStats
from sdg.execution.stop import StopRule
from sdg.stages.base import GenerationStage

__all__ = ["ExecutionFailed", "ExecutionReport", "Executor", "ProgressCallback", "auto_batch_size"]

# Called by executors about twice a second with the run's totals so far.
ProgressCallback = Callable[[dict[str, float]], None]


class ExecutionFailed(RuntimeError):
    """Where the run executes failed beyond repair (Ray could not start, every worker lost): one line, resumable."""


@dataclass
class ExecutionReport:
    """What an executor hands back: the workers' summed client stats, the limiter's history, losses survived."""

    stats: ClientStats
    limiter_history: list[tuple[float, float, float]] = field(default_factory=list)
    startup_s: float = 0.0  # starting workers, before the first request could be sent
    num_worker_restarts: int = 0  # workers lost (and restarted) during the run; their batches were asked again
    batches_by_node: dict[str, int] = field(default_factory=dict)  # which nodes did the work


def auto_batch_size(stage: GenerationStage, num_workers: int, batches_in_flight: int) -> int:
    """Small batches, yet enough tasks per worker to keep its share of the slots busy.

    A worker's share is `max_concurrent_requests / num_workers`; it holds `batches_in_flight` batches, and all
    but one (in transit) should cover twice its share plus a few, as tasks sleeping in backoff hold no slot.
    """
    settings = getattr(stage.client, "settings", None)
    slots = getattr(settings, "max_concurrent_requests", 8)
    share = math.ceil(slots / max(num_workers, 1))
    return max(4, min(256, math.ceil((2 * share + 4) / max(batches_in_flight - 1, 1))))


class Executor(abc.ABC):
    """Runs a stage's tasks somewhere; the rows come back to this process, which alone writes `parts_dir`."""

    @abc.abstractmethod
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
        """Run the tasks of `indexes` under one run-wide limiter; report stats and the limiter's history.

        `stop_rule` (default: a fresh `StopRule`) decides when the run stops early, e.g. on a spent budget.
        """
