"""The typed run object: dataclasses registered in Hydra's ConfigStore, so a wrong type fails at compose time.

Hydra checks types and unknown keys; `validate` checks what types cannot say (ranges, placeholders) and
raises `ConfigError` with one line that names the key and how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from sdg.client.generation import GenerationConfig
from sdg.client.settings import ClientSettings
from sdg.endpoints.sim.options import SimServerConfig  # SimOptions minus host/port/api_key: declared once
from sdg.schema import fields_of

__all__ = [
    "ClientConfig",
    "ConfigError",
    "EndpointConfig",
    "GenerationSection",
    "JudgeClientConfig",
    "JudgeConfig",
    "JudgeGenerationSection",
    "LocalServerConfig",
    "MlflowConfig",
    "OutputConfig",
    "PriceConfig",
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
class PriceConfig:
    """USD per million tokens (null: not known, no cost computed); prices change: set them for your endpoint."""

    input_per_mtok: float | None = None
    output_per_mtok: float | None = None


@dataclass
class _RunClientFields:
    """What the run adds to a client's own settings: which endpoint it starts, and how to reach it."""

    kind: str = "remote"  # remote: an existing endpoint; sim / local: the run starts the endpoint itself
    base_url: str | None = None  # the run sets it for sim / local
    api_key_required: bool = True
    default_model: str | None = None  # what `endpoint.model` is unless set
    # How the endpoint takes a JSON schema (stages with an output_schema read it): json_schema (OpenAI, vLLM,
    # NIM, llama.cpp's server) or json_object (llama-cpp-python's server, the embedded local model).
    response_format: str = "json_schema"
    default_price: PriceConfig = field(default_factory=PriceConfig)  # what `endpoint.price` is unless set
    sim: SimServerConfig = field(default_factory=SimServerConfig)
    local: LocalServerConfig = field(default_factory=LocalServerConfig)


_RUN_CLIENT_FIELDS = tuple(f.name for f in fields(_RunClientFields))

# Who we talk to and how: every `ClientSettings` option (never `api_key`: `api_key_env` names the variable).
ClientConfig = make_dataclass(
    "ClientConfig",
    fields_of(_RunClientFields) + fields_of(ClientSettings, exclude=("api_key", *_RUN_CLIENT_FIELDS)),
)
ClientConfig.__module__ = __name__
ClientConfig.__doc__ = (
    "Who we talk to and how: `sdg.client.ClientSettings` (minus the key) plus what the run starts itself."
)

# GenerationConfig's fields; its `seed` is not here: request seeds derive from the run's `seed` and the index.
GenerationSection = make_dataclass("GenerationSection", fields_of(GenerationConfig, exclude=("seed",)))
GenerationSection.__module__ = __name__
GenerationSection.__doc__ = "`sdg.client.GenerationConfig`'s fields, but `seed` (the run's `seed` is the base)."


def _inherited(derived: list[tuple[str, Any, Any]]) -> list[tuple[str, Any, Any]]:
    """The same fields, each optional and null by default: null means "as the run's own"."""
    return [(name, kind if kind is Any else kind | None, field(default=None)) for name, kind, _ in derived]


# The judge's client: each field null takes the run's `client.*` value; a `base_url` makes it a remote endpoint.
JudgeClientConfig = make_dataclass(
    "JudgeClientConfig",
    _inherited([*fields_of(ClientSettings, exclude=("api_key",)), ("api_key_required", bool, True)]),
)
JudgeClientConfig.__module__ = __name__
JudgeClientConfig.__doc__ = "`judge.client`: `ClientSettings` fields (minus the key), each null = the run's `client.*`."

# The judge's sampling: each field null takes the run's `generation.*` value (`n` is always 1).
JudgeGenerationSection = make_dataclass(
    "JudgeGenerationSection", _inherited(fields_of(GenerationConfig, exclude=("seed",)))
)
JudgeGenerationSection.__module__ = __name__
JudgeGenerationSection.__doc__ = "`judge.generation`: `GenerationConfig` fields, each null = the run's `generation.*`."


@dataclass
class EndpointConfig:
    """The model served at the endpoint, and what its tokens cost."""

    model: str = MISSING
    price: PriceConfig = field(default_factory=PriceConfig)


@dataclass
class JudgeConfig:
    """`judge=none` (default) or `judge=llm`: score each generated row 1..5 with a reason (see sdg.stages.judge).

    `model` null: the run's `endpoint.model`; `client.*` / `generation.*` null: the run's; `price.*` null:
    `endpoint.price`. `rubric` is a template over the row's columns (`{output}`: the generated text).
    """

    kind: str = "none"  # none | llm
    model: str | None = None
    rubric: str | None = None  # null: sdg.stages.judge.DEFAULT_RUBRIC
    max_parse_retries: int = 2
    client: JudgeClientConfig = field(default_factory=JudgeClientConfig)
    generation: JudgeGenerationSection = field(default_factory=JudgeGenerationSection)
    price: PriceConfig = field(default_factory=PriceConfig)


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
    max_cost_usd: float | None = None  # stop once generation and judge spent this much (needs endpoint.price)


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
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    resume: Any = False  # false, true (latest run with the same fingerprint) or a run directory


def register_configs() -> None:
    """Make the schemas known to Hydra; conf/config.yaml names `run_schema` first in its defaults."""
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
