"""Simulated OpenAI-compatible chat endpoint for dry runs, load tests and fault tests.

Run it as ``python -m sdg.endpoints.sim`` (the first stdout line is the base URL) or in-process with
:class:`SimServer` (own thread and event loop) or :class:`Simulator` (on the caller's loop).
The text is deterministic in the request, faults are drawn from a seeded RNG in arrival order, and
``GET /stats`` counts everything served so tests can compare it with what a client observed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import math
import os
import random
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, fields, replace
from itertools import zip_longest
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

FAULT_KINDS = ("p429", "p_quota", "p500", "p503", "p_reset", "p_hang", "p_malformed")
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
    "cancelled",
    "bad_json",
    "inflight",
    "max_inflight",
    "prompt_tokens",
    "completion_tokens",
)
REQUEST_LOG_SIZE = 1000
MAX_N = 128
WORDS_PER_CHUNK = 4
TOKENS_PER_MESSAGE = 3

_VOCAB = (
    "the", "a", "model", "data", "answer", "question", "system", "value", "time", "number", "river",
    "city", "light", "energy", "market", "process", "theory", "result", "method", "signal", "network",
    "language", "history", "science", "planet", "water", "forest", "music", "engine", "policy", "graph",
    "memory", "pattern", "source", "is", "are", "was", "can", "will", "should", "why", "how", "what",
    "which", "when", "does", "of", "in", "on", "for", "with", "by", "from", "and", "or", "because",
    "often", "usually", "rarely", "quickly", "simple", "complex", "large", "small", "early", "modern",
)  # fmt: skip

_ERROR_500 = {"message": "The server had an error while processing your request.", "type": "server_error"}
_ERROR_503 = {"message": "The engine is currently overloaded, please try again later.", "type": "server_error"}
_ERROR_QUOTA = {
    "message": "You exceeded your current quota, please check your plan and billing details.",
    "type": "insufficient_quota",
    "code": "insufficient_quota",
}
_ERROR_RATE = {"type": "requests", "code": "rate_limit_exceeded"}
_MALFORMED_BODY = (
    b'{"id": "chatcmpl-sim", "object": "chat.completion", "choices": [{"index": 0, "message": '
    b'{"role": "assistant", "content": "Question: why'
)


@dataclass
class SimOptions:
    """Behaviour of the simulated endpoint; validated on construction so bad values fail early."""

    host: str = "127.0.0.1"
    port: int = 0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    tokens_per_s: float = 0.0
    rate_limit_rps: float = 0.0
    burst: int = 0
    p429: float = 0.0
    p500: float = 0.0
    p503: float = 0.0
    p_reset: float = 0.0
    p_hang: float = 0.0
    p_malformed: float = 0.0
    p_bad_json: float = 0.0
    p_quota: float = 0.0
    fault_retry_after_ms: float | None = None
    hang_s: float = 600.0
    api_key: str | None = field(default=None, repr=False)  # never logged
    models: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        self.models = tuple(self.models)
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad option."""
        for name in (*FAULT_KINDS, "p_bad_json"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        total = sum(getattr(self, name) for name in FAULT_KINDS)
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault probabilities {', '.join(FAULT_KINDS)} sum to {total:g} > 1")
        for name in ("latency_ms", "jitter_ms", "tokens_per_s", "rate_limit_rps", "burst", "hang_s"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.fault_retry_after_ms is not None and not self.fault_retry_after_ms >= 0:
            raise ValueError(f"fault_retry_after_ms must be >= 0, got {self.fault_retry_after_ms}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")


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
    content: str
    finish_reason: str
    tokens: int


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


def _prompt_tokens(messages: list[dict[str, Any]]) -> int:
    total = 0
    for msg in messages:
        content = msg.get("content")
        if isinstance(content, list):
            content = " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
        total += TOKENS_PER_MESSAGE + (len(content.split()) if content else 0)
    return total


# --------------------------------------------------------------------------- text and JSON generation


def _request_digest(req: _ChatRequest) -> hashlib.blake2b:
    """Hash of everything the text depends on except the choice index (copied per choice)."""
    key = [req.model, req.messages, req.seed, req.temperature, req.top_p]
    return hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=16)


def _choice_rng(digest: hashlib.blake2b, index: int) -> random.Random:
    h = digest.copy()
    h.update(index.to_bytes(4, "little"))
    return random.Random(int.from_bytes(h.digest(), "little"))


def _words(rng: random.Random, k: int) -> str:
    return " ".join(rng.choices(_VOCAB, k=k))


def _qa_text(rng: random.Random) -> str:
    """A Q&A-shaped text of 12–60 words ("Question:" and "Answer:" count as words)."""
    length = rng.randint(12, 60)
    q_len = rng.randint(3, length // 2 - 1)
    question = _words(rng, q_len).capitalize()
    answer = _words(rng, length - 2 - q_len).capitalize()
    return f"Question: {question}? Answer: {answer}."


def _resolve_ref(root: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = root
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def _fake_value(schema: dict[str, Any], rng: random.Random, root: dict[str, Any], depth: int = 0) -> Any:
    """A value valid for the common JSON-schema subset (types, properties, enum, const, $ref, anyOf)."""
    if "$ref" in schema:
        schema = _resolve_ref(root, schema["$ref"])
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return rng.choice(schema["enum"])
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        non_null = [o for o in options if o.get("type") != "null"]
        return _fake_value((non_null or options)[0], rng, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    return _FAKERS[kind](schema, rng, root, depth)


def _fake_object(schema: dict[str, Any], rng: random.Random, root: dict[str, Any], depth: int) -> dict[str, Any]:
    props = schema.get("properties", {})
    return {name: _fake_value(sub, rng, root, depth + 1) for name, sub in props.items()}


def _fake_array(schema: dict[str, Any], rng: random.Random, root: dict[str, Any], depth: int) -> list[Any]:
    lo = schema.get("minItems", 1)
    hi = max(lo, min(schema.get("maxItems", lo + 2), lo + 3))
    count = rng.randint(lo, hi) if depth < 4 else lo  # depth cap keeps recursive schemas finite
    items = schema.get("items", {"type": "string"})
    return [_fake_value(items, rng, root, depth + 1) for _ in range(count)]


def _fake_string(schema: dict[str, Any], rng: random.Random, root: dict[str, Any], depth: int) -> str:
    text = _words(rng, rng.randint(2, 8)).ljust(schema.get("minLength", 0), "x")
    max_length = schema.get("maxLength")
    return text if max_length is None else text[:max_length]


def _bounds(schema: dict[str, Any], step: float) -> tuple[float, float]:
    """Inclusive numeric range from (exclusive) minimum/maximum, defaulting to a 100-wide span."""
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is None and "exclusiveMinimum" in schema:
        lo = schema["exclusiveMinimum"] + step
    if hi is None and "exclusiveMaximum" in schema:
        hi = schema["exclusiveMaximum"] - step
    if lo is None:
        lo = 0 if hi is None or hi >= 0 else hi - 100
    if hi is None:
        hi = lo + 100
    return lo, max(lo, hi)


def _fake_integer(schema: dict[str, Any], rng: random.Random, root: dict[str, Any], depth: int) -> int:
    lo, hi = _bounds(schema, 1)
    return rng.randint(math.ceil(lo), max(math.ceil(lo), math.floor(hi)))


def _fake_number(schema: dict[str, Any], rng: random.Random, root: dict[str, Any], depth: int) -> float:
    lo, hi = _bounds(schema, 1e-6)
    return min(hi, max(lo, round(rng.uniform(lo, hi), 3)))


_FAKERS = {
    "object": _fake_object,
    "array": _fake_array,
    "string": _fake_string,
    "integer": _fake_integer,
    "number": _fake_number,
    "boolean": lambda schema, rng, root, depth: rng.random() < 0.5,
    "null": lambda schema, rng, root, depth: None,
}


def _break_json(value: Any, schema: dict[str, Any], rng: random.Random) -> str:
    """Invalid output: drop a required top-level field if there is one, else truncate the JSON."""
    required = [k for k in schema.get("required", ()) if isinstance(value, dict) and k in value]
    if required and rng.random() < 0.5:
        del value[rng.choice(required)]
        return json.dumps(value)
    text = json.dumps(value)
    return text[: max(1, len(text) // 2)]


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


# --------------------------------------------------------------------------- rate limiting


def _duration(seconds: float) -> str:
    """OpenAI-style reset duration: "120ms" below one second, else "1.5s"."""
    if seconds < 1:
        return f"{math.ceil(seconds * 1000)}ms"
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def _retry_headers(seconds: float) -> dict[str, str]:
    return {"retry-after-ms": str(math.ceil(seconds * 1000)), "Retry-After": str(max(1, math.ceil(seconds)))}


class _TokenBucket:
    """Requests-per-second limiter; answers carry OpenAI's x-ratelimit-* headers."""

    def __init__(self, rps: float, burst: int) -> None:
        self.rps = rps
        self.capacity = burst or max(1, math.ceil(rps))
        self.tokens = float(self.capacity)
        self.stamp = time.monotonic()
        self.limit = str(max(1, round(rps * 60)))

    def take(self) -> tuple[bool, dict[str, str]]:
        """Consume a token if one is available; return (allowed, headers)."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rps)
        self.stamp = now
        allowed = self.tokens >= 1
        if allowed:
            self.tokens -= 1
        headers = {
            "x-ratelimit-limit-requests": self.limit,
            "x-ratelimit-remaining-requests": str(int(self.tokens)),
            "x-ratelimit-reset-requests": _duration((self.capacity - self.tokens) / self.rps),
        }
        if not allowed:
            headers.update(_retry_headers((1 - self.tokens) / self.rps))
        return allowed, headers


# --------------------------------------------------------------------------- the server


def _error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


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
        self._bucket = _TokenBucket(opt.rate_limit_rps, opt.burst) if opt.rate_limit_rps > 0 else None
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
            return web.json_response(_error_body("limit must be an integer", "invalid_request_error"), status=400)
        items = list(self._log)[-limit:] if limit > 0 else []
        return web.json_response(items)

    async def _list_models(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return self._invalid_key()
        names = self.options.models or ("sim-model",)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "sdg-sim"} for m in names]
        return web.json_response({"object": "list", "data": data})

    async def _not_found(self, request: web.Request) -> web.Response:
        body = _error_body(f"Invalid URL ({request.method} {request.path})", "invalid_request_error")
        return web.json_response(body, status=404)

    # ----------------------------------------------------------------------- chat completions

    def _authorized(self, request: web.Request) -> bool:
        if self._auth is None:
            return True
        return hmac.compare_digest(request.headers.get("Authorization", "").encode(), self._auth)

    def _invalid_key(self) -> web.Response:
        body = _error_body("Incorrect API key provided.", "invalid_request_error", code="invalid_api_key")
        return web.json_response(body, status=401)

    def _fail(
        self, status: int, stat: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> web.Response:
        self._stats[stat] += 1
        return web.json_response(body, status=status, headers=headers)

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
            self._stats["r401"] += 1
            return self._invalid_key()
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self._fail(400, "r400", _error_body("Could not parse the JSON body.", "invalid_request_error"))
        self._log.append(body)
        try:
            req = _parse_chat(body)
        except _BadRequest as e:
            return self._fail(400, "r400", _error_body(str(e), "invalid_request_error", e.param))
        if self._models and req.model not in self._models:
            message = f"The model `{req.model}` does not exist or you do not have access to it."
            return self._fail(404, "r404", _error_body(message, "invalid_request_error", "model", "model_not_found"))
        headers = None
        if self._bucket is not None:
            allowed, headers = self._bucket.take()
            if not allowed:
                self._stats["r429_rate_limit"] += 1
                message = f"Rate limit reached for requests: limit {self._bucket.limit} per min."
                return self._fail(429, "r429", {"error": {"message": message, "param": None, **_ERROR_RATE}}, headers)
        if self._fault_total > 0:
            fault = self._draw_fault()
            if fault is not None:
                return await self._fault(fault, request)
        try:
            return await self._answer(request, req, headers)
        except asyncio.CancelledError:  # client left (or stop()) during latency: count it so tallies add up
            self._stats["cancelled"] += 1
            raise

    def _draw_fault(self) -> str | None:
        u = self._fault_rng.random()
        for cum, kind in self._fault_table:
            if u < cum:
                return kind
        return None

    async def _fault(self, kind: str, request: web.Request) -> web.StreamResponse:
        stats = self._stats
        if kind == "p429":
            seconds = self.options.fault_retry_after_ms
            headers = _retry_headers(seconds / 1000) if seconds is not None else None
            message = "Rate limit reached for requests (simulated)."
            return self._fail(429, "r429", {"error": {"message": message, "param": None, **_ERROR_RATE}}, headers)
        if kind == "p_quota":
            stats["r429_quota"] += 1
            return self._fail(429, "r429", {"error": {"param": None, **_ERROR_QUOTA}})
        if kind == "p500":
            return self._fail(500, "r500", {"error": {"param": None, "code": None, **_ERROR_500}})
        if kind == "p503":
            return self._fail(503, "r503", {"error": {"param": None, "code": None, **_ERROR_503}})
        if kind == "p_reset":
            stats["resets"] += 1
            return _drop_connection(request)
        if kind == "p_hang":
            stats["hangs"] += 1
            await asyncio.sleep(self.options.hang_s)  # cancelled early by client disconnect or stop()
            return _drop_connection(request)
        stats["malformed"] += 1
        return web.Response(body=_MALFORMED_BODY, content_type="application/json")

    def _choice(self, req: _ChatRequest, digest: hashlib.blake2b, index: int) -> _Choice:
        rng = _choice_rng(digest, index)
        fmt = req.response_format
        if fmt is None:
            text = _qa_text(rng)
        elif fmt["type"] == "json_object":
            text = json.dumps({"question": _qa_text(rng), "confidence": round(rng.random(), 3)})
        else:
            schema = fmt["schema"]
            value = _fake_value(schema, rng, schema)
            if self.options.p_bad_json and self._aux_rng.random() < self.options.p_bad_json:
                self._stats["bad_json"] += 1
                text = _break_json(value, schema, rng)
            else:
                text = json.dumps(value)
        return _cut(text, req.max_tokens, req.stop)

    def _delay(self) -> float:
        opt = self.options
        jitter = self._aux_rng.uniform(0, opt.jitter_ms) if opt.jitter_ms else 0.0
        return (opt.latency_ms + jitter) / 1000

    async def _answer(
        self, request: web.Request, req: _ChatRequest, headers: dict[str, str] | None
    ) -> web.StreamResponse:
        digest = _request_digest(req)
        choices = [self._choice(req, digest, i) for i in range(req.n)]
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
            return await self._stream(request, req, meta, choices, usage, headers, delay)
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
                {
                    "index": i,
                    "message": {"role": "assistant", "content": c.content},
                    "finish_reason": c.finish_reason,
                }
                for i, c in enumerate(choices)
            ],
            "usage": usage,
        }
        self._count_ok(usage)
        return web.Response(body=json.dumps(body).encode(), content_type="application/json", headers=headers)

    def _count_ok(self, usage: dict[str, int]) -> None:
        stats = self._stats
        stats["ok"] += 1
        stats["prompt_tokens"] += usage["prompt_tokens"]
        stats["completion_tokens"] += usage["completion_tokens"]

    async def _stream(
        self,
        request: web.Request,
        req: _ChatRequest,
        meta: dict[str, Any],
        choices: list[_Choice],
        usage: dict[str, int],
        headers: dict[str, str] | None,
        delay: float,
    ) -> web.StreamResponse:
        """SSE answer: latency before the first chunk, then chunks spaced by tokens_per_s."""
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        if headers:
            resp.headers.update(headers)
        if delay:
            await asyncio.sleep(delay)
        events = _sse_events(meta, choices, usage if req.include_usage else None)
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
        self._count_ok(usage)
        return resp


def _sse_events(meta: dict[str, Any], choices: list[_Choice], usage: dict[str, int] | None) -> list[tuple[int, bytes]]:
    """(words in chunk, SSE bytes) for a whole stream; choices' deltas are interleaved like OpenAI's."""
    base = {"id": meta["id"], "object": "chat.completion.chunk", "created": meta["created"], "model": meta["model"]}
    if usage is not None:
        base["usage"] = None

    def event(index: int, delta: dict[str, str], finish: str | None) -> bytes:
        choice = {"index": index, "delta": delta, "finish_reason": finish}
        return b"data: " + json.dumps({**base, "choices": [choice]}).encode() + b"\n\n"

    events = [(0, event(i, {"role": "assistant", "content": ""}, None)) for i in range(len(choices))]
    pieces = [_pieces(c.content) for c in choices]
    for round_ in zip_longest(*pieces):
        events.extend((p[0], event(i, {"content": p[1]}, None)) for i, p in enumerate(round_) if p)
    events.extend((0, event(i, {}, c.finish_reason)) for i, c in enumerate(choices))
    if usage is not None:
        events.append((0, b"data: " + json.dumps({**base, "choices": [], "usage": usage}).encode() + b"\n\n"))
    events.append((0, b"data: [DONE]\n\n"))
    return events


def _pieces(content: str) -> list[tuple[int, str]]:
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
        self.options = self._sim.options
        self.base_url = ""
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> SimServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, int]:
        """Same counters as GET /stats."""
        return self._sim.stats()

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


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    d = SimOptions()
    p = argparse.ArgumentParser(
        prog="python -m sdg.endpoints.sim",
        description="Simulated OpenAI-compatible chat endpoint. Prints the base URL as the first stdout line.",
    )
    p.add_argument("--host", default=d.host)
    p.add_argument("--port", type=int, default=d.port, help="0 picks a free port")
    p.add_argument("--latency-ms", type=float, default=d.latency_ms)
    p.add_argument("--jitter-ms", type=float, default=d.jitter_ms, help="uniform extra latency 0..jitter")
    p.add_argument("--tokens-per-s", type=float, default=d.tokens_per_s, help="0 = instant generation")
    p.add_argument("--rate-limit-rps", type=float, default=d.rate_limit_rps, help="token bucket rate; 0 = none")
    p.add_argument("--burst", type=int, default=d.burst, help="bucket size; 0 = max(1, ceil(rps))")
    for kind in FAULT_KINDS:
        flag = "--" + kind.replace("_", "-")
        p.add_argument(flag, dest=kind, type=float, default=getattr(d, kind), help="fault probability")
    p.add_argument("--p-bad-json", type=float, default=d.p_bad_json, help="share of json_schema answers invalid")
    p.add_argument("--fault-retry-after-ms", type=float, default=None, help="retry hint on random 429s")
    p.add_argument("--hang-s", type=float, default=d.hang_s, help="how long a hung request is held")
    p.add_argument("--api-key-env", metavar="NAME", help="require `Bearer $NAME` (the key is read from env)")
    p.add_argument("--models", default="", help="comma-separated accepted models; empty = any")
    p.add_argument("--seed", type=int, default=d.seed, help="seeds the fault RNG")
    return p


def _options_from_args(args: argparse.Namespace) -> SimOptions:
    """Build validated options; raises ValueError with a one-line reason."""
    values = {f.name: getattr(args, f.name) for f in fields(SimOptions) if hasattr(args, f.name)}
    values["models"] = tuple(m.strip() for m in args.models.split(",") if m.strip())
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            raise ValueError(f"environment variable {args.api_key_env} (--api-key-env) is not set or empty")
        values["api_key"] = key
    return SimOptions(**values)


async def _serve_until_signal(options: SimOptions) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before printing the URL, so a quick signal still exits 0
        loop.add_signal_handler(sig, stop.set)
    sim = Simulator(options)
    base_url = await sim.start()
    print(base_url, flush=True)
    log.info("sim listening on %s (%s)", base_url, options)
    try:
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    """CLI entry: exit 0 on SIGTERM/SIGINT, 2 on bad options, 1 if the port cannot be bound."""
    args = _parser().parse_args(argv)
    try:
        options = _options_from_args(args)
    except ValueError as e:
        print(f"sim: error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    try:
        asyncio.run(_serve_until_signal(options))
    except OSError as e:
        print(f"sim: error: cannot listen on {options.host}:{options.port}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
