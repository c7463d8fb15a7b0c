"""Contract tests: answers the real servers document (OpenAI, vLLM, llama.cpp, NVIDIA NIM), read by sdg over HTTP.

Each fixture in `tests/fixtures/contract/` names its source. A success answer is replayed on 127.0.0.1 and
read by sdg's real `AsyncOpenAIClient`; the same bytes are parsed by the openai SDK's own types
(`ChatCompletion`, `ChatCompletionChunk`) as the oracle, and both must agree on text, reasoning, refusal,
finish reason, usage, served model and logprobs. An answer without content must fail as `empty_answer`
(carrying what was parsed). An error answer must give the typed error with the server's own reason, never
the key.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from sdg.client import AsyncOpenAIClient, GenerationConfig
from sdg.client.base import Completion
from sdg.client.errors import APIStatusError, EmptyAnswerError
from tests.replay import fixture_names, load_fixture, replaying

MESSAGES = [{"role": "user", "content": "Say hello."}]
KEY = "sk-contract-test-key-0123456789"
SUCCESS = [name for name in fixture_names() if load_fixture(name)["status"] == 200]
ERRORS = [name for name in fixture_names() if load_fixture(name)["status"] >= 400]
KINDS = {400: "bad_request", 401: "auth", 403: "permission", 404: "not_found", 422: "bad_request"}


def _reasoning(extra: dict[str, Any] | None) -> str | None:
    extra = extra or {}
    return extra.get("reasoning_content") or extra.get("reasoning") or None


def oracle(fixture: dict[str, Any]) -> dict[str, Any]:
    """What the openai SDK's types read from the recorded answer, as plain values."""
    if "sse" not in fixture:
        answer = ChatCompletion.model_validate(fixture["body"])
        choices = sorted(answer.choices, key=lambda c: c.index)
        return {
            "texts": [c.message.content for c in choices],
            "reasonings": [_reasoning(c.message.model_extra) for c in choices],
            "refusals": [c.message.refusal for c in choices],
            "finish_reasons": [c.finish_reason for c in choices],
            "logprobs": [c.logprobs.model_dump(mode="json") if c.logprobs else None for c in choices],
            "tool_calls": [bool(c.message.tool_calls) for c in choices],
            "prompt_tokens": answer.usage.prompt_tokens if answer.usage else 0,
            "completion_tokens": answer.usage.completion_tokens if answer.usage else 0,
            "model": answer.model,
        }
    chunks = [
        ChatCompletionChunk.model_validate(json.loads(event[len("data:") :]))
        for event in fixture["sse"]
        if event.startswith("data:") and event[len("data:") :].strip() != "[DONE]"
    ]
    per: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for c in chunk.choices:
            into = per.setdefault(c.index, {"text": [], "reasoning": [], "refusal": [], "finish": None, "lp": None})
            into["text"] += [c.delta.content] if c.delta.content else []
            into["reasoning"] += [r] if (r := _reasoning(c.delta.model_extra)) else []
            into["refusal"] += [c.delta.refusal] if c.delta.refusal else []
            into["finish"] = c.finish_reason or into["finish"]
            if c.logprobs is not None:
                lp = into["lp"] if into["lp"] is not None else {"content": [], "refusal": []}
                lp["content"] += [t.model_dump(mode="json") for t in c.logprobs.content or []]
                lp["refusal"] += [t.model_dump(mode="json") for t in c.logprobs.refusal or []]
                into["lp"] = lp
    usage = next((chunk.usage for chunk in reversed(chunks) if chunk.usage), None)
    order = sorted(per)
    return {
        "texts": ["".join(per[i]["text"]) or None for i in order],
        "reasonings": ["".join(per[i]["reasoning"]) or None for i in order],
        "refusals": ["".join(per[i]["refusal"]) or None for i in order],
        "finish_reasons": [per[i]["finish"] for i in order],
        "logprobs": [per[i]["lp"] for i in order],
        "tool_calls": [False for _ in order],
        "prompt_tokens": usage.prompt_tokens if usage else 0,
        "completion_tokens": usage.completion_tokens if usage else 0,
        "model": chunks[-1].model,
    }


def _client(base_url: str, **kwargs: Any) -> AsyncOpenAIClient:
    kwargs.setdefault("api_key", KEY)
    return AsyncOpenAIClient(base_url=base_url, api_key_env=None, max_retries=2, base_delay=0.001, **kwargs)


def sdg_answer(fixture: dict[str, Any], name: str) -> tuple[Completion, EmptyAnswerError | None, list]:
    """sdg's reading of the replayed answer: the completion (also when it failed as empty) and the requests sent."""

    async def ask(base_url: str) -> tuple[Completion, EmptyAnswerError | None]:
        async with _client(base_url) as client:
            config = GenerationConfig(max_tokens=64, stream="sse" in fixture)
            try:
                return await client.complete(MESSAGES, "asked-model", config), None
            except EmptyAnswerError as error:
                assert isinstance(error.completion, Completion)
                assert error.attempts == 1, "an empty answer is not asked again"
                return error.completion, error

    with replaying(name) as server:
        completion, error = asyncio.run(ask(server.base_url))
        return completion, error, server.requests


def _lp_tokens(logprobs: Any) -> list[str] | None:
    if not logprobs:
        return None
    return [t["token"] for t in (logprobs.get("content") or []) + (logprobs.get("refusal") or [])]


@pytest.mark.parametrize("name", SUCCESS)
def test_sdg_reads_what_the_openai_types_read(name: str) -> None:
    fixture = load_fixture(name)
    expected = oracle(fixture)
    completion, error, requests = sdg_answer(fixture, name)
    choices = completion.choices
    assert [c.text for c in choices] == expected["texts"]
    assert [c.reasoning for c in choices] == expected["reasonings"]
    assert [c.refusal for c in choices] == expected["refusals"]
    assert [c.finish_reason for c in choices] == expected["finish_reasons"]
    assert [c.tool_calls for c in choices] == expected["tool_calls"]
    assert (completion.prompt_tokens, completion.completion_tokens) == (
        expected["prompt_tokens"],
        expected["completion_tokens"],
    )
    assert completion.served_model == completion.model == expected["model"]
    assert [_lp_tokens(c.logprobs) for c in choices] == [_lp_tokens(lp) for lp in expected["logprobs"]]
    # Texts as before (NeMo Curator's query_model): "" where a choice had no content.
    assert completion.texts == [t or "" for t in expected["texts"]]
    # No content and no refusal in some choice: a typed failure, never a success with empty text.
    empty = any(not (t or "").strip() and not r for t, r in zip(expected["texts"], expected["refusals"], strict=True))
    assert (error is not None) == empty, error
    (method, path, _, sent) = requests[0]
    assert (method, path) == ("POST", "/v1/chat/completions")
    if "sse" in fixture:
        assert json.loads(sent)["stream_options"] == {"include_usage": True}


def test_the_fixtures_cover_every_server_and_shape() -> None:
    fixtures = {name: load_fixture(name) for name in fixture_names()}
    assert {f["server"] for f in fixtures.values()} == {"openai", "vllm", "llama.cpp", "nim"}
    for name, fixture in fixtures.items():
        source = fixture["source"]
        assert source.get("url") or (source.get("repo") and source.get("path") and source.get("commit")), name
    shapes = {
        "stream with a usage chunk": "openai_stream_logprobs_usage",
        "refusal": "openai_refusal",
        "tool calls only": "openai_tool_call_only",
        "streamed reasoning (vLLM)": "vllm_reasoning_stream_chunk",
        "streamed reasoning_content (llama.cpp)": "llamacpp_reasoning_stream",
    }
    assert set(shapes.values()) <= set(SUCCESS)
    assert {fixtures[n]["server"] for n in ERRORS} == {"openai", "vllm", "llama.cpp", "nim"}


def test_empty_answers_say_why() -> None:
    _, error, _ = sdg_answer(load_fixture("openai_tool_call_only"), "openai_tool_call_only")
    assert error is not None and error.kind == "empty_answer" and not error.retryable
    assert "tool calls only" in str(error) and "finish_reason=tool_calls" in str(error)
    _, error, _ = sdg_answer(load_fixture("vllm_reasoning_stream_chunk"), "vllm_reasoning_stream_chunk")
    assert error is not None and "only reasoning and no answer" in str(error)
    assert error.completion.choices[0].reasoning == "is"


def test_a_refusal_is_kept_not_failed() -> None:
    for name in ("openai_refusal", "openai_stream_refusal"):
        completion, error, _ = sdg_answer(load_fixture(name), name)
        assert error is None
        assert completion.choices[0].text is None
        assert completion.choices[0].refusal.startswith("I'm") and "sorry" in completion.choices[0].refusal


@pytest.mark.parametrize("name", ERRORS)
def test_error_answers_carry_the_servers_reason(name: str) -> None:
    fixture = load_fixture(name)
    key = fixture.get("api_key", KEY)

    async def ask(base_url: str) -> None:
        async with _client(base_url, api_key=key) as client:
            await client.complete(MESSAGES, "asked-model", GenerationConfig(max_tokens=8))

    with replaying(name) as server, pytest.raises(APIStatusError) as info:
        asyncio.run(ask(server.base_url))
    error = info.value
    assert error.status_code == fixture["status"]
    assert error.kind == KINDS[fixture["status"]]
    assert fixture["expect_reason"] in str(error)
    assert key not in str(error) and key not in repr(error.__dict__)
    assert len(str(error)) < 600


def test_list_models_errors_carry_the_servers_reason_too() -> None:
    async def ask(base_url: str) -> list[str]:
        async with _client(base_url) as client:
            return await client.list_models()

    with replaying("llamacpp_error_401") as server, pytest.raises(APIStatusError) as info:
        asyncio.run(ask(server.base_url))
    assert "Invalid API Key" in str(info.value) and info.value.kind == "auth"
