"""The library API end to end: stages, seeding, executors (in-process and real Ray), failures kept as rows."""

from __future__ import annotations

import pytest

from sdg.client import AsyncOpenAIClient, GenerationConfig
from sdg.execution.local import LocalExecutor
from sdg.execution.ray_executor import RayExecutor
from sdg.pipeline import Pipeline
from sdg.stages import QAMultilingualSyntheticStage

LANGUAGES = ["English", "French", "German"]


def _stage(sim, num_samples: int = 30, **client_kwargs) -> QAMultilingualSyntheticStage:
    client = AsyncOpenAIClient(
        base_url=sim.base_url, api_key_env=None, base_delay=0.001, max_delay=0.01, **client_kwargs
    )
    return QAMultilingualSyntheticStage(
        prompt="Generate a Q&A pair about science in {language}.",
        languages=LANGUAGES,
        client=client,
        model_name="sim-model",
        num_samples=num_samples,
        generation_config=GenerationConfig(temperature=0.9, top_p=0.95, max_tokens=64),
    )


def _rows(dataset) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("latency_s", "attempts")} for row in dataset]


def test_prompt_needs_language_placeholder_and_languages(sim) -> None:
    with pytest.raises(ValueError, match=r"\{language\}"):
        QAMultilingualSyntheticStage(
            prompt="no placeholder", languages=LANGUAGES, client=_stage(sim).client, model_name="m", num_samples=1
        )
    with pytest.raises(ValueError, match="languages"):
        QAMultilingualSyntheticStage(
            prompt="{language}", languages=[], client=_stage(sim).client, model_name="m", num_samples=1
        )


def test_plan_depends_only_on_seed_and_index(sim) -> None:
    stage = _stage(sim)
    assert [stage.make_task(i, 7) for i in range(20)] == [stage.make_task(i, 7) for i in range(20)]
    seeds = {stage.make_task(i, 7).seed for i in range(20)}
    assert len(seeds) == 20  # every sample its own request seed, not seed 0 for all
    assert {stage.make_task(i, 7).columns["language"] for i in range(20)} == set(LANGUAGES)
    assert [stage.make_task(i, 8).seed for i in range(5)] != [stage.make_task(i, 7).seed for i in range(5)]


def test_local_executor_builds_an_ordered_dataset(sim, tmp_path) -> None:
    dataset = Pipeline("t").add_stage(_stage(sim, 25)).run(LocalExecutor(), seed=3, output_dir=tmp_path, progress=False)
    assert list(dataset["index"]) == list(range(25))
    for column in (
        "language",
        "prompt",
        "text",
        "model",
        "seed",
        "finish_reason",
        "prompt_tokens",
        "completion_tokens",
        "latency_s",
        "attempts",
        "error",
    ):
        assert column in dataset.column_names
    assert all(dataset["text"]) and not any(dataset["error"])
    assert all(lang in prompt for lang, prompt in zip(dataset["language"], dataset["prompt"], strict=True))


def test_same_dataset_with_one_or_three_ray_workers(sim, tmp_path, ray_session) -> None:
    one = Pipeline("t").add_stage(_stage(sim)).run(RayExecutor(1), seed=5, output_dir=tmp_path / "a", progress=False)
    three = Pipeline("t").add_stage(_stage(sim)).run(RayExecutor(3), seed=5, output_dir=tmp_path / "b", progress=False)
    assert len(one) == 30
    assert _rows(one) == _rows(three)
    other = Pipeline("t").add_stage(_stage(sim)).run(LocalExecutor(), seed=6, output_dir=tmp_path / "c", progress=False)
    assert list(other["text"]) != list(one["text"])


def test_failed_samples_are_kept_with_their_error(sim_factory, tmp_path, ray_session) -> None:
    sim = sim_factory(p500=0.3, seed=4)
    result = (
        Pipeline("t")
        .add_stage(_stage(sim, 40, max_retries=0))
        .run_detailed(RayExecutor(2), seed=1, output_dir=tmp_path, progress=False)
    )
    dataset = result.dataset
    failed = [row for row in dataset if row["error"]]
    assert len(dataset) == 40 and list(dataset["index"]) == list(range(40))
    assert len(failed) == sim.stats()["r500"] == result.num_failed_samples > 0
    assert all(row["error"].startswith("server_error: HTTP 500") and row["text"] is None for row in failed)
    assert result.stats.other_statuses[500] == sim.stats()["r500"]


def test_n_gives_one_row_per_completion(sim, tmp_path) -> None:
    stage = _stage(sim, 4)
    stage.generation_config = GenerationConfig(n=3, max_tokens=16)
    dataset = Pipeline("t").add_stage(stage).run(LocalExecutor(), output_dir=tmp_path, progress=False)
    assert list(dataset["index"]) == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert list(dataset["choice"]) == [0, 1, 2] * 4
    assert sum(dataset["completion_tokens"]) == sim.stats()["completion_tokens"]


def test_resume_requests_only_missing_indexes(sim, tmp_path) -> None:
    Pipeline("t").add_stage(_stage(sim, 10)).run(LocalExecutor(), output_dir=tmp_path, progress=False)
    with pytest.raises(FileExistsError):
        Pipeline("t").add_stage(_stage(sim, 10)).run(LocalExecutor(), output_dir=tmp_path, progress=False)
    before = sim.stats()["requests"]
    result = (
        Pipeline("t")
        .add_stage(_stage(sim, 15))
        .run_detailed(LocalExecutor(), output_dir=tmp_path, resume=True, progress=False)
    )
    assert sim.stats()["requests"] - before == 5 == result.num_requested
    assert list(result.dataset["index"]) == list(range(15))


def test_collect_keeps_one_set_of_rows_per_index_in_order_across_parts_and_chunks(sim, tmp_path, monkeypatch) -> None:
    """Parts as a resumed, restarted run leaves them: out of order, a failure later retried, n=2 choices."""
    import sdg.pipeline as pipeline_module
    from sdg.execution.parts import PartWriter
    from sdg.pipeline import collect_dataset

    monkeypatch.setattr(pipeline_module, "ROWS_PER_PART", 3)  # chunks of 3 rows: every boundary is crossed

    def row(index: int, choice: int = 0, error: str | None = None) -> dict:
        return {"index": index, "choice": choice, "text": None if error else f"{index}.{choice}", "error": error}

    parts = tmp_path / "parts"
    with PartWriter(parts / "part-a-0000.jsonl") as first:
        first.write([row(4, 1), row(4, 0), row(0), row(2, error="server_error: 500"), row(9)])  # 9: beyond N
    with PartWriter(parts / "part-a-0001.jsonl") as second:
        second.write([row(1, error="timeout: slow"), row(3), row(5, error="bad_request: no")])
    with PartWriter(parts / "part-b-0000.jsonl") as resumed:
        resumed.write([row(2), row(1, error="timeout: again"), row(5, error="bad_request: still")])
    dataset = collect_dataset(parts, _stage(sim).schema(), num_tasks=6)
    assert list(zip(dataset["index"], dataset["choice"], strict=True)) == [
        (0, 0),
        (1, 0),
        (2, 0),
        (3, 0),
        (4, 0),
        (4, 1),
        (5, 0),
    ]
    assert list(dataset["text"]) == ["0.0", None, "2.0", "3.0", "4.0", "4.1", None]
    assert list(dataset["error"]) == [None, "timeout: again", None, None, None, None, "bad_request: still"]
