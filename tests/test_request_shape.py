"""What the client sends: the request shaped from GenerationConfig and the client's settings, seen by a server.

The replay server (tests/replay.py) answers with a recorded OpenAI completion and keeps every request it got;
the proxy test goes through a real forward proxy process (proxy.py, which adds `Via: 1.1 proxy.py ...`).
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import pytest

from sdg.client import AsyncOpenAIClient, GenerationConfig
from tests.replay import replaying

MESSAGES = [{"role": "user", "content": "hi"}]


async def _sent(config: GenerationConfig, **client_options) -> tuple[dict, dict[str, str], str]:
    """(body, headers, query string) of the one request a client sent with these options."""
    with replaying("openai_chat_completion") as server:
        client = AsyncOpenAIClient(base_url=server.base_url, api_key="k", **client_options)
        await client.complete(MESSAGES, "m", config)
        await client.aclose()
        _, path, headers, body = server.requests[-1]
    return json.loads(body), headers, path


async def test_nemo_defaults_are_sent_as_nemo_sends_them() -> None:
    body, _, _ = await _sent(GenerationConfig())
    expected = {"max_tokens": 2048, "temperature": 0.0, "top_p": 0.95, "n": 1, "seed": 0}
    assert body == {"model": "m", "messages": MESSAGES, **expected}


async def test_a_field_set_to_none_is_not_sent() -> None:
    body, _, _ = await _sent(GenerationConfig(temperature=None, top_p=None, n=None, seed=None, max_tokens=None))
    assert body == {"model": "m", "messages": MESSAGES}


async def test_reasoning_model_shape_max_completion_tokens_replaces_max_tokens() -> None:
    body, _, _ = await _sent(GenerationConfig(temperature=None, top_p=None, max_completion_tokens=4096))
    assert body["max_completion_tokens"] == 4096
    assert "max_tokens" not in body and "temperature" not in body and "top_p" not in body


async def test_extra_body_top_k_and_logprobs_reach_the_server() -> None:
    extra = {"chat_template_kwargs": {"enable_thinking": False}, "min_p": 0.05, "repetition_penalty": 1.1}
    body, _, _ = await _sent(GenerationConfig(top_k=40, logprobs=True, top_logprobs=2, extra_body=extra))
    assert body["top_k"] == 40 and body["logprobs"] is True and body["top_logprobs"] == 2
    assert {key: body[key] for key in extra} == extra


def test_top_logprobs_without_logprobs_is_refused_before_sending() -> None:
    with pytest.raises(ValueError, match="top_logprobs needs logprobs=True"):
        GenerationConfig(top_logprobs=3)


async def test_headers_query_organization_and_project_reach_the_server(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj_env")
    _, headers, path = await _sent(
        GenerationConfig(),
        default_headers={"api-key": "azure-style", "X-Team": "sdg"},
        default_query={"api-version": "preview"},
        organization="org_1",
    )
    assert headers["api-key"] == "azure-style" and headers["X-Team"] == "sdg"
    assert headers["OpenAI-Organization"] == "org_1"
    assert headers["OpenAI-Project"] == "proj_env"  # read from the environment, as the openai SDK does
    assert path.endswith("/chat/completions")


async def test_default_query_is_sent_on_every_request() -> None:
    with replaying("openai_chat_completion") as server:
        client = AsyncOpenAIClient(base_url=server.base_url, api_key="k", default_query={"api-version": "preview"})
        await client.complete(MESSAGES, "m")
        await client.aclose()
        assert server.query_strings[-1] == "api-version=preview"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def forward_proxy() -> Iterator[str]:
    """A real HTTP forward proxy (proxy.py) on 127.0.0.1; it marks what it forwards with a Via header."""
    port = _free_port()
    command = [sys.executable, "-m", "proxy", "--hostname", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--num-workers", "1", "--num-acceptors", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.fail("proxy.py did not start")
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


@pytest.mark.parametrize(
    ("no_proxy", "trust_env", "proxied"),
    [(None, True, True), ("127.0.0.1", True, False), (None, False, False)],
)
async def test_http_proxy_and_no_proxy_from_the_environment(
    forward_proxy: str, monkeypatch, no_proxy: str | None, trust_env: bool, proxied: bool
) -> None:
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, forward_proxy)
    for name in ("NO_PROXY", "no_proxy"):
        if no_proxy is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, no_proxy)
    _, headers, _ = await _sent(GenerationConfig(), trust_env=trust_env)
    assert ("proxy.py" in headers.get("Via", "")) is proxied


def _composed(*overrides: str):
    """The run object Hydra composes from conf/ with these command-line overrides (no run started)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from sdg.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(Path(__file__).parents[1] / "conf"), version_base=None):
        return OmegaConf.to_object(compose("config", overrides=["client=openai", *overrides]))


def test_the_request_is_shaped_from_the_command_line() -> None:
    from sdg.runtime import build_client, generation_config

    cfg = _composed(
        "generation.top_p=null",
        "generation.temperature=null",
        "generation.max_completion_tokens=512",
        "generation.extra_body={min_p: 0.05, chat_template_kwargs: {enable_thinking: false}}",
        "client.default_headers={X-Team: sdg}",
        "client.organization=org_1",
        "client.connect_timeout=3",
        "client.trust_env=false",
    )
    body = generation_config(cfg).request_body()
    assert "top_p" not in body and "temperature" not in body and "max_tokens" not in body
    assert body["max_completion_tokens"] == 512
    assert body["min_p"] == 0.05 and body["chat_template_kwargs"] == {"enable_thinking": False}
    settings = build_client(cfg.client, "http://127.0.0.1:1/v1").settings
    assert settings.default_headers == {"X-Team": "sdg"} and settings.organization == "org_1"
    assert settings.connect_timeout == 3.0 and settings.trust_env is False


def test_every_client_setting_is_a_config_key_and_checked_by_the_client() -> None:
    from sdg.client.settings import ClientSettings
    from sdg.config import ClientConfig, ConfigError
    from sdg.runtime import build_client

    keys = {f.name for f in fields(ClientConfig)}
    assert set(ClientSettings.names()) - {"api_key"} <= keys and "api_key" not in keys
    with pytest.raises(ConfigError, match=r"^client\.connect_timeout=0\.0 must be > 0 seconds"):
        build_client(_composed("client.connect_timeout=0").client, "http://127.0.0.1:1/v1")


def test_a_credential_in_the_config_headers_is_refused() -> None:
    from sdg.config import ConfigError
    from sdg.runtime import validate

    with pytest.raises(ConfigError, match=r"client\.default_headers\.api-key looks like a credential"):
        validate(_composed("client.default_headers={api-key: sk-planted-123}", "client.api_key_required=false"))


async def test_tls_checks_a_ca_bundle_and_verify_false(tmp_path) -> None:
    """An HTTPS endpoint with a private CA (a corporate proxy's): refused by default, trusted via ca_bundle."""
    import trustme

    from sdg.client import APIConnectionError

    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    bundle = tmp_path / "corporate-ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    with replaying("openai_chat_completion", ssl_context=server_context) as server:
        options = {"base_url": server.base_url, "api_key": "k", "max_retries": 0}
        with pytest.raises(APIConnectionError, match="certificate"):
            await AsyncOpenAIClient(**options).complete(MESSAGES, "m")
        for extra in ({"ca_bundle": str(bundle)}, {"verify": False}):
            client = AsyncOpenAIClient(**options, **extra)
            assert (await client.complete(MESSAGES, "m")).texts
            await client.aclose()


def test_a_missing_ca_bundle_is_named() -> None:
    with pytest.raises(ValueError, match=r"ca_bundle='/no/such\.pem' is not a file"):
        AsyncOpenAIClient(base_url="https://h/v1", ca_bundle="/no/such.pem")


async def test_a_streamed_answer_lasts_as_long_as_it_keeps_sending(sim_factory) -> None:
    """timeout bounds silence, not the whole answer: 2 s of streaming with a 1 s timeout completes."""
    sim = sim_factory(tokens_per_s=20)
    client = AsyncOpenAIClient(base_url=sim.base_url, api_key="k", timeout=1.0, max_retries=0)
    completion = await client.complete(MESSAGES, "m", GenerationConfig(max_tokens=40, stream=True))
    await client.aclose()
    assert completion.completion_tokens == 40 and completion.latency_s > 1.0
