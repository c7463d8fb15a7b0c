"""The client alone (no Ray, no sdg.run) against a rate-limited endpoint over real HTTP, in every header form.

The simulated endpoint's token bucket answers 429 the way real servers do: whole-second `Retry-After`,
`retry-after-ms`, an HTTP-date, or no hint at all, with or without `x-ratelimit-*` headers.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from sdg.client import AsyncOpenAIClient, GenerationConfig

MESSAGES = [{"role": "user", "content": "Generate a Q&A pair about science in French."}]


def _client(sim, **kwargs) -> AsyncOpenAIClient:
    defaults = {"base_url": sim.base_url, "api_key": "test", "max_retries": 3, "base_delay": 1.0, "timeout": 30}
    return AsyncOpenAIClient(**{**defaults, **kwargs})


async def _send(client: AsyncOpenAIClient, count: int) -> list:
    config = GenerationConfig(max_tokens=8)
    return await asyncio.gather(
        *(client.complete(MESSAGES, "sim-model", config.replace(seed=i)) for i in range(count)),
        return_exceptions=True,
    )


@pytest.mark.parametrize("style", ["seconds", "ms", "date", "none"])
async def test_announced_limit_is_ridden_without_losing_a_request(sim_factory, style: str) -> None:
    """NeMo Curator's own arguments (max_retries=3, base_delay=1) at 32 in flight, R=80 with a bucket of 8."""
    sim = sim_factory(rate_limit_rps=80, burst=8, latency_ms=20, retry_after_style=style)
    client = _client(sim, max_concurrent_requests=32)
    results = await _send(client, 120)
    served = sim.stats()
    assert [r for r in results if isinstance(r, Exception)] == []
    assert client.stats.status_429 == served["r429"]
    assert served["r429"] <= 0.1 * served["requests"]  # paced by the announced limit, not by refusals
    assert client.gate is not None and client.gate._rate == pytest.approx(80 * 0.97)


@pytest.mark.parametrize("style", ["seconds", "none"])
async def test_without_rate_headers_the_pace_is_learned_from_the_refusals(sim_factory, style: str) -> None:
    sim = sim_factory(rate_limit_rps=80, burst=8, latency_ms=20, retry_after_style=style, ratelimit_headers=False)
    client = _client(sim, max_concurrent_requests=32, max_retries=6)
    results = await _send(client, 200)
    assert [r for r in results if isinstance(r, Exception)] == []
    gate = client.gate
    assert gate is not None and gate._rate is not None  # it paces: nobody told it a rate
    assert gate._rate <= 80 * 1.15  # ...at about what the bucket lets through, not above it


async def test_waiting_in_the_limiter_does_not_consume_retries(sim_factory) -> None:
    """max_retries=0: a single refused attempt would lose its request; waiting for the pace loses none."""
    sim = sim_factory(rate_limit_rps=20, burst=20, latency_ms=50, retry_after_style="seconds")
    client = _client(sim, max_concurrent_requests=32, max_retries=0)
    results = await _send(client, 50)
    assert [r for r in results if isinstance(r, Exception)] == []
    assert sim.stats()["r429"] == 0 and client.stats.attempts == 50


async def test_retry_after_delays_only_the_request_that_got_it(sim_factory) -> None:
    """A 1 s Retry-After on a few requests: the others keep going meanwhile (no pause of the whole client)."""
    sim = sim_factory(p429=0.05, fault_retry_after_ms=1000, retry_after_style="seconds", latency_ms=2, seed=5)
    client = _client(sim, max_concurrent_requests=4, max_retries=5, adaptive_concurrency=False)
    finished: list[float] = []
    refused_at: list[float] = []

    async def one(seed: int) -> None:
        await client.complete(MESSAGES, "sim-model", GenerationConfig(max_tokens=4, seed=seed))
        finished.append(time.monotonic())

    started = time.monotonic()
    tasks = [asyncio.create_task(one(i)) for i in range(120)]
    while not client.stats.status_429:
        await asyncio.sleep(0.001)
    refused_at.append(time.monotonic())
    await asyncio.gather(*tasks)
    assert client.stats.status_429 == sim.stats()["r429"] > 0
    assert client.stats.backoff_s >= client.stats.retries * 1.0  # each refused request waited its second
    # While the first refused request sat out its second, more than the 4 in flight at the time finished.
    during_wait = [t for t in finished if refused_at[0] < t < refused_at[0] + 1.0]
    assert len(during_wait) > 4, f"{len(during_wait)} finished in the second after the first 429 (t0={started})"


async def test_a_limit_lowered_mid_run_is_followed(sim_factory) -> None:
    """128 in flight; the server's limit drops from 50 to 10 requests/s: the client follows, loses nothing."""
    sim = sim_factory(rate_limit_rps=50, burst=10, latency_ms=20, retry_after_style="seconds")
    client = _client(sim, max_concurrent_requests=128)
    before: dict[str, int] = {}

    async def lower_after(successes: int) -> None:
        while client.stats.successes < successes:
            await asyncio.sleep(0.01)
        before.update(sim.stats())
        sim.set_limits(rate_limit_rps=10, burst=2)

    lowering = asyncio.create_task(lower_after(60))
    results = await _send(client, 90)
    await lowering
    after = sim.stats()
    assert [r for r in results if isinstance(r, Exception)] == []
    refused_after = after["r429"] - before["r429"]
    assert refused_after < 0.1 * (after["requests"] - before["requests"])
    assert client.gate is not None and client.gate._rate == pytest.approx(10 * 0.97)


async def test_fixed_semaphore_when_adaptation_is_off(sim_factory) -> None:
    sim = sim_factory(latency_ms=30, rate_limit_rps=1000, burst=1000)
    client = _client(sim, max_concurrent_requests=6, adaptive_concurrency=False)
    await _send(client, 30)
    gate = client.gate
    assert gate is not None and gate.max_in_flight == 6 and gate._rate is None  # headers seen, nothing changed
