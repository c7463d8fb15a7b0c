"""The retry policy as pure functions: classification by status and code, backoff bounds, Retry-After."""

from __future__ import annotations

import random

import pytest

from sdg.client import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    QuotaExceededError,
    RateLimitError,
    RetryPolicy,
    ServerError,
)
from sdg.client.responses import status_error
from sdg.client.retry import MAX_RETRY_AFTER_DELAY, parse_retry_after


def _error(status: int, headers: dict | None = None, body: object = None):
    return status_error(
        status,
        headers or {},
        body,
        url="http://x/v1/chat/completions",
        model="m",
        base_url="http://x/v1",
        api_key_env="MY_KEY",
    )


@pytest.mark.parametrize(
    ("status", "body", "cls", "retryable"),
    [
        (429, {"error": {"code": "rate_limit_exceeded"}}, RateLimitError, True),
        (429, {"error": {"code": "insufficient_quota"}}, QuotaExceededError, False),
        (500, None, ServerError, True),
        (503, None, ServerError, True),
        (408, None, ServerError, True),
        (400, None, BadRequestError, False),
        (422, None, BadRequestError, False),
        (401, None, AuthenticationError, False),
        (404, None, NotFoundError, False),
    ],
)
def test_classified_by_status_and_code(status: int, body: object, cls: type, retryable: bool) -> None:
    error = _error(status, body=body)
    assert type(error) is cls
    assert error.retryable is retryable


def test_messages_say_what_to_check() -> None:
    assert "MY_KEY" in str(_error(401))
    message = str(_error(404))
    assert "'m'" in message and "http://x/v1" in message


def test_x_should_retry_overrides_the_status() -> None:
    assert _error(400, {"x-should-retry": "true"}).retryable is True
    assert _error(503, {"x-should-retry": "false"}).retryable is False


def test_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "Thu, 01 Jan 1970 00:00:10 GMT"}, now=4.0) == 6.0
    assert parse_retry_after({}) is None


def test_backoff_is_full_jitter_capped_and_retry_after_wins() -> None:
    policy = RetryPolicy(max_retries=10, base_delay=1.0, max_delay=5.0)
    rng = random.Random(0)
    plain = _error(500)
    delays = [policy.delay(plain, retries, rng) for retries in range(10) for _ in range(50)]
    assert min(delays) >= 0 and max(delays) <= 5.0
    assert max(delays) > 2.5  # it does grow past the first steps
    assert policy.delay(_error(429, {"retry-after": "2"}), 0, rng) == 2.0
    assert policy.delay(_error(429, {"retry-after": "3600"}), 0, rng) == MAX_RETRY_AFTER_DELAY


def test_should_retry_stops_at_max_retries() -> None:
    policy = RetryPolicy(max_retries=2)
    assert policy.should_retry(_error(500), 1) and not policy.should_retry(_error(500), 2)
    assert not policy.should_retry(_error(401), 0)
