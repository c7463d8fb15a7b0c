"""Bounding what a client sends: the gate (mechanism) and the adaptive limit (policy) that drives it.

`RequestGate` admits HTTP attempts of one event loop: slots in flight, paced starts, pauses.
`AdaptiveLimit` decides the slots and the pace from what the endpoint said (`RateSignals`: 429s,
successes, `x-ratelimit-*` headers). It is one algorithm with two scopes: a client used on its own
feeds it its own signals every period and applies it to its gate; across Ray workers, the run-wide
limiter (`sdg.execution.limiter`) feeds it every worker's signals and leases out shares of its result.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from types import TracebackType

__all__ = ["AdaptiveLimit", "LimitSettings", "RateSignals", "RequestGate"]


class RequestGate:
    """Admits HTTP attempts in arrival order when a slot is free, the pacing bucket has a token and no pause is on.

    A request backs off *outside* the gate, so a sleeping retry never holds a slot, and waiting here is
    never an attempt (it costs no retry). `pause_for` stops new attempts until the server's window
    reopens (it said `remaining: 0`); a Retry-After delays only the request that got it. `resize` and
    `set_rate` apply the adaptive limit: the client's own, or this worker's lease of the run's.
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
    """What the endpoint said about its limits since the last look: read and reset by the adaptive limit.

    `status_429` counts refusals for rate (not `insufficient_quota`, which no pacing cures). Header values
    are the latest seen: `limit_*` per minute as OpenAI sends them, `reset_*_s` in seconds.
    """

    attempts: int = 0
    status_429: int = 0
    successes: int = 0
    success_s: float = 0.0  # the successful attempts' time in flight, summed (Little's law: slots for a pace)
    limit_requests: float | None = None
    remaining_requests: float | None = None
    reset_requests_s: float | None = None
    limit_tokens: float | None = None
    remaining_tokens: float | None = None
    reset_tokens_s: float | None = None
    tokens: int = 0

    def take(self) -> RateSignals:
        """This window's signals, leaving a fresh window behind.

        Header values are reset too: a stale "remaining 0" must not pause the run again when nothing was sent.
        """
        taken = replace(self)
        for spec in fields(self):
            setattr(self, spec.name, spec.default)
        return taken


# Pace this far under an announced limit: a pacer and a server bucket never tick exactly together.
HEADROOM = 0.97
SLOW_START_SLOTS = 4
MIN_RATE_PER_S = 0.5
GROWTH_START, GROWTH_MAX = 0.02, 0.5  # a clean window raises an unannounced pace by this share, doubling


@dataclass(frozen=True)
class LimitSettings:
    """The configured limits and how the adaptive limit reacts; defaults suit every endpoint seen so far."""

    max_concurrency: int
    rpm: float | None = None
    tpm: float | None = None
    adaptive: bool = True
    decrease: float = 0.75
    window_s: float = 1.0
    # A window where at most this share of attempts got 429 is not congestion: endpoints refuse a few
    # requests at random (upstream overload); cutting on those would spiral the run down to nothing.
    tolerated_429_share: float = 0.2
    # ...but this many refusals above that share close a window early: a burst into an empty bucket is
    # answered within one period, not after a second of 429s.
    early_429s: int = 20
    period_s: float = 0.1


class AdaptiveLimit:
    """How many requests may be in flight and how fast they may start, learned from the endpoint's answers.

    - Slow start (as TCP): a few slots, doubled every period until the first congestion or the maximum,
      so a run does not open with a burst of `max_concurrency` before it has heard any limit.
    - An announced limit (`x-ratelimit-limit-requests`, or tokens via the mean request size) or a
      configured `rpm`/`tpm` sets the pace just under it: the endpoint's own word beats any guess.
    - Congestion (a window with more than `tolerated_429_share` refused) paces at the goodput the server
      sustained in that window (what a saturated bucket lets through) and cuts concurrency by `decrease`,
      but not below what that pace needs (Little's law on the answers' latency).
    - A window with a few refusals steps just under its goodput if pushing harder gained nothing; a clean
      window adds a slot and raises the pace (straight back to the last sustained goodput, then by a step
      that doubles with each clean window: 2%, 4%, 8%...).
    - `remaining: 0` with a reset time pauses everything until the reset, and the restart is paced.
    Retry-After is not here: it delays only the request that got it (the client's retry loop).
    Plain Python on an injectable clock: the client calls `observe` with its own signals, the run-wide
    limiter with every worker's; both read `concurrency`, `rate` and `pause_until`.
    """

    def __init__(self, settings: LimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self.started = clock()
        adaptive = settings.adaptive
        self.concurrency = float(
            min(settings.max_concurrency, SLOW_START_SLOTS) if adaptive else settings.max_concurrency
        )
        self._slow_start = adaptive and self.concurrency < settings.max_concurrency
        self._last_double = self.started
        self._ceiling = settings.rpm / 60.0 if settings.rpm else None  # requests/s never to exceed
        self.rate: float | None = self._ceiling
        self.pause_until = 0.0
        self._sustained: float | None = None  # goodput of the last window the server refused some of
        self._growth = GROWTH_START
        self._window_start = self.started
        self._active_since = self.started
        self._window = RateSignals()
        self._tokens_per_request: float | None = None
        self._announced: tuple[float | None, float | None] = (None, None)  # last limits heard: requests, tokens
        self.history: list[tuple[float, float, float]] = []

    def observe(self, signals: RateSignals) -> None:
        """Take what the endpoint said since the last call (call about every `period_s`)."""
        now = self._clock()
        window = self._window
        if signals.attempts and not window.attempts:  # goodput counts from the first traffic, not idle time
            self._active_since = max(self._window_start, now - self.settings.period_s)
        window.attempts += signals.attempts
        window.status_429 += signals.status_429
        window.successes += signals.successes
        window.success_s += signals.success_s
        if signals.successes and signals.tokens:
            per_request = signals.tokens / signals.successes
            old = self._tokens_per_request
            self._tokens_per_request = per_request if old is None else 0.8 * old + 0.2 * per_request
        self._learn_ceiling(signals)
        self._pause_on_empty_window(now, signals)
        if self._slow_start:
            if signals.status_429 > self.settings.tolerated_429_share * max(signals.attempts, 1):
                self._slow_start = False
            elif now - self._last_double >= self.settings.period_s:
                self._last_double = now
                self.concurrency = min(float(self.settings.max_concurrency), self.concurrency * 2)
                self._slow_start = self.concurrency < self.settings.max_concurrency
        elapsed = now - self._window_start
        congested = window.status_429 > self.settings.tolerated_429_share * window.attempts
        if elapsed >= self.settings.window_s or (congested and window.status_429 >= self.settings.early_429s):
            self._close_window(now, now - self._active_since)
        self._record(now)

    def is_news(self, signals: RateSignals) -> bool:
        """Whether these signals should be looked at now rather than at the next period.

        A refusal, an empty window, or a limit announced for the first time (or changed): reacting one period
        late would let a client with free slots fire a burst into an empty bucket, each refusal instant.
        """
        return bool(
            signals.status_429
            or signals.remaining_requests == 0
            or signals.remaining_tokens == 0
            or (signals.limit_requests is not None and signals.limit_requests != self._announced[0])
            or (signals.limit_tokens is not None and signals.limit_tokens != self._announced[1])
        )

    def _pause_on_empty_window(self, now: float, signals: RateSignals) -> None:
        resets = []
        if signals.remaining_requests == 0 and signals.reset_requests_s:
            resets.append(signals.reset_requests_s)
        if signals.remaining_tokens == 0 and signals.reset_tokens_s:
            resets.append(signals.reset_tokens_s)
        if resets:
            self.pause_until = max(self.pause_until, now + min(max(resets), 60.0))

    def heard(self, signals: RateSignals) -> None:
        """Remember the limits these signals announce, so the same announcement is not news again."""
        self._announced = (
            signals.limit_requests if signals.limit_requests is not None else self._announced[0],
            signals.limit_tokens if signals.limit_tokens is not None else self._announced[1],
        )

    def _learn_ceiling(self, signals: RateSignals) -> None:
        self.heard(signals)
        ceilings = [self.settings.rpm / 60.0] if self.settings.rpm else []
        if signals.limit_requests and not self.settings.rpm:
            ceilings.append(signals.limit_requests / 60.0 * HEADROOM)
        tokens_per_minute = self.settings.tpm or (signals.limit_tokens and signals.limit_tokens * HEADROOM)
        if tokens_per_minute and self._tokens_per_request:
            ceilings.append(tokens_per_minute / 60.0 / self._tokens_per_request)
        if not ceilings:
            return
        ceiling = min(ceilings)
        if self._ceiling is None or abs(ceiling - self._ceiling) > 1e-9:
            self._ceiling = ceiling
            self.rate = ceiling

    def _close_window(self, now: float, active_s: float) -> None:
        """Judge the last window: congested (too many 429s) cuts, a few 429s step under, clean grows."""
        window, self._window, self._window_start = self._window, RateSignals(), now
        if not self.settings.adaptive or window.attempts == 0:
            return
        goodput = window.successes / max(active_s, self.settings.period_s)
        if window.status_429 > self.settings.tolerated_429_share * window.attempts:
            self._slow_start = False
            if goodput > 0:
                self.rate = max(MIN_RATE_PER_S, HEADROOM * goodput)
            else:
                self.rate = max(MIN_RATE_PER_S, (self.rate or window.attempts / max(active_s, 1e-3)) / 2)
            # Fewer slots, but never fewer than the new pace needs (Little's law on the answers' latency):
            # against a rate limit, cutting slots too would cap the pace below what the server allows.
            needed = 1.5 * self.rate * window.success_s / window.successes if window.successes else 1.0
            cut = self.concurrency * self.settings.decrease
            self.concurrency = max(1.0, min(self.concurrency, max(cut, float(math.ceil(needed)))))
            self._sustained = goodput
            self._growth = GROWTH_START
        elif window.status_429:
            # Some refusals: if sending more than last time gave no more successes, the server is full here.
            if self.rate is not None and self._sustained is not None and goodput <= 1.02 * self._sustained:
                self.rate = max(MIN_RATE_PER_S, min(self.rate, HEADROOM * goodput))
            self._sustained = goodput
            self._growth = GROWTH_START
        else:
            self.concurrency = min(float(self.settings.max_concurrency), self.concurrency + 1.0)
            if self.rate is not None and self._ceiling is None and self.rate > 4 * max(goodput, 1.0):
                self.rate = None  # the pace was far above what was used: stop pacing until the next refusal
            elif self.rate is not None:
                # Straight back to what the server last sustained; above it, probe by a step that doubles
                # with each clean window (2%, 4%, 8%...), so an underestimate is left within seconds.
                sustained = HEADROOM * (self._sustained or 0.0)
                self.rate = sustained if self.rate < sustained else self.rate * (1.0 + self._growth) + 0.1
                self._growth = min(2 * self._growth, GROWTH_MAX)
        if self.rate is not None and self._ceiling is not None:
            self.rate = min(self.rate, self._ceiling)

    def _record(self, now: float) -> None:
        elapsed = now - self.started
        if not self.history or elapsed - self.history[-1][0] >= 0.5:
            self.history.append((elapsed, self.concurrency, self.rate or 0.0))

    def pause_s(self) -> float:
        return max(0.0, self.pause_until - self._clock())


class AdaptiveGate:
    """A client's own adaptive limit applied to its gate: the scope of one client used as a library.

    Fed after every attempt, it looks at the signals at most once a period, so the cost per request is
    a clock read. `handed_over` (a run-wide limiter leases this gate) stops it: one driver per gate; then
    `on_news` (if set) is called on news instead, so the worker can take its next lease at once.
    """

    def __init__(self, gate: RequestGate, signals: RateSignals, settings: LimitSettings) -> None:
        self.gate = gate
        self.signals = signals
        self.limit = AdaptiveLimit(settings)
        self.handed_over = False
        self.on_news: Callable[[], None] | None = None
        self._next_look = self.limit.started + settings.period_s
        self._apply()

    def after_attempt(self) -> None:
        if self.handed_over:
            if self.on_news is not None and self.limit.is_news(self.signals):
                self.limit.heard(self.signals)
                self.on_news()
            return
        now = time.monotonic()
        if now < self._next_look and not self.limit.is_news(self.signals):
            return
        self._next_look = now + self.limit.settings.period_s
        self.limit.observe(self.signals.take())
        self._apply()

    def _apply(self) -> None:
        self.gate.resize(int(self.limit.concurrency))
        rate = self.limit.rate
        # A little burst (half a period's worth) gives back the time the loop's timers fire late; with a
        # burst of 1 every late tick is lost, ~5% of the pace at 50/s.
        self.gate.set_rate(rate, burst=max(1.0, (rate or 0.0) * self.limit.settings.period_s / 2))
        pause = self.limit.pause_s()
        if pause:
            self.gate.pause_for(pause)
