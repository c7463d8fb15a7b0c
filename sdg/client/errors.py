"""Every error the client raises, decided by exception type and HTTP status, never by message text.

```
* LLMClientError                 base of everything below
  x APIConnectionError           the endpoint could not be reached or dropped the connection   (retried)
    + APITimeoutError            no complete answer within `timeout`                            (retried)
  x MalformedResponseError       HTTP 200 whose JSON is not a chat completion                   (retried)
    + NotJSONResponseError       HTTP 200 not labelled JSON (a login page, a captive proxy)     (fails at once)
  x EmptyAnswerError             HTTP 200 whose answer has no content (e.g. all of max_tokens   (fails at once)
                                 spent on reasoning, or tool calls only); a refusal is not empty
  x APIStatusError               the endpoint answered with an error status
    + BadRequestError            400 / 422: the request itself is wrong                         (fails at once)
    + AuthenticationError        401: the key is missing or wrong                               (fails at once)
    + PermissionDeniedError      403: the key may not use this model                            (fails at once)
    + NotFoundError              404: unknown model or wrong base URL                           (fails at once)
    + RateLimitError             429: too many requests                                         (retried)
      - QuotaExceededError       429 `insufficient_quota`: no credit left                       (fails at once)
    + ServerError                408, 409, 5xx: the endpoint had a transient problem            (retried)
```
`x-should-retry: true|false` from the server overrides the column on the right. Messages never contain
the API key: they name the environment variable it should come from, and a server's own reason is cut to
300 characters with anything that is the key, or looks like `Bearer ...`, masked.
"""

from __future__ import annotations

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "BadRequestError",
    "EmptyAnswerError",
    "LLMClientError",
    "MalformedResponseError",
    "NotFoundError",
    "NotJSONResponseError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "RateLimitError",
    "ServerError",
]


class LLMClientError(Exception):
    """Base of every error raised by the sdg client; `kind` is a stable short name for counting."""

    kind: str = "error"
    retryable: bool = False

    def __init__(self, message: str, *, url: str = "", attempts: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.url = url
        self.attempts = attempts
        self.retry_after: float | None = None

    def __str__(self) -> str:
        if self.attempts > 1:
            return f"{self.message} (gave up after {self.attempts} attempts)"
        return self.message

    def __reduce__(self):  # type: ignore[no-untyped-def]
        # Keyword-only constructors do not survive pickling by default; errors cross Ray's process boundary.
        return (_rebuild_error, (type(self), self.__dict__))


def _rebuild_error(cls: type[LLMClientError], state: dict) -> LLMClientError:
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("message", ""))
    error.__dict__.update(state)
    return error


class APIConnectionError(LLMClientError):
    """The endpoint could not be reached, or it closed the connection before answering."""

    kind = "connection"
    retryable = True


class APITimeoutError(APIConnectionError):
    """The endpoint did not finish its answer within the client's `timeout`."""

    kind = "timeout"


class MalformedResponseError(LLMClientError):
    """The endpoint answered 200 with a body that is not a valid chat completion."""

    kind = "malformed"
    retryable = True


class NotJSONResponseError(MalformedResponseError):
    """The endpoint answered 200 with something that is not JSON (an HTML login wall, a captive proxy).

    Not retried: asking the same page again gives the same page. The message names the content type and
    shows the first characters of the body.
    """

    kind = "not_json"
    retryable = False


class EmptyAnswerError(LLMClientError):
    """A 200 chat completion in which a choice has no content and no refusal.

    Typical: a reasoning model spent all of `max_tokens` thinking (`finish_reason=length`, the text in
    `reasoning_content`), or the model answered with tool calls only. Not retried: the same request gives
    the same kind of answer. `completion` is the answer as parsed (its reasoning and token usage), so a
    dataset row can show what was spent.
    """

    kind = "empty_answer"
    retryable = False

    def __init__(self, message: str, *, url: str = "", completion: object = None) -> None:
        super().__init__(message, url=url)
        self.completion = completion


class APIStatusError(LLMClientError):
    """The endpoint answered with an HTTP error status."""

    kind = "status"

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        url: str = "",
        error_code: str | None = None,
        retry_after: float | None = None,
        should_retry: bool | None = None,
    ) -> None:
        super().__init__(message, url=url)
        self.status_code = status_code
        self.error_code = error_code
        self.retry_after = retry_after
        if should_retry is not None:
            self.retryable = should_retry


class BadRequestError(APIStatusError):
    """400 or 422: the endpoint rejected the request's parameters."""

    kind = "bad_request"


class AuthenticationError(APIStatusError):
    """401: the API key is missing or not accepted."""

    kind = "auth"


class PermissionDeniedError(APIStatusError):
    """403: the key is valid but may not do this."""

    kind = "permission"


class NotFoundError(APIStatusError):
    """404: the model does not exist there, or the base URL is not an OpenAI-compatible API."""

    kind = "not_found"


class RateLimitError(APIStatusError):
    """429: the endpoint asks us to slow down."""

    kind = "rate_limit"
    retryable = True


class QuotaExceededError(RateLimitError):
    """429 with `insufficient_quota`: waiting will not help, the account has no credit."""

    kind = "quota"
    retryable = False


class ServerError(APIStatusError):
    """408, 409 or 5xx: a transient problem on the endpoint's side."""

    kind = "server_error"
    retryable = True
