"""The client over real HTTP against the simulated endpoint: retries, limits, errors, features, pickling."""

from __future__ import annotations

import asyncio
import json
import pickle
import urllib.request

import pytest

from sdg.client import (
    APIConnectionError,
    APITimeoutError,
    AsyncOpenAIClient,
    AuthenticationError,
    ClientStats,
    GenerationConfig,
    NotFoundError,
    OpenAIClient,
    QuotaExceededError,
)

MESSAGES = [{"role": "user", "content": "Generate a Q&A pair about science in French."}]


def _client(sim, **kwargs) -> AsyncOpenAIClient:
    defaults = {"base_url": sim.base_url, "api_key": "test", "base_delay": 0.001, "max_delay": 0.01, "timeout": 10}
    return AsyncOpenAIClient(**{**defaults, **kwargs})


def _requests_seen(sim, limit: int = 5) -> list[dict]:
    with urllib.request.urlopen(f"{sim.base_url.removesuffix('/v1')}/requests?limit={limit}") as response:
        return json.loads(response.read())


async def _many(client: AsyncOpenAIClient, count: int, config: GenerationConfig | None = None, **kw) -> list:
    return await asyncio.gather(
        *(client.complete(MESSAGES, "sim-model", config or GenerationConfig(seed=i), **kw) for i in range(count)),
        return_exceptions=True,
    )


async def test_query_model_returns_texts_and_complete_reports_usage(sim) -> None:
    client = _client(sim)
    texts = await client.query_model(messages=MESSAGES, model="sim-model", generation_config=GenerationConfig())
    assert len(texts) == 1 and texts[0]
    completion = await client.complete(MESSAGES, "sim-model", GenerationConfig(max_tokens=5))
    assert completion.completion_tokens == 5 and completion.finish_reasons == ["length"]
    assert completion.prompt_tokens > 0 and completion.attempts == 1 and completion.latency_s > 0
    assert client.stats.successes == 2 and client.stats.completion_tokens == sim.stats()["completion_tokens"]


async def test_429_retries_are_counted_like_the_server_counts_them(sim_factory) -> None:
    sim = sim_factory(p429=0.3, seed=3)
    client = _client(sim, max_concurrent_requests=8, max_retries=10)
    results = await _many(client, 60)
    assert [r for r in results if isinstance(r, Exception)] == []
    served = sim.stats()
    assert served["r429"] > 0
    assert client.stats.status_429 == served["r429"]
    assert client.stats.attempts == served["requests"]
    assert client.stats.retries == served["r429"]


async def test_retry_after_ms_is_honoured_for_the_request_that_got_it(sim_factory) -> None:
    sim = sim_factory(p429=0.5, fault_retry_after_ms=50, retry_after_style="ms", seed=1)
    client = _client(sim, max_concurrent_requests=4, max_retries=20, base_delay=5.0)  # backoff would be seconds
    await _many(client, 10)
    retries = client.stats.retries
    assert retries == sim.stats()["r429"] > 0
    assert client.stats.backoff_s == pytest.approx(0.05 * retries)  # waited what the server asked, not base_delay


async def test_5xx_resets_and_malformed_are_retried_by_kind(sim_factory) -> None:
    sim = sim_factory(p500=0.1, p503=0.1, p_reset=0.1, p_malformed=0.1, seed=5)
    client = _client(sim, max_concurrent_requests=8, max_retries=15)
    results = await _many(client, 80)
    assert [r for r in results if isinstance(r, Exception)] == []
    served, stats = sim.stats(), client.stats
    assert stats.other_statuses[500] == served["r500"] and stats.other_statuses[503] == served["r503"]
    assert stats.connection_errors == served["resets"] and stats.malformed == served["malformed"]
    assert stats.attempts == served["requests"]


async def test_hang_becomes_a_timeout_then_succeeds(sim_factory) -> None:
    sim = sim_factory(p_hang=0.5, hang_s=30, seed=2)
    client = _client(sim, timeout=0.3, max_retries=10, max_concurrent_requests=4)
    results = await _many(client, 6)
    assert [r for r in results if isinstance(r, Exception)] == []
    assert client.stats.timeouts == sim.stats()["hangs"] > 0


async def test_401_fails_at_once_naming_the_key_variable(sim_factory, monkeypatch) -> None:
    sim = sim_factory(api_key="right-key")
    monkeypatch.setenv("SDG_TEST_KEY", "wrong-key")
    client = AsyncOpenAIClient(base_url=sim.base_url, api_key_env="SDG_TEST_KEY", max_retries=3)
    with pytest.raises(AuthenticationError) as info:
        await client.complete(MESSAGES, "sim-model")
    assert "SDG_TEST_KEY" in str(info.value) and "wrong-key" not in str(info.value)
    assert sim.stats()["requests"] == 1 and info.value.attempts == 1
    monkeypatch.setenv("SDG_TEST_KEY", "right-key")
    assert await AsyncOpenAIClient(base_url=sim.base_url, api_key_env="SDG_TEST_KEY").query_model(
        messages=MESSAGES, model="sim-model"
    )


async def test_404_names_model_and_url_without_retrying(sim_factory) -> None:
    sim = sim_factory(models=("real-model",))
    client = _client(sim, max_retries=3)
    with pytest.raises(NotFoundError) as info:
        await client.complete(MESSAGES, "no-such-model")
    assert "no-such-model" in str(info.value) and sim.base_url in str(info.value)
    assert sim.stats()["requests"] == 1


async def test_insufficient_quota_is_not_retried(sim_factory) -> None:
    sim = sim_factory(p_quota=1.0)
    with pytest.raises(QuotaExceededError):
        await _client(sim, max_retries=5).complete(MESSAGES, "sim-model")
    assert sim.stats()["requests"] == 1


async def test_connection_refused_names_the_url_after_retries() -> None:
    client = AsyncOpenAIClient(base_url="http://127.0.0.1:9/v1", max_retries=2, base_delay=0.001)
    with pytest.raises(APIConnectionError) as info:
        await client.complete(MESSAGES, "m")
    assert not isinstance(info.value, APITimeoutError)
    assert "http://127.0.0.1:9/v1" in str(info.value) and info.value.attempts == 3
    assert client.stats.connection_errors == 3


async def test_concurrency_cap_is_never_exceeded(sim_factory) -> None:
    sim = sim_factory(latency_ms=30)
    client = _client(sim, max_concurrent_requests=5)
    await _many(client, 40)
    assert sim.stats()["max_inflight"] == 5


async def test_backoff_does_not_hold_a_slot(sim_factory) -> None:
    # Every request fails once with a long server-side wait; with one slot, a sleeping retry holding it
    # would serialise everything. The gate must show nobody in flight while they back off.
    sim = sim_factory(p500=0.5, seed=11, latency_ms=5)
    client = _client(sim, max_concurrent_requests=1, max_retries=20, base_delay=0.05, max_delay=0.05)
    seen_in_flight: list[int] = []

    async def watch() -> None:
        while True:
            gate = client.gate
            if gate is not None:
                seen_in_flight.append(gate.in_flight)
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    await _many(client, 10)
    watcher.cancel()
    assert max(seen_in_flight) <= 1 and sim.stats()["max_inflight"] == 1
    assert client.stats.retries == sim.stats()["r500"] > 0


async def test_top_k_n_stop_and_seed_reach_the_server(sim) -> None:
    client = _client(sim)
    config = GenerationConfig(top_k=17, n=3, stop=["zzz"], seed=99, max_tokens=40)
    completion = await client.complete(MESSAGES, "sim-model", config)
    body = _requests_seen(sim, 1)[-1]
    assert body["top_k"] == 17 and body["n"] == 3 and body["stop"] == ["zzz"] and body["seed"] == 99
    assert len(completion.texts) == 3 and len(set(completion.texts)) == 3


async def test_stop_cuts_the_text(sim) -> None:
    client = _client(sim)
    full = (await client.complete(MESSAGES, "sim-model", GenerationConfig(seed=4))).texts[0]
    word = full.split()[5]
    cut = (await client.complete(MESSAGES, "sim-model", GenerationConfig(seed=4, stop=word))).texts[0]
    assert word not in cut and full.startswith(cut)


async def test_stream_assembles_the_same_text_and_usage(sim) -> None:
    client = _client(sim)
    plain = await client.complete(MESSAGES, "sim-model", GenerationConfig(seed=8, n=2))
    streamed = await client.complete(MESSAGES, "sim-model", GenerationConfig(seed=8, n=2, stream=True))
    assert streamed.texts == plain.texts and streamed.finish_reasons == plain.finish_reasons
    assert streamed.completion_tokens == plain.completion_tokens > 0


async def test_same_seed_same_text_other_seed_other_text(sim) -> None:
    client = _client(sim)
    first, again, other = [
        (await client.complete(MESSAGES, "sim-model", GenerationConfig(seed=s, temperature=0.7))).texts[0]
        for s in (1, 1, 2)
    ]
    assert first == again != other


def test_pickles_by_settings_and_works_under_repeated_asyncio_run(sim) -> None:
    client = _client(sim)
    copy = pickle.loads(pickle.dumps(client))
    assert copy.settings == client.settings and copy.stats == ClientStats()
    for _ in range(2):  # a new event loop each time: the session must be rebuilt, not reused
        assert asyncio.run(copy.query_model(messages=MESSAGES, model="sim-model"))
    assert copy.stats.successes == 2


def test_key_from_env_is_not_pickled(sim, monkeypatch) -> None:
    monkeypatch.setenv("SDG_PICKLE_KEY", "sk-do-not-ship")
    client = AsyncOpenAIClient(base_url=sim.base_url, api_key_env="SDG_PICKLE_KEY")
    assert b"sk-do-not-ship" not in pickle.dumps(client)
    assert "sk-do-not-ship" not in repr(client) + repr(client.settings)


def test_stats_add_up() -> None:
    a = ClientStats(requests=2, status_429=1, latencies_s=[0.1])
    a.other_statuses[500] += 1
    b = ClientStats(requests=3, status_429=4, latencies_s=[0.3])
    b.other_statuses[500] += 2
    total = a + b
    assert (total.requests, total.status_429, total.other_statuses[500]) == (5, 5, 3)
    assert sorted(total.latencies_s) == [0.1, 0.3]


def test_sync_client_has_the_same_api_and_rules(sim_factory) -> None:
    sim = sim_factory(p429=0.3, seed=9)
    with OpenAIClient(base_url=sim.base_url, api_key="x", base_delay=0.001, max_retries=10) as client:
        texts = [client.query_model(messages=MESSAGES, model="sim-model") for _ in range(10)]
        assert all(texts)
        assert client.stats.status_429 == sim.stats()["r429"]
        copy = pickle.loads(pickle.dumps(client))
        assert copy.complete(MESSAGES, "sim-model").texts


def test_bad_constructor_arguments_fail_clearly() -> None:
    with pytest.raises(ValueError, match="base_url"):
        AsyncOpenAIClient(base_url="localhost:8000")
    with pytest.raises(ValueError, match="max_concurrent_requests"):
        AsyncOpenAIClient(base_url="http://h/v1", max_concurrent_requests=0)
    with pytest.raises(TypeError, match="unknown arguments"):
        AsyncOpenAIClient(base_url="http://h/v1", http_client=object())


async def test_list_models_and_its_errors(sim_factory) -> None:
    sim = sim_factory(models=("a-model", "b-model"), api_key="k")
    assert await _client(sim, api_key="k").list_models() == ["a-model", "b-model"]
    with pytest.raises(AuthenticationError):
        await _client(sim, api_key="wrong").list_models()
