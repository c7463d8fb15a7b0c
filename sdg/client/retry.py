"""When to retry and how long to wait: pure functions, so the policy can be read and tested on its own."""

from __future__ import annotations

import email.utils
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from sdg.client.errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    LLMClientError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
)

__all__ = ["MAX_RETRY_AFTER_DELAY", "RetryPolicy", "parse_duration", "parse_retry_after", "status_error"]

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


def _should_retry_header(headers: Mapping[str, str]) -> bool | None:
    value = headers.get("x-should-retry")
    if value == "true":
        return True
    if value == "false":
        return False
    return None


def _hint(status: int, api_key_env: str | None, model: str, base_url: str) -> str:
    key_source = f"the environment variable {api_key_env}" if api_key_env else "the api_key argument"
    hints = {
        400: "check the generation parameters and the messages",
        401: f"check the API key in {key_source}",
        403: f"check that the key in {key_source} may use model {model!r}",
        404: f"check the model name {model!r} and the base URL {base_url}",
        422: "check the generation parameters and the messages",
    }
    return hints.get(status, "")


def status_error(
    status: int,
    headers: Mapping[str, str],
    body: object,
    *,
    url: str,
    model: str,
    base_url: str,
    api_key_env: str | None,
) -> APIStatusError:
    """The typed error for an HTTP error answer, with a message that says what to check."""
    detail = body.get("error") if isinstance(body, dict) else None
    if not isinstance(detail, dict):
        detail = {"message": detail} if isinstance(detail, str) else {}
    code = detail.get("code") or detail.get("type")
    server_message = str(detail.get("message") or "").strip()[:300]
    kwargs = {
        "status_code": status,
        "url": url,
        "error_code": str(code) if code is not None else None,
        "retry_after": parse_retry_after(headers),
        "should_retry": _should_retry_header(headers),
    }
    cls: type[APIStatusError]
    if status == 429 and code == "insufficient_quota":
        cls = QuotaExceededError
    elif status == 429:
        cls = RateLimitError
    elif status in (400, 422):
        cls = BadRequestError
    elif status == 401:
        cls = AuthenticationError
    elif status == 403:
        cls = PermissionDeniedError
    elif status == 404:
        cls = NotFoundError
    elif status in (408, 409) or status >= 500:
        cls = ServerError
    else:
        cls = APIStatusError
    hint = _hint(status, api_key_env, model, base_url)
    message = f"HTTP {status} from {url}"
    if server_message:
        message += f": {server_message}"
    if hint:
        message += f" ({hint})"
    return cls(message, **kwargs)  # type: ignore[arg-type]
