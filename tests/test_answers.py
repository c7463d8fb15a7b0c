"""What an answer becomes: typed failures for empty answers and unreadable bodies, and the dataset's columns.

The answers here are built by hand to pin one rule each (they are not recordings; those live in
`tests/fixtures/contract/`). Most go over real HTTP through `tests/replay.py` and sdg's real client.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest

from sdg.client import AsyncOpenAIClient, GenerationConfig
from sdg.client.base import AsyncLLMClient, Choice, Completion
from sdg.client.errors import (
    APIStatusError,
    BadRequestError,
    EmptyAnswerError,
    LLMClientError,
    MalformedResponseError,
    NotJSONResponseError,
    ServerError,
)
from sdg.client.responses import parse_completion, server_reason, status_error
from sdg.stages import QAMultilingualSyntheticStage
from sdg.stages.base import RECORD_SCHEMA
from sdg.stages.structured import StructuredOutput, validate_json
from tests.replay import replaying

MESSAGES = [{"role": "user", "content": "Q?"}]
KEY = "sk-answers-test-secret-0123456789"
URL = "http://127.0.0.1:1/v1/chat/completions"


def _answer(*choices: dict[str, Any], usage: dict[str, int] | None = None, model: str = "served/model") -> dict:
    body: dict[str, Any] = {"id": "x", "object": "chat.completion", "created": 1, "model": model}
    body["choices"] = [{"index": i, **choice} for i, choice in enumerate(choices)]
    body["usage"] = usage or {"prompt_tokens": 10, "completion_tokens": 192, "total_tokens": 202}
    return body


def _message(content: str | None, finish: str = "stop", **message: Any) -> dict[str, Any]:
    return {"message": {"role": "assistant", "content": content, **message}, "finish_reason": finish}


def _json_answer(body: Any, status: int = 200, content_type: str = "application/json") -> dict[str, Any]:
    return {"status": status, "headers": {"Content-Type": content_type}, "body": body}


def _text_answer(text: str, status: int = 200, content_type: str = "text/html; charset=utf-8") -> dict[str, Any]:
    return {"status": status, "headers": {"Content-Type": content_type}, "body_text": text}


def ask(answer: dict[str, Any], *, stream: bool = False, n: int = 1, key: str = KEY, **kwargs: Any) -> Completion:
    """sdg's real client against a replayed answer (retries allowed, so a retry would show in attempts)."""

    async def run(base_url: str) -> Completion:
        client = AsyncOpenAIClient(base_url=base_url, api_key=key, api_key_env=None, base_delay=0.001, **kwargs)
        async with client:
            return await client.complete(MESSAGES, "asked", GenerationConfig(max_tokens=192, n=n, stream=stream))

    with replaying(answer) as server:
        return asyncio.run(run(server.base_url))


# ------------------------------------------------------------------------------------------ per choice


def test_completion_keeps_text_reasoning_refusal_finish_model_and_logprobs_per_choice() -> None:
    logprobs = {"content": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105], "top_logprobs": []}]}
    body = _answer(
        {**_message("Hi", reasoning_content="think A"), "logprobs": logprobs},
        _message("Yo", finish="length", reasoning="think B"),
        _message(None, refusal="I can't help with that."),
    )
    completion = ask(_json_answer(body), n=3)
    assert completion.choices == [
        Choice("Hi", "stop", reasoning="think A", logprobs=logprobs),
        Choice("Yo", "length", reasoning="think B"),
        Choice(None, "stop", refusal="I can't help with that."),
    ]
    assert completion.served_model == completion.model == "served/model"
    assert completion.texts == ["Hi", "Yo", ""] and completion.finish_reasons == ["stop", "length", "stop"]


def test_answer_without_model_field_has_no_served_model() -> None:
    body = _answer(_message("Hi"))
    del body["model"]
    completion = parse_completion(body, "asked", URL)
    assert completion.served_model is None and completion.model == "asked"


def test_stream_assembles_reasoning_refusal_and_logprobs() -> None:
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, **extra}
        return "data: " + json.dumps({"object": "chat.completion.chunk", "model": "m1", "choices": [choice]})

    token = {"token": "A", "logprob": -1.0, "bytes": [65], "top_logprobs": []}
    events = [
        chunk({"role": "assistant", "reasoning_content": "Let me "}),
        chunk({"reasoning_content": "think."}),
        chunk({"content": "A"}, logprobs={"content": [token], "refusal": None}),
        chunk({"content": "B"}, "stop", logprobs={"content": [token], "refusal": None}),
        "data: " + json.dumps({"model": "m1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9}}),
        "data: [DONE]",
    ]
    completion = ask({"status": 200, "headers": {"Content-Type": "text/event-stream"}, "sse": events}, stream=True)
    (choice,) = completion.choices
    assert (choice.text, choice.reasoning, choice.finish_reason) == ("AB", "Let me think.", "stop")
    assert choice.logprobs == {"content": [token, token], "refusal": None}
    assert (completion.prompt_tokens, completion.completion_tokens, completion.served_model) == (3, 9, "m1")


# ---------------------------------------------------------------------------------------- empty answers


def test_reasoning_that_spends_max_tokens_is_an_empty_answer_not_a_success() -> None:
    body = _answer(_message(None, finish="length", reasoning_content="Hmm, first I should"))
    with pytest.raises(EmptyAnswerError) as info:
        ask(_json_answer(body), max_retries=3)
    error = info.value
    assert error.kind == "empty_answer" and not error.retryable and error.attempts == 1
    assert "spent max_tokens=192 on reasoning" in str(error)  # the client names the request's own limit
    assert "finish_reason=length" in str(error) and "raise generation.max_tokens" in str(error)
    assert error.completion.choices[0].reasoning == "Hmm, first I should"
    with pytest.raises(EmptyAnswerError, match=r"spent max_tokens=192 on reasoning"):
        parse_completion(body, "m", URL, max_tokens=192)


@pytest.mark.parametrize(
    ("choice", "reason"),
    [
        (_message(""), "the endpoint answered 200 with no content (finish_reason=stop)"),
        (_message("  \n"), "the endpoint answered 200 with no content (finish_reason=stop)"),
        (_message(None), "the endpoint answered 200 with no content (finish_reason=stop)"),
        (_message(None, finish="length"), "the answer was cut at"),
        (_message(None, reasoning="only thoughts"), "the model wrote only reasoning and no answer"),
    ],
)
def test_every_kind_of_empty_answer_fails_with_its_reason(choice: dict, reason: str) -> None:
    with pytest.raises(EmptyAnswerError, match=re.escape(reason)):
        parse_completion(_answer(choice), "m", URL)


def test_one_empty_choice_of_n_fails_the_request() -> None:
    body = _answer(_message("fine"), _message(None, finish="length", reasoning="..."))
    with pytest.raises(EmptyAnswerError) as info:
        ask(_json_answer(body), n=2)
    assert "choice 1 of 2 (one empty choice fails all 2)" in str(info.value)
    assert info.value.completion.texts == ["fine", ""]


def test_streamed_reasoning_without_content_is_an_empty_answer() -> None:
    events = [
        'data: {"choices":[{"index":0,"delta":{"reasoning":"hmm"},"finish_reason":null}],"model":"r1"}',
        'data: {"choices":[{"index":0,"delta":{},"finish_reason":"length"}],"model":"r1"}',
        "data: [DONE]",
    ]
    answer = {"status": 200, "headers": {"Content-Type": "text/event-stream"}, "sse": events}
    with pytest.raises(EmptyAnswerError, match="on reasoning and wrote no answer"):
        ask(answer, stream=True)


# ------------------------------------------------------------------------------------- error messages


@pytest.mark.parametrize(
    ("body", "reason", "code"),
    [
        (
            {"error": {"message": "bad top_p", "type": "invalid_request_error", "code": None}},
            "bad top_p",
            "invalid_request_error",
        ),
        (
            {"object": "error", "message": "This model's maximum context length is 4096 tokens.", "code": 400},
            "This model's maximum context length is 4096 tokens.",
            "400",
        ),
        ({"detail": "top_k must be -1 or at least 1, got 0."}, "top_k must be -1 or at least 1, got 0.", None),
        (
            {"detail": [{"loc": ["body", "top_k"], "msg": "Input should be a valid integer", "type": "int_parsing"}]},
            "body.top_k: Input should be a valid integer",
            None,
        ),
        (
            {"type": "urn:nvcf:bad-request", "title": "Bad Request", "status": 400, "detail": "top_k must be >= 0"},
            "Bad Request: top_k must be >= 0",
            "urn:nvcf:bad-request",
        ),
        ({"title": "Bad Request", "status": 400}, "Bad Request", None),
        ({"error": "model not loaded"}, "model not loaded", None),
    ],
)
def test_the_servers_reason_is_read_from_every_body_shape(body: dict, reason: str, code: str | None) -> None:
    assert server_reason(body) == (reason, code)
    error = status_error(400, {}, body, url=URL, model="m", base_url=URL, api_key_env="KEY_VAR")
    assert isinstance(error, BadRequestError) and reason in str(error)


def test_plain_text_and_html_error_bodies_show_their_text() -> None:
    with pytest.raises(ServerError, match=r"HTTP 502 .*: upstream connect error \(text/plain\)"):
        ask(_text_answer("upstream connect error", status=502, content_type="text/plain"), max_retries=0)
    page = "<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>"
    with pytest.raises(ServerError, match=r"502 Bad Gateway \(text/html\)"):
        ask(_text_answer(page, status=502), max_retries=0)


def test_a_long_reason_is_cut_and_the_key_never_shown() -> None:
    echoed = f"Invalid key {KEY}; your request had Authorization: Bearer {KEY} and x-api-key nvapi-abcdefghijklmnop"
    body = {"error": {"message": echoed + " " + "blah " * 200}}
    with pytest.raises(APIStatusError) as info:
        ask(_json_answer(body, status=401))
    message = str(info.value)
    assert KEY not in message and "nvapi-abcdefghijklmnop" not in message
    assert "Invalid key ***" in message and "Bearer ***" in message
    assert len(message) < 300 + 200 and "…" in message
    # A key the user wrote in as text is masked where it stands alone, not inside words.
    with pytest.raises(APIStatusError) as info:
        ask(
            _json_answer({"error": {"message": "Incorrect API key provided: k. Too many tokens."}}, status=401), key="k"
        )
    assert "provided: ***. Too many tokens." in str(info.value)


def test_an_html_page_with_status_200_is_a_typed_error_naming_it() -> None:
    page = "<!DOCTYPE html><html><head><title>Sign in</title></head><body>Please log in</body></html>"
    for stream in (False, True):
        with pytest.raises(NotJSONResponseError) as info:
            ask(_text_answer(page), stream=stream, max_retries=3)
        error = info.value
        assert error.kind == "not_json" and not error.retryable and error.attempts == 1
        assert "text/html" in str(error) and "<!DOCTYPE html><html><head><title>Sign in" in str(error)
    with pytest.raises(NotJSONResponseError, match="with an empty body"):
        ask(_text_answer("", content_type=""), max_retries=0)


def test_a_server_that_ignores_stream_is_read_whole() -> None:
    completion = ask(_json_answer(_answer(_message("whole"))), stream=True)
    assert completion.texts == ["whole"]


# ------------------------------------------------------------------------------------------- rows


class ScriptedClient(AsyncLLMClient):
    """Returns (or raises) what it is given, for stage-level tests without HTTP."""

    def __init__(self, outcome: Completion | LLMClientError) -> None:
        self.outcome = outcome

    async def complete(self, messages, model, generation_config=None) -> Completion:  # type: ignore[override]
        if isinstance(self.outcome, LLMClientError):
            raise self.outcome
        return self.outcome


def _stage(client: AsyncLLMClient) -> QAMultilingualSyntheticStage:
    return QAMultilingualSyntheticStage(
        prompt="Q in {language}", languages=["English"], client=client, model_name="asked", num_samples=1
    )


def _run(outcome: Completion | LLMClientError) -> list[dict]:
    stage = _stage(ScriptedClient(outcome))
    return asyncio.run(stage.run_task(stage.make_task(0, 1)))


def test_error_kind_column_is_the_errors_kind_and_null_on_success() -> None:
    assert "error_kind" in RECORD_SCHEMA.names
    error = BadRequestError("HTTP 400 from u: bad", status_code=400)
    (row,) = _run(error)
    assert row["error_kind"] == "bad_request"
    assert row["error"] == "bad_request: HTTP 400 from u: bad"  # the text column stays as it was
    (row,) = _run(Completion.of(["hi"], ["stop"], "m"))
    assert row["error_kind"] is None and row["error"] is None


def test_rows_carry_reasoning_served_model_refusal_and_logprobs() -> None:
    logprobs = {"content": [{"token": "Hi", "logprob": -0.5, "bytes": [72, 105], "top_logprobs": []}]}
    body = _answer(
        {**_message("Hi", reasoning_content="thinking"), "logprobs": logprobs},
        _message(None, refusal="No."),
        usage={"prompt_tokens": 4, "completion_tokens": 6},
    )

    async def run(base_url: str) -> list[dict]:
        async with AsyncOpenAIClient(base_url=base_url, api_key=KEY, api_key_env=None) as client:
            stage = _stage(client)
            stage.generation_config = GenerationConfig(n=2, max_tokens=16)
            return await stage.run_task(stage.make_task(0, 1))

    with replaying(_json_answer(body)) as server:
        first, second = asyncio.run(run(server.base_url))
    assert {"reasoning", "served_model", "refusal", "logprobs", "error_kind"} <= set(RECORD_SCHEMA.names)
    assert (first["text"], first["reasoning"], first["served_model"], first["model"]) == (
        "Hi",
        "thinking",
        "served/model",
        "asked",
    )
    assert json.loads(first["logprobs"]) == logprobs and first["refusal"] is None
    assert (second["text"], second["refusal"], second["error"], second["logprobs"]) == (None, "No.", None, None)
    assert first["completion_tokens"] + second["completion_tokens"] == 6


def test_an_empty_answer_row_keeps_what_was_spent() -> None:
    spent = Completion(
        [Choice(None, "length", reasoning="so long")], "asked", "served", prompt_tokens=5, completion_tokens=192
    )
    (row,) = _run(EmptyAnswerError("the model spent ...", completion=spent))
    assert row["error_kind"] == "empty_answer" and row["error"].startswith("empty_answer: the model spent")
    assert (row["text"], row["reasoning"], row["finish_reason"], row["served_model"]) == (
        None,
        "so long",
        "length",
        "served",
    )
    assert (row["prompt_tokens"], row["completion_tokens"]) == (5, 192)


def test_an_error_row_and_its_copy_survive_pickling() -> None:
    import pickle

    error = EmptyAnswerError("x", completion=Completion.of([""], ["length"], "m"))
    copy = pickle.loads(pickle.dumps(error))
    assert copy.kind == "empty_answer" and copy.completion.finish_reasons == ["length"]


def test_structured_parse_errors_have_their_kind(tmp_path: Path) -> None:
    from sdg.stages.template import PromptTemplateStage

    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "a"}\n')
    stage = PromptTemplateStage(
        input_path=path,
        user_template="Q: {text}",
        client=ScriptedClient(Completion.of(['{"n": -1}'], ["stop"], "m")),
        model_name="m",
        output_schema={"type": "object", "properties": {"n": {"type": "integer", "minimum": 0}}, "required": ["n"]},
        max_parse_retries=0,
    )
    (row,) = asyncio.run(stage.run_task(stage.make_task(0, 1)))
    assert row["error_kind"] == "parse_error" and "$.n: -1 is less than the minimum of 0" in row["error"]


# ------------------------------------------------------------------------------------ structured output


@pytest.mark.parametrize(
    ("schema", "value", "reason"),
    [
        ({"type": "integer", "minimum": 1}, 0, "$: 0 is less than the minimum of 1"),
        ({"type": "integer", "maximum": 5}, 6, "$: 6 is greater than the maximum of 5"),
        ({"type": "string", "pattern": "^[A-Z]+$"}, "abc", "$: 'abc' does not match '^[A-Z]+$'"),
        ({"type": "string", "minLength": 3}, "ab", "$: 'ab' is too short"),
        ({"enum": ["easy", "hard"]}, "medium", "$: 'medium' is not one of ['easy', 'hard']"),
        (
            {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string", "maxLength": 2}}}},
            {"tags": ["ok", "toolong"]},
            "$.tags[1]: 'toolong' is too long",
        ),
    ],
)
def test_structured_answers_are_checked_against_the_whole_schema(schema: dict, value: Any, reason: str) -> None:
    assert validate_json(value, schema) == reason


def test_structured_output_rejects_answers_breaking_constraints_and_broken_schemas() -> None:
    spec = {
        "type": "object",
        "properties": {"age": {"type": "integer", "minimum": 0, "maximum": 150}, "code": {"type": "string"}},
        "required": ["age", "code"],
    }
    structured = StructuredOutput(spec)
    assert structured.parse('{"age": 30, "code": "x"}') == ({"age": 30, "code": "x"}, None)
    assert structured.parse('{"age": 200, "code": "x"}')[1] == "$.age: 200 is greater than the maximum of 150"
    with pytest.raises(ValueError, match="not a valid JSON schema"):
        StructuredOutput({**spec, "properties": {"age": {"type": "integer", "minimum": "zero"}}, "required": ["age"]})


def test_json_cut_on_the_way_is_retried_not_called_a_login_page() -> None:
    cut = '{"id": "x", "object": "chat.completion", "choices": [{"index": 0, "message": {"content": "Quest'
    with pytest.raises(MalformedResponseError) as info:
        ask(_text_answer(cut, content_type="application/json"), max_retries=2)
    assert not isinstance(info.value, NotJSONResponseError)
    assert info.value.retryable and info.value.attempts == 3 and "not valid JSON" in str(info.value)
