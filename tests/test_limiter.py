"""The run-wide limiter: sharing the adaptive limit on a fake clock, and its effect across real Ray workers.

The adaptive algorithm itself is tested in test_adaptive_limit.py; here, how the run shares it out.
"""

from __future__ import annotations

from sdg.client import AsyncOpenAIClient, GenerationConfig
from sdg.client.limits import LimitSettings, RateSignals
from sdg.execution.limiter import RunLimiter
from sdg.execution.local import LocalExecutor
from sdg.execution.ray_executor import RayExecutor
from sdg.pipeline import Pipeline
from sdg.stages import QAMultilingualSyntheticStage
from tests.test_adaptive_limit import Clock


def _limiter(**settings) -> tuple[RunLimiter, Clock]:
    clock = Clock()
    return RunLimiter(LimitSettings(**{"max_concurrency": 32, **settings}), clock), clock


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


def test_the_run_limiter_is_the_clients_algorithm_fed_by_every_worker() -> None:
    limiter, clock = _limiter()
    assert limiter.lease("a", 32, RateSignals()).slots == 4  # slow start, as a client alone
    clock.now += 0.1
    limiter.lease("a", 32, RateSignals(attempts=5, successes=5))
    clock.now += 0.01
    # b's refusals count for the run: a congested window cuts everyone's pace at once.
    lease = limiter.lease("b", 32, RateSignals(attempts=40, status_429=30, successes=10))
    assert limiter.rate is not None and lease.rate_per_s is not None and lease.rate_per_s < limiter.rate
    assert lease.pause_s == 0.0  # a Retry-After never pauses the run; only an empty window does


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
