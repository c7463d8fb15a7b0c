"""Run a stage in this process on one asyncio loop: no Ray start-up, for small runs and debugging."""

from __future__ import annotations

import asyncio
import pickle
import threading
from collections.abc import Sequence
from pathlib import Path

from sdg.execution.base import ExecutionReport, Executor, ProgressCallback, auto_batch_size
from sdg.execution.dispatch import Dispatcher
from sdg.execution.limiter import LimiterHandle, RunLimiter, limiter_settings_for
from sdg.execution.shard import BatchRunner
from sdg.execution.stop import StopRule
from sdg.stages.base import GenerationStage

__all__ = ["LocalExecutor"]


class LocalExecutor(Executor):
    """One worker on a private event loop in a thread (so it also works under a running loop, e.g. Jupyter).

    The same batches, limiter and stop rule as on Ray, without Ray.
    """

    def __init__(self, batch_size: int | None = None, batches_in_flight: int = 3) -> None:
        self.batch_size = batch_size
        self.batches_in_flight = max(1, batches_in_flight)

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
        # A copy, as a Ray worker would get: fresh client stats and connections for this run.
        stage = pickle.loads(pickle.dumps(stage))
        settings = limiter_settings_for(stage.client)
        limiter = RunLimiter(settings) if settings else None
        handle = LimiterHandle(limiter, settings.period_s) if limiter and settings else None
        size = self.batch_size or auto_batch_size(stage, 1, self.batches_in_flight)
        dispatcher = Dispatcher(indexes, size, parts_dir, attempt_tag, stop_rule=stop_rule)
        runner = BatchRunner(stage, handle)
        outcome: dict[str, BaseException] = {}

        def target() -> None:
            try:
                asyncio.run(self._drive(dispatcher, runner, run_seed))
            except BaseException as exc:  # re-raised in the caller's thread
                outcome["error"] = exc

        thread = threading.Thread(target=target, name="sdg-local-executor", daemon=True)
        thread.start()
        try:
            while thread.is_alive():
                thread.join(timeout=0.5)
                if on_progress:
                    on_progress(dispatcher.snapshot())
        finally:
            dispatcher.close()
        if "error" in outcome:
            raise outcome["error"]
        history = limiter.get_history() if limiter else []
        return ExecutionReport(dispatcher.stats, history, batches_by_node=dict(dispatcher.batches_by_node))

    async def _drive(self, dispatcher: Dispatcher, runner: BatchRunner, run_seed: int) -> None:
        running: dict[asyncio.Task, int] = {}
        try:
            while True:
                while len(running) < self.batches_in_flight and (batch := dispatcher.next_batch()) is not None:
                    task = asyncio.create_task(runner.run_batch(batch.batch_id, batch.indexes, run_seed))
                    running[task] = batch.batch_id
                if not running:
                    break
                done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    running.pop(task)
                    dispatcher.accept(task.result())
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            dispatcher.add_stats(await runner.finish())
