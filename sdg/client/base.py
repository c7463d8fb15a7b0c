"""The interfaces stages and executors program against, and the result of one request."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

from sdg.client.generation import GenerationConfig
from sdg.client.stats import ClientStats

__all__ = ["AsyncLLMClient", "Completion", "LLMClient", "Messages"]

Messages = list[dict[str, Any]]


@dataclass
class Completion:
    """One request's answer: the n texts and what it cost, for the per-sample columns of a dataset."""

    texts: list[str]
    finish_reasons: list[str | None]
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    attempts: int = 1


class AsyncLLMClient(abc.ABC):
    """An asynchronous chat client; what a stage needs from an endpoint."""

    stats: ClientStats

    @abc.abstractmethod
    async def complete(
        self, messages: Messages, model: str, generation_config: GenerationConfig | None = None
    ) -> Completion:
        """Send one chat request (retrying transient failures) and return its completions."""

    async def query_model(
        self, *, messages: Messages, model: str, generation_config: GenerationConfig | None = None
    ) -> list[str]:
        """NeMo Curator's call: the n completion texts."""
        return (await self.complete(messages, model, generation_config)).texts

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to close by default
        """Release connections held for the current event loop."""


class LLMClient(abc.ABC):
    """A synchronous chat client, for scripts and debugging."""

    stats: ClientStats

    @abc.abstractmethod
    def complete(self, messages: Messages, model: str, generation_config: GenerationConfig | None = None) -> Completion:
        """Send one chat request (retrying transient failures) and return its completions."""

    def query_model(
        self, *, messages: Messages, model: str, generation_config: GenerationConfig | None = None
    ) -> list[str]:
        """NeMo Curator's call: the n completion texts."""
        return self.complete(messages, model, generation_config).texts
