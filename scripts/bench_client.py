"""Client throughput against the simulated endpoint (a separate process), side by side, alternating rounds.

    python scripts/bench_client.py --requests 3000 --concurrency 64 --rounds 3

Prints req/s per client (median of rounds) and the ratio to plain `openai.AsyncOpenAI` + semaphore.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable

import aiohttp
import openai

from sdg.client import AsyncOpenAIClient, GenerationConfig
from sdg.endpoints.process import ServerProcess, sim_command

MESSAGES = [{"role": "user", "content": "Generate a Q&A pair about science in French."}]
MODEL = "sim-model"
MAX_TOKENS = 32


async def _drive(count: int, concurrency: int, one: Callable[[int], Awaitable[None]]) -> None:
    semaphore = asyncio.Semaphore(concurrency)

    async def guarded(i: int) -> None:
        async with semaphore:
            await one(i)

    await asyncio.gather(*(guarded(i) for i in range(count)))


async def run_sdg(base_url: str, count: int, concurrency: int) -> None:
    client = AsyncOpenAIClient(base_url=base_url, api_key="bench", max_concurrent_requests=concurrency)
    config = GenerationConfig(max_tokens=MAX_TOKENS, temperature=0.7)
    await asyncio.gather(*(client.complete(MESSAGES, MODEL, config.replace(seed=i)) for i in range(count)))
    await client.aclose()


async def _run_openai(client: openai.AsyncOpenAI, count: int, concurrency: int) -> None:
    async def one(i: int) -> None:
        await client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=MAX_TOKENS,
            temperature=0.7,
            seed=i,  # type: ignore[arg-type]
        )

    async with client:
        await _drive(count, concurrency, one)


async def run_openai_plain(base_url: str, count: int, concurrency: int) -> None:
    await _run_openai(openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0), count, concurrency)


async def run_openai_aiohttp(base_url: str, count: int, concurrency: int) -> None:
    client = openai.AsyncOpenAI(
        base_url=base_url, api_key="bench", max_retries=0, http_client=openai.DefaultAioHttpClient()
    )
    await _run_openai(client, count, concurrency)


async def run_raw_aiohttp(base_url: str, count: int, concurrency: int) -> None:
    url = f"{base_url}/chat/completions"
    async with aiohttp.ClientSession(headers={"Authorization": "Bearer bench"}) as session:

        async def one(i: int) -> None:
            body = {"model": MODEL, "messages": MESSAGES, "max_tokens": MAX_TOKENS, "temperature": 0.7, "seed": i}
            async with session.post(url, json=body) as response:
                json.loads(await response.read())

        await _drive(count, concurrency, one)


CLIENTS = {
    "openai.AsyncOpenAI + semaphore (baseline)": run_openai_plain,
    "openai.AsyncOpenAI on DefaultAioHttpClient": run_openai_aiohttp,
    "sdg AsyncOpenAIClient": run_sdg,
    "raw aiohttp + json (ceiling)": run_raw_aiohttp,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {name: [] for name in CLIENTS}
    with ServerProcess(sim_command({}), "simulated") as base_url:
        for runner in CLIENTS.values():  # warm-up: imports, first connections
            asyncio.run(runner(base_url, 200, args.concurrency))
        for _ in range(args.rounds):
            for name, runner in CLIENTS.items():
                started = time.perf_counter()
                asyncio.run(runner(base_url, args.requests, args.concurrency))
                rates[name].append(args.requests / (time.perf_counter() - started))
    baseline = statistics.median(next(iter(rates.values())))
    print(f"{args.requests} requests x {args.rounds} rounds, concurrency {args.concurrency}, sim in its own process")
    print(f"{'client':45} {'req/s (median)':>15} {'min..max':>17} {'vs baseline':>12}")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"{name:45} {median:15.0f} {min(values):8.0f}..{max(values):<8.0f} {median / baseline:11.2f}x")


if __name__ == "__main__":
    main()
