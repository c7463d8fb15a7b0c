"""The typed run object: dataclasses registered in Hydra's ConfigStore, so a wrong type fails at compose time.

Hydra checks types and unknown keys; `validate` checks what types cannot say (ranges, placeholders) and
raises `ConfigError` with one line that names the key and how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from sdg.endpoints.sim.options import SimServerConfig  # SimOptions minus host/port/api_key: declared once

__all__ = [
    "ClientConfig",
    "ConfigError",
    "EndpointConfig",
    "GenerationSection",
    "LocalServerConfig",
    "MlflowConfig",
    "OutputConfig",
    "RayConfig",
    "RunConfig",
    "SimServerConfig",
    "register_configs",
]


class ConfigError(ValueError):
    """A user mistake in the run configuration; printed as one line, exit status 2."""


@dataclass
class LocalServerConfig:
    """The embedded llama.cpp server, used when `client.kind=local`."""

    n_ctx: int = 2048
    n_threads: int | None = None  # None: the machine's core count
    startup_timeout_s: float = 120.0


@dataclass
class ClientConfig:
    """Who we talk to and how. `api_key_env` is the *name* of the variable holding the key, never the key."""

    kind: str = "remote"  # remote: an existing endpoint; sim / local: the run starts the endpoint itself
    base_url: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    api_key_required: bool = True
    default_model: str | None = None  # what `endpoint.model` is unless set
    max_concurrent_requests: int = 5
    max_retries: int = 3
    base_delay: float = 1.0
    max_delay: float = 60.0
    timeout: float = 120.0
    rpm: float | None = None  # requests per minute for the whole run (None: learn from the endpoint)
    tpm: float | None = None  # tokens per minute for the whole run
    adaptive_concurrency: bool = True  # cut on 429, grow back after clean windows
    sim: SimServerConfig = field(default_factory=SimServerConfig)
    local: LocalServerConfig = field(default_factory=LocalServerConfig)


@dataclass
class EndpointConfig:
    """The model served at the endpoint, and what is known of its limits (informational, logged)."""

    model: str = MISSING
    context_length: int | None = None
    rpm: float | None = None
    tpm: float | None = None


@dataclass
class GenerationSection:
    """GenerationConfig's fields (`sdg.client.GenerationConfig`); `seed` is the base of per-sample seeds."""

    max_tokens: int = 2048
    temperature: float = 0.0
    top_p: float = 0.95
    top_k: int | None = None
    stop: Any = None
    stream: bool = False
    n: int = 1


@dataclass
class RayConfig:
    """`address`: null starts a fresh local Ray; "auto" or "ray://host:port" joins a cluster.

    `num_workers`: "auto" (in this process when Ray cannot help: an endpoint serving one request at a time, or
    few samples; on Ray otherwise), 0 (in this process, without Ray) or a number of Ray workers.
    """

    address: str | None = None
    num_workers: Any = "auto"  # "auto" or an int >= 0 (OmegaConf has no Union of int and str)


@dataclass
class MlflowConfig:
    """`tracking_uri` null means sqlite at outputs/mlflow.db under the launch directory."""

    enabled: bool = True
    tracking_uri: str | None = None
    experiment: str = "sdg"


@dataclass
class OutputConfig:
    """The dataset is always saved with `save_to_disk`; `formats` adds parquet / jsonl exports."""

    formats: list[str] = field(default_factory=list)
    push_to_hub: str | None = None
    max_failed_share: float = 0.1
    progress: bool = True


@dataclass
class RunConfig:
    """One run, composed by Hydra from the groups client, endpoint, generation and stage."""

    seed: int = 0
    name: str = "sdg"
    client: ClientConfig = field(default_factory=ClientConfig)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    generation: GenerationSection = field(default_factory=GenerationSection)
    # Each stage has its own options (sdg.stages.factory checks them, naming the key at fault).
    stage: Any = MISSING
    ray: RayConfig = field(default_factory=RayConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    resume: Any = False  # false, true (latest run with the same fingerprint) or a run directory


def register_configs() -> None:
    """Make the schemas known to Hydra; conf/config.yaml names `run_schema` first in its defaults."""
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
