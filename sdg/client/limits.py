"""Bounding what one client sends: requests in flight, request starts per second, and pauses after 429s.

The gate is local to one event loop. Across Ray workers, a run-wide limiter (`sdg.execution.limiter`)
resizes each worker's gate every lease period, so the limits mean the whole run, not each worker.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, replace
from types import TracebackType

__all__ = ["RateSignals", "RequestGate"]


class RequestGate:
    """Admits HTTP attempts in arrival order when a slot is free, the pacing bucket has a token and no pause is on.

    A request backs off *outside* the gate, so a sleeping retry never holds a slot. `pause_for` is
    called on a 429 with Retry-After: the server said the whole key is over its limit, so new attempts
    from every task of this client wait, not just the one that was refused. `resize` and `set_rate` let
    a run-wide limiter hand this worker its share of the run's concurrency and request rate.
    First come, first served (a queue of futures, as asyncio.Semaphore keeps): under pacing, a request
    waits about as long as the queue ahead of it, and no request waits for ever.
    """

    def __init__(self, max_in_flight: int, rate_per_s: float | None = None) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_concurrent_requests={max_in_flight} must be >= 1")
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self._loop = asyncio.get_running_loop()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._resume_at = 0.0
        self._rate: float | None = None
        self._tokens = 0.0
        self._burst = 1.0
        self._refilled_at = self._loop.time()
        self.set_rate(rate_per_s)

    def pause_for(self, seconds: float) -> None:
        self._resume_at = max(self._resume_at, self._loop.time() + seconds)

    def resize(self, max_in_flight: int) -> None:
        """Change the slot count (0 closes the gate for new attempts until resized again)."""
        self.max_in_flight = max(0, max_in_flight)
        self._dispatch()

    def set_rate(self, rate_per_s: float | None, burst: float = 1.0) -> None:
        """Pace attempt starts to `rate_per_s` (None: unpaced), allowing `burst` back-to-back starts."""
        self._refill()
        self._rate = rate_per_s if rate_per_s and rate_per_s > 0 else None
        self._burst = max(burst, 1.0)
        self._tokens = min(self._tokens, self._burst) if self._rate else 0.0
        self._dispatch()

    def _refill(self) -> None:
        now = self._loop.time()
        if self._rate is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._refilled_at) * self._rate)
        self._refilled_at = now

    def _wait_needed(self) -> float | None:
        """0 when an attempt may start now, seconds to wait, or None to wait for a slot to free up."""
        now = self._loop.time()
        if now < self._resume_at:
            return self._resume_at - now
        if self.in_flight >= self.max_in_flight:
            return None
        if self._rate is not None:
            self._refill()
            if self._tokens < 1.0:
                return (1.0 - self._tokens) / self._rate
        return 0.0

    def _take(self) -> None:
        self.in_flight += 1
        if self._rate is not None:
            self._tokens -= 1.0

    def _dispatch(self) -> None:
        """Admit waiters from the front while they may start; otherwise wake up when the head may."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._waiters:
            head = self._waiters[0]
            if head.done():  # its task was cancelled while it waited
                self._waiters.popleft()
                continue
            wait = self._wait_needed()
            if wait is None:
                return  # a slot frees up in __aexit__, which dispatches again
            if wait > 0:
                self._timer = self._loop.call_later(wait, self._dispatch)
                return
            self._waiters.popleft()
            self._take()
            head.set_result(None)

    async def __aenter__(self) -> RequestGate:
        if not self._waiters and self._wait_needed() == 0.0:
            self._take()
            return self
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        self._dispatch()
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():  # admitted, then cancelled: hand the slot on
                self._release()
            raise
        return self

    def _release(self) -> None:
        self.in_flight -= 1
        self._dispatch()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release()


@dataclass
class RateSignals:
    """What the endpoint said about its limits since the last lease: read and reset by the run's limiter."""

    attempts: int = 0
    status_429: int = 0
    successes: int = 0
    retry_after_s: float = 0.0
    limit_requests: float | None = None  # x-ratelimit-limit-requests (per minute, as OpenAI sends it)
    remaining_requests: float | None = None
    reset_requests_s: float | None = None
    tokens: int = 0

    def take(self) -> RateSignals:
        """This window's signals, leaving a fresh window behind.

        Header values are reset too: a stale "remaining 0" must not pause the run again when nothing was sent.
        """
        taken = replace(self)
        for name, spec in self.__dataclass_fields__.items():
            setattr(self, name, spec.default)
        return taken
