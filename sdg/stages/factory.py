"""From the Hydra `stage` group (a plain mapping) to a generation stage and its filters.

Every mistake is reported against the config key that holds it (`stage.user_template`,
`stage.filters[1].must_match`, ...), so the user knows which override or YAML line to change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sdg.client.base import AsyncLLMClient
from sdg.client.generation import GenerationConfig
from sdg.stages.base import GenerationStage
from sdg.stages.filters import FilterStage
from sdg.stages.qa_multilingual import QAMultilingualSyntheticStage
from sdg.stages.template import PromptTemplateStage

__all__ = ["FILTER_OPTIONS", "STAGE_OPTIONS", "build_filters", "build_stages"]

# Options of each stage, and which of them must be given.
STAGE_OPTIONS: dict[str, tuple[str, ...]] = {
    "qa_multilingual": ("name", "prompt", "languages", "num_samples", "system_prompt", "filters"),
    "template": (
        "name",
        "input",
        "system_template",
        "user_template",
        "samples_per_row",
        "output_column",
        "output_schema",
        "max_parse_retries",
        "response_format",
        "filters",
    ),
}
REQUIRED: dict[str, tuple[str, ...]] = {
    "qa_multilingual": ("prompt", "languages", "num_samples"),
    "template": ("input", "user_template"),
}
INPUT_OPTIONS = ("path", "limit")
# The template options handed to PromptTemplateStage as they are (when set): all but those read here.
_TEMPLATE_PASSED_ON = tuple(
    key for key in STAGE_OPTIONS["template"] if key not in ("name", "filters", *REQUIRED["template"])
)
FILTER_OPTIONS = (
    "column",
    "min_words",
    "max_words",
    "must_match",
    "must_not_match",
    "required_prefix",
    "drop_duplicates",
    "action",
)
# Constructor argument -> config key, where they differ (errors name the argument; users know the key).
_CONFIG_KEYS = {"input_path": "input.path", "input_limit": "input.limit"}


def build_stages(
    stage_cfg: Mapping[str, Any],
    *,
    client: AsyncLLMClient,
    model_name: str,
    generation_config: GenerationConfig,
    base_dir: str | Path | None = None,
) -> tuple[GenerationStage, list[FilterStage]]:
    """The generation stage `stage_cfg` describes and its filters; ValueError naming the config key at fault.

    A relative `input.path` is resolved against `base_dir` (default: the current directory).
    """
    cfg = _plain(stage_cfg, "stage")
    name = cfg.get("name")
    if name not in STAGE_OPTIONS:
        raise ValueError(f"stage.name={name!r} is not a known stage; known stages: {', '.join(STAGE_OPTIONS)}")
    _check_keys(cfg, STAGE_OPTIONS[name], "stage.", f"stage {name}")
    missing = [key for key in REQUIRED[name] if cfg.get(key) is None]
    if missing:
        raise ValueError(f"stage.{missing[0]} is required by stage {name}; set it in conf/stage/{name}.yaml")
    builder = _BUILDERS[name]
    try:
        stage = builder(cfg, client, model_name, generation_config, Path(base_dir or Path.cwd()))
    except ValueError as exc:
        raise ValueError(_prefixed(str(exc), STAGE_OPTIONS[name], "stage.")) from None
    return stage, build_filters(cfg.get("filters"))


def build_filters(filters_cfg: Any) -> list[FilterStage]:
    """One FilterStage per entry of `stage.filters` (null or [] means none)."""
    if filters_cfg is None:
        return []
    if isinstance(filters_cfg, (str, bytes, Mapping)) or not isinstance(filters_cfg, Sequence):
        raise ValueError(
            f"stage.filters must be a list of filters, e.g. [{{column: generated, min_words: 5}}]; got {filters_cfg!r}"
        )
    return [
        _build_filter(_plain(item, f"stage.filters[{i}]"), f"stage.filters[{i}].") for i, item in enumerate(filters_cfg)
    ]


def _build_filter(cfg: dict[str, Any], prefix: str) -> FilterStage:
    _check_keys(cfg, FILTER_OPTIONS, prefix, "a filter")
    if cfg.get("column") is None:
        raise ValueError(f"{prefix}column is required: name the text column to check, e.g. column: generated")
    options = {key: value for key, value in cfg.items() if value is not None}
    try:
        return FilterStage(**options)
    except ValueError as exc:
        raise ValueError(_prefixed(str(exc), FILTER_OPTIONS, prefix)) from None


def _build_qa(
    cfg: dict[str, Any], client: AsyncLLMClient, model_name: str, config: GenerationConfig, base_dir: Path
) -> GenerationStage:
    return QAMultilingualSyntheticStage(
        prompt=cfg["prompt"],
        languages=list(cfg["languages"]),
        client=client,
        model_name=model_name,
        num_samples=cfg["num_samples"],
        generation_config=config,
        system_prompt=cfg.get("system_prompt"),
    )


def _build_template(
    cfg: dict[str, Any], client: AsyncLLMClient, model_name: str, config: GenerationConfig, base_dir: Path
) -> GenerationStage:
    source = _plain(cfg["input"], "stage.input")
    _check_keys(source, INPUT_OPTIONS, "stage.input.", "stage.input")
    if not source.get("path"):
        raise ValueError("stage.input.path is required: the input dataset (.jsonl, .parquet or save_to_disk folder)")
    path = Path(str(source["path"])).expanduser()
    optional = {key: cfg[key] for key in _TEMPLATE_PASSED_ON if cfg.get(key) is not None}
    return PromptTemplateStage(
        input_path=path if path.is_absolute() else base_dir / path,
        user_template=cfg["user_template"],
        client=client,
        model_name=model_name,
        generation_config=config,
        input_limit=source.get("limit"),
        **optional,
    )


_BUILDERS: dict[str, Callable[..., GenerationStage]] = {"qa_multilingual": _build_qa, "template": _build_template}


def _plain(value: Any, where: str) -> dict[str, Any]:
    """A plain dict (a Hydra DictConfig is converted with its interpolations resolved)."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(value, DictConfig):
            value = OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a dependency, but the factory does not need it
        pass
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a mapping of options, got {value!r}")
    return {str(key): val for key, val in value.items()}


def _check_keys(cfg: Mapping[str, Any], options: tuple[str, ...], prefix: str, owner: str) -> None:
    unknown = [key for key in cfg if key not in options]
    if unknown:
        raise ValueError(f"{prefix}{unknown[0]} is not an option of {owner}; options: {', '.join(options)}")


def _prefixed(message: str, options: tuple[str, ...], prefix: str) -> str:
    """`prefix` + the config key the message starts with, or `prefix` as a location when it names none."""
    for argument, key in sorted({**{o: o for o in options}, **_CONFIG_KEYS}.items(), key=lambda kv: -len(kv[0])):
        if message.startswith(argument) and not message[len(argument) : len(argument) + 1].isidentifier():
            return f"{prefix}{key}{message[len(argument) :]}"
    return f"{prefix.rstrip('.')}: {message}"
