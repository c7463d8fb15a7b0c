"""The run-wide limiter: its policy on a fake clock, and its effect across real Ray workers on the sim."""

from __future__ import annotations

from sdg.client import AsyncOpenAIClient, GenerationConfig
from sdg.client.limits import RateSignals
from sdg.execution.limiter import LimiterSettings, RunLimiter
from sdg.execution.local import LocalExecutor
from sdg.execution.ray_executor import RayExecutor
from sdg.pipeline import Pipeline
from sdg.stages import QAMultilingualSyntheticStage


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _limiter(**settings) -> tuple[RunLimiter, Clock]:
    clock = Clock()
    return RunLimiter(LimiterSettings(**{"max_concurrency": 32, **settings}), clock), clock


def _round(limiter: RunLimiter, clock: Clock, demands: dict[str, int]) -> dict[str, int]:
    """One lease period: every worker leases once, with its slots all in flight (the worst case)."""
    clock.now += 0.1
    held: dict[str, int] = {}
    for worker, demand in demands.items():
        held[worker] = limiter.lease(worker, demand, RateSignals(), in_flight=limiter._granted.get(worker, 0)).slots
        assert sum(limiter._granted.values()) <= limiter.concurrency
    return held


def test_slots_are_shared_by_demand_and_never_exceed_the_run_limit() -> None:
    limiter, clock = _limiter(adaptive=False)
    for _ in range(4):
        slots = _round(limiter, clock, dict.fromkeys("abcd", 32))
    assert slots == dict.fromkeys("abcd", 8)
    assert _round(limiter, clock, {"a": 2, "b": 32, "c": 32, "d": 32})["a"] == 2  # never more than asked for


def test_fewer_slots_than_workers_take_turns() -> None:
    limiter, clock = _limiter(max_concurrency=2, adaptive=False)
    granted = dict.fromkeys("abcd", 0)
    for _ in range(12):
        for worker, slots in _round(limiter, clock, dict.fromkeys("abcd", 5)).items():
            granted[worker] += slots
    assert all(count > 0 for count in granted.values())


def test_slow_start_then_a_congested_window_cuts_and_pauses_then_clean_windows_grow() -> None:
    limiter, clock = _limiter()
    assert limiter.lease("a", 32, RateSignals()).slots == 4
    for _ in range(3):
        clock.now += 0.1
        limiter.lease("a", 32, RateSignals(attempts=10, successes=10))
    assert limiter.concurrency == 32
    clock.now += 0.1
    lease = limiter.lease("a", 32, RateSignals(attempts=10, status_429=9, successes=1, retry_after_s=2.0))
    assert lease.pause_s == 2.0  # everyone waits at once; the cut comes when the window closes
    clock.now += 0.7
    limiter.lease("a", 32, RateSignals(attempts=2, status_429=2))
    assert limiter.concurrency == 24
    assert limiter.rate is not None and limiter.rate > 0  # paced from the goodput seen before
    clock.now += 1.1
    limiter.lease("a", 32, RateSignals(attempts=20, successes=20))
    assert limiter.concurrency == 25


def test_a_few_random_429s_do_not_spiral_the_run_down() -> None:
    limiter, clock = _limiter()
    for _ in range(100):  # 10 s with 10% of attempts refused at random, as an overloaded upstream does
        clock.now += 0.1
        limiter.lease("a", 32, RateSignals(attempts=20, status_429=2, successes=18))
    assert limiter.concurrency == 32 and limiter.rate is None


def test_an_announced_limit_sets_the_pace() -> None:
    limiter, _ = _limiter()
    lease = limiter.lease("a", 32, RateSignals(successes=1, limit_requests=2400, remaining_requests=5))
    assert lease.rate_per_s is not None and 38 < lease.rate_per_s < 40  # 2400 per minute, just under
    limiter2, _ = _limiter(rpm=600)
    assert limiter2.lease("a", 32, RateSignals()).rate_per_s == 10.0


def test_remaining_zero_pauses_until_reset() -> None:
    limiter, _ = _limiter()
    lease = limiter.lease("a", 8, RateSignals(limit_requests=60, remaining_requests=0, reset_requests_s=1.5))
    assert lease.pause_s == 1.5


def _stage(sim, n: int, concurrency: int) -> QAMultilingualSyntheticStage:
    client = AsyncOpenAIClient(
        base_url=sim.base_url, api_key_env=None, max_concurrent_requests=concurrency, max_retries=10, base_delay=0.01
    )
    return QAMultilingualSyntheticStage(
        prompt="A Q&A pair in {language}.",
        languages=["English"],
        client=client,
        model_name="sim-model",
        num_samples=n,
        generation_config=GenerationConfig(max_tokens=8),
    )


def test_max_concurrent_requests_means_the_whole_run_across_workers(sim_factory, tmp_path, ray_session) -> None:
    sim = sim_factory(latency_ms=30)
    result = (
        Pipeline("t").add_stage(_stage(sim, 240, 6)).run_detailed(RayExecutor(3), output_dir=tmp_path, progress=False)
    )
    assert len(result.dataset) == 240
    assert sim.stats()["max_inflight"] <= 6  # not 3 workers x 6
    assert result.limiter_history and max(c for _, c, _ in result.limiter_history) <= 6


def test_rate_limited_endpoint_is_paced_with_few_429s(sim_factory, tmp_path) -> None:
    sim = sim_factory(rate_limit_rps=50, latency_ms=20)
    result = (
        Pipeline("t").add_stage(_stage(sim, 150, 32)).run_detailed(LocalExecutor(), output_dir=tmp_path, progress=False)
    )
    served = sim.stats()
    assert result.num_failed_samples == 0
    assert served["r429"] <= 0.05 * served["requests"]
    assert result.stats.status_429 == served["r429"]
