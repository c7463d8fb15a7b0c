"""When to retry and how long to wait: pure functions, so the policy can be read and tested on its own."""

from __future__ import annotations

import email.utils
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from sdg.client.errors import LLMClientError

__all__ = ["MAX_RETRY_AFTER_DELAY", "RetryPolicy", "parse_duration", "parse_retry_after"]

# A server asking for more than this is treated as asking for this much: a run should not stall for an hour.
MAX_RETRY_AFTER_DELAY = 60.0


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter (AWS architecture blog), capped, with Retry-After first."""

    max_retries: int = 3
    base_delay: float = 1.0
    max_delay: float = 60.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries={self.max_retries} must be >= 0")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("base_delay and max_delay must be >= 0 seconds")

    def should_retry(self, error: LLMClientError, retries_done: int) -> bool:
        return error.retryable and retries_done < self.max_retries

    def delay(self, error: LLMClientError, retries_done: int, rng: random.Random) -> float:
        """Seconds to wait before retry number `retries_done + 1`."""
        if error.retry_after is not None:
            return min(max(error.retry_after, 0.0), MAX_RETRY_AFTER_DELAY)
        ceiling = min(self.max_delay, self.base_delay * 2.0**retries_done)
        return rng.uniform(0.0, ceiling)


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asked us to wait: `retry-after-ms`, else `Retry-After` (seconds or HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(float(millis) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        parsed = email.utils.parsedate_tz(value)
        if parsed is None:
            return None
        return max(email.utils.mktime_tz(parsed) - (now if now is not None else time.time()), 0.0)


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: str | None) -> float | None:
    """OpenAI's reset durations ("120ms", "1.5s", "6m0s") in seconds; None if absent or unreadable."""
    if not value:
        return None
    parts = _DURATION_PART.findall(value)
    if not parts:
        try:
            return float(value)
        except ValueError:
            return None
    return sum(float(number) * _DURATION_UNIT_S[unit] for number, unit in parts)
