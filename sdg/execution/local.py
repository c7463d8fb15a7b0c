"""Run a stage in this process on one asyncio loop: no Ray start-up, for small runs and debugging."""

from __future__ import annotations

import asyncio
import pickle
import threading
from collections.abc import Sequence
from pathlib import Path

from sdg.execution.base import ExecutionReport, Executor, ProgressCallback, part_path
from sdg.execution.limiter import LimiterHandle, RunLimiter, limiter_settings_for
from sdg.execution.shard import ShardProgress, run_shard
from sdg.stages.base import GenerationStage

__all__ = ["LocalExecutor"]


class LocalExecutor(Executor):
    """One shard on a private event loop in a thread (so it also works under a running loop, e.g. Jupyter)."""

    def run(
        self,
        stage: GenerationStage,
        indexes: Sequence[int],
        run_seed: int,
        parts_dir: Path,
        attempt_tag: str,
        on_progress: ProgressCallback | None = None,
    ) -> ExecutionReport:
        # A copy, as a Ray worker would get: fresh client stats and connections for this run.
        stage = pickle.loads(pickle.dumps(stage))
        progress = ShardProgress()
        settings = limiter_settings_for(stage.client)
        limiter = RunLimiter(settings) if settings else None
        handle = LimiterHandle(limiter, settings.lease_period_s) if limiter and settings else None
        outcome: dict[str, object] = {}

        def target() -> None:
            try:
                outcome["stats"] = asyncio.run(
                    run_shard(stage, indexes, run_seed, part_path(parts_dir, attempt_tag, 0), progress, handle)
                )
            except BaseException as exc:  # re-raised in the caller's thread
                outcome["error"] = exc

        thread = threading.Thread(target=target, name="sdg-local-executor", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(timeout=0.5)
            if on_progress:
                on_progress(progress.snapshot(stage.client.stats))
        if "error" in outcome:
            raise outcome["error"]  # type: ignore[misc]
        history = limiter.get_history() if limiter else []
        return ExecutionReport(outcome["stats"], history)  # type: ignore[arg-type]
