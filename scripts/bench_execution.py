"""Throughput of sdg's execution on Ray against the design it replaced, side by side on the simulated endpoint.

    python scripts/bench_execution.py --samples 20000 --workers 2 --rounds 3

`new`: `RayExecutor` as it is: workers pull small batches and return the rows; the driver alone writes them.
`old`: the previous design, kept here as it was (commit 9500db8): one strided shard per worker, each worker
writing its own part file (`StridedShardExecutor` below; only the limiter's period setting renamed).
Both run the same stage (`QAMultilingualSyntheticStage`, max_tokens=16) through `Pipeline.run_detailed` with
the same client (`max_concurrent_requests=64`, run-wide limiter), against one sim process without latency, in
one Ray session, alternating old/new each round. Per round and design, one line; then medians:
  gen samples/s    N / generation wall (`PipelineResult.wall_s`, worker start-up excluded)
  total samples/s  N / the whole run_detailed call (start-up, generation, collecting the dataset)
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from sdg.client import AsyncOpenAIClient, GenerationConfig
from sdg.client.stats import ClientStats
from sdg.endpoints.process import ServerProcess, sim_command
from sdg.execution.base import ExecutionReport, Executor, ProgressCallback
from sdg.execution.limiter import LimiterHandle, RunLimiter, limiter_settings_for
from sdg.execution.parts import PartWriter
from sdg.execution.ray_executor import RayExecutor, ensure_ray
from sdg.execution.shard import _take_lease
from sdg.pipeline import Pipeline
from sdg.stages import QAMultilingualSyntheticStage
from sdg.stages.base import GenerationStage


async def _old_run_shard(
    stage: GenerationStage, indexes: Sequence[int], run_seed: int, path: Path, limiter: LimiterHandle, worker_id: str
) -> ClientStats:
    """The previous per-shard loop: 2*slots+4 coroutines pull from the shard, each row written as it finishes."""
    pending = iter(indexes)
    done = 0

    async def worker(writer: PartWriter) -> None:
        nonlocal done
        for index in pending:
            writer.write(await stage.run_task(stage.make_task(index, run_seed)))
            done += 1

    async def follow(gate, ceiling: int) -> None:  # type: ignore[no-untyped-def]
        while True:
            await asyncio.sleep(limiter.period_s)
            await _take_lease(limiter, worker_id, client, gate, min(len(indexes) - done, ceiling))

    client = stage.client
    width = 2 * client.settings.max_concurrent_requests + 4
    with PartWriter(path) as writer:
        gate = await client.current_gate()
        ceiling = client.settings.max_concurrent_requests
        await _take_lease(limiter, worker_id, client, gate, min(len(indexes), ceiling))
        following = asyncio.create_task(follow(gate, ceiling))
        await asyncio.gather(*(worker(writer) for _ in range(min(width, len(indexes)))))
        following.cancel()
        await limiter.lease(worker_id, 0, client.rate_signals.take())
    return stage.client.stats


class _OldShardWorker:
    def __init__(self, stage: GenerationStage, limiter: LimiterHandle, worker_id: str) -> None:
        self.stage, self.limiter, self.worker_id = stage, limiter, worker_id

    async def ready(self) -> None:
        return None

    async def run(self, indexes: list[int], run_seed: int, path: str) -> ClientStats:
        return await _old_run_shard(self.stage, indexes, run_seed, Path(path), self.limiter, self.worker_id)


class StridedShardExecutor(Executor):
    """The replaced design: shard i = indexes[i::W] on worker i, which writes part-<tag>-000i.jsonl itself."""

    def __init__(self, num_workers: int) -> None:
        self.num_workers = num_workers

    def run(
        self,
        stage: GenerationStage,
        indexes: Sequence[int],
        run_seed: int,
        parts_dir: Path,
        attempt_tag: str,
        on_progress: ProgressCallback | None = None,
        stop_rule: object = None,
    ) -> ExecutionReport:
        import ray

        settings = limiter_settings_for(stage.client)
        assert settings is not None
        limiter = ray.remote(num_cpus=0)(RunLimiter).remote(settings)
        handle = LimiterHandle(limiter, settings.period_s)
        shards = [list(indexes[i :: self.num_workers]) for i in range(self.num_workers)]
        started = time.perf_counter()
        actors = [ray.remote(num_cpus=0)(_OldShardWorker).remote(stage, handle, str(i)) for i in range(len(shards))]
        try:
            ray.get([actor.ready.remote() for actor in actors])
            startup_s = time.perf_counter() - started
            parts_dir.mkdir(parents=True, exist_ok=True)
            refs = [
                actor.run.remote(shard, run_seed, str(parts_dir / f"part-{attempt_tag}-{i:04d}.jsonl"))
                for i, (actor, shard) in enumerate(zip(actors, shards, strict=True))
            ]
            stats = sum(ray.get(refs), ClientStats())
            return ExecutionReport(stats, ray.get(limiter.get_history.remote()), startup_s)
        finally:
            for actor in [*actors, limiter]:
                ray.kill(actor)


def one_run(design: str, base_url: str, args: argparse.Namespace) -> dict[str, float]:
    client = AsyncOpenAIClient(
        base_url=base_url, api_key_env=None, max_concurrent_requests=args.concurrency, max_retries=3
    )
    stage = QAMultilingualSyntheticStage(
        prompt="Generate a Q&A pair about science in {language}.",
        languages=["English", "French", "German", "Spanish", "Japanese"],
        client=client,
        model_name="sim-model",
        num_samples=args.samples,
        generation_config=GenerationConfig(max_tokens=16),
    )
    executor = RayExecutor(args.workers) if design == "new" else StridedShardExecutor(args.workers)
    with tempfile.TemporaryDirectory(prefix="bench-exec-") as tmp:
        started = time.perf_counter()
        result = Pipeline("bench").add_stage(stage).run_detailed(executor, output_dir=Path(tmp), progress=False)
        total = time.perf_counter() - started
    assert list(result.dataset["index"]) == list(range(args.samples)), "every index exactly once"
    return {
        "gen": args.samples / result.wall_s,
        "total": args.samples / total,
        "startup": result.startup_s,
        "failed": result.num_failed_samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    server = ServerProcess(sim_command({}), "simulated")
    base_url = server.start()
    ensure_ray()
    results: dict[str, list[dict[str, float]]] = {"old": [], "new": []}
    print(
        f"bench_execution: N={args.samples}, {args.workers} workers, max_concurrent_requests={args.concurrency}, "
        f"sim without latency, {args.rounds} rounds alternating"
    )
    print(f"{'round':>5} {'design':>6} {'gen samples/s':>13} {'total samples/s':>15} {'startup s':>9} {'failed':>6}")
    try:
        for round_ in range(1, args.rounds + 1):
            for design in ("old", "new") if round_ % 2 else ("new", "old"):
                r = one_run(design, base_url, args)
                results[design].append(r)
                print(
                    f"{round_:>5} {design:>6} {r['gen']:13.0f} {r['total']:15.0f} {r['startup']:9.2f} "
                    f"{r['failed']:>6.0f}",
                    flush=True,
                )
    finally:
        server.stop()
    for design in ("old", "new"):
        gen = statistics.median(r["gen"] for r in results[design])
        total = statistics.median(r["total"] for r in results[design])
        print(f"median {design:>6} {gen:13.0f} {total:15.0f}")


if __name__ == "__main__":
    main()
