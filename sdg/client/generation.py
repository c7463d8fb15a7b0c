"""Sampling parameters of one request, validated once so a bad value fails before any request is sent."""

from __future__ import annotations

from collections.abc import Mapping
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
    """The sampling parameters NeMo Curator's users know, with the same defaults, and what shapes a request.

    A field set to None is not sent, so the server's own default applies (OpenAI reasoning models answer
    400 to `temperature` and `top_p`: set both to None and use `max_completion_tokens`, which replaces
    `max_tokens` when set). `top_k` is not an OpenAI parameter; it goes in the body, where vLLM, NIM and
    llama.cpp read it, instead of being dropped. `extra_body` is merged into the request last (vLLM's
    `chat_template_kwargs`, `min_p`, `repetition_penalty`, guided decoding...). `seed` is the request
    seed; a pipeline derives one per sample.
    """

    max_tokens: int | None = 2048
    temperature: float | None = 0.0
    top_p: float | None = 0.95
    top_k: int | None = None
    seed: int | None = 0
    stop: str | list[str] | None = None
    stream: bool = False
    n: int | None = 1
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    extra_body: dict[str, Any] | None = field(default=None)

    def __post_init__(self) -> None:
        _check_range("temperature", self.temperature, 0.0, 2.0)
        _check_range("top_p", self.top_p, 0.0, 1.0)
        _check_range("max_tokens", self.max_tokens, 1, None)
        _check_range("max_completion_tokens", self.max_completion_tokens, 1, None)
        _check_range("n", self.n, 1, None)
        _check_range("top_k", self.top_k, 0, None)
        _check_range("top_logprobs", self.top_logprobs, 0, 20)
        for name in ("max_tokens", "max_completion_tokens", "n", "top_k", "seed", "top_logprobs"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"GenerationConfig.{name} must be an integer, got {value!r}")
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("GenerationConfig.top_logprobs needs logprobs=True (the API refuses it otherwise)")
        if self.stop is not None and not isinstance(self.stop, str):
            stop = list(self.stop)
            if not all(isinstance(s, str) for s in stop):
                raise ValueError(f"GenerationConfig.stop must be a string or a list of strings, got {self.stop!r}")
            object.__setattr__(self, "stop", stop)
        if self.extra_body is not None:
            if not isinstance(self.extra_body, Mapping):
                raise ValueError(f"GenerationConfig.extra_body must be a mapping, got {self.extra_body!r}")
            object.__setattr__(self, "extra_body", dict(self.extra_body))

    @property
    def token_budget(self) -> int | None:
        """The most tokens an answer may take (what the request's limit says), for messages about it."""
        return self.max_completion_tokens or self.max_tokens

    def replace(self, **changes: Any) -> GenerationConfig:
        """A copy with some fields changed (validated again)."""
        return GenerationConfig(**{**asdict(self), **changes})

    def request_body(self) -> dict[str, Any]:
        """The chat-completions request fields for these parameters (no model, no messages); None is not sent."""
        body: dict[str, Any] = {
            "max_tokens": None if self.max_completion_tokens is not None else self.max_tokens,
            "max_completion_tokens": self.max_completion_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "n": self.n,
            "seed": self.seed,
            "stop": self.stop,
            "logprobs": self.logprobs,
            "top_logprobs": self.top_logprobs,
            "top_k": self.top_k,
        }
        body = {key: value for key, value in body.items() if value is not None}
        if self.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        body.update(self.extra_body or {})
        return body
