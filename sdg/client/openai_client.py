"""`AsyncOpenAIClient` and `OpenAIClient`: NeMo Curator's client API over a lean HTTP path.

Why not the openai SDK underneath: measured on this 2-core machine (`scripts/bench_client.py`), the SDK
spends ~4.5 ms of CPU per request building and validating typed objects, which caps a worker at
~200 req/s (~450 on its aiohttp transport). A chat completion is one JSON POST; doing it on aiohttp
directly is several times faster, and it leaves exactly one retry layer (this one) that counts every
attempt. Errors are mapped to the typed tree in `sdg.client.errors`, named after the SDK's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from concurrent.futures import Future
from typing import Any, TypeVar

import aiohttp

from sdg.client.base import AsyncLLMClient, Completion, LLMClient, Messages
from sdg.client.errors import (
    APIConnectionError,
    APITimeoutError,
    LLMClientError,
    MalformedResponseError,
    QuotaExceededError,
    RateLimitError,
)
from sdg.client.generation import GenerationConfig
from sdg.client.limits import AdaptiveGate, RateSignals, RequestGate
from sdg.client.responses import parse_completion, read_body, read_stream, status_error
from sdg.client.retry import RetryPolicy, parse_duration
from sdg.client.settings import DEFAULT_BASE_URL, ClientSettings
from sdg.client.stats import ClientStats

__all__ = ["AsyncOpenAIClient", "ClientSettings", "OpenAIClient"]

log = logging.getLogger("sdg.client")

T = TypeVar("T")


class _LoopState:
    """The HTTP session, gate and adaptive limit of one event loop; closed when that loop shuts down."""

    def __init__(self, settings: ClientSettings, signals: RateSignals) -> None:
        timeout = aiohttp.ClientTimeout(total=None, connect=settings.connect_timeout, sock_read=settings.timeout)
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, ssl=settings.ssl_context())
        self.session = aiohttp.ClientSession(
            connector=connector,
            timeout=timeout,
            headers=settings.headers(),
            raise_for_status=False,
            trust_env=settings.trust_env,
        )
        self.gate = RequestGate(settings.max_concurrent_requests, settings.rpm / 60.0 if settings.rpm else None)
        # adaptive_concurrency=False keeps the fixed semaphore (and a configured rpm as a fixed pace).
        self.adaptive = (
            AdaptiveGate(self.gate, signals, settings.limit_settings()) if settings.adaptive_concurrency else None
        )
        self._closer: AsyncIterator[None] | None = None

    async def close_with_loop(self) -> None:
        """Ask the loop to close the session when it shuts down (asyncio.run calls shutdown_asyncgens)."""
        self._closer = _close_on_loop_shutdown(self.session)
        await anext(self._closer)


async def _close_on_loop_shutdown(session: aiohttp.ClientSession) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await session.close()


class AsyncOpenAIClient(AsyncLLMClient):
    """Asynchronous client for any OpenAI-compatible chat-completions endpoint.

    Same constructor as NeMo Curator's. `api_key=None` reads the variable named by `api_key_env`
    (`OPENAI_API_KEY` unless told otherwise), in the process that sends, so a key never has to travel.
    `max_concurrent_requests` bounds HTTP attempts in flight per event loop; retries back off outside it.
    The object pickles by its settings and builds its HTTP session lazily per event loop, so it can be
    shipped to Ray workers and used under repeated `asyncio.run`.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        max_concurrent_requests: int = ClientSettings.max_concurrent_requests,
        max_retries: int = ClientSettings.max_retries,
        base_delay: float = ClientSettings.base_delay,
        max_delay: float = ClientSettings.max_delay,
        timeout: float | None = ClientSettings.timeout,
        **settings: Any,
    ) -> None:
        unknown = sorted(set(settings) - set(ClientSettings.names()))
        if unknown:
            raise TypeError(
                f"AsyncOpenAIClient got unknown arguments {unknown}; it takes {list(ClientSettings.names())}"
            )
        self.settings = ClientSettings(
            api_key=api_key,
            base_url=base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,
            max_concurrent_requests=max_concurrent_requests,
            max_retries=max_retries,
            base_delay=base_delay,
            max_delay=max_delay,
            timeout=float(timeout) if timeout is not None else None,
            **settings,
        )
        self._setup()

    @classmethod
    def from_settings(cls, settings: ClientSettings) -> AsyncOpenAIClient:
        """A fresh client (new stats, no connections) with these settings."""
        client = cls.__new__(cls)
        client.__setstate__({"settings": settings})
        return client

    def _setup(self) -> None:
        self.retry_policy = RetryPolicy(self.settings.max_retries, self.settings.base_delay, self.settings.max_delay)
        self.stats = ClientStats()
        self.rate_signals = RateSignals()
        self._url = f"{self.settings.base_url}/chat/completions"
        self._rng = random.Random()
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()

    def __getstate__(self) -> dict[str, Any]:
        return {"settings": self.settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.settings = state["settings"]
        self._setup()

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"AsyncOpenAIClient(base_url={s.base_url!r}, max_concurrent_requests={s.max_concurrent_requests}, "
            f"max_retries={s.max_retries})"
        )

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    async def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = _LoopState(self.settings, self.rate_signals)
            self._states[loop] = state
            await state.close_with_loop()
        return state

    @property
    def gate(self) -> RequestGate | None:
        """The gate of the running loop, if this client has sent on it (for tests and progress)."""
        try:
            return self._states[asyncio.get_running_loop()].gate
        except (KeyError, RuntimeError):
            return None

    async def current_gate(self, on_news: Callable[[], None] | None = None) -> RequestGate:
        """The gate of the running loop, handed to a run-wide limiter: from now on its leases size the gate.

        The client stops adapting that gate itself (one driver per gate); the signals it gathers go to
        whoever takes `rate_signals`, and `on_news` is called when they hold news (a 429, an empty window,
        a new limit) that should not wait for the next lease.
        """
        state = await self._state()
        if state.adaptive is not None:
            state.adaptive.handed_over = True
            state.adaptive.on_news = on_news
        return state.gate

    async def aclose(self) -> None:
        state = self._states.pop(asyncio.get_running_loop(), None)
        if state is not None:
            await state.session.close()

    async def __aenter__(self) -> AsyncOpenAIClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def complete(
        self, messages: Messages, model: str, generation_config: GenerationConfig | None = None
    ) -> Completion:
        config = generation_config or GenerationConfig()
        payload = json.dumps({"model": model, "messages": messages, **config.request_body()}).encode()
        stats = self.stats
        stats.requests += 1
        started = time.perf_counter()

        async def send(session: aiohttp.ClientSession) -> Completion:
            return await self._send(session, payload, model, config.stream, config.token_budget)

        completion, attempts = await self._with_retries(send)
        completion.latency_s = time.perf_counter() - started
        completion.attempts = attempts
        stats.successes += 1
        stats.prompt_tokens += completion.prompt_tokens
        stats.completion_tokens += completion.completion_tokens
        stats.latencies_s.append(completion.latency_s)
        self.rate_signals.tokens += completion.prompt_tokens + completion.completion_tokens
        return completion

    async def list_models(self) -> list[str]:
        """The model ids the endpoint serves (GET /models), with the same retries and errors as `complete`."""
        url = f"{self.settings.base_url}/models"

        async def send(session: aiohttp.ClientSession) -> list[str]:
            async with self._translated(url), session.get(url, params=self.settings.default_query) as response:
                body = await read_body(response, self.settings)
                if response.status >= 400:
                    raise self._status_error(response, body, url, model="")
            try:
                return [str(item["id"]) for item in body["data"]]
            except (KeyError, TypeError) as exc:
                raise MalformedResponseError(f"answer from {url} is not a model list ({exc!r})", url=url) from None

        return (await self._with_retries(send))[0]

    async def _with_retries(self, send: Callable[[aiohttp.ClientSession], Awaitable[T]]) -> tuple[T, int]:
        """Run `send` inside the gate until it succeeds or the policy gives up; backoff happens outside the gate.

        Only attempts that reached the gate's inside count against `max_retries`: waiting for a slot, for
        the pace or for a paused window is not a failure. A Retry-After delays this request's next attempt
        (at least that long); the other requests are slowed by the adaptive limit's pace, not stopped.
        """
        state = await self._state()
        stats = self.stats
        signals = self.rate_signals
        attempt = 0
        while True:
            attempt += 1
            try:
                async with state.gate:
                    stats.attempts += 1
                    signals.attempts += 1
                    sent_at = time.perf_counter()
                    result = await send(state.session)
                signals.successes += 1
                signals.success_s += time.perf_counter() - sent_at
                if state.adaptive is not None:
                    state.adaptive.after_attempt()
                return result, attempt
            except LLMClientError as error:
                self._count_error(error)  # before the limit looks: a 429 is news it reacts to at once
                if state.adaptive is not None:
                    state.adaptive.after_attempt()
                if not self.retry_policy.should_retry(error, attempt - 1):
                    error.attempts = attempt
                    stats.failures += 1
                    stats.failures_by_kind[error.kind] += 1
                    raise
                delay = self.retry_policy.delay(error, attempt - 1, self._rng)
                stats.retries += 1
                stats.backoff_s += delay
                log.info(
                    "retrying in %.2fs after %s (attempt %d of %d)",
                    delay,
                    error.kind,
                    attempt,
                    self.retry_policy.max_retries + 1,
                )
                await asyncio.sleep(delay)

    def _count_error(self, error: LLMClientError) -> None:
        stats = self.stats
        if isinstance(error, APITimeoutError):
            stats.timeouts += 1
        elif isinstance(error, APIConnectionError):
            stats.connection_errors += 1
        elif isinstance(error, MalformedResponseError):
            stats.malformed += 1
        elif isinstance(error, RateLimitError):
            stats.status_429 += 1
            if not isinstance(error, QuotaExceededError):  # no pace cures an empty account
                self.rate_signals.status_429 += 1
        else:
            status = getattr(error, "status_code", None)
            if status is not None:
                stats.other_statuses[status] += 1

    def _note_rate_headers(self, headers: Mapping[str, str]) -> None:
        """Keep the endpoint's own account of its limits (OpenAI's x-ratelimit-*), for the adaptive limit."""
        signals = self.rate_signals
        signals.limit_requests = _float_or_none(headers.get("x-ratelimit-limit-requests"))
        signals.remaining_requests = _float_or_none(headers.get("x-ratelimit-remaining-requests"))
        signals.limit_tokens = _float_or_none(headers.get("x-ratelimit-limit-tokens"))
        signals.remaining_tokens = _float_or_none(headers.get("x-ratelimit-remaining-tokens"))
        # A reset time matters only to an empty window (the limit pauses until it): parse it only then.
        if signals.remaining_requests == 0:
            signals.reset_requests_s = parse_duration(headers.get("x-ratelimit-reset-requests"))
        if signals.remaining_tokens == 0:
            signals.reset_tokens_s = parse_duration(headers.get("x-ratelimit-reset-tokens"))

    def _status_error(self, response: aiohttp.ClientResponse, body: Any, url: str, model: str) -> LLMClientError:
        return status_error(
            response.status,
            response.headers,
            body,
            url=url,
            model=model,
            base_url=self.settings.base_url,
            api_key_env=None if self.settings.api_key is not None else self.settings.api_key_env,
        )

    @contextlib.asynccontextmanager
    async def _translated(self, url: str) -> AsyncIterator[None]:
        """Transport failures as the client's own errors (the most specific one), cause kept."""
        try:
            yield
        except LLMClientError:
            raise
        except aiohttp.ConnectionTimeoutError as exc:
            raise APITimeoutError(
                f"could not connect to {url} within {self.settings.connect_timeout}s "
                "(check that the host is up and reachable; raise client.connect_timeout for slow networks)",
                url=url,
            ) from exc
        except TimeoutError as exc:
            raise APITimeoutError(
                f"{url} sent nothing for {self.settings.timeout}s (raise the client timeout for slow endpoints)",
                url=url,
            ) from exc
        except aiohttp.ClientError as exc:
            raise APIConnectionError(
                f"connection to {url} failed: {type(exc).__name__} {exc} "
                "(check that the endpoint is running and the base URL is right)",
                url=url,
            ) from exc

    async def _send(
        self, session: aiohttp.ClientSession, payload: bytes, model: str, stream: bool, max_tokens: int | None
    ) -> Completion:
        """One HTTP attempt of a chat completion; `max_tokens` (the request's limit) names what an empty answer hit."""
        async with (
            self._translated(self._url),
            session.post(self._url, data=payload, params=self.settings.default_query) as response,
        ):
            if _RATE_HEADERS & response.headers.keys():
                self._note_rate_headers(response.headers)
            if response.status >= 400:
                raise self._status_error(response, await read_body(response, self.settings), self._url, model)
            if stream:
                return await read_stream(response, model, self._url, max_tokens, self.settings)
            return parse_completion(await read_body(response, self.settings), model, self._url, max_tokens)


_RATE_HEADERS = frozenset(
    f"x-ratelimit-{what}-{unit}" for what in ("limit", "remaining", "reset") for unit in ("requests", "tokens")
)


def _float_or_none(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class OpenAIClient(LLMClient):
    """Synchronous client: the async client driven on a private event loop in a daemon thread.

    A thread (not `asyncio.run`) so it also works where a loop is already running, e.g. in Jupyter.
    Same arguments, same retry rules, same stats as `AsyncOpenAIClient`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._async = AsyncOpenAIClient(*args, **kwargs)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        return {"settings": self._async.settings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._async = AsyncOpenAIClient.from_settings(state["settings"])
        self._loop = None
        self._lock = threading.Lock()

    @property
    def settings(self) -> ClientSettings:
        return self._async.settings

    @property
    def stats(self) -> ClientStats:  # type: ignore[override]
        return self._async.stats

    @property
    def async_client(self) -> AsyncOpenAIClient:
        """The async client underneath, e.g. to hand to a pipeline."""
        return self._async

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="sdg-sync-client", daemon=True).start()
                self._loop = loop
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result()

    def complete(self, messages: Messages, model: str, generation_config: GenerationConfig | None = None) -> Completion:
        return self._run(self._async.complete(messages, model, generation_config))

    def close(self) -> None:
        """Close the connections and stop the private loop."""
        with self._lock:
            loop, self._loop = self._loop, None
        if loop is not None:
            asyncio.run_coroutine_threadsafe(self._async.aclose(), loop).result()
            loop.call_soon_threadsafe(loop.stop)

    def __enter__(self) -> OpenAIClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
