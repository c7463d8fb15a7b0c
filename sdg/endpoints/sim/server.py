"""The simulated endpoint: `Simulator` on the caller's event loop, `SimServer` on its own thread.

Routes: POST /v1/chat/completions (also streaming), GET /v1/models, GET /stats (counts of everything
served), GET /requests (recent bodies), POST /reset (zero the counts), POST /admin/limits (change the
token bucket while running). Checks run in order: auth, body, model, rate limit, random fault; then answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import random
import socket
import struct
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, replace
from itertools import zip_longest
from typing import Any

from aiohttp import web

from sdg.endpoints.sim.bucket import TokenBucket, retry_after_headers
from sdg.endpoints.sim.errors import ApiError, render_error
from sdg.endpoints.sim.faker import (
    break_json,
    choice_rng,
    fake_value,
    qa_text,
    reasoning_text,
    request_digest,
)
from sdg.endpoints.sim.options import FAULT_KINDS, SimOptions

__all__ = ["REFUSAL", "STAT_KEYS", "SimServer", "Simulator"]

STAT_KEYS = (
    "requests",
    "ok",
    "r400",
    "r401",
    "r404",
    "r429",
    "r429_rate_limit",
    "r429_quota",
    "r500",
    "r503",
    "resets",
    "hangs",
    "malformed",
    "html",  # 200 text/html pages (p_html)
    "refusals",  # 200 answers with content null and `refusal` set (p_refusal)
    "empty",  # 200 answers with content null, no reasoning (p_empty)
    "cancelled",
    "bad_json",
    "retry_hints",  # 429s that carried Retry-After and/or retry-after-ms
    "ratelimit_headed",  # requests whose answer carries x-ratelimit-* headers
    "limit_changes",  # POST /admin/limits or set_limits()
    "reasoning_tokens",  # thinking words sent (reasoning=True)
    "reasoning_cut",  # choices whose thinking used up max_tokens: content null, finish_reason length
    "inflight",
    "max_inflight",
    "prompt_tokens",
    "completion_tokens",
)
REQUEST_LOG_SIZE = 1000
MAX_N = 128
WORDS_PER_CHUNK = 4
TOKENS_PER_MESSAGE = 3
# OpenAI's refusal shape: message.content null and message.refusal set
# (https://platform.openai.com/docs/guides/structured-outputs#refusals).
REFUSAL = "I'm sorry, I can't help with that."
_ANSWER_STAT = {"ok": "ok", "refusal": "refusals", "empty": "empty"}
_HTML_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>\n"
    b"<h1>Authentication required</h1>\n<p>Please sign in to continue to the requested page.</p>\n"
    b'<form method="post" action="/login"><input name="user"><input name="password" type="password">'
    b"<button>Sign in</button></form>\n</body></html>\n"
)
_MALFORMED_BODY = (
    b'{"id": "chatcmpl-sim", "object": "chat.completion", "choices": [{"index": 0, "message": '
    b'{"role": "assistant", "content": "Question: why'
)
_QUOTA = "You exceeded your current quota, please check your plan and billing details."


class _BadRequest(Exception):
    """A 400 with the OpenAI ``param`` that caused it."""

    def __init__(self, message: str, param: str | None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(slots=True)
class _ChatRequest:
    model: str
    messages: list[dict[str, Any]]
    n: int
    max_tokens: int
    stop: tuple[str, ...]
    seed: int | None
    temperature: float | None
    top_p: float | None
    stream: bool
    include_usage: bool
    response_format: dict[str, Any] | None


@dataclass(slots=True)
class _Choice:
    content: str | None
    finish_reason: str
    tokens: int  # completion tokens, thinking included
    reasoning: str | None = None
    refusal: str | None = None


# --------------------------------------------------------------------------- request validation


def _int_field(body: dict[str, Any], key: str, default: int | None, lo: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool):
        raise _BadRequest(f"'{key}' must be an integer, got {value!r}.", key)
    if lo is not None and value < lo:
        raise _BadRequest(f"{value} is less than the minimum of {lo} - '{key}'", key)
    return value


def _num_field(body: dict[str, Any], key: str, hi: float) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= hi:
        raise _BadRequest(f"'{key}' must be a number between 0 and {hi:g}, got {value!r}.", key)
    return float(value)


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise _BadRequest("'messages' must be a non-empty array.", "messages")
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise _BadRequest(f"messages[{i}] must be an object with a string 'role'.", "messages")
        if not isinstance(msg.get("content"), str | list | None):
            raise _BadRequest(f"messages[{i}].content must be a string or an array.", "messages")


def _stop_field(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,) if stop else ()
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return tuple(s for s in stop if s)
    raise _BadRequest("'stop' must be a string or an array of strings.", "stop")


def _response_format(fmt: Any) -> dict[str, Any] | None:
    """Return None for plain text, else {"type": ..., "schema": ...}."""
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": kind}
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema", {}) if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            return {"type": kind, "schema": schema}
    raise _BadRequest("'response_format' must be text, json_object or json_schema with a schema.", "response_format")


def _parse_chat(body: Any) -> _ChatRequest:
    """Validate a chat request body the way the OpenAI API does (subset), raising _BadRequest."""
    if not isinstance(body, dict):
        raise _BadRequest("The request body must be a JSON object.", None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _BadRequest("You must provide a model parameter.", "model")
    messages = body.get("messages")
    _check_messages(messages)
    n = _int_field(body, "n", 1, lo=1)
    if n > MAX_N:
        raise _BadRequest(f"{n} is greater than the maximum of {MAX_N} - 'n'", "n")
    max_key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    stream = body.get("stream") or False
    if not isinstance(stream, bool):
        raise _BadRequest("'stream' must be a boolean.", "stream")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict):
        raise _BadRequest("'stream_options' must be an object.", "stream_options")
    return _ChatRequest(
        model=model,
        messages=messages,
        n=n,
        max_tokens=_int_field(body, max_key, 256, lo=1),
        stop=_stop_field(body.get("stop")),
        seed=_int_field(body, "seed", None),
        temperature=_num_field(body, "temperature", 2.0),
        top_p=_num_field(body, "top_p", 1.0),
        stream=stream,
        include_usage=bool(stream_options.get("include_usage")),
        response_format=_response_format(body.get("response_format")),
    )


def _bad_request(e: _BadRequest, body: Any) -> ApiError:
    loc = ["body", e.param] if e.param else ["body"]
    value = body.get(e.param) if e.param and isinstance(body, dict) else body
    item = {"type": "value_error", "loc": loc, "msg": str(e), "input": value}
    return ApiError(400, str(e), "invalid_request_error", e.param, validation=item)


def _unparsable(e: json.JSONDecodeError | UnicodeDecodeError) -> ApiError:
    pos, why = (e.pos, e.msg) if isinstance(e, json.JSONDecodeError) else (e.start, e.reason)
    item = {
        "type": "json_invalid",
        "loc": ["body", pos],
        "msg": "JSON decode error",
        "input": {},
        "ctx": {"error": why},
    }
    return ApiError(400, "Could not parse the JSON body.", "invalid_request_error", validation=item)


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    total = 0
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, list):
            content = " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        total += TOKENS_PER_MESSAGE + (len(content.split()) if content else 0)
    return total


def _cut(text: str, max_tokens: int, stops: tuple[str, ...]) -> _Choice:
    """Apply max_tokens (a space-separated word is a token), then the earliest stop string."""
    words = text.split(" ")
    finish = "stop"
    if len(words) > max_tokens:
        words = words[:max_tokens]
        text = " ".join(words)
        finish = "length"
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    if cuts:
        text = text[: min(cuts)]
        return _Choice(text, "stop", len(text.split()))
    return _Choice(text, finish, len(words))


def _drop_connection(request: web.Request) -> web.Response:
    """Close the socket with a TCP RST and no HTTP response; the dummy return is never sent."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response()


# --------------------------------------------------------------------------- the server


class Simulator:
    """The endpoint on the caller's event loop: ``await start()`` → base URL, ``await stop()``."""

    def __init__(self, options: SimOptions | None = None, **overrides: Any) -> None:
        self.options = replace(options or SimOptions(), **overrides)
        opt = self.options
        self.base_url = ""
        self._stats = dict.fromkeys(STAT_KEYS, 0)
        self._log: deque[Any] = deque(maxlen=REQUEST_LOG_SIZE)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._fault_rng = random.Random(opt.seed)
        self._aux_rng = random.Random(f"aux-{opt.seed}")  # jitter and bad JSON; keeps fault draws stable
        self._bucket = TokenBucket(opt.rate_limit_rps, opt.burst) if opt.rate_limit_rps > 0 else None
        self._auth = f"Bearer {opt.api_key}".encode() if opt.api_key is not None else None
        self._models = frozenset(opt.models)
        cum = 0.0
        self._fault_table: list[tuple[float, str]] = []
        for kind in FAULT_KINDS:
            cum += getattr(opt, kind)
            self._fault_table.append((cum, kind))
        self._fault_total = cum
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def stats(self) -> dict[str, int]:
        """Copy of the counters, as served by GET /stats."""
        return dict(self._stats)

    def set_limits(self, rate_limit_rps: float | None = None, burst: int | None = None) -> dict[str, float]:
        """Replace the token bucket (full again) with a new rate and/or burst; rate 0 removes the limit.

        Unknown or bad values raise ValueError and change nothing. Call on the server's loop (or before start).
        """
        changes: dict[str, Any] = {}
        if rate_limit_rps is not None:
            changes["rate_limit_rps"] = rate_limit_rps
        if burst is not None:
            changes["burst"] = burst
        options = replace(self.options, **changes)  # validates
        self.options = options
        self._bucket = TokenBucket(options.rate_limit_rps, options.burst) if options.rate_limit_rps > 0 else None
        self._stats["limit_changes"] += 1
        return {"rate_limit_rps": options.rate_limit_rps, "burst": options.burst}

    async def start(self) -> str:
        """Listen on host:port and return the base URL ("http://host:port/v1")."""
        if self._runner is not None:
            return self.base_url
        app = web.Application(client_max_size=64 * 1024**2)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._list_models)
        app.router.add_get("/stats", self._get_stats)
        app.router.add_post("/reset", self._reset)
        app.router.add_get("/requests", self._get_requests)
        app.router.add_post("/admin/limits", self._post_limits)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        app.on_shutdown.append(self._cancel_inflight)
        # handler_cancellation: a client that goes away ends its hang or latency sleep at once.
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=5.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.options.host, self.options.port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        host, port = runner.addresses[0][:2]
        self.base_url = f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"
        return self.base_url

    async def stop(self) -> None:
        """Stop listening and cancel in-flight (e.g. hung) requests; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _cancel_inflight(self, app: web.Application) -> None:
        for task in list(self._tasks):
            task.cancel()

    # ----------------------------------------------------------------------- errors

    def _error(self, error: ApiError, stat: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
        """An error answer in the configured body shape; `stat` is the counter it bumps."""
        if stat is not None:
            self._stats[stat] += 1
        if error.status == 429 and headers and ("Retry-After" in headers or "retry-after-ms" in headers):
            self._stats["retry_hints"] += 1
        body, content_type = render_error(error, self.options.error_style)
        charset = "utf-8" if content_type == "text/plain" else None
        return web.Response(body=body, status=error.status, content_type=content_type, charset=charset, headers=headers)

    def _invalid_key(self, stat: str | None = None) -> web.Response:
        error = ApiError(401, "Incorrect API key provided.", "invalid_request_error", code="invalid_api_key")
        return self._error(error, stat)

    # ----------------------------------------------------------------------- admin routes

    async def _get_stats(self, request: web.Request) -> web.Response:
        return web.json_response(self._stats)

    async def _reset(self, request: web.Request) -> web.Response:
        """Zero the counters and the request log; inflight stays a live gauge."""
        for key in STAT_KEYS:
            if key != "inflight":
                self._stats[key] = 0
        self._stats["max_inflight"] = self._stats["inflight"]
        self._log.clear()
        return web.json_response(self._stats)

    async def _get_requests(self, request: web.Request) -> web.Response:
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            return self._error(ApiError(400, "limit must be an integer", "invalid_request_error", "limit"))
        items = list(self._log)[-limit:] if limit > 0 else []
        return web.json_response(items)

    async def _post_limits(self, request: web.Request) -> web.Response:
        """JSON {"rate_limit_rps": R, "burst": B} (either may be left out) → the new limits."""
        try:
            body = json.loads(await request.read())
            if not isinstance(body, dict) or not body or set(body) - {"rate_limit_rps", "burst"}:
                raise ValueError('send a JSON object with "rate_limit_rps" and/or "burst"')
            rps, burst = body.get("rate_limit_rps"), body.get("burst")
            if rps is not None and (isinstance(rps, bool) or not isinstance(rps, int | float)):
                raise ValueError(f"rate_limit_rps must be a number, got {rps!r}")
            if burst is not None and (isinstance(burst, bool) or not isinstance(burst, int)):
                raise ValueError(f"burst must be an integer, got {burst!r}")
            limits = self.set_limits(rate_limit_rps=rps, burst=burst)
        except ValueError as e:  # JSONDecodeError is one
            return self._error(ApiError(400, str(e), "invalid_request_error"))
        return web.json_response(limits)

    async def _list_models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._invalid_key()
        names = self.options.models or ["sim-model"]
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "sdg-sim"} for m in names]
        return web.json_response({"object": "list", "data": data})

    async def _not_found(self, request: web.Request) -> web.Response:
        return self._error(ApiError(404, f"Invalid URL ({request.method} {request.path})", "invalid_request_error"))

    # ----------------------------------------------------------------------- chat completions

    def _authorized(self, request: web.Request) -> bool:
        if self._auth is None:
            return True
        return hmac.compare_digest(request.headers.get("Authorization", "").encode(), self._auth)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        """Track concurrency and make the request cancellable on stop, then serve it."""
        stats = self._stats
        stats["requests"] += 1
        stats["inflight"] += 1
        stats["max_inflight"] = max(stats["max_inflight"], stats["inflight"])
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            return await self._serve_chat(request)
        finally:
            stats["inflight"] -= 1
            self._tasks.discard(task)

    async def _serve_chat(self, request: web.Request) -> web.StreamResponse:
        """Checks in order: auth, body, model, rate limit, random fault; then answer."""
        if not self._authorized(request):
            return self._invalid_key("r401")
        try:
            body = json.loads(await request.read())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            return self._error(_unparsable(e), "r400")
        self._log.append(body)
        try:
            req = _parse_chat(body)
        except _BadRequest as e:
            return self._error(_bad_request(e, body), "r400")
        if self._models and req.model not in self._models:
            message = f"The model `{req.model}` does not exist or you do not have access to it."
            return self._error(ApiError(404, message, "invalid_request_error", "model", "model_not_found"), "r404")
        headers, refused = self._rate_limit()
        if refused is not None:
            return refused
        if self._fault_total > 0:
            fault = self._draw_fault()
            if fault is not None:
                return await self._fault(fault, request, req, headers)
        try:
            return await self._answer(request, req, headers)
        except asyncio.CancelledError:  # client left (or stop()) during latency: count it so tallies add up
            self._stats["cancelled"] += 1
            raise

    def _rate_limit(self) -> tuple[dict[str, str] | None, web.Response | None]:
        """(x-ratelimit-* headers or None without a limit, the 429 answer when over the limit)."""
        bucket = self._bucket
        if bucket is None:
            return None, None
        opt = self.options
        allowed = bucket.take()
        headers = bucket.headers() if opt.ratelimit_headers else {}
        if headers:
            self._stats["ratelimit_headed"] += 1
        if allowed:
            return headers, None
        self._stats["r429_rate_limit"] += 1
        headers.update(retry_after_headers(bucket.wait_s(), opt.retry_after_style))
        message = f"Rate limit reached for requests: limit {bucket.limit} per min."
        error = ApiError(429, message, "requests", code="rate_limit_exceeded")
        return headers, self._error(error, "r429", headers)

    def _draw_fault(self) -> str | None:
        u = self._fault_rng.random()
        for cum, kind in self._fault_table:
            if u < cum:
                return kind
        return None

    async def _fault(
        self, kind: str, request: web.Request, req: _ChatRequest, headers: dict[str, str] | None
    ) -> web.StreamResponse:
        stats = self._stats
        if kind == "p429":
            ms = self.options.fault_retry_after_ms
            hint = retry_after_headers(ms / 1000, self.options.retry_after_style) if ms is not None else None
            message = "Rate limit reached for requests (simulated)."
            return self._error(ApiError(429, message, "requests", code="rate_limit_exceeded"), "r429", hint)
        if kind == "p_quota":
            stats["r429_quota"] += 1
            return self._error(ApiError(429, _QUOTA, "insufficient_quota", code="insufficient_quota"), "r429")
        if kind == "p500":
            message = "The server had an error while processing your request."
            return self._error(ApiError(500, message, "server_error"), "r500")
        if kind == "p503":
            message = "The engine is currently overloaded, please try again later."
            return self._error(ApiError(503, message, "server_error"), "r503")
        if kind == "p_reset":
            stats["resets"] += 1
            return _drop_connection(request)
        if kind == "p_hang":
            stats["hangs"] += 1
            await asyncio.sleep(self.options.hang_s)  # cancelled early by client disconnect or stop()
            return _drop_connection(request)
        if kind == "p_malformed":
            stats["malformed"] += 1
            return web.Response(body=_MALFORMED_BODY, content_type="application/json")
        if kind == "p_html":  # a login wall or captive proxy in front of the endpoint: 200, but no JSON
            stats["html"] += 1
            return web.Response(body=_HTML_PAGE, content_type="text/html", charset="utf-8")
        try:  # p_refusal, p_empty: well-formed answers without content
            return await self._answer(request, req, headers, kind=kind.removeprefix("p_"))
        except asyncio.CancelledError:
            stats["cancelled"] += 1
            raise

    def _choice(self, req: _ChatRequest, digest: Any, index: int, kind: str) -> _Choice:
        if kind == "refusal":
            return _Choice(None, "stop", len(REFUSAL.split()), refusal=REFUSAL)
        if kind == "empty":
            return _Choice(None, "stop", 0)
        rng = choice_rng(digest, index)
        fmt = req.response_format
        if fmt is None:
            text = qa_text(rng)
        elif fmt["type"] == "json_object":
            text = json.dumps({"question": qa_text(rng), "confidence": round(rng.random(), 3)})
        else:
            schema = fmt["schema"]
            value = fake_value(schema, rng, schema)
            if self.options.p_bad_json and self._aux_rng.random() < self.options.p_bad_json:
                self._stats["bad_json"] += 1
                text = break_json(value, schema, rng)
            else:
                text = json.dumps(value)
        opt = self.options
        if not opt.reasoning:
            return _cut(text, req.max_tokens, req.stop)
        # Reasoning model (vLLM with --reasoning-parser, llama.cpp): the thinking comes first and counts
        # against max_tokens; if it uses them all, content is null and finish_reason "length". vLLM docs:
        # "Reasoning models return an additional reasoning_content field in their outputs"
        # (https://docs.vllm.ai/en/v0.10.0/features/reasoning_outputs.html); "reasoning used to be called
        # reasoning_content" (https://docs.vllm.ai/en/v0.11.2/features/reasoning_outputs/).
        thought = min(opt.reasoning_words, req.max_tokens)
        thinking = reasoning_text(choice_rng(digest, index, b"think"), thought)
        if opt.reasoning_words >= req.max_tokens:
            return _Choice(None, "length", thought, reasoning=thinking)
        choice = _cut(text, req.max_tokens - thought, req.stop)
        choice.reasoning = thinking
        choice.tokens += thought
        return choice

    def _delay(self) -> float:
        opt = self.options
        jitter = self._aux_rng.uniform(0, opt.jitter_ms) if opt.jitter_ms else 0.0
        return (opt.latency_ms + jitter) / 1000

    def _message(self, c: _Choice) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": c.content}
        if c.reasoning is not None:
            message[self.options.reasoning_field] = c.reasoning
        if c.refusal is not None:
            message["refusal"] = c.refusal
        return message

    async def _answer(
        self, request: web.Request, req: _ChatRequest, headers: dict[str, str] | None, kind: str = "ok"
    ) -> web.StreamResponse:
        digest = request_digest(req.model, req.messages, req.seed, req.temperature, req.top_p)
        choices = [self._choice(req, digest, i, kind) for i in range(req.n)]
        prompt_tokens = _prompt_tokens(req.messages)
        completion_tokens = sum(c.tokens for c in choices)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        meta = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": req.model}
        delay = self._delay()
        if req.stream:
            return await self._stream(request, req, meta, choices, usage, headers, delay, kind)
        if self.options.tokens_per_s:
            delay += completion_tokens / self.options.tokens_per_s
        if delay:
            await asyncio.sleep(delay)
        body = {
            "id": meta["id"],
            "object": "chat.completion",
            "created": meta["created"],
            "model": req.model,
            "choices": [
                {"index": i, "message": self._message(c), "finish_reason": c.finish_reason}
                for i, c in enumerate(choices)
            ],
            "usage": usage,
        }
        self._count_answer(kind, usage, choices)
        return web.Response(body=json.dumps(body).encode(), content_type="application/json", headers=headers)

    def _count_answer(self, kind: str, usage: dict[str, int], choices: list[_Choice]) -> None:
        stats = self._stats
        stats[_ANSWER_STAT[kind]] += 1
        stats["prompt_tokens"] += usage["prompt_tokens"]
        stats["completion_tokens"] += usage["completion_tokens"]
        for c in choices:
            if c.reasoning is not None:
                stats["reasoning_tokens"] += len(c.reasoning.split())
                stats["reasoning_cut"] += c.content is None

    async def _stream(
        self,
        request: web.Request,
        req: _ChatRequest,
        meta: dict[str, Any],
        choices: list[_Choice],
        usage: dict[str, int],
        headers: dict[str, str] | None,
        delay: float,
        kind: str,
    ) -> web.StreamResponse:
        """SSE answer: latency before the first chunk, then chunks spaced by tokens_per_s."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        if headers:
            resp.headers.update(headers)
        if delay:
            await asyncio.sleep(delay)
        usage_or_none = usage if req.include_usage else None
        events = _sse_events(meta, choices, usage_or_none, self.options.reasoning_field)
        tps = self.options.tokens_per_s
        try:
            await resp.prepare(request)
            if tps:
                for words, data in events:
                    if words:
                        await asyncio.sleep(words / tps)
                    await resp.write(data)
            else:
                await resp.write(b"".join(data for _, data in events))
            await resp.write_eof()
        except ConnectionError:  # client went away mid-stream: not an answer, not a server error
            self._stats["cancelled"] += 1
            return resp
        self._count_answer(kind, usage, choices)
        return resp


def _sse_events(
    meta: dict[str, Any], choices: list[_Choice], usage: dict[str, int] | None, reasoning_field: str
) -> list[tuple[int, bytes]]:
    """(words in chunk, SSE bytes) for a whole stream; choices' deltas are interleaved like OpenAI's.

    Each choice sends its thinking as `delta.<reasoning_field>` chunks first (vLLM's reasoning parser:
    https://docs.vllm.ai/en/v0.10.0/features/reasoning_outputs.html, "reasoning_content"; renamed
    "reasoning" in https://docs.vllm.ai/en/v0.11.2/features/reasoning_outputs/), then `delta.content`
    (or `delta.refusal`) chunks, then its finish_reason.
    """
    base = {"id": meta["id"], "object": "chat.completion.chunk", "created": meta["created"], "model": meta["model"]}
    if usage is not None:
        base["usage"] = None

    def event(index: int, delta: dict[str, str], finish: str | None) -> bytes:
        choice = {"index": index, "delta": delta, "finish_reason": finish}
        return b"data: " + json.dumps({**base, "choices": [choice]}).encode() + b"\n\n"

    events = [(0, event(i, {"role": "assistant", "content": ""}, None)) for i in range(len(choices))]
    deltas = [
        [
            *((w, {reasoning_field: p}) for w, p in _pieces(c.reasoning)),
            *((w, {"content": p}) for w, p in _pieces(c.content)),
            *((w, {"refusal": p}) for w, p in _pieces(c.refusal)),
        ]
        for c in choices
    ]
    for round_ in zip_longest(*deltas):
        events.extend((d[0], event(i, d[1], None)) for i, d in enumerate(round_) if d)
    events.extend((0, event(i, {}, c.finish_reason)) for i, c in enumerate(choices))
    if usage is not None:
        events.append((0, b"data: " + json.dumps({**base, "choices": [], "usage": usage}).encode() + b"\n\n"))
    events.append((0, b"data: [DONE]\n\n"))
    return events


def _pieces(content: str | None) -> list[tuple[int, str]]:
    """Split content into deltas of a few words that concatenate back to it exactly."""
    if not content:
        return []
    words = content.split(" ")
    out = []
    for start in range(0, len(words), WORDS_PER_CHUNK):
        group = words[start : start + WORDS_PER_CHUNK]
        out.append((len(group), (" " if start else "") + " ".join(group)))
    return out


class SimServer:
    """The endpoint on its own event loop in a daemon thread, for sync code and tests."""

    def __init__(self, options: SimOptions | None = None, **overrides: Any) -> None:
        self._sim = Simulator(options, **overrides)
        self.base_url = ""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._error: BaseException | None = None

    @property
    def options(self) -> SimOptions:
        """The current options (`set_limits` changes rate_limit_rps and burst)."""
        return self._sim.options

    def __enter__(self) -> SimServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, int]:
        """Same counters as GET /stats."""
        return self._sim.stats()

    def set_limits(self, rate_limit_rps: float | None = None, burst: int | None = None) -> dict[str, float]:
        """Replace the token bucket while serving (same as POST /admin/limits); see `Simulator.set_limits`."""
        loop = self._loop
        if self._thread is None or loop is None:
            return self._sim.set_limits(rate_limit_rps, burst)

        async def on_loop() -> dict[str, float]:
            return self._sim.set_limits(rate_limit_rps, burst)

        return asyncio.run_coroutine_threadsafe(on_loop(), loop).result()

    def start(self) -> str:
        """Start serving in a daemon thread; block until listening and return the base URL."""
        if self._thread is not None:
            return self.base_url
        ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(ready),), name="sdg-sim", daemon=True)
        self._thread.start()
        ready.wait()
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise self._error
        self.base_url = self._sim.base_url
        return self.base_url

    def stop(self) -> None:
        """Stop the server (cancelling hung requests) and join the thread; idempotent."""
        thread, self._thread = self._thread, None
        if thread is None or self._loop is None or self._stop_event is None:
            return
        self._loop.call_soon_threadsafe(self._stop_event.set)
        thread.join()

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        try:
            await self._sim.start()
        except BaseException as e:
            self._error = e
            return
        finally:
            ready.set()
        try:
            await self._stop_event.wait()
        finally:
            await self._sim.stop()
