"""What a generation stage is: a deterministic plan of requests, and how an answer becomes rows."""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from sdg.client.base import AsyncLLMClient, Completion, Messages
from sdg.client.errors import EmptyAnswerError, LLMClientError
from sdg.client.generation import GenerationConfig
from sdg.seeding import derive_seed

__all__ = ["RECORD_SCHEMA", "GenerationStage", "Task", "choice_columns"]

# Columns every generation stage writes, after its own planning columns.
RECORD_SCHEMA = pa.schema(
    [
        ("index", pa.int64()),
        ("choice", pa.int32()),
        ("model", pa.string()),
        # The model the endpoint says answered (the answer's `model`); null when it did not say.
        ("served_model", pa.string()),
        ("seed", pa.int64()),
        ("text", pa.string()),
        # A reasoning model's thinking (`reasoning_content` / `reasoning`), kept apart from the text.
        ("reasoning", pa.string()),
        # The model's refusal (`message.refusal`): a refused sample has no text and no error.
        ("refusal", pa.string()),
        ("finish_reason", pa.string()),
        # The choice's `logprobs` object as JSON, when generation asked for logprobs.
        ("logprobs", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
        ("latency_s", pa.float64()),
        ("attempts", pa.int32()),
        ("error", pa.string()),
        # The failure's stable short name (LLMClientError.kind, or parse_error); null on success.
        ("error_kind", pa.string()),
    ]
)


@dataclass
class Task:
    """One request of a stage: cheap to make, fully determined by (run seed, index)."""

    index: int
    messages: Messages
    seed: int
    columns: dict[str, Any] = field(default_factory=dict)


class GenerationStage(abc.ABC):
    """A stage that sends one request per task and turns each answer into rows.

    Subclasses say how task `index` is built (`make_task`) and which planning columns they add
    (`columns_schema`). Running, retries, seeding of the request and error rows are shared here.
    """

    name: str = "generation"
    # The column the generated text goes to; a stage whose input rows have a `text` column renames it.
    text_column: str = "text"

    def __init__(
        self,
        *,
        client: AsyncLLMClient,
        model_name: str,
        num_samples: int,
        generation_config: GenerationConfig | None = None,
    ) -> None:
        if not isinstance(num_samples, int) or num_samples < 0:
            raise ValueError(f"num_samples={num_samples!r} must be a non-negative integer")
        if not model_name:
            raise ValueError("model_name must name the model to query (e.g. meta/llama-3.3-70b-instruct)")
        self.client = client
        self.model_name = model_name
        self.num_samples = num_samples
        self.generation_config = generation_config or GenerationConfig()

    @property
    def num_tasks(self) -> int:
        return self.num_samples

    @abc.abstractmethod
    def make_task(self, index: int, run_seed: int) -> Task:
        """Task `index` of a run seeded with `run_seed`; the same inputs always give the same task."""

    @abc.abstractmethod
    def columns_schema(self) -> pa.Schema:
        """The planning columns this stage adds before the common ones."""

    def schema(self) -> pa.Schema:
        own = self.columns_schema()
        renamed = [f.with_name(self.text_column) if f.name == "text" else f for f in RECORD_SCHEMA]
        common = [f for f in renamed if f.name not in own.names]
        return pa.schema(common[:1] + list(own) + common[1:])  # index first, then the stage's columns

    def request_seed(self, index: int, run_seed: int) -> int:
        return derive_seed(run_seed, index, "request")

    async def run_task(self, task: Task) -> list[dict[str, Any]]:
        """Send the task's request and return its rows: one per completion, or one error row."""
        config = self.generation_config.replace(seed=task.seed)
        base = {**task.columns, "index": task.index, "model": self.model_name, "seed": task.seed}
        try:
            completion = await self.client.complete(task.messages, self.model_name, config)
        except LLMClientError as error:
            return [self._error_row(base, error, self.text_column)]
        return self._rows(base, completion)

    def _rows(self, base: dict[str, Any], completion: Completion) -> list[dict[str, Any]]:
        n = len(completion.choices)
        tokens = completion.completion_tokens
        return [
            {
                **base,
                "choice": i,
                **choice_columns(completion, i, self.text_column),
                # Usage is per request; split it so that column sums equal what was billed.
                "prompt_tokens": completion.prompt_tokens if i == 0 else 0,
                "completion_tokens": tokens // n + (tokens % n if i == 0 else 0),
                "latency_s": completion.latency_s,
                "attempts": completion.attempts,
                "error": None,
                "error_kind": None,
            }
            for i in range(n)
        ]

    @staticmethod
    def _error_row(base: dict[str, Any], error: LLMClientError, text_column: str = "text") -> dict[str, Any]:
        """One row for a failed task; an empty answer keeps what it spent (reasoning, finish reason, tokens)."""
        spent = error.completion if isinstance(error, EmptyAnswerError) else None
        if isinstance(spent, Completion) and spent.choices:
            columns = {**choice_columns(spent, 0, text_column), text_column: None}
            tokens = {"prompt_tokens": spent.prompt_tokens, "completion_tokens": spent.completion_tokens}
        else:
            columns = dict.fromkeys(("served_model", text_column, "reasoning", "refusal", "finish_reason", "logprobs"))
            tokens = {"prompt_tokens": 0, "completion_tokens": 0}
        return {
            **base,
            "choice": 0,
            **columns,
            **tokens,
            "latency_s": None,
            "attempts": error.attempts,
            "error": f"{error.kind}: {error}",
            "error_kind": error.kind,
        }


def choice_columns(completion: Completion, i: int, text_column: str = "text") -> dict[str, Any]:
    """The per-choice answer columns of choice `i`: text, reasoning, refusal, finish reason, logprobs, served model."""
    choice = completion.choices[i]
    return {
        "served_model": completion.served_model,
        text_column: choice.text,
        "reasoning": choice.reasoning,
        "refusal": choice.refusal,
        "finish_reason": choice.finish_reason,
        "logprobs": json.dumps(choice.logprobs, ensure_ascii=False) if choice.logprobs is not None else None,
    }
