"""From a typed RunConfig to live objects: validation, the key, the endpoint, the client and the stage.

Everything here fails with `ConfigError` (one line: what is wrong, how to fix it) before any request.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from sdg.client import (
    APIConnectionError,
    AsyncOpenAIClient,
    AuthenticationError,
    GenerationConfig,
    LLMClientError,
    PermissionDeniedError,
)
from sdg.client.settings import ClientSettings
from sdg.config import ClientConfig, ConfigError, RunConfig
from sdg.endpoints.process import ServerProcess, sim_command
from sdg.output import EXPORT_FORMATS
from sdg.stages.base import GenerationStage
from sdg.stages.factory import build_stages
from sdg.stages.filters import FilterStage

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Stands in for the URL of an endpoint the run has yet to start.
NOT_STARTED_URL = "http://127.0.0.1:0/v1"

__all__ = [
    "build_client",
    "build_stage",
    "endpoint_server",
    "fingerprint",
    "generation_config",
    "preflight",
    "resolve_api_key",
    "stage_options",
    "validate",
]


def generation_config(cfg: RunConfig) -> GenerationConfig:
    try:
        return GenerationConfig(**asdict(cfg.generation))
    except ValueError as exc:
        raise ConfigError(str(exc).replace("GenerationConfig.", "generation.")) from None


SECRET_HEADER = re.compile(r"authorization|api[-_]?key|token|secret|password|cookie", re.IGNORECASE)


def check_client(client: ClientConfig, where: str = "client") -> None:
    """What the client cannot check itself; its own ranges are checked when it is built (`build_client`)."""
    if client.kind not in ("remote", "sim", "local"):
        raise ConfigError(f"client.kind={client.kind!r} must be remote, sim or local")
    secret_like = [name for name in client.default_headers or {} if SECRET_HEADER.search(str(name))]
    if secret_like:
        raise ConfigError(
            f"{where}.default_headers.{secret_like[0]} looks like a credential and would be saved in the run folder "
            "and MLflow: keep keys in the environment and name the variable with client.api_key_env=NAME "
            "(sent as Authorization: Bearer)"
        )
    if client.kind == "remote" and not client.base_url:
        raise ConfigError("client.base_url is not set: give the endpoint's API root, e.g. http://host:8000/v1")


def validate(cfg: RunConfig) -> tuple[GenerationConfig, AsyncOpenAIClient]:
    """Check what types cannot: ranges, placeholders, formats.

    Returns the generation config and a client built from `cfg.client` (which checks its own settings),
    pointed at the configured URL or, for an endpoint the run starts itself, a placeholder until it is up.
    """
    check_client(cfg.client)
    client = build_client(cfg.client, cfg.client.base_url or NOT_STARTED_URL)
    if not cfg.endpoint.model:
        raise ConfigError("endpoint.model is empty: name the model to query, e.g. endpoint.model=<model id>")
    config = generation_config(cfg)
    workers = cfg.ray.num_workers
    if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ConfigError(f"ray.num_workers={workers} must be auto, 0 (in this process, without Ray) or >= 1")
    if not 0.0 <= cfg.output.max_failed_share <= 1.0:
        raise ConfigError(f"output.max_failed_share={cfg.output.max_failed_share} must be between 0 and 1")
    unknown = [f for f in cfg.output.formats if f not in EXPORT_FORMATS]
    if unknown:
        raise ConfigError(f"output.formats has {unknown}: choose from {list(EXPORT_FORMATS)}")
    return config, client


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


def endpoint_server(client: ClientConfig, run_dir: Path) -> ServerProcess | None:
    """The server the run starts itself for `sim` and `local` (not yet started); None for a remote endpoint."""
    if client.kind == "sim":
        return ServerProcess(sim_command(asdict(client.sim)), "simulated", log_path=run_dir / "sim.log")
    if client.kind == "local":
        from sdg.endpoints.local import local_server

        return local_server(client.local, run_dir / "llama_server.log")
    return None


def build_client(client: ClientConfig, base_url: str) -> AsyncOpenAIClient:
    """A client that reads its key from `client.api_key_env` in whichever process sends.

    Every `ClientSettings` option of `client` is passed on (the schema is derived from them); the client
    checks its own settings, and a bad one becomes a ConfigError naming the `client.` key.
    """
    options = {name: getattr(client, name) for name in ClientSettings.names() if name not in ("api_key", "base_url")}
    for name in ("default_headers", "default_query"):
        if options[name] is not None:
            options[name] = {str(k): str(v) for k, v in dict(options[name]).items()}
    try:
        return AsyncOpenAIClient(api_key=None, base_url=base_url, **options)
    except ValueError as exc:
        raise ConfigError(f"client.{exc}") from None


def stage_options(cfg: RunConfig) -> dict[str, Any]:
    """The `stage` group as a plain mapping (OmegaConf containers resolved)."""
    stage = cfg.stage
    if isinstance(stage, DictConfig):
        return OmegaConf.to_container(stage, resolve=True)  # type: ignore[return-value]
    return dict(stage)


def build_stage(
    cfg: RunConfig, client: AsyncOpenAIClient, config: GenerationConfig, base_dir: Path
) -> tuple[GenerationStage, list[FilterStage]]:
    """The generation stage and filters of `cfg.stage`; relative input paths are taken from `base_dir`."""
    options = stage_options(cfg)
    source = options.get("input")
    if isinstance(source, dict) and source.get("path") and not Path(source["path"]).is_absolute():
        # Relative to where the command runs; the project's own sample data also from the project root.
        here, project = base_dir / source["path"], PROJECT_ROOT / source["path"]
        source["path"] = str(here if here.exists() or not project.exists() else project)
    try:
        return build_stages(
            options,
            client=client,
            model_name=cfg.endpoint.model,
            generation_config=config,
            base_dir=base_dir,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


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


def fingerprint(cfg: RunConfig, stage: GenerationStage) -> str:
    """What determines the output (stage options and input, model, generation, seed), not how fast it is made."""
    determined = {
        "stage": stage_options(cfg),
        "input": _input_digest(getattr(stage, "input_path", None)),
        "model": cfg.endpoint.model,
        "generation": asdict(cfg.generation),
        "seed": cfg.seed,
    }
    return hashlib.sha256(json.dumps(determined, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _input_digest(path: Path | None) -> str | None:
    """A digest of an input file or save_to_disk folder, so a resume never mixes two inputs."""
    if path is None:
        return None
    digest = hashlib.sha256()
    for file in sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file()):
        digest.update(file.name.encode())
        with open(file, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
