"""What an answer becomes: typed failures for empty answers and unreadable bodies, and the dataset's columns."""

from __future__ import annotations

import asyncio

from sdg.client.base import AsyncLLMClient, Completion
from sdg.client.errors import BadRequestError, LLMClientError
from sdg.stages import QAMultilingualSyntheticStage
from sdg.stages.base import RECORD_SCHEMA


class ScriptedClient(AsyncLLMClient):
    """Returns (or raises) what it is given, for stage-level tests without HTTP."""

    def __init__(self, outcome: Completion | LLMClientError) -> None:
        self.outcome = outcome

    async def complete(self, messages, model, generation_config=None) -> Completion:  # type: ignore[override]
        if isinstance(self.outcome, LLMClientError):
            raise self.outcome
        return self.outcome


def _run(outcome: Completion | LLMClientError) -> list[dict]:
    stage = QAMultilingualSyntheticStage(
        prompt="Q in {language}", languages=["English"], client=ScriptedClient(outcome), model_name="m", num_samples=1
    )
    return asyncio.run(stage.run_task(stage.make_task(0, 1)))


def test_error_kind_column_is_the_errors_kind_and_null_on_success() -> None:
    assert "error_kind" in RECORD_SCHEMA.names
    error = BadRequestError("HTTP 400 from u: bad", status_code=400)
    (row,) = _run(error)
    assert row["error_kind"] == "bad_request"
    assert row["error"] == "bad_request: HTTP 400 from u: bad"  # the text column stays as it was
    (row,) = _run(Completion(texts=["hi"], finish_reasons=["stop"], model="m"))
    assert row["error_kind"] is None and row["error"] is None
