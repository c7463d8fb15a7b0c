"""The interfaces stages and executors program against, and the result of one request."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

from sdg.client.generation import GenerationConfig
from sdg.client.stats import ClientStats

__all__ = ["AsyncLLMClient", "Choice", "Completion", "LLMClient", "Messages"]

Messages = list[dict[str, Any]]


@dataclass
class Choice:
    """One of the n answers of a request, as the endpoint sent it.

    `text` is None when the server sent no content (a refusal, or nothing at all); `reasoning` is the
    thinking a reasoning parser split off (`reasoning_content` in llama.cpp and older vLLM, `reasoning` in
    newer vLLM); `logprobs` is the choice's `logprobs` object as sent, when it was asked for.
    """

    text: str | None
    finish_reason: str | None = None
    reasoning: str | None = None
    refusal: str | None = None
    logprobs: Any = None
    tool_calls: bool = False  # the answer called tools (its text may then be empty)


@dataclass
class Completion:
    """One request's answer: its choices, the model that served it, and what it cost.

    `model` is the model that answered: the answer's own `model` field, else the one asked for;
    `served_model` is that field alone (None when the endpoint did not say).
    """

    choices: list[Choice]
    model: str
    served_model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    attempts: int = 1

    @classmethod
    def of(cls, texts: list[str], finish_reasons: list[str | None], model: str, **fields: Any) -> Completion:
        """A completion from texts and finish reasons alone (tests, custom clients)."""
        choices = [Choice(text, reason) for text, reason in zip(texts, finish_reasons, strict=True)]
        return cls(choices=choices, model=model, **fields)

    @property
    def texts(self) -> list[str]:
        """The n completion texts ("" where a choice had no content)."""
        return [choice.text or "" for choice in self.choices]

    @property
    def finish_reasons(self) -> list[str | None]:
        return [choice.finish_reason for choice in self.choices]


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
