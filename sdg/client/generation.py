"""Sampling parameters of one request, validated once so a bad value fails before any request is sent."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["GenerationConfig"]


def _check_range(name: str, value: float | int | None, low: float, high: float | None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"GenerationConfig.{name} must be a number, got {value!r}")
    if value < low or (high is not None and value > high):
        allowed = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"GenerationConfig.{name}={value!r} is out of range: it must be {allowed}")


@dataclass(frozen=True)
class GenerationConfig:
    """The sampling parameters NeMo Curator's users know, with the same defaults.

    `top_k` is not an OpenAI parameter; it is sent in `extra_body`, which vLLM, NIM and llama.cpp read,
    instead of being silently dropped. `seed` is the request seed; a pipeline derives one per sample.
    """

    max_tokens: int = 2048
    temperature: float = 0.0
    top_p: float = 0.95
    top_k: int | None = None
    seed: int | None = 0
    stop: str | list[str] | None = None
    stream: bool = False
    n: int = 1
    extra_body: dict[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        _check_range("temperature", self.temperature, 0.0, 2.0)
        _check_range("top_p", self.top_p, 0.0, 1.0)
        _check_range("max_tokens", self.max_tokens, 1, None)
        _check_range("n", self.n, 1, None)
        _check_range("top_k", self.top_k, 0, None)
        for name in ("max_tokens", "n", "top_k", "seed"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"GenerationConfig.{name} must be an integer, got {value!r}")
        if self.stop is not None and not isinstance(self.stop, str):
            stop = list(self.stop)
            if not all(isinstance(s, str) for s in stop):
                raise ValueError(f"GenerationConfig.stop must be a string or a list of strings, got {self.stop!r}")
            object.__setattr__(self, "stop", stop)
        if self.extra_body is not None and not isinstance(self.extra_body, dict):
            raise ValueError(f"GenerationConfig.extra_body must be a mapping, got {self.extra_body!r}")

    def replace(self, **changes: Any) -> GenerationConfig:
        """A copy with some fields changed (validated again)."""
        return GenerationConfig(**{**asdict(self), **changes})

    def request_body(self) -> dict[str, Any]:
        """The chat-completions request fields for these parameters (no model, no messages)."""
        body: dict[str, Any] = {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "n": self.n,
        }
        if self.seed is not None:
            body["seed"] = self.seed
        if self.stop is not None:
            body["stop"] = self.stop
        if self.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        extra = dict(self.extra_body or {})
        if self.top_k is not None:
            extra.setdefault("top_k", self.top_k)
        body.update(extra)
        return body
