"""Latency-bound throughput: can the run keep `concurrency` requests in flight against a slow endpoint?

    python scripts/bench_latency.py --requests 3000 --latency-ms 200 --concurrency 64 --workers 2

The sim (its own process) answers after `--latency-ms` with no rate limit, so the ceiling is
concurrency / latency requests per second (64 / 0.2 s = 320 req/s). Prints sdg's req/s as a fraction of
that ceiling, and the sim's peak in-flight count (the run-wide limit must hold it at `--concurrency`).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from sdg.client import AsyncOpenAIClient, GenerationConfig
from sdg.endpoints.process import ServerProcess, sim_command, sim_stats
from sdg.execution.ray_executor import RayExecutor, ensure_ray
from sdg.pipeline import Pipeline
from sdg.stages import QAMultilingualSyntheticStage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=64, help="client.max_concurrent_requests (whole run)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    ensure_ray()
    ceiling = args.concurrency / (args.latency_ms / 1000.0)
    with ServerProcess(sim_command({"latency_ms": args.latency_ms}), "simulated") as base_url:
        client = AsyncOpenAIClient(
            base_url=base_url, api_key_env=None, max_concurrent_requests=args.concurrency, timeout=30
        )
        stage = QAMultilingualSyntheticStage(
            prompt="A Q&A pair in {language}.",
            languages=["English"],
            client=client,
            model_name="sim-model",
            num_samples=args.requests,
            generation_config=GenerationConfig(max_tokens=16),
        )
        with tempfile.TemporaryDirectory() as tmp:
            result = (
                Pipeline("bench-latency")
                .add_stage(stage)
                .run_detailed(RayExecutor(args.workers), output_dir=Path(tmp), progress=False)
            )
        served = sim_stats(base_url)
    rate = result.stats.successes / result.wall_s
    print(
        f"{args.requests} requests, sim latency {args.latency_ms:.0f} ms, run-wide concurrency {args.concurrency}, "
        f"{args.workers} Ray workers (started in {result.startup_s:.1f}s, not timed)"
    )
    print(
        f"req/s {rate:.0f}  ceiling {ceiling:.0f}  fraction {rate / ceiling:.2f}  sim max_inflight "
        f"{served['max_inflight']}  failed {result.num_failed_samples}  wall {result.wall_s:.1f}s"
    )


if __name__ == "__main__":
    main()
