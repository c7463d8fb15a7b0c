"""The executor interface and the pieces every executor shares: sharding and progress."""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sdg.client.stats import ClientStats
from sdg.stages.base import GenerationStage

__all__ = ["ExecutionReport", "Executor", "ProgressCallback", "part_path", "shard_indexes"]

# Called by executors about twice a second with the summed snapshot of all shards.
ProgressCallback = Callable[[dict[str, float]], None]


@dataclass
class ExecutionReport:
    """What an executor hands back: the workers' summed client stats and the run limiter's history."""

    stats: ClientStats
    limiter_history: list[tuple[float, float, float]] = field(default_factory=list)
    startup_s: float = 0.0  # starting workers, before the first request could be sent


def shard_indexes(indexes: Sequence[int], num_shards: int) -> list[list[int]]:
    """Strided shards (0, n, 2n, ...) so slow and fast regions of a stage spread over every worker."""
    shards = [list(indexes[i::num_shards]) for i in range(num_shards)]
    return [shard for shard in shards if shard]


def part_path(parts_dir: Path, attempt_tag: str, shard: int) -> Path:
    return parts_dir / f"part-{attempt_tag}-{shard:04d}.jsonl"


class Executor(abc.ABC):
    """Runs a stage's tasks somewhere and leaves their rows in part files under `parts_dir`."""

    @abc.abstractmethod
    def run(
        self,
        stage: GenerationStage,
        indexes: Sequence[int],
        run_seed: int,
        parts_dir: Path,
        attempt_tag: str,
        on_progress: ProgressCallback | None = None,
    ) -> ExecutionReport:
        """Run the tasks of `indexes` under one run-wide limiter; report stats and the limiter's history."""
