"""Bounding what one client sends: a cap on requests in flight and a pause after the server says 429."""

from __future__ import annotations

import asyncio
from types import TracebackType

__all__ = ["RequestGate"]


class RequestGate:
    """Admits at most `max_in_flight` HTTP attempts at once, and none while paused.

    A request backs off *outside* the gate, so a sleeping retry never holds a slot. `pause_for` is
    called on a 429 with Retry-After: the server said the whole key is over its limit, so new
    attempts from every task of this client wait, not just the one that was refused.
    Bound to the event loop it is created on (the client keeps one per loop).
    """

    def __init__(self, max_in_flight: int) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_concurrent_requests={max_in_flight} must be >= 1")
        self.max_in_flight = max_in_flight
        self._slots = asyncio.Semaphore(max_in_flight)
        self._loop = asyncio.get_running_loop()
        self._resume_at = 0.0
        self.in_flight = 0

    def pause_for(self, seconds: float) -> None:
        self._resume_at = max(self._resume_at, self._loop.time() + seconds)

    async def _wait_while_paused(self) -> None:
        while (remaining := self._resume_at - self._loop.time()) > 0:
            await asyncio.sleep(remaining)

    async def __aenter__(self) -> RequestGate:
        while True:
            await self._wait_while_paused()
            await self._slots.acquire()
            if self._resume_at <= self._loop.time():
                break
            self._slots.release()  # a 429 arrived while we queued: wait out the pause without a slot
        self.in_flight += 1
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.in_flight -= 1
        self._slots.release()
