"""One limit for the whole run: concurrency and request rate shared by every worker, adapted to 429s.

A provider's limit belongs to the API key, not to a worker: 4 workers with 32 slots each would send 128 at
once. Here `max_concurrent_requests` and `rpm`/`tpm` mean the run. Workers do not ask per request: every
lease period (0.1 s) each worker sends its demand and what the endpoint told it (429s, Retry-After,
x-ratelimit-* headers) and gets back its share: slots in flight, a request rate, and a pause.

Adaptation (AIMD, judged per 1 s window): a window where more than `tolerated_429_share` of attempts got
429 cuts the run's concurrency by `decrease`; without a known rate, the rate is set under the goodput
observed before. Any Retry-After pauses everyone. Each clean window adds one slot and a little rate, never
above the configured values. When the endpoint announces its limit
(`x-ratelimit-limit-requests`), the run paces just under it and 429s mostly never happen.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sdg.client.limits import RateSignals

__all__ = ["Lease", "LimiterHandle", "LimiterSettings", "RunLimiter", "limiter_settings_for", "water_fill"]

_HEADROOM = 0.97  # pace this far under an announced limit: leases are not perfectly synchronised
_SLOW_START = 4


@dataclass(frozen=True)
class LimiterSettings:
    """The run's limits (from the client's settings) and how the limiter adapts."""

    max_concurrency: int
    rpm: float | None = None
    tpm: float | None = None
    adaptive: bool = True
    decrease: float = 0.75
    clean_window_s: float = 1.0
    # A window where at most this share of attempts got 429 is not congestion: endpoints refuse a few
    # requests at random (upstream overload); cutting on those would spiral the run down to nothing.
    tolerated_429_share: float = 0.2
    lease_period_s: float = 0.1


@dataclass(frozen=True)
class Lease:
    """One worker's share until its next lease."""

    slots: int
    rate_per_s: float | None
    pause_s: float


class RunLimiter:
    """The run-wide state behind the leases. Plain Python: a Ray actor in a cluster, an object in-process."""

    def __init__(self, settings: LimiterSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._started = clock()
        # Slow start (as TCP): a few slots, doubled every clean lease period until the first 429 or the
        # maximum, so a run does not open with a burst of `max_concurrency` before it has heard any limit.
        self.concurrency = (
            float(min(settings.max_concurrency, _SLOW_START)) if settings.adaptive else float(settings.max_concurrency)
        )
        self._slow_start = settings.adaptive
        self._last_double = self._started
        self._ceiling = settings.rpm / 60.0 if settings.rpm else None  # requests/s never to exceed
        self.rate: float | None = self._ceiling
        self._pause_until = 0.0
        self._window_start = self._started
        self._window_attempts = 0
        self._window_429 = 0
        self._demand: dict[str, tuple[int, float]] = {}
        self._granted: dict[str, int] = {}
        self._in_flight: dict[str, int] = {}
        self._stale_s = 10 * settings.lease_period_s + 1.0  # a worker silent this long has died or finished
        self._successes: deque[tuple[float, int]] = deque()
        self._tokens_per_request: float | None = None
        self.history: list[tuple[float, float, float]] = []

    def lease(self, worker: str, demand: int, signals: RateSignals, in_flight: int = 0) -> Lease:
        """This worker's share until its next lease; `in_flight` is what it has outstanding now.

        Slots held by others (their grant, or their in-flight requests if more) are never handed out
        again, so the run's requests in flight never exceed its concurrency, even while shares move.
        """
        now = self._clock()
        self._demand[worker] = (max(demand, 0), now)
        self._observe(now, signals)
        self._record(now)
        fair, share = self._share(worker, now)
        held_by_others = sum(
            max(self._granted.get(w, 0), self._in_flight.get(w, 0))
            for w, (_, seen) in self._demand.items()
            if w != worker and now - seen <= self._stale_s
        )
        slots = max(0, min(fair, int(self.concurrency) - held_by_others))
        self._granted[worker] = slots
        self._in_flight[worker] = in_flight
        rate = self.rate * share if self.rate is not None else None
        return Lease(slots=slots, rate_per_s=rate, pause_s=max(0.0, self._pause_until - now))

    def _observe(self, now: float, signals: RateSignals) -> None:
        if signals.successes:
            self._successes.append((now, signals.successes))
        while self._successes and now - self._successes[0][0] > 2.0:
            self._successes.popleft()
        if signals.successes and signals.tokens:
            per_request = signals.tokens / signals.successes
            old = self._tokens_per_request
            self._tokens_per_request = per_request if old is None else 0.8 * old + 0.2 * per_request
        self._learn_ceiling(signals)
        if signals.remaining_requests == 0 and signals.reset_requests_s:
            self._pause_until = max(self._pause_until, now + signals.reset_requests_s)
        if signals.retry_after_s:
            self._pause_until = max(self._pause_until, now + signals.retry_after_s)
        self._window_attempts += signals.attempts
        self._window_429 += signals.status_429
        if self._slow_start and signals.status_429 > self.settings.tolerated_429_share * max(signals.attempts, 1):
            self._slow_start = False
        if self._slow_start and now - self._last_double >= self.settings.lease_period_s:
            self._last_double = now
            self.concurrency = min(float(self.settings.max_concurrency), self.concurrency * 2)
            self._slow_start = self.concurrency < self.settings.max_concurrency
        if now - self._window_start >= self.settings.clean_window_s:
            self._close_window(now)

    def _close_window(self, now: float) -> None:
        """Judge the last window: congested (too many 429s) cuts, clean (some traffic, few 429s) grows."""
        attempts, refused = self._window_attempts, self._window_429
        self._window_start, self._window_attempts, self._window_429 = now, 0, 0
        if not self.settings.adaptive or attempts == 0:
            return
        if refused > self.settings.tolerated_429_share * attempts:
            self._on_congestion(now)
        else:
            self._on_clean_window(now)

    def _learn_ceiling(self, signals: RateSignals) -> None:
        ceilings = [c for c in (self.settings.rpm and self.settings.rpm / 60.0,) if c]
        if signals.limit_requests and not self.settings.rpm:
            ceilings.append(signals.limit_requests / 60.0 * _HEADROOM)
        if self.settings.tpm and self._tokens_per_request:
            ceilings.append(self.settings.tpm / 60.0 / self._tokens_per_request)
        if ceilings:
            ceiling = min(ceilings)
            if self._ceiling is None or abs(ceiling - self._ceiling) > 1e-9:
                # An announced limit is the endpoint's own word: pace at it rather than at a guess from 429s.
                self._ceiling = ceiling
                self.rate = ceiling

    def _goodput(self, now: float) -> float:
        if not self._successes:
            return 0.0
        span = max(now - self._successes[0][0], self.settings.lease_period_s)
        return sum(count for _, count in self._successes) / span

    def _on_congestion(self, now: float) -> None:
        self._slow_start = False
        self.concurrency = max(1.0, self.concurrency * self.settings.decrease)
        goodput = self._goodput(now)
        if goodput > 0:
            target = goodput * self.settings.decrease if self.rate is None else self.rate * self.settings.decrease
            self.rate = max(target, 0.5)

    def _on_clean_window(self, now: float) -> None:
        self.concurrency = min(float(self.settings.max_concurrency), self.concurrency + 1.0)
        if self.rate is not None:
            raised = self.rate * 1.05 + 0.1
            self.rate = min(raised, self._ceiling) if self._ceiling is not None else raised
            if self._ceiling is None and self.rate > 4 * max(self._goodput(now), 1.0):
                self.rate = None  # far above what is used: stop pacing until the next 429

    def _share(self, worker: str, now: float) -> tuple[int, float]:
        """This worker's fair slots (max-min fair by demand) and its fraction of the run's rate."""
        demands = {w: d for w, (d, seen) in self._demand.items() if d > 0 and now - seen <= self._stale_s}
        if worker not in demands:
            return 0, 0.0
        # The slots left by rounding go round the workers, one lease period each, so a run with fewer slots
        # than workers still gives each worker its turn (all leases within one period agree on the order).
        turn = int((now - self._started) / self.settings.lease_period_s)
        fair = water_fill(int(self.concurrency), demands, turn)
        total = sum(fair.values())
        return fair[worker], (fair[worker] / total if total else 1.0 / len(demands))

    def _record(self, now: float) -> None:
        elapsed = now - self._started
        if not self.history or elapsed - self.history[-1][0] >= 0.5:
            self.history.append((elapsed, self.concurrency, self.rate or 0.0))

    def get_history(self) -> list[tuple[float, float, float]]:
        """(seconds since start, concurrency, rate per second; 0 = unpaced), about every half second."""
        return list(self.history)


class LimiterHandle:
    """How a worker reaches the run's limiter: a Ray actor handle or the object itself (in-process runs).

    The actor is restarted by Ray when lost and its calls are retried, so a lease waits through a restart.
    Should the call fail all the same, the worker keeps its last lease rather than stop.
    """

    def __init__(self, target: Any, period_s: float) -> None:
        self.target = target
        self.period_s = period_s
        self._last: Lease | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"target": self.target, "period_s": self.period_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["target"], state["period_s"])  # type: ignore[misc]

    async def lease(self, worker: str, demand: int, signals: RateSignals, in_flight: int = 0) -> Lease:
        remote = getattr(self.target.lease, "remote", None)
        if remote is None:
            return self.target.lease(worker, demand, signals, in_flight)
        try:
            self._last = await remote(worker, demand, signals, in_flight)
        except Exception:
            if self._last is None:
                raise
            return Lease(self._last.slots, self._last.rate_per_s, 0.0)
        return self._last


def limiter_settings_for(client: Any) -> LimiterSettings | None:
    """The run's limits from the client's settings; None for clients without them (no shared limiter)."""
    settings = getattr(client, "settings", None)
    if settings is None or not hasattr(settings, "max_concurrent_requests"):
        return None
    return LimiterSettings(
        max_concurrency=settings.max_concurrent_requests,
        rpm=getattr(settings, "rpm", None),
        tpm=getattr(settings, "tpm", None),
        adaptive=getattr(settings, "adaptive_concurrency", True),
    )


def water_fill(budget: int, demands: dict[str, int], turn: int = 0) -> dict[str, int]:
    """Max-min fair split of `budget` slots: nobody gets more than it asks, the rest share equally.

    Slots that do not divide evenly go to the unsatisfied workers in an order rotated by `turn`.
    """
    given = dict.fromkeys(demands, 0)
    wanting = {w: d for w, d in demands.items() if d > 0}
    left = budget
    while left >= len(wanting) > 0:
        each = left // len(wanting)
        for w in list(wanting):
            take = min(each, wanting[w])
            given[w] += take
            wanting[w] -= take
            left -= take
            if wanting[w] == 0:
                del wanting[w]
    order = sorted(wanting)
    if order:
        start = turn % len(order)
        for w in (order[start:] + order[:start])[:left]:
            given[w] += 1
    return given
