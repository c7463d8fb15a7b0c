"""Running one shard of a stage's tasks on an asyncio loop: the code every executor shares."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sdg.client.stats import ClientStats
from sdg.execution.parts import PartWriter
from sdg.stages.base import GenerationStage

__all__ = ["ShardProgress", "run_shard"]


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


async def run_shard(
    stage: GenerationStage,
    indexes: Sequence[int],
    run_seed: int,
    part_path: Path,
    progress: ShardProgress | None = None,
) -> ClientStats:
    """Run the tasks of `indexes`, appending each finished task's rows to `part_path` at once."""
    progress = progress or ShardProgress()
    pending = iter(indexes)

    async def worker(writer: PartWriter) -> None:
        for index in pending:
            rows = await stage.run_task(stage.make_task(index, run_seed))
            writer.write(rows)
            progress.tasks_done += 1
            progress.tasks_failed += any(row.get("error") for row in rows)

    with PartWriter(part_path) as writer:
        async with asyncio.TaskGroup() as group:  # one failing worker cancels the rest instead of orphaning them
            for _ in range(min(_width(stage), len(indexes))):
                group.create_task(worker(writer))
    return stage.client.stats
