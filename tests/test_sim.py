"""Tests for the simulated endpoint over real HTTP: what a client observes must match /stats."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import email.utils
import json
import re
import signal
import sys
import time
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sdg.endpoints.process import EndpointStartError, sim_command
from sdg.endpoints.sim import SimOptions, SimServer, SimServerConfig, Simulator, build_parser, main, options_argv
from sdg.endpoints.sim.cli import options_from_args

ROOT = Path(__file__).resolve().parents[1]
BASE_URL_RE = re.compile(r"^http://127\.0\.0\.1:\d+/v1$")
DURATION_RE = re.compile(r"^\d+(ms|(\.\d+)?s)$")

SCHEMA = {
    "type": "object",
    "properties": {
        "question": {"type": "string"},
        "difficulty": {"enum": ["easy", "medium", "hard"]},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "year": {"type": "integer", "minimum": 1900, "maximum": 2025},
        "verified": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "source": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
    },
    "required": ["question", "difficulty", "year", "source"],
}


def chat(**extra: Any) -> dict[str, Any]:
    """A minimal valid chat request body."""
    body: dict[str, Any] = {"model": "sim-model", "messages": [{"role": "user", "content": "Ask a question."}]}
    body.update(extra)
    return body


def stats_url(base_url: str) -> str:
    return base_url.removesuffix("/v1") + "/stats"


async def post(session: aiohttp.ClientSession, base_url: str, body: Any, **kw: Any) -> tuple[int, Any, Any]:
    async with session.post(f"{base_url}/chat/completions", json=body, **kw) as r:
        return r.status, await r.json(content_type=None), r.headers


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as r:
        assert r.status == 200
        return await r.json()


async def outcome(session: aiohttp.ClientSession, base_url: str, timeout: float = 5.0) -> str:
    """Classify one request the way a client sees it, named like the /stats key it should bump."""
    try:
        async with session.post(
            f"{base_url}/chat/completions", json=chat(), timeout=aiohttp.ClientTimeout(total=timeout)
        ) as r:
            raw = await r.read()
            if r.status == 200:
                if r.content_type == "text/html":
                    return "html"
                try:
                    message = json.loads(raw)["choices"][0]["message"]
                except ValueError:
                    return "malformed"
                if message["content"] is None:
                    return "refusals" if message.get("refusal") else "empty"
                return "ok"
            if r.status == 429:
                code = json.loads(raw)["error"]["code"]
                return "r429_quota" if code == "insufficient_quota" else "r429_fault"
            return f"r{r.status}"
    except TimeoutError:
        return "hangs"
    except aiohttp.ClientConnectionError:
        return "resets"


async def wait_until_idle(session: aiohttp.ClientSession, base_url: str) -> dict[str, int]:
    """Stats once the server has noticed every client disconnect."""
    for _ in range(200):
        stats = await get_json(session, stats_url(base_url))
        if stats["inflight"] == 0:
            return stats
        await asyncio.sleep(0.02)
    raise AssertionError(f"requests still in flight: {stats}")


def valid(value: Any, schema: dict[str, Any]) -> bool:
    """Tiny validator for the schema subset used here."""
    if "enum" in schema:
        return value in schema["enum"]
    kind = schema["type"]
    if kind == "object":
        props = schema.get("properties", {})
        return (
            isinstance(value, dict)
            and all(k in value for k in schema.get("required", ()))
            and all(valid(v, props[k]) for k, v in value.items() if k in props)
        )
    if kind == "array":
        return isinstance(value, list) and all(valid(v, schema["items"]) for v in value)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    ok_type = isinstance(value, int) if kind == "integer" else isinstance(value, int | float)
    return (
        ok_type
        and not isinstance(value, bool)
        and schema.get("minimum", value) <= value <= schema.get("maximum", value)
    )


@pytest.fixture
def server():
    with SimServer(seed=1) as srv:
        yield srv


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


# --------------------------------------------------------------------------- CLI and lifecycle


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_cli_prints_base_url_first_and_exits_cleanly_on_signal(session, sig):
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sdg.endpoints.sim",
        "--port",
        "0",
        "--models",
        "a,b",
        "--rate-limit-rps",
        "1000",
        "--no-ratelimit-headers",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        first = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().rstrip("\n")
        assert BASE_URL_RE.match(first), first
        models = await get_json(session, f"{first}/models")
        assert [m["id"] for m in models["data"]] == ["a", "b"]
        status, _, headers = await post(session, first, chat(model="a"))
        assert status == 200 and not any(h.lower().startswith("x-ratelimit") for h in headers)
    finally:
        proc.send_signal(sig)
        rc = await asyncio.wait_for(proc.wait(), 20)
    assert rc == 0
    assert b"chat/completions" not in await proc.stderr.read()  # no access log


async def test_cli_bad_option_exits_2_with_one_line():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sdg.endpoints.sim", "--p429", "1.5", cwd=ROOT, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    assert proc.returncode == 2
    assert err.decode().strip().count("\n") == 0 and "p429" in err.decode()


@pytest.mark.parametrize(
    ("argv", "word"),
    [
        (["--p500", "0.6", "--p503", "0.6"], "sum"),
        (["--latency-ms", "-1"], "latency_ms"),
        (["--p-bad-json", "2"], "p_bad_json"),
        (["--api-key-env", "SDG_SIM_TEST_UNSET_VAR"], "SDG_SIM_TEST_UNSET_VAR"),
        (["--retry-after-style", "minutes"], "minutes"),
        (["--error-style", "xml"], "xml"),
        (["--latency-ms", "fast"], "fast"),
        (["--reasoning-words", "1.5"], "1.5"),
        (["--no-such-flag"], "--no-such-flag"),
        (["--p-html", "0.5", "--p-refusal", "0.3", "--p-empty", "0.3"], "sum"),
    ],
)
def test_cli_validation(capsys, monkeypatch, argv, word):
    monkeypatch.delenv("SDG_SIM_TEST_UNSET_VAR", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert word in err and err.count("\n") == 1


def test_options_validate_in_python():
    with pytest.raises(ValueError, match="p_hang"):
        SimOptions(p_hang=-0.1)
    with pytest.raises(ValueError, match="sum"):
        SimServer(p429=0.5, p_quota=0.3, p_reset=0.3)


async def test_base_url_models_unknown_path_and_idempotent_stop(session):
    srv = SimServer()
    base_url = srv.start()
    assert BASE_URL_RE.match(base_url) and srv.base_url == base_url
    models = await get_json(session, f"{base_url}/models")
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == ["sim-model"]
    async with session.get(f"{base_url}/nope") as r:
        assert r.status == 404 and "error" in await r.json()
    srv.stop()
    srv.stop()


async def test_simulator_runs_on_the_current_loop(session):
    async with Simulator(latency_ms=1) as sim:
        status, body, _ = await post(session, sim.base_url, chat())
        assert status == 200 and body["object"] == "chat.completion"
        assert sim.stats()["ok"] == 1


# --------------------------------------------------------------------------- generation


async def test_same_seed_same_text_other_seed_other_text(server, session):
    other = SimServer()
    other.start()
    try:
        texts = []
        for base_url, seed in [(server.base_url, 7), (other.base_url, 7), (server.base_url, 8)]:
            status, body, _ = await post(session, base_url, chat(seed=seed, temperature=0.7))
            assert status == 200
            texts.append(body["choices"][0]["message"]["content"])
    finally:
        other.stop()
    assert texts[0] == texts[1] != texts[2]
    assert texts[0].startswith("Question: ") and "? Answer: " in texts[0]


async def test_response_shape_and_usage(server, session):
    status, body, _ = await post(session, server.base_url, chat(seed=1))
    assert status == 200
    assert body["id"].startswith("chatcmpl-") and body["model"] == "sim-model"
    choice = body["choices"][0]
    assert choice["index"] == 0 and choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "stop"
    usage = body["usage"]
    assert 12 <= usage["completion_tokens"] == len(choice["message"]["content"].split()) <= 60
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_cuts_with_finish_reason_length(server, session, key):
    status, body, _ = await post(session, server.base_url, chat(seed=3, **{key: 5}))
    assert status == 200
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5 == len(body["choices"][0]["message"]["content"].split())


async def test_stop_string_cuts_before_it(server, session):
    _, full, _ = await post(session, server.base_url, chat(seed=4))
    text = full["choices"][0]["message"]["content"]
    _, cut, _ = await post(session, server.base_url, chat(seed=4, stop=["nothing-like-this", "? Answer:"]))
    choice = cut["choices"][0]
    assert choice["message"]["content"] == text[: text.index("? Answer:")]
    assert choice["finish_reason"] == "stop"
    assert cut["usage"]["completion_tokens"] < full["usage"]["completion_tokens"]


async def test_n_choices_are_distinct(server, session):
    status, body, _ = await post(session, server.base_url, chat(seed=5, n=4))
    assert status == 200
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert len({c["message"]["content"] for c in body["choices"]}) == 4
    assert body["usage"]["completion_tokens"] == sum(len(c["message"]["content"].split()) for c in body["choices"])


async def test_stream_assembles_to_the_non_streamed_text(server, session):
    request = chat(seed=6, n=2, max_tokens=30)
    _, plain, _ = await post(session, server.base_url, request)
    streamed = dict(request, stream=True, stream_options={"include_usage": True})
    async with session.post(f"{server.base_url}/chat/completions", json=streamed) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        raw = (await r.read()).decode()
    events = [e.removeprefix("data: ") for e in raw.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    texts, finish, deltas = collections.defaultdict(str), {}, collections.Counter()
    for c in chunks[:-1]:
        (choice,) = c["choices"]
        texts[choice["index"]] += choice["delta"].get("content", "")
        deltas[choice["index"]] += 1
        if choice["finish_reason"]:
            finish[choice["index"]] = choice["finish_reason"]
    for choice in plain["choices"]:
        assert texts[choice["index"]] == choice["message"]["content"]
        assert finish[choice["index"]] == choice["finish_reason"]
        assert deltas[choice["index"]] > 3
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]


async def test_json_schema_answers_validate(server, session):
    fmt = {"type": "json_schema", "json_schema": {"name": "qa", "schema": SCHEMA}}
    status, body, _ = await post(session, server.base_url, chat(seed=9, n=5, response_format=fmt))
    assert status == 200
    values = [json.loads(c["message"]["content"]) for c in body["choices"]]
    assert all(valid(v, SCHEMA) for v in values), values
    _, again, _ = await post(session, server.base_url, chat(seed=9, n=5, response_format=fmt))
    assert again["choices"] == body["choices"]
    _, obj, _ = await post(session, server.base_url, chat(response_format={"type": "json_object"}))
    assert isinstance(json.loads(obj["choices"][0]["message"]["content"]), dict)


async def test_p_bad_json_makes_answers_invalid(session):
    fmt = {"type": "json_schema", "json_schema": {"name": "qa", "schema": SCHEMA}}
    with SimServer(p_bad_json=1.0) as srv:
        bad = 0
        for seed in range(6):
            status, body, _ = await post(session, srv.base_url, chat(seed=seed, n=2, response_format=fmt))
            assert status == 200
            for c in body["choices"]:
                try:
                    value = json.loads(c["message"]["content"])
                except ValueError:
                    value = None
                bad += value is None or not valid(value, SCHEMA)
        assert bad == 12 == srv.stats()["bad_json"]


# --------------------------------------------------------------------------- validation, auth, models


@pytest.mark.parametrize(
    ("patch", "param"),
    [
        ({"temperature": 2.5}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"n": 0}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"model": None}, "model"),
        ({"messages": "hi"}, "messages"),
        ({"stop": 3}, "stop"),
    ],
)
async def test_invalid_requests_get_400(server, session, patch, param):
    status, body, _ = await post(session, server.base_url, chat(**patch))
    assert status == 400
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == param
    assert server.stats()["r400"] == 1


async def test_unparsable_body_gets_400(server, session):
    async with session.post(f"{server.base_url}/chat/completions", data=b"{not json") as r:
        assert r.status == 400


async def test_api_key_required(session):
    with SimServer(api_key="sekret") as srv:
        status, body, _ = await post(session, srv.base_url, chat())
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        status, _, _ = await post(session, srv.base_url, chat(), headers={"Authorization": "Bearer wrong"})
        assert status == 401
        status, _, _ = await post(session, srv.base_url, chat(), headers={"Authorization": "Bearer sekret"})
        assert status == 200
        stats = srv.stats()
        assert (stats["r401"], stats["ok"], stats["requests"]) == (2, 1, 3)


async def test_unknown_model_gets_404(session):
    with SimServer(models=("m1",)) as srv:
        status, body, _ = await post(session, srv.base_url, chat(model="m2"))
        assert status == 404 and body["error"]["code"] == "model_not_found"
        status, _, _ = await post(session, srv.base_url, chat(model="m1"))
        assert status == 200
        assert srv.stats()["r404"] == 1


async def test_requests_log_shows_extra_params_and_reset_clears(server, session):
    await post(session, server.base_url, chat(top_k=40, seed=12, stop=["\n\n"], min_p=0.1))
    await post(session, server.base_url, chat(seed=13))
    last_two = await get_json(session, server.base_url.removesuffix("/v1") + "/requests?limit=2")
    assert [b["seed"] for b in last_two] == [12, 13]
    assert last_two[0]["top_k"] == 40 and last_two[0]["stop"] == ["\n\n"] and last_two[0]["min_p"] == 0.1
    async with session.post(server.base_url.removesuffix("/v1") + "/reset") as r:
        assert r.status == 200
    stats = await get_json(session, stats_url(server.base_url))
    assert all(v == 0 for v in stats.values())
    assert await get_json(session, server.base_url.removesuffix("/v1") + "/requests") == []


# --------------------------------------------------------------------------- rate limit and faults


async def test_rate_limit_429_headers_and_counts(session):
    with SimServer(rate_limit_rps=2, burst=3) as srv:
        results = await asyncio.gather(*(post(session, srv.base_url, chat()) for _ in range(10)))
        statuses = collections.Counter(status for status, _, _ in results)
        assert set(statuses) <= {200, 429} and statuses[200] >= 3 and statuses[429] >= 1
        for status, body, headers in results:
            assert headers["x-ratelimit-limit-requests"] == "120"
            assert DURATION_RE.match(headers["x-ratelimit-reset-requests"])
            if status == 429:
                assert body["error"]["code"] == "rate_limit_exceeded"
                assert headers["x-ratelimit-remaining-requests"] == "0"
                assert int(headers["Retry-After"]) >= 1 and "retry-after-ms" not in headers
            else:
                assert int(headers["x-ratelimit-remaining-requests"]) >= 0
        stats = srv.stats()
        assert stats["ok"] == statuses[200]
        assert stats["r429"] == stats["r429_rate_limit"] == stats["retry_hints"] == statuses[429]
        assert stats["requests"] == 10 == stats["ratelimit_headed"]


OUTCOME_KEYS = (
    "ok",
    "r400",
    "r401",
    "r404",
    "r429",
    "r500",
    "r503",
    "resets",
    "hangs",
    "malformed",
    "html",
    "refusals",
    "empty",
    "cancelled",
)
SINGLE_FAULTS = [
    ("p429", "r429_fault", "r429"),
    ("p_quota", "r429_quota", "r429_quota"),
    ("p500", "r500", "r500"),
    ("p503", "r503", "r503"),
    ("p_reset", "resets", "resets"),
    ("p_hang", "hangs", "hangs"),
    ("p_malformed", "malformed", "malformed"),
    ("p_html", "html", "html"),
    ("p_refusal", "refusals", "refusals"),
    ("p_empty", "empty", "empty"),
]


@pytest.mark.parametrize(("option", "seen", "stat"), SINGLE_FAULTS)
async def test_single_fault_kind_is_seen_and_counted(session, option, seen, stat):
    with SimServer(fault_retry_after_ms=250, **{option: 1.0}) as srv:
        results = await asyncio.gather(*(outcome(session, srv.base_url, timeout=0.5) for _ in range(3)))
        assert results == [seen] * 3
        stats = await wait_until_idle(session, srv.base_url)
        assert stats[stat] == 3 and stats["requests"] == 3 and stats["ok"] == 0
        if option in ("p429", "p_quota"):
            assert stats["r429"] == 3


async def test_fault_429_headers(session):
    with SimServer(p429=1.0, fault_retry_after_ms=250) as srv:
        status, body, headers = await post(session, srv.base_url, chat())
        assert status == 429 and body["error"]["code"] == "rate_limit_exceeded"
        assert headers["Retry-After"] == "1" and "retry-after-ms" not in headers
    with SimServer(p429=1.0, fault_retry_after_ms=250, retry_after_style="both") as srv:
        status, body, headers = await post(session, srv.base_url, chat())
        assert headers["retry-after-ms"] == "250" and headers["Retry-After"] == "1"
    with SimServer(p429=1.0) as srv:  # no fault_retry_after_ms: no hint in any style
        status, body, headers = await post(session, srv.base_url, chat())
        assert status == 429 and "Retry-After" not in headers and srv.stats()["retry_hints"] == 0
    with SimServer(p_quota=1.0, fault_retry_after_ms=250) as srv:
        status, body, headers = await post(session, srv.base_url, chat())
        assert status == 429 and body["error"]["type"] == "insufficient_quota"
        assert "Retry-After" not in headers and "retry-after-ms" not in headers


async def test_mixed_faults_client_tallies_match_stats(session):
    options = SimOptions(
        seed=42, p429=0.1, p_quota=0.05, p500=0.1, p503=0.1, p_reset=0.1, p_hang=0.04, p_malformed=0.1, p_html=0.05,
        p_refusal=0.05, p_empty=0.05,
    )  # fmt: skip
    with SimServer(options) as srv:
        gate = asyncio.Semaphore(25)

        async def one() -> str:
            async with gate:
                return await outcome(session, srv.base_url, timeout=0.5)

        seen = collections.Counter(await asyncio.gather(*(one() for _ in range(200))))
        stats = await wait_until_idle(session, srv.base_url)
    assert stats["requests"] == 200 == sum(seen.values())
    kinds = ("ok", "r500", "r503", "resets", "hangs", "malformed", "html", "refusals", "empty")
    for key in (*kinds, "r429_quota"):
        assert stats[key] == seen[key], key
    assert stats["r429"] == seen["r429_fault"] + seen["r429_quota"]
    assert stats["requests"] == sum(stats[k] for k in OUTCOME_KEYS)
    assert all(seen[k] > 0 for k in (*kinds, "r429_fault"))


async def test_fault_sequence_is_seeded(session):
    async def run() -> list[str]:
        with SimServer(seed=3, p429=0.2, p500=0.2, p503=0.2) as srv:
            return [await outcome(session, srv.base_url) for _ in range(20)]

    first = await run()
    assert first == await run() and len(set(first)) > 2


async def test_stop_releases_hung_requests(session):
    srv = SimServer(p_hang=1.0)
    srv.start()
    pending = asyncio.ensure_future(outcome(session, srv.base_url, timeout=30))
    while srv.stats()["hangs"] == 0:
        await asyncio.sleep(0.01)
    await asyncio.to_thread(srv.stop)
    assert await pending == "resets"


@pytest.mark.parametrize("stream", [False, True])
async def test_client_leaving_during_latency_is_counted_cancelled(session, stream):
    with SimServer(latency_ms=100, tokens_per_s=20) as srv:
        with pytest.raises(TimeoutError):
            async with session.post(
                f"{srv.base_url}/chat/completions", json=chat(stream=stream), timeout=aiohttp.ClientTimeout(total=0.3)
            ) as r:
                await r.read()
        stats = await wait_until_idle(session, srv.base_url)
    assert stats["cancelled"] == 1 == stats["requests"] and stats["ok"] == 0


async def test_max_inflight_counts_concurrent_requests(session):
    with SimServer(latency_ms=400) as srv:
        results = await asyncio.gather(*(post(session, srv.base_url, chat()) for _ in range(8)))
        assert [status for status, _, _ in results] == [200] * 8
        stats = srv.stats()
        assert stats["max_inflight"] == 8 and stats["inflight"] == 0


# --------------------------------------------------------------------------- how real servers answer


def has_ratelimit_headers(headers: Any) -> bool:
    return any(h.lower().startswith("x-ratelimit-") for h in headers)


async def limited(session: aiohttp.ClientSession, **options: Any) -> tuple[list[tuple[int, Any, Any]], dict]:
    """Three requests one after another against a bucket of 1 refilled every 2 s: ok, 429, 429."""
    with SimServer(rate_limit_rps=0.5, burst=1, **options) as srv:
        results = [await post(session, srv.base_url, chat()) for _ in range(3)]
        return results, srv.stats()


@pytest.mark.parametrize("source", ["bucket", "fault"])
@pytest.mark.parametrize("style", ["seconds", "ms", "both", "date", "none"])
async def test_retry_after_styles(session, source, style):
    if source == "bucket":
        results, stats = await limited(session, retry_after_style=style)
        assert [status for status, _, _ in results] == [200, 429, 429]
        refused = [headers for _, _, headers in results[1:]]
    else:
        with SimServer(p429=1.0, fault_retry_after_ms=1500, retry_after_style=style) as srv:
            refused = [(await post(session, srv.base_url, chat()))[2] for _ in range(2)]
            stats = srv.stats()
    for headers in refused:
        retry_after, ms = headers.get("Retry-After"), headers.get("retry-after-ms")
        if style in ("seconds", "both"):
            assert re.fullmatch(r"[1-9]\d*", retry_after) and int(retry_after) == 2
        if style in ("ms", "both"):
            assert 0 < int(ms) <= 2000 and (source == "bucket" or ms == "1500")
        if style == "date":
            when = email.utils.parsedate_to_datetime(retry_after)
            assert retry_after.endswith(" GMT") and when.utcoffset().total_seconds() == 0
            assert when.timestamp() > time.time() - 60  # an absolute moment, not a delay
        if style in ("ms", "none"):
            assert retry_after is None
        if style in ("seconds", "date", "none"):
            assert ms is None
    assert stats["retry_hints"] == (0 if style == "none" else 2) and stats["r429"] == 2


async def test_ratelimit_headers_can_be_left_out(session):
    results, stats = await limited(session, ratelimit_headers=False)
    assert [status for status, _, _ in results] == [200, 429, 429]
    assert not any(has_ratelimit_headers(headers) for _, _, headers in results)
    assert all(headers["Retry-After"] == "2" for _, _, headers in results[1:])  # the hint stays
    assert stats["ratelimit_headed"] == 0 and stats["r429_rate_limit"] == 2
    results, stats = await limited(session)
    assert all(has_ratelimit_headers(headers) for _, _, headers in results) and stats["ratelimit_headed"] == 3
    with SimServer() as srv:  # no limit: no x-ratelimit-* either
        _, _, headers = await post(session, srv.base_url, chat())
        assert not has_ratelimit_headers(headers) and srv.stats()["ratelimit_headed"] == 0


async def test_admin_limits_change_the_bucket_while_running(session):
    with SimServer() as srv:
        admin = srv.base_url.removesuffix("/v1") + "/admin/limits"
        assert [(await post(session, srv.base_url, chat()))[0] for _ in range(4)] == [200] * 4
        async with session.post(admin, json={"rate_limit_rps": 0.5, "burst": 1}) as r:
            assert r.status == 200 and await r.json() == {"rate_limit_rps": 0.5, "burst": 1}
        results = [await post(session, srv.base_url, chat()) for _ in range(3)]
        assert [status for status, _, _ in results] == [200, 429, 429]
        assert results[0][2]["x-ratelimit-limit-requests"] == "30"
        assert srv.options.rate_limit_rps == 0.5
        for bad in ({"rate_limit_rps": -1}, {"burst": 1.5}, {"rps": 3}, [1], {}):
            async with session.post(admin, json=bad) as r:
                assert r.status == 400 and "error" in await r.json()
        assert srv.options.rate_limit_rps == 0.5  # a bad request changes nothing
        assert srv.set_limits(rate_limit_rps=0) == {"rate_limit_rps": 0, "burst": 1}
        assert [(await post(session, srv.base_url, chat()))[0] for _ in range(4)] == [200] * 4
        srv.set_limits(rate_limit_rps=1000, burst=2)
        statuses = [(await post(session, srv.base_url, chat()))[0] for _ in range(3)]
        assert statuses[:2] == [200, 200]
        with pytest.raises(ValueError, match="burst"):
            srv.set_limits(burst=-1)
        stats = srv.stats()
        assert stats["limit_changes"] == 3 and stats["r400"] == 0  # admin answers are not chat requests


ERROR_CASES = {
    # name: (server options, request body, expected status, OpenAI type, param, code)
    "bad_param": ({}, chat(temperature=2.5), 400, "invalid_request_error", "temperature", None),
    "unparsable": ({}, b"{not json", 400, "invalid_request_error", None, None),
    "bad_key": ({"api_key": "k"}, chat(), 401, "invalid_request_error", None, "invalid_api_key"),
    "unknown_model": ({"models": ["m1"]}, chat(), 404, "invalid_request_error", "model", "model_not_found"),
    "rate_limit": ({"rate_limit_rps": 0.5, "burst": 1}, chat(), 429, "requests", None, "rate_limit_exceeded"),
    "quota": ({"p_quota": 1.0}, chat(), 429, "insufficient_quota", None, "insufficient_quota"),
    "p500": ({"p500": 1.0}, chat(), 500, "server_error", None, None),
    "p503": ({"p503": 1.0}, chat(), 503, "server_error", None, None),
}
VLLM_TYPES = {400: "BadRequestError", 401: "UnauthorizedError", 404: "NotFoundError"}
VLLM_TYPES |= {429: "TooManyRequestsError", 500: "InternalServerError", 503: "ServiceUnavailableError"}


@pytest.mark.parametrize("case", list(ERROR_CASES))
@pytest.mark.parametrize("style", ["openai", "vllm", "fastapi", "rfc7807", "text"])
async def test_error_styles(session, style, case):
    options, request, status, openai_type, param, code = ERROR_CASES[case]
    with SimServer(error_style=style, **options) as srv:
        if case == "rate_limit":
            await post(session, srv.base_url, chat())
        kw = {"data": request} if isinstance(request, bytes) else {"json": request}
        async with session.post(f"{srv.base_url}/chat/completions", **kw) as r:
            assert r.status == status
            content_type, raw = r.content_type, (await r.read()).decode()
        stats = srv.stats()
    assert stats[f"r{status}"] == 1
    if style == "text":
        assert content_type == "text/plain" and raw and not raw.startswith("{")
        return
    body = json.loads(raw)
    assert content_type == ("application/problem+json" if style == "rfc7807" else "application/json")
    if style == "openai":
        assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
        assert (body["error"]["type"], body["error"]["param"], body["error"]["code"]) == (openai_type, param, code)
        message = body["error"]["message"]
    elif style == "vllm":
        assert list(body) == ["object", "message", "type", "param", "code"]
        assert (body["object"], body["type"], body["param"], body["code"]) == (
            "error",
            VLLM_TYPES[status],
            param,
            status,
        )
        message = body["message"]
    elif style == "rfc7807":
        assert body == {
            "type": "about:blank",
            "title": HTTPStatus(status).phrase,
            "status": status,
            "detail": body["detail"],
        }
        message = body["detail"]
    elif case == "bad_param":  # FastAPI's RequestValidationError
        assert body == {
            "detail": [
                {"type": "value_error", "loc": ["body", "temperature"], "msg": body["detail"][0]["msg"], "input": 2.5}
            ]
        }
        message = body["detail"][0]["msg"]
    elif case == "unparsable":
        (item,) = body["detail"]
        assert item["type"] == "json_invalid" and item["loc"] == ["body", 1] and item["msg"] == "JSON decode error"
        assert item["input"] == {} and item["ctx"]["error"]
        message = item["msg"]
    else:  # FastAPI's HTTPException
        assert list(body) == ["detail"] and isinstance(body["detail"], str)
        message = body["detail"]
    assert isinstance(message, str) and message


@pytest.mark.parametrize("style", ["vllm", "fastapi", "rfc7807", "text"])
async def test_error_style_applies_to_every_route(session, style):
    with SimServer(error_style=style, api_key="k") as srv:
        for method, url, status in [("GET", f"{srv.base_url}/models", 401), ("GET", f"{srv.base_url}/nope", 404)]:
            async with session.request(method, url) as r:
                assert r.status == status
                raw = await r.read()
            assert not raw.startswith(b'{"error"') and (r.content_type == "text/plain") == (style == "text")


REASONING_SCHEMA_FIELDS = ("reasoning_content", "reasoning")


@pytest.mark.parametrize("field", REASONING_SCHEMA_FIELDS)
async def test_reasoning_full_answer_at_large_max_tokens(session, field):
    with SimServer() as plain, SimServer(reasoning=True, reasoning_field=field, reasoning_words=20) as thinking:
        _, expected, _ = await post(session, plain.base_url, chat(seed=21, max_tokens=500))
        status, body, _ = await post(session, thinking.base_url, chat(seed=21, max_tokens=500))
        stats = thinking.stats()
    assert status == 200
    message, choice = body["choices"][0]["message"], body["choices"][0]
    other = next(f for f in REASONING_SCHEMA_FIELDS if f != field)
    assert other not in message and len(message[field].split()) == 20
    assert message["content"] == expected["choices"][0]["message"]["content"]  # thinking leaves the answer alone
    assert choice["finish_reason"] == "stop"
    assert body["usage"]["completion_tokens"] == expected["usage"]["completion_tokens"] + 20
    assert (stats["reasoning_tokens"], stats["reasoning_cut"], stats["ok"]) == (20, 0, 1)


@pytest.mark.parametrize("max_tokens", [5, 48])
async def test_reasoning_runs_out_of_max_tokens(session, max_tokens):
    with SimServer(reasoning=True) as srv:
        status, body, _ = await post(session, srv.base_url, chat(seed=22, max_tokens=max_tokens, n=2))
        stats = srv.stats()
    assert status == 200
    for choice in body["choices"]:
        assert choice["message"]["content"] is None and choice["finish_reason"] == "length"
        assert len(choice["message"]["reasoning_content"].split()) == max_tokens
    assert body["usage"]["completion_tokens"] == 2 * max_tokens
    assert (stats["reasoning_cut"], stats["reasoning_tokens"], stats["ok"]) == (2, 2 * max_tokens, 1)


async def test_reasoning_leaves_what_is_left_of_max_tokens_to_the_answer(session):
    with SimServer(reasoning=True, reasoning_words=10) as srv:
        _, body, _ = await post(session, srv.base_url, chat(seed=23, max_tokens=13))
    choice = body["choices"][0]
    assert len(choice["message"]["content"].split()) == 3 and choice["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 13


def sse_chunks(raw: str) -> list[dict[str, Any]]:
    events = [e.removeprefix("data: ") for e in raw.split("\n\n") if e]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


@pytest.mark.parametrize("field", REASONING_SCHEMA_FIELDS)
async def test_streaming_sends_thinking_deltas_first(session, field):
    with SimServer(reasoning=True, reasoning_field=field, reasoning_words=30) as srv:
        request = chat(seed=24, n=2, max_tokens=200)
        _, plain, _ = await post(session, srv.base_url, request)
        async with session.post(f"{srv.base_url}/chat/completions", json=dict(request, stream=True)) as r:
            chunks = sse_chunks((await r.read()).decode())
        stats = await wait_until_idle(session, srv.base_url)  # counted after the last byte is written
    order: dict[int, list[str]] = collections.defaultdict(list)
    texts: dict[tuple[int, str], str] = collections.defaultdict(str)
    for c in chunks:
        (choice,) = c["choices"]
        for key in (field, "content"):
            if choice["delta"].get(key):
                order[choice["index"]].append(key)
                texts[choice["index"], key] += choice["delta"][key]
    for choice in plain["choices"]:
        i = choice["index"]
        kinds = order[i]
        assert kinds[0] == field and kinds[-1] == "content" and kinds.index("content") == kinds.count(field)
        assert texts[i, field] == choice["message"][field] and texts[i, "content"] == choice["message"]["content"]
    assert stats["reasoning_tokens"] == 4 * 30 and stats["ok"] == 2


async def test_html_refusal_and_empty_answers(session):
    with SimServer(p_html=1.0) as srv:
        async with session.post(f"{srv.base_url}/chat/completions", json=chat()) as r:
            assert r.status == 200 and r.content_type == "text/html"
            assert (await r.text()).startswith("<!DOCTYPE html>")
        assert (srv.stats()["html"], srv.stats()["ok"]) == (1, 0)
    with SimServer(p_refusal=1.0) as srv:
        status, body, _ = await post(session, srv.base_url, chat(n=2))
        assert status == 200
        for choice in body["choices"]:
            assert choice["message"] == {
                "role": "assistant",
                "content": None,
                "refusal": "I'm sorry, I can't help with that.",
            }
            assert choice["finish_reason"] == "stop"
        async with session.post(f"{srv.base_url}/chat/completions", json=chat(stream=True)) as r:
            chunks = sse_chunks((await r.read()).decode())
        refusal = "".join(c["choices"][0]["delta"].get("refusal", "") for c in chunks)
        assert refusal == "I'm sorry, I can't help with that." and chunks[-1]["choices"][0]["finish_reason"] == "stop"
        stats = await wait_until_idle(session, srv.base_url)
        assert (stats["refusals"], stats["ok"]) == (2, 0)
    with SimServer(p_empty=1.0, reasoning=True) as srv:
        status, body, _ = await post(session, srv.base_url, chat())
        choice = body["choices"][0]
        assert status == 200 and choice["message"] == {"role": "assistant", "content": None}
        assert choice["finish_reason"] == "stop" and body["usage"]["completion_tokens"] == 0
        assert (srv.stats()["empty"], srv.stats()["ok"], srv.stats()["reasoning_tokens"]) == (1, 0, 0)


# --------------------------------------------------------------------------- options declared once


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(SimOptions):
        flag = "--" + f.name.replace("_", "-")
        assert re.search(re.escape(flag) + r"\b(?!-)", out) if f.name != "api_key" else flag + " " not in out, flag
    for text in ("--no-ratelimit-headers", "--no-reasoning", "--api-key-env", "seconds,ms,both,date,none"):
        assert text in out, text


def test_flags_parse_into_options(monkeypatch):
    monkeypatch.setenv("SDG_SIM_TEST_KEY", "sekret")
    argv = ["--no-ratelimit-headers", "--models", "a, b", "--retry-after-style", "date", "--reasoning"]
    argv += ["--fault-retry-after-ms", "250", "--error-style", "rfc7807", "--api-key-env", "SDG_SIM_TEST_KEY"]
    options = options_from_args(build_parser().parse_args(argv))
    assert options == SimOptions(
        ratelimit_headers=False,
        models=["a", "b"],
        retry_after_style="date",
        reasoning=True,
        fault_retry_after_ms=250.0,
        error_style="rfc7807",
        api_key="sekret",
    )
    assert options_from_args(build_parser().parse_args([])) == SimOptions()


def test_options_argv_round_trips_and_sim_command_uses_it():
    options = SimOptions(
        ratelimit_headers=False, reasoning=True, models=["a", "b"], p429=0.25, fault_retry_after_ms=10, seed=3
    )
    argv = options_argv(options)
    assert "--no-ratelimit-headers" in argv and "--latency-ms" not in argv  # defaults left out
    assert options_from_args(build_parser().parse_args(argv)) == options
    command = sim_command({"p429": 0.25, "models": ["a", "b"], "ratelimit_headers": False, "error_style": "vllm"})
    assert command[1:7] == ["-m", "sdg.endpoints.sim", "--host", "127.0.0.1", "--port", "0"]
    assert command[7:] == ["--p429", "0.25", "--no-ratelimit-headers", "--error-style", "vllm", "--models", "a,b"]
    parsed = options_from_args(build_parser().parse_args(command[3:]))
    assert (parsed.p429, parsed.models, parsed.ratelimit_headers, parsed.error_style) == (
        0.25,
        ["a", "b"],
        False,
        "vllm",
    )
    assert sim_command({}) == sim_command(None) == [sys.executable, *command[1:7]]
    with pytest.raises(EndpointStartError, match="p429"):
        sim_command({"p429": 2})
    with pytest.raises(EndpointStartError, match="nonsense"):
        sim_command({"nonsense": 1})
    with pytest.raises(EndpointStartError, match="environment"):
        sim_command({"api_key": "sekret"})


def test_options_are_a_structured_config():
    from omegaconf import OmegaConf

    cfg = OmegaConf.merge(OmegaConf.structured(SimOptions), {"models": ["a"], "retry_after_style": "none"})
    options = OmegaConf.to_object(cfg)
    assert isinstance(options, SimOptions) and options.models == ["a"] and options.retry_after_style == "none"
    run_side = {f.name for f in dataclasses.fields(SimServerConfig)}
    assert run_side == {f.name for f in dataclasses.fields(SimOptions)} - {"host", "port", "api_key"}
    section = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SimServerConfig), {"p_html": 0.5}))
    assert section.to_options(port=0).p_html == 0.5
    assert sim_command(dataclasses.asdict(section))[-2:] == ["--p-html", "0.5"]
