"""Token-bucket rate limit and the headers real servers put on its answers.

`x-ratelimit-*` follow OpenAI (https://platform.openai.com/docs/guides/rate-limits: limit, remaining and a
reset duration such as "1s", "6m0s", "20ms"). The 429 wait hint comes in one of `RETRY_AFTER_STYLES`:
HTTP's own `Retry-After` is delta-seconds or an HTTP-date (RFC 9110 §10.2.3), which is what most gateways
send; `retry-after-ms` is OpenAI's millisecond extension.
"""

from __future__ import annotations

import email.utils
import math
import time

__all__ = ["TokenBucket", "duration", "retry_after_headers"]


def duration(seconds: float) -> str:
    """OpenAI-style reset duration: "120ms" below one second, else "1.5s"."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def retry_after_headers(seconds: float, style: str, now: float | None = None) -> dict[str, str]:
    """The hint to wait `seconds` before retrying, in the given style (see `SimOptions.retry_after_style`)."""
    whole = str(max(1, math.ceil(seconds)))  # delta-seconds is a whole number; 0 would invite a hot loop
    if style == "seconds":
        return {"Retry-After": whole}
    if style == "ms":
        return {"retry-after-ms": str(math.ceil(seconds * 1000))}
    if style == "both":
        return {"retry-after-ms": str(math.ceil(seconds * 1000)), "Retry-After": whole}
    if style == "date":
        # An HTTP-date has whole seconds: round the moment up so it is never earlier than the real wait.
        now = time.time() if now is None else now
        at = max(math.ceil(now + seconds), math.floor(now) + 1)
        return {"Retry-After": email.utils.formatdate(at, usegmt=True)}
    return {}


class TokenBucket:
    """Requests-per-second limiter: `take()` a token, then describe the state in headers."""

    def __init__(self, rps: float, burst: int) -> None:
        self.rps = rps
        self.capacity = burst or max(1, math.ceil(rps))
        self.tokens = float(self.capacity)
        self.stamp = time.monotonic()
        self.limit = str(max(1, round(rps * 60)))

    def take(self) -> bool:
        """Consume a token if one is available."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rps)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def wait_s(self) -> float:
        """Seconds until the next token."""
        return max(0.0, 1 - self.tokens) / self.rps

    def headers(self) -> dict[str, str]:
        """OpenAI's x-ratelimit-* for the state after the last `take()`."""
        return {
            "x-ratelimit-limit-requests": self.limit,
            "x-ratelimit-remaining-requests": str(int(self.tokens)),
            "x-ratelimit-reset-requests": duration((self.capacity - self.tokens) / self.rps),
        }
