"""The adaptive limit (one algorithm for a client alone and for a whole run) on a fake clock."""

from __future__ import annotations

import pytest

from sdg.client.limits import AdaptiveLimit, LimitSettings, RateSignals
from sdg.client.retry import parse_duration, parse_retry_after


class Clock:
    """A clock the test moves by hand (also the run-wide limiter's tests)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _limit(**settings) -> tuple[AdaptiveLimit, Clock]:
    clock = Clock()
    return AdaptiveLimit(LimitSettings(**{"max_concurrency": 32, **settings}), clock), clock


def _periods(limit: AdaptiveLimit, clock: Clock, count: int, **signals) -> None:
    for _ in range(count):
        clock.now += 0.1
        limit.observe(RateSignals(**signals))


def _past_slow_start(limit: AdaptiveLimit, clock: Clock) -> None:
    """Slow start done, and a fresh window begun (a quiet second closes the first one)."""
    _periods(limit, clock, 3, attempts=10, successes=10)
    _periods(limit, clock, 10)
    assert limit.concurrency == 32


def test_slow_start_doubles_until_the_maximum() -> None:
    limit, clock = _limit()
    assert limit.concurrency == 4
    _periods(limit, clock, 3, attempts=10, successes=10)
    assert limit.concurrency == 32 and limit.rate is None  # nothing said about a rate: unpaced


def test_a_burst_into_an_empty_bucket_is_cut_within_one_period_and_paced_at_the_goodput() -> None:
    limit, clock = _limit()
    _past_slow_start(limit, clock)
    clock.now += 0.1
    limit.observe(RateSignals(attempts=300, status_429=295, successes=5))  # 5 successes in 0.1 s: 50/s
    assert limit.concurrency == 24
    assert limit.rate == pytest.approx(0.97 * 50)


def test_a_window_is_judged_once_it_holds_enough_evidence() -> None:
    limit, clock = _limit()
    _past_slow_start(limit, clock)
    _periods(limit, clock, 5, attempts=10, status_429=3, successes=7)  # 30% but only 15 refusals so far
    assert limit.concurrency == 32
    _periods(limit, clock, 5, attempts=10, status_429=3, successes=7)
    assert limit.concurrency == 24 and limit.rate is not None


def test_a_few_random_429s_do_not_spiral_down() -> None:
    limit, clock = _limit()
    _periods(limit, clock, 100, attempts=20, status_429=2, successes=18)  # 10% refused at random for 10 s
    assert limit.concurrency == 32 and limit.rate is None


def test_when_pushing_harder_gains_nothing_the_pace_settles_at_what_the_server_sustains() -> None:
    limit, clock = _limit()
    _past_slow_start(limit, clock)
    clock.now += 0.1
    limit.observe(RateSignals(attempts=300, status_429=295, successes=5))
    paced = limit.rate
    assert paced is not None
    _periods(limit, clock, 10, attempts=5, successes=5)  # a clean second (nothing refused): the pace goes up
    assert limit.rate is not None and limit.rate > paced
    _periods(limit, clock, 10, attempts=6, status_429=1, successes=4)  # 40/s with a few refused: step under it
    assert limit.rate == pytest.approx(0.97 * 40.0, rel=0.05)


def test_a_clean_window_returns_straight_to_the_last_sustained_goodput() -> None:
    limit, clock = _limit()
    _past_slow_start(limit, clock)
    _periods(limit, clock, 4, attempts=10, status_429=5, successes=5)  # 50/s sustained, half refused
    assert limit.rate == pytest.approx(0.97 * 50)
    limit.rate = 10.0  # e.g. after a deep cut
    _periods(limit, clock, 10, attempts=1, successes=1)
    assert limit.rate == pytest.approx(0.97 * 50)


def test_an_announced_request_limit_sets_the_pace_and_follows_it_down() -> None:
    limit, clock = _limit()
    _periods(limit, clock, 1, successes=1, limit_requests=3000, remaining_requests=5)
    assert limit.rate == pytest.approx(50 * 0.97)
    _periods(limit, clock, 1, successes=1, limit_requests=600, remaining_requests=5)  # the server lowered it
    assert limit.rate == pytest.approx(10 * 0.97)


def test_an_announced_token_limit_paces_by_the_mean_request_size() -> None:
    limit, clock = _limit()
    _periods(limit, clock, 1, successes=10, tokens=1000, limit_tokens=60_000)  # 100 tokens a request
    assert limit.rate == pytest.approx(1000 / 100 * 0.97)


def test_configured_rpm_is_a_ceiling_even_without_adaptation() -> None:
    limit, clock = _limit(rpm=600, adaptive=False)
    assert limit.rate == 10.0 and limit.concurrency == 32
    _periods(limit, clock, 20, attempts=10, status_429=9, successes=1)
    assert limit.rate == 10.0 and limit.concurrency == 32


@pytest.mark.parametrize(
    ("headers", "pause"),
    [
        ({"remaining_requests": 0, "reset_requests_s": 1.5}, 1.5),
        ({"remaining_tokens": 0, "reset_tokens_s": 6.0}, 6.0),
        ({"remaining_requests": 3, "reset_requests_s": 1.5}, 0.0),  # not empty: no pause
    ],
)
def test_only_an_empty_window_pauses_everything_until_its_reset(headers: dict, pause: float) -> None:
    limit, clock = _limit()
    clock.now += 0.1
    limit.observe(RateSignals(attempts=1, successes=1, limit_requests=600, **headers))
    assert limit.pause_s() == pytest.approx(pause)
    assert limit.rate is not None  # the restart after a pause is paced, not a herd


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("0.5s", 0.5), ("1h2m3s", 3723.0), ("7", 7.0), ("soon", None)],
)
def test_reset_durations_in_every_form_servers_send(value: str, seconds: float | None) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "1"}, 1.0),  # whole seconds, as HTTP defines it and gateways send it
        ({"retry-after": "30"}, 30.0),
        ({"retry-after-ms": "20"}, 0.02),  # OpenAI / Azure's finer hint wins when both are sent
        ({"retry-after-ms": "20", "retry-after": "1"}, 0.02),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, 5.0),  # an HTTP-date, 5 s after "now"
        ({"retry-after": "Wed, 21 Oct 2015 07:27:00 GMT"}, 0.0),  # in the past: retry now
        ({}, None),  # no hint at all
        ({"retry-after": "later"}, None),
    ],
)
def test_retry_after_in_every_form_servers_send(headers: dict, seconds: float | None) -> None:
    lowered = {k.lower(): v for k, v in headers.items()}
    assert parse_retry_after(lowered, now=1445412475.0) == seconds


def test_congestion_never_cuts_the_slots_below_what_the_new_pace_needs() -> None:
    limit, clock = _limit(max_concurrency=5)
    _periods(limit, clock, 2, attempts=1, successes=1)
    _periods(limit, clock, 11)  # a quiet second: the next window starts empty
    assert limit.concurrency == 5
    # 50/s got through at 0.1 s per answer: a pace of 48.5/s needs ~5 in flight (Little's law), so keep 5.
    clock.now += 0.1
    limit.observe(RateSignals(attempts=100, status_429=95, successes=5, success_s=0.5))
    assert limit.rate == pytest.approx(0.97 * 50) and limit.concurrency == 5
    # Answers that take no time need no slots: the usual cut applies.
    limit2, clock2 = _limit(max_concurrency=8)
    _periods(limit2, clock2, 2, attempts=1, successes=1)
    _periods(limit2, clock2, 11)
    clock2.now += 0.1
    limit2.observe(RateSignals(attempts=100, status_429=95, successes=5, success_s=0.0))
    assert limit2.concurrency == 6


def test_an_underestimated_pace_is_left_within_a_few_clean_windows() -> None:
    limit, clock = _limit()
    _past_slow_start(limit, clock)
    clock.now += 0.1
    limit.observe(RateSignals(attempts=100, status_429=95, successes=3))  # 30/s: an underestimate
    start = limit.rate
    assert start is not None
    for _ in range(6):  # six clean seconds
        _periods(limit, clock, 10, attempts=5, successes=5)
    assert limit.rate is not None and limit.rate > 1.5 * start


async def test_a_leased_gate_asks_for_its_next_lease_at_once_on_news() -> None:
    """Handed to a run-wide limiter, the client does not adapt its gate, but says when a lease should not wait."""
    from sdg.client.limits import AdaptiveGate, RequestGate

    signals = RateSignals()
    adaptive = AdaptiveGate(RequestGate(8), signals, LimitSettings(max_concurrency=8))
    adaptive.handed_over = True
    calls: list[int] = []
    adaptive.on_news = lambda: calls.append(1)
    signals.attempts, signals.successes, signals.limit_requests = 1, 1, 600.0
    adaptive.after_attempt()
    assert calls == [1]  # a limit heard for the first time
    adaptive.after_attempt()
    assert calls == [1]  # the same limit again is not news
    signals.status_429 = 1
    adaptive.after_attempt()
    assert calls == [1, 1]  # a refusal is
    assert adaptive.limit.rate is None and adaptive.gate.max_in_flight == 4  # the gate is the leases' to size
