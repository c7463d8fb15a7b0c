"""One limit for the whole run: concurrency and request rate shared by every worker, adapted to 429s.

A provider's limit belongs to the API key, not to a worker: 4 workers with 32 slots each would send 128 at
once. Here `max_concurrent_requests` and `rpm`/`tpm` mean the run. Workers do not ask per request: every
lease period (0.1 s) each worker sends its demand and what the endpoint told it (429s, x-ratelimit-*
headers) and gets back its share: slots in flight, a request rate, and a pause.

The adaptation is the client's own `AdaptiveLimit` (`sdg.client.limits`), the same algorithm a client uses
on its own, fed here with every worker's signals; this module only shares its result out fairly.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sdg.client.limits import AdaptiveLimit, LimitSettings, RateSignals

__all__ = ["Lease", "LimiterHandle", "RunLimiter", "limiter_settings_for", "water_fill"]


@dataclass(frozen=True)
class Lease:
    """One worker's share until its next lease."""

    slots: int
    rate_per_s: float | None
    pause_s: float


class RunLimiter:
    """The run-wide state behind the leases. Plain Python: a Ray actor in a cluster, an object in-process."""

    def __init__(self, settings: LimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self.limit = AdaptiveLimit(settings, clock)
        self._demand: dict[str, tuple[int, float]] = {}
        self._granted: dict[str, int] = {}
        self._in_flight: dict[str, int] = {}
        self._stale_s = 10 * settings.period_s + 1.0  # a worker silent this long has died or finished

    @property
    def concurrency(self) -> float:
        return self.limit.concurrency

    @property
    def rate(self) -> float | None:
        return self.limit.rate

    def lease(self, worker: str, demand: int, signals: RateSignals, in_flight: int = 0) -> Lease:
        """This worker's share until its next lease; `in_flight` is what it has outstanding now.

        Slots held by others (their grant, or their in-flight requests if more) are never handed out
        again, so the run's requests in flight never exceed its concurrency, even while shares move.
        """
        now = self._clock()
        self._demand[worker] = (max(demand, 0), now)
        self.limit.observe(signals)
        fair, share = self._share(worker, now)
        held_by_others = sum(
            max(self._granted.get(w, 0), self._in_flight.get(w, 0))
            for w, (_, seen) in self._demand.items()
            if w != worker and now - seen <= self._stale_s
        )
        slots = max(0, min(fair, int(self.limit.concurrency) - held_by_others))
        self._granted[worker] = slots
        self._in_flight[worker] = in_flight
        rate = self.limit.rate * share if self.limit.rate is not None else None
        return Lease(slots=slots, rate_per_s=rate, pause_s=self.limit.pause_s())

    def _share(self, worker: str, now: float) -> tuple[int, float]:
        """This worker's fair slots (max-min fair by demand) and its fraction of the run's rate."""
        demands = {w: d for w, (d, seen) in self._demand.items() if d > 0 and now - seen <= self._stale_s}
        if worker not in demands:
            return 0, 0.0
        # The slots left by rounding go round the workers, one lease period each, so a run with fewer slots
        # than workers still gives each worker its turn (all leases within one period agree on the order).
        turn = int((now - self.limit.started) / self.settings.period_s)
        fair = water_fill(int(self.limit.concurrency), demands, turn)
        total = sum(fair.values())
        return fair[worker], (fair[worker] / total if total else 1.0 / len(demands))

    def get_history(self) -> list[tuple[float, float, float]]:
        """(seconds since start, concurrency, rate per second; 0 = unpaced), about every half second."""
        return list(self.limit.history)


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


def limiter_settings_for(client: Any) -> LimitSettings | None:
    """The run's limits from the client's settings; None for clients without them (no shared limiter)."""
    from sdg.client.settings import ClientSettings

    settings = getattr(client, "settings", None)
    return settings.limit_settings() if isinstance(settings, ClientSettings) else None


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
