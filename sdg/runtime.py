"""From a typed RunConfig to live objects: validation, the key, the endpoint, the client and the stage.

Everything here fails with `ConfigError` (one line: what is wrong, how to fix it) before any request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from sdg.client import (
    APIConnectionError,
    AsyncOpenAIClient,
    AuthenticationError,
    GenerationConfig,
    LLMClientError,
    PermissionDeniedError,
)
from sdg.client.openai_client import validate_base_url
from sdg.config import ClientConfig, ConfigError, RunConfig
from sdg.endpoints.process import ServerProcess, sim_command
from sdg.output import EXPORT_FORMATS
from sdg.stages import QAMultilingualSyntheticStage
from sdg.stages.base import GenerationStage

__all__ = [
    "build_client",
    "build_stage",
    "fingerprint",
    "generation_config",
    "preflight",
    "resolve_api_key",
    "start_endpoint",
    "validate",
]


def generation_config(cfg: RunConfig) -> GenerationConfig:
    try:
        return GenerationConfig(**asdict(cfg.generation))
    except ValueError as exc:
        raise ConfigError(str(exc).replace("GenerationConfig.", "generation.")) from None


def _check_client(client: ClientConfig) -> None:
    if client.kind not in ("remote", "sim", "local"):
        raise ConfigError(f"client.kind={client.kind!r} must be remote, sim or local")
    if client.max_concurrent_requests < 1:
        raise ConfigError(
            f"client.max_concurrent_requests={client.max_concurrent_requests} must be >= 1 "
            "(it is how many requests may be in flight at once)"
        )
    if client.max_retries < 0:
        raise ConfigError(f"client.max_retries={client.max_retries} must be >= 0")
    if client.timeout <= 0:
        raise ConfigError(f"client.timeout={client.timeout} must be > 0 seconds")
    if client.base_delay < 0 or client.max_delay < 0:
        raise ConfigError("client.base_delay and client.max_delay must be >= 0 seconds")
    if client.kind == "remote":
        if not client.base_url:
            raise ConfigError("client.base_url is not set: give the endpoint's API root, e.g. http://host:8000/v1")
        try:
            validate_base_url(client.base_url)
        except ValueError as exc:
            raise ConfigError(f"client.{exc}") from None


def validate(cfg: RunConfig) -> GenerationConfig:
    """Check what types cannot: ranges, placeholders, formats. Returns the generation config."""
    _check_client(cfg.client)
    if not cfg.endpoint.model:
        raise ConfigError("endpoint.model is empty: name the model to query, e.g. endpoint.model=<model id>")
    config = generation_config(cfg)
    stage = cfg.stage
    if stage.num_samples < 0:
        raise ConfigError(f"stage.num_samples={stage.num_samples} must be >= 0")
    if "{language}" not in stage.prompt:
        raise ConfigError("stage.prompt must contain the placeholder {language}, e.g. 'A Q&A pair in {language}.'")
    if not stage.languages or not all(str(lang).strip() for lang in stage.languages):
        raise ConfigError("stage.languages is empty: give at least one, e.g. 'stage.languages=[English,French]'")
    if cfg.ray.num_workers < 1:
        raise ConfigError(f"ray.num_workers={cfg.ray.num_workers} must be >= 1")
    if not 0.0 <= cfg.output.max_failed_share <= 1.0:
        raise ConfigError(f"output.max_failed_share={cfg.output.max_failed_share} must be between 0 and 1")
    unknown = [f for f in cfg.output.formats if f not in EXPORT_FORMATS]
    if unknown:
        raise ConfigError(f"output.formats has {unknown}: choose from {list(EXPORT_FORMATS)}")
    return config


def resolve_api_key(client: ClientConfig) -> dict[str, str]:
    """{variable name: key} for the workers; a missing required key is a ConfigError naming the variable."""
    name = client.api_key_env
    if not name:
        if client.api_key_required:
            raise ConfigError("client.api_key_env is empty: name the environment variable that holds the API key")
        return {}
    value = os.environ.get(name)
    if not value:
        if client.api_key_required:
            raise ConfigError(
                f"the API key variable {name} is not set: export {name}=<your key> "
                f"(or point client.api_key_env at the variable that holds it)"
            )
        return {}
    return {name: value}


@contextlib.contextmanager
def start_endpoint(client: ClientConfig, run_dir: Path) -> Iterator[str]:
    """The base URL to use; for `sim` and `local` the server is started here and stopped on exit."""
    if client.kind == "remote":
        yield validate_base_url(client.base_url or "")
        return
    if client.kind == "sim":
        server = ServerProcess(sim_command(asdict(client.sim)), "simulated", log_path=run_dir / "sim.log")
    else:
        from sdg.endpoints.local import local_server

        server = local_server(client.local, run_dir / "llama_server.log")
    with server as base_url:
        yield base_url


def build_client(client: ClientConfig, base_url: str) -> AsyncOpenAIClient:
    """A client that reads its key from `client.api_key_env` in whichever process sends."""
    return AsyncOpenAIClient(
        api_key=None,
        base_url=base_url,
        max_concurrent_requests=client.max_concurrent_requests,
        max_retries=client.max_retries,
        base_delay=client.base_delay,
        max_delay=client.max_delay,
        timeout=client.timeout,
        api_key_env=client.api_key_env,
    )


def build_stage(cfg: RunConfig, client: AsyncOpenAIClient, config: GenerationConfig) -> GenerationStage:
    try:
        return QAMultilingualSyntheticStage(
            prompt=cfg.stage.prompt,
            languages=list(cfg.stage.languages),
            client=client,
            model_name=cfg.endpoint.model,
            num_samples=cfg.stage.num_samples,
            generation_config=config,
            system_prompt=cfg.stage.system_prompt,
        )
    except ValueError as exc:
        raise ConfigError(f"stage: {exc}") from None


def preflight(client: AsyncOpenAIClient, model: str) -> str | None:
    """Ask the endpoint for its models before starting Ray: a wrong URL or key fails in a second, not per sample.

    Raises `LLMClientError` for an unreachable endpoint (after the client's retries) or a refused key. An
    endpoint without GET /models (404 or the like) passes. Returns a warning when the model is not listed:
    only a warning, as some servers (llama.cpp) serve any name they are asked for.
    """
    checker = AsyncOpenAIClient.from_settings(client.settings)  # its own stats: not counted as the run's requests
    try:
        models = asyncio.run(checker.list_models())
    except (AuthenticationError, PermissionDeniedError, APIConnectionError):
        raise
    except LLMClientError:
        return None
    if models and model not in models:
        shown = ", ".join(models[:10]) + (" ..." if len(models) > 10 else "")
        return f"model {model!r} is not among the models {client.base_url} lists ({shown})"
    return None


def fingerprint(cfg: RunConfig) -> str:
    """What determines the output (stage, model, generation, seed), not how fast it is made."""
    determined = {
        "stage": asdict(cfg.stage),
        "model": cfg.endpoint.model,
        "generation": asdict(cfg.generation),
        "seed": cfg.seed,
    }
    return hashlib.sha256(json.dumps(determined, sort_keys=True, default=str).encode()).hexdigest()[:16]
