"""Goodput under a server rate limit: NeMo Curator's documented retry loop vs sdg, same requests, same sim.

    python scripts/bench_ratelimit.py --mode library --rps 50 --burst 10 --concurrency 5,32 --styles seconds,ms,none
    python scripts/bench_ratelimit.py --mode library --rps 50 --burst 10 --concurrency 128 --lower-to 10 --lower-at-s 8
    python scripts/bench_ratelimit.py --mode run --requests 1000 --rps 50 --burst 10 --workers 4

--mode library: one `AsyncOpenAIClient` in this process, no Ray, no sdg.run (the library as NeMo Curator's users
use it: max_retries=3, base_delay=1.0), beside the baseline loop in this process with the same concurrency.
--mode run: the pipeline on `RayExecutor(W)` (run-wide limiter) beside W baseline processes.
--styles: the sim's `--retry-after-style` for each run (seconds: whole-second Retry-After as HTTP gateways send;
ms: retry-after-ms only; both; date; none: no hint at all); --no-ratelimit-headers drops x-ratelimit-*.
--lower-to R2 --lower-at-s T: the sim's limit drops from R to R2 at T seconds (POST /admin/limits); the row
then also reports the 429 share of attempts after the change and goodput after it as a fraction of R2.

The simulated endpoint runs as a separate process with `--rate-limit-rps R --latency-ms 50` (a token bucket
of R requests/s, burst R, answering 429 with Retry-After / retry-after-ms and x-ratelimit-* headers).
A fresh sim is started for every (client, workers) run, so each starts with a full bucket and zeroed /stats.
Every run sends the same N requests (the QA stage's own tasks: same prompts, seeds, max_tokens).

baseline (NeMo Curator `AsyncLLMClient.query_model`, as published): per worker process one
`asyncio.Semaphore(32)`, held for the whole request *including its backoff sleeps*; up to `1 + max_retries`
attempts on 429 / 5xx / connection errors / timeouts, sleeping `base_delay * 2**attempt + uniform(0, 1)`
(attempt = 0 after the first failure; base_delay 1.0); Retry-After is ignored; a request that runs out of
retries is lost. HTTP is raw aiohttp (cheaper than the openai SDK, which would also add its own retries
unless max_retries=0). W worker processes (multiprocessing, spawn) each send N/W of the requests.

sdg: `Pipeline.add_stage(QAMultilingualSyntheticStage(client=AsyncOpenAIClient(base_url, api_key_env=None,
max_concurrent_requests=32, max_retries=10, base_delay=1.0), num_samples=N)).run_detailed(RayExecutor(W))`.
sdg is told nothing about the limit: no `rpm` or other rate argument, even where the client accepts one;
whatever it does it learns from the server's answers (429s, Retry-After, x-ratelimit-* headers).
Note: the baseline's 32 is per worker process (W=4 may have 128 in flight); where sdg has its run-wide
limiter, its `max_concurrent_requests=32` is for the whole run, whatever W is (as the flag is given).

Per run, one line:
  goodput/R   successful requests / wall time of the batch, as a fraction of R (1.00 = the limit, used fully)
  429 share   the sim's r429 / requests: the share of all HTTP attempts that were refused
  p95 s       end-to-end latency of successful requests, retries and backoff included (baseline: from
              taking the semaphore; sdg: the dataset's `latency_s`, from entering `complete`, so it also
              counts the wait at the client's gate: a worker runs 2*32+4 tasks, and a paced gate queues them)
  failed      requests that never succeeded (out of retries, or cut by the wall-clock cap)
  inflight    the peak concurrency the sim saw (`max_inflight`)
Wall time starts once the workers are up (spawned processes imported / Ray actors ready) and ends at the
last answer: it times the requests, not process start-up (sdg prints its Ray actors' start-up apart).
Each run is capped at `--cap-s` seconds, and an sdg run that sends nothing for `--stall-s` seconds is ended;
such a run is marked (capped) and its unfinished requests count as failed (its p95 is then unknown).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import multiprocessing as mp
import queue
import random
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdg.client import AsyncOpenAIClient, GenerationConfig
from sdg.client.stats import percentile
from sdg.endpoints.process import ServerProcess, sim_command, sim_stats
from sdg.stages.qa_multilingual import QAMultilingualSyntheticStage

MODEL = "sim-model"
PROMPT = "Generate a Q&A pair about science in {language}."
LANGUAGES = ["English", "French", "German", "Spanish", "Japanese"]
RUN_SEED = 0
RETRYABLE_STATUSES = frozenset({408, 409, 429})


class WallClockExceeded(Exception):
    """A run went past its wall-clock cap."""


class WallClockCap:
    """`with WallClockCap(s) as cap:` raises WallClockExceeded in the main thread after s seconds (SIGALRM),
    or earlier when `progress()` has not changed for `stall_s` seconds (checked by a watchdog thread).

    Code underneath may wrap the exception (Ray's C extension raises SystemError from it); `cap.fired`
    tells the caller that whatever came out was the cap, and `cap.reason` why.
    """

    def __init__(self, seconds: float, progress: Callable[[], int] | None = None, stall_s: float = 60.0) -> None:
        self.seconds = seconds
        self.progress = progress
        self.stall_s = stall_s
        self.fired = False
        self.reason = f"past the {seconds:.0f}s cap"
        self._previous: Any = None
        self._done = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="stall-watchdog", daemon=True)

    def _expire(self, signum: int, frame: object) -> None:
        if self._done.is_set():
            return
        self.fired = True
        raise WallClockExceeded(self.reason)

    def _watch(self) -> None:
        assert self.progress is not None
        last, changed_at = None, time.monotonic()
        while not self._done.wait(1.0):
            with contextlib.suppress(OSError):
                value = self.progress()
                if value != last:
                    last, changed_at = value, time.monotonic()
            if time.monotonic() - changed_at > self.stall_s:
                self.reason = f"stalled: no new HTTP attempt for {self.stall_s:.0f}s"
                signal.pthread_kill(threading.main_thread().ident, signal.SIGALRM)  # type: ignore[arg-type]
                return

    def __enter__(self) -> WallClockCap:
        self._previous = signal.signal(signal.SIGALRM, self._expire)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        if self.progress is not None:
            self._watchdog.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, self._previous)


@dataclass
class RunResult:
    client: str
    workers: int
    wall_s: float
    ok: int
    failed: int
    latencies_s: list[float] = field(default_factory=list)
    sim: dict[str, float] = field(default_factory=dict)
    capped: bool = False
    note: str = ""
    style: str = ""
    after_change: dict[str, float] = field(default_factory=dict)  # sim counts after --lower-at-s, and ok after it


def make_stage(client: AsyncOpenAIClient | None, num_samples: int, max_tokens: int) -> QAMultilingualSyntheticStage:
    return QAMultilingualSyntheticStage(
        prompt=PROMPT,
        languages=LANGUAGES,
        client=client,  # type: ignore[arg-type]  # None only to plan the baseline's requests
        model_name=MODEL,
        num_samples=num_samples,
        generation_config=GenerationConfig(max_tokens=max_tokens),
    )


def request_bodies(num_requests: int, max_tokens: int) -> list[bytes]:
    """The exact request bodies the sdg stage sends (same messages, seed, sampling parameters)."""
    stage = make_stage(None, num_requests, max_tokens)
    bodies = []
    for index in range(num_requests):
        task = stage.make_task(index, RUN_SEED)
        config = stage.generation_config.replace(seed=task.seed)
        bodies.append(json.dumps({"model": MODEL, "messages": task.messages, **config.request_body()}).encode())
    return bodies


# --------------------------------------------------------------------------- baseline: NeMo Curator's loop


async def _baseline_shard(
    url: str, bodies: list[bytes], concurrency: int, max_retries: int, base_delay: float, deadline_s: float
) -> dict[str, Any]:
    import aiohttp

    semaphore = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    done_at: list[float] = []
    failed = 0
    rng = random.Random()
    batch_started = time.perf_counter()

    async def one(session: aiohttp.ClientSession, body: bytes) -> None:
        nonlocal failed
        async with semaphore:  # held across retries and backoff, as in NeMo Curator's query_model
            started = time.perf_counter()
            for attempt in range(max_retries + 1):
                retryable = False
                try:
                    async with session.post(url, data=body) as response:
                        payload = await response.read()
                        if response.status == 200:
                            json.loads(payload)
                            latencies.append(time.perf_counter() - started)
                            done_at.append(time.perf_counter() - batch_started)
                            return
                        retryable = response.status in RETRYABLE_STATUSES or response.status >= 500
                except (aiohttp.ClientError, TimeoutError):
                    retryable = True
                if not retryable or attempt == max_retries:
                    break
                await asyncio.sleep(base_delay * (2**attempt) + rng.uniform(0, 1))  # Retry-After ignored
            failed += 1

    timeout = aiohttp.ClientTimeout(total=120)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(timeout=timeout, headers=headers) as session:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(one(session, b) for b in bodies)), timeout=deadline_s)
    unfinished = len(bodies) - len(latencies) - failed
    return {
        "latencies": latencies,
        "failed": failed + unfinished,
        "capped": unfinished > 0,
        "done": time.time(),
        "done_at": done_at,
    }


def _baseline_worker(
    results: mp.Queue,
    ready: Any,
    url: str,
    bodies: list[bytes],
    concurrency: int,
    max_retries: int,
    base_delay: float,
    deadline_s: float,
) -> None:
    import aiohttp  # noqa: F401  # import before the barrier, so the timed part is the requests

    ready.wait()  # a barrier: every worker is up before the clock starts, as sdg's actors are
    results.put(asyncio.run(_baseline_shard(url, bodies, concurrency, max_retries, base_delay, deadline_s)))


def run_baseline(base_url: str, bodies: list[bytes], workers: int, args: argparse.Namespace) -> RunResult:
    ctx = mp.get_context("spawn")  # never fork a process that holds Ray and aiohttp state
    results: mp.Queue = ctx.Queue()
    shards = [bodies[i::workers] for i in range(workers)]
    ready = ctx.Barrier(len(shards) + 1)
    url = f"{base_url}/chat/completions"
    procs = [
        ctx.Process(
            target=_baseline_worker,
            args=(results, ready, url, shard, args.concurrency, args.max_retries, args.base_delay, args.cap_s),
            daemon=True,
        )
        for shard in shards
    ]
    outputs: list[dict[str, Any]] = []
    try:
        for proc in procs:
            proc.start()
        ready.wait(timeout=120)  # workers spawned and imported: time only the requests, as for sdg
        started = time.time()
        deadline = started + args.cap_s + 30  # the workers stop themselves at cap_s; this is the backstop
        while len(outputs) < len(procs):
            try:
                outputs.append(results.get(timeout=max(0.1, deadline - time.time())))
            except queue.Empty:
                break
    finally:
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join()
    wall_s = (max(o["done"] for o in outputs) if outputs else time.time()) - started
    latencies = [x for o in outputs for x in o["latencies"]]
    lost = sum(len(s) for s in shards[len(outputs) :])  # workers that never answered
    return RunResult(
        client="baseline (NeMo Curator loop)",
        workers=workers,
        wall_s=wall_s,
        ok=len(latencies),
        failed=sum(o["failed"] for o in outputs) + lost,
        latencies_s=latencies,
        capped=lost > 0 or any(o["capped"] for o in outputs),
    )


# --------------------------------------------------------------------------- sdg


def run_sdg(base_url: str, num_requests: int, workers: int, args: argparse.Namespace) -> RunResult:
    from sdg.execution.ray_executor import RayExecutor
    from sdg.pipeline import Pipeline

    client = AsyncOpenAIClient(
        base_url=base_url,
        api_key_env=None,
        max_concurrent_requests=args.concurrency,
        max_retries=args.sdg_max_retries,
        base_delay=args.base_delay,
    )
    stage = make_stage(client, num_requests, args.max_tokens)
    with tempfile.TemporaryDirectory(prefix="bench-ratelimit-") as tmp:
        started = time.perf_counter()
        cap = WallClockCap(args.cap_s, lambda: sim_stats(base_url)["requests"], args.stall_s)
        try:
            with cap:
                pipeline = Pipeline("bench-ratelimit").add_stage(stage)
                result = pipeline.run_detailed(
                    RayExecutor(workers), seed=RUN_SEED, output_dir=Path(tmp), progress=False
                )
        except Exception:
            if not cap.fired:
                raise
            wall_s = time.perf_counter() - started
            ok = int(sim_stats(base_url).get("ok", 0))
            return RunResult("sdg", workers, wall_s, ok, num_requests - ok, capped=True, note=cap.reason)
        dataset = result.dataset
        latencies = [x for x, e in zip(dataset["latency_s"], dataset["error"], strict=True) if not e and x is not None]
        history = getattr(result, "limiter_history", None) or []  # (s, concurrency, rate/s) if sdg has a limiter
        note = ""
        if history:
            _, concurrency, rate = history[-1]
            note = f"limiter at end: concurrency {concurrency:.0f}, rate {rate:.1f}/s" if rate else ""
            note = note or f"limiter at end: concurrency {concurrency:.0f}, unpaced"
        note += f"; Ray workers started in {result.startup_s:.1f}s (not timed)"
        return RunResult(
            client="sdg",
            workers=workers,
            wall_s=result.wall_s,
            ok=num_requests - result.num_failed_samples,
            failed=result.num_failed_samples,
            latencies_s=latencies,
            note=note,
        )


# --------------------------------------------------------------------------- library mode: one client, no Ray


async def _sdg_library(base_url: str, num_requests: int, concurrency: int, args: argparse.Namespace) -> RunResult:
    client = AsyncOpenAIClient(
        base_url=base_url,
        api_key_env=None,
        max_concurrent_requests=concurrency,
        max_retries=args.max_retries,
        base_delay=args.base_delay,
    )
    stage = make_stage(client, num_requests, args.max_tokens)
    tasks = [stage.make_task(index, RUN_SEED) for index in range(num_requests)]
    latencies: list[float] = []
    done_at: list[float] = []

    async def one(task: Any) -> None:
        config = stage.generation_config.replace(seed=task.seed)
        completion = await client.complete(task.messages, MODEL, config)
        latencies.append(completion.latency_s)
        done_at.append(time.perf_counter())

    started = time.perf_counter()
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(one(task) for task in tasks), return_exceptions=True), timeout=args.cap_s
    )
    wall_s = time.perf_counter() - started
    failed = sum(isinstance(outcome, BaseException) for outcome in outcomes)
    await client.aclose()
    gate = client.gate
    note = f"gate at end: {gate.max_in_flight if gate else '?'} slots" if gate else ""
    result = RunResult("sdg AsyncOpenAIClient (library)", 1, wall_s, len(latencies), failed, latencies, note=note)
    result.after_change["done_at"] = [t - started for t in done_at]  # type: ignore[assignment]
    return result


async def _baseline_library(
    base_url: str, bodies: list[bytes], concurrency: int, args: argparse.Namespace
) -> RunResult:
    started = time.perf_counter()
    url = f"{base_url}/chat/completions"
    out = await _baseline_shard(url, bodies, concurrency, args.max_retries, args.base_delay, args.cap_s)
    wall_s = time.perf_counter() - started
    result = RunResult(
        "baseline (NeMo Curator loop)", 1, wall_s, len(out["latencies"]), out["failed"], out["latencies"]
    )
    result.capped = out["capped"]
    result.after_change["done_at"] = out["done_at"]  # type: ignore[assignment]
    return result


def _post_limits(base_url: str, rps: float, burst: int) -> None:
    root = base_url.rstrip("/").removesuffix("/v1")
    body = json.dumps({"rate_limit_rps": rps, "burst": burst}).encode()
    request = urllib.request.Request(
        f"{root}/admin/limits", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10):
        pass


def run_library(kind: str, base_url: str, bodies: list[bytes], concurrency: int, args: argparse.Namespace) -> RunResult:
    """One batch from this process; with --lower-to, the sim's limit drops at --lower-at-s (counted apart)."""
    marks: dict[str, float] = {}

    def lower() -> None:
        marks.update({f"{k}_at": float(v) for k, v in sim_stats(base_url).items()})
        _post_limits(base_url, args.lower_to, max(1, math.ceil(args.lower_to)))
        marks["t"] = time.perf_counter()

    timer = threading.Timer(args.lower_at_s, lower) if args.lower_to else None
    started = time.perf_counter()
    if timer is not None:
        timer.start()
    try:
        if kind == "baseline":
            result = asyncio.run(_baseline_library(base_url, bodies, concurrency, args))
        else:
            result = asyncio.run(_sdg_library(base_url, len(bodies), concurrency, args))
    finally:
        if timer is not None:
            timer.cancel()
    done_at = result.after_change.pop("done_at", [])  # type: ignore[arg-type]
    if marks:
        changed_s = marks["t"] - started
        result.after_change.update(marks)
        result.after_change["ok_after"] = sum(1 for t in done_at if t >= changed_s)  # type: ignore[union-attr]
        result.after_change["span_after"] = max(result.wall_s - changed_s, 1e-9)
    return result


# --------------------------------------------------------------------------- driver


def _sim_reset(base_url: str) -> None:
    root = base_url.rstrip("/").removesuffix("/v1")
    request = urllib.request.Request(f"{root}/reset", data=b"", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


def one_run(kind: str, workers: int, bodies: list[bytes], args: argparse.Namespace, style: str) -> RunResult:
    """A fresh sim process per run: a full bucket and zeroed /stats. `workers` is the concurrency in library mode."""
    options = {
        "rate_limit_rps": args.rps,
        "burst": args.burst,
        "latency_ms": args.latency_ms,
        "retry_after_style": style,
        "ratelimit_headers": args.ratelimit_headers,
    }
    with ServerProcess(sim_command(options), "simulated") as base_url:
        _sim_reset(base_url)  # fresh process already; makes the zero explicit
        if args.mode == "library":
            result = run_library(kind, base_url, bodies, workers, args)
        elif kind == "baseline":
            result = run_baseline(base_url, bodies, workers, args)
        else:
            result = run_sdg(base_url, len(bodies), workers, args)
        result.sim = sim_stats(base_url)
    result.style = style
    return result


def print_row(r: RunResult, args: argparse.Namespace, in_flight: int) -> None:
    attempts = int(r.sim.get("requests", 0))
    share_429 = r.sim.get("r429", 0) / attempts if attempts else 0.0
    goodput = r.ok / r.wall_s if r.wall_s > 0 else 0.0
    p95 = percentile(r.latencies_s, 95) if r.latencies_s else float("nan")
    mark = " (capped)" if r.capped else ""
    if r.after_change:
        change = r.after_change
        later_attempts = attempts - change["requests_at"]
        later_429 = (r.sim.get("r429", 0) - change["r429_at"]) / later_attempts if later_attempts else 0.0
        goodput_after = change["ok_after"] / change["span_after"] / args.lower_to
        mark += f"  after the drop to {args.lower_to:g}/s: goodput/R2 {goodput_after:.2f}, 429 share {later_429:.1%}"

    mark += f"  [{r.note}]" if r.note else ""
    print(
        f"{r.client:33} {r.style:8} {in_flight:>4} {goodput / args.rps:9.2f} {goodput:7.1f} {share_429:9.1%} "
        f"{p95:7.2f} {r.failed:>6} {int(r.sim.get('max_inflight', 0)):>8} {attempts:>8} {r.wall_s:7.1f}{mark}",
        flush=True,
    )


def parse_counts(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"wants a comma list of positive integers, got {text!r}")
    return values


STYLES = ("seconds", "ms", "both", "date", "none")


def parse_styles(text: str) -> list[str]:
    values = [x.strip() for x in text.split(",") if x.strip()]
    if not values or not set(values) <= set(STYLES):
        raise argparse.ArgumentTypeError(f"wants a comma list of {', '.join(STYLES)}, got {text!r}")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=("library", "run"), default="library", help="see above (default library)")
    parser.add_argument("--requests", type=int, default=1000, help="N requests per run (default 1000)")
    parser.add_argument("--rps", type=float, default=50.0, help="the sim's rate limit R, requests/s (default 50)")
    parser.add_argument("--burst", type=int, default=10, help="the sim's bucket size (default 10)")
    parser.add_argument("--latency-ms", type=float, default=50.0, help="the sim's latency (default 50)")
    parser.add_argument("--styles", type=parse_styles, default=["seconds"], help="comma list of Retry-After styles")
    parser.add_argument("--ratelimit-headers", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--lower-to", type=float, default=0.0, help="library mode: drop the limit to this (req/s)")
    parser.add_argument("--lower-at-s", type=float, default=8.0, help="...this many seconds into the batch")
    parser.add_argument("--workers", type=parse_counts, default=[1, 4], help="run mode: comma list W (default 1,4)")
    parser.add_argument(
        "--concurrency", type=parse_counts, default=[32], help="in flight per client: comma list (default 32)"
    )
    parser.add_argument("--max-retries", type=int, default=3, help="retries, both clients (default 3)")
    parser.add_argument("--sdg-max-retries", type=int, default=3, help="sdg client max_retries in run mode (default 3)")
    parser.add_argument("--base-delay", type=float, default=1.0, help="backoff base delay, both (default 1.0)")
    parser.add_argument("--max-tokens", type=int, default=32, help="max_tokens of each request (default 32)")
    parser.add_argument("--clients", default="baseline,sdg", help="which clients to run (default baseline,sdg)")
    parser.add_argument("--cap-s", type=float, default=300.0, help="wall-clock cap per run, seconds (default 300)")
    parser.add_argument(
        "--stall-s", type=float, default=60.0, help="end an sdg run with no new HTTP attempt for this long (default 60)"
    )
    args = parser.parse_args()
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    if not set(clients) <= {"baseline", "sdg"} or not clients:
        parser.error(f"--clients takes baseline and/or sdg, got {args.clients!r}")
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))  # run the finally blocks

    bodies = request_bodies(args.requests, args.max_tokens)
    print(
        f"bench_ratelimit --mode {args.mode}: N={args.requests} requests per run, sim rate limit R={args.rps:g} req/s "
        f"(burst {args.burst}), latency {args.latency_ms:g} ms, x-ratelimit headers {args.ratelimit_headers}, "
        f"max_tokens {args.max_tokens}, cap {args.cap_s:g}s/run"
    )
    print(
        f"baseline: NeMo Curator loop, semaphore held through backoff, max_retries={args.max_retries}, "
        f"base_delay={args.base_delay:g}, Retry-After ignored | sdg: AsyncOpenAIClient(max_retries="
        f"{args.max_retries if args.mode == 'library' else args.sdg_max_retries}, base_delay={args.base_delay:g}), "
        "told no rate" + (" | in flight = W x concurrency" if args.mode == "run" else "")
    )
    print(
        f"{'client':33} {'style':8} {'C/W':>4} {'goodput/R':>9} {'req/s':>7} {'429 share':>9} {'p95 s':>7} "
        f"{'failed':>6} {'inflight':>8} {'attempts':>8} {'wall s':>7}",
        flush=True,
    )
    try:
        if "sdg" in clients and args.mode == "run":
            from sdg.execution.ray_executor import ensure_ray

            ensure_ray()  # before any timing: starting Ray is not part of a batch
        counts = args.concurrency if args.mode == "library" else args.workers
        if args.mode == "run":
            args.concurrency = args.concurrency[0]
        for style in args.styles:
            for count in counts:
                for kind in clients:
                    print_row(one_run(kind, count, bodies, args, style), args, count)
    finally:
        if "ray" in sys.modules:
            import ray

            if ray.is_initialized():
                ray.shutdown()


if __name__ == "__main__":
    main()
