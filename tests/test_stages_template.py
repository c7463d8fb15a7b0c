"""The prompt-template stage end to end on the simulated endpoint: inputs, rows, seeds, structured output."""

from __future__ import annotations

import datetime
import json
import pickle
import urllib.request
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sdg.client import AsyncOpenAIClient, GenerationConfig
from sdg.execution.local import LocalExecutor
from sdg.pipeline import Pipeline
from sdg.seeding import derive_seed
from sdg.stages import PromptTemplateStage, StructuredOutput
from sdg.stages.structured import to_json_schema, validate_json

TEXTS = [
    "Water boils at 100 degrees Celsius at sea level.",
    "The heart pumps blood through the body.",
    "Mount Everest is the highest mountain above sea level.",
    "The Roman Empire split into two halves in 395.",
    "Copper conducts electricity well.",
]
QA_SCHEMA = {"question": "str", "answer": "str"}


def _client(sim) -> AsyncOpenAIClient:
    return AsyncOpenAIClient(base_url=sim.base_url, api_key_env=None, base_delay=0.001, max_delay=0.01)


def _jsonl(tmp_path: Path, rows: list[dict[str, Any]] | None = None) -> Path:
    rows = rows if rows is not None else [{"id": i, "text": t, "score": i / 2} for i, t in enumerate(TEXTS)]
    path = tmp_path / "input.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _stage(sim, path: Path, template: str = "Rewrite: {text}", **kwargs: Any) -> PromptTemplateStage:
    config = kwargs.pop("generation_config", GenerationConfig(temperature=0.9, max_tokens=256))
    return PromptTemplateStage(path, template, _client(sim), "sim-model", generation_config=config, **kwargs)


def _run(stage: PromptTemplateStage, out: Path, seed: int = 3) -> datasets.Dataset:
    return Pipeline("t").add_stage(stage).run(LocalExecutor(), seed=seed, output_dir=out, progress=False)


def _sent_requests(sim) -> list[dict[str, Any]]:
    with urllib.request.urlopen(sim.base_url.removesuffix("/v1") + "/requests?limit=1000") as answer:
        return json.load(answer)


def test_one_row_per_input_row_with_input_columns_and_generated(sim, tmp_path) -> None:
    stage = _stage(sim, _jsonl(tmp_path), system_template="You edit {id}-th texts; keep {{braces}}.")
    assert stage.make_task(1, 0).messages == [
        {"role": "system", "content": "You edit 1-th texts; keep {braces}."},
        {"role": "user", "content": f"Rewrite: {TEXTS[1]}"},
    ]
    dataset = _run(stage, tmp_path / "out")
    assert len(dataset) == len(TEXTS)
    assert list(dataset["text"]) == TEXTS  # the input's `text` is kept, not replaced by the answer
    assert list(dataset["id"]) == list(range(len(TEXTS))) == list(dataset["row_index"]) == list(dataset["index"])
    assert list(dataset["score"]) == [i / 2 for i in range(len(TEXTS))]
    assert dataset.features["id"] == datasets.Value("int64") and dataset.features["score"] == datasets.Value("float64")
    assert all(dataset["generated"]) and not any(dataset["error"])
    assert set(dataset["generated"]).isdisjoint(TEXTS)
    for column in ("seed", "finish_reason", "prompt_tokens", "completion_tokens", "latency_s", "attempts", "model"):
        assert column in dataset.column_names
    assert sum(dataset["completion_tokens"]) == sim.stats()["completion_tokens"]
    assert sorted(r["messages"][1]["content"] for r in _sent_requests(sim)) == sorted(f"Rewrite: {t}" for t in TEXTS)


def test_same_seed_same_rows_other_seed_other_rows(sim, tmp_path) -> None:
    path = _jsonl(tmp_path)
    first = _run(_stage(sim, path), tmp_path / "a", seed=3)
    again = _run(_stage(sim, path), tmp_path / "b", seed=3)
    other = _run(_stage(sim, path), tmp_path / "c", seed=4)
    assert list(first["generated"]) == list(again["generated"])
    assert list(first["seed"]) == list(again["seed"])
    assert list(first["generated"]) != list(other["generated"])


def test_samples_per_row_gives_rows_with_distinct_seeds(sim, tmp_path) -> None:
    stage = _stage(sim, _jsonl(tmp_path), samples_per_row=2)
    assert stage.num_tasks == 2 * len(TEXTS)
    dataset = _run(stage, tmp_path / "out")
    assert list(dataset["row_index"]) == [i // 2 for i in range(2 * len(TEXTS))]
    assert list(dataset["text"]) == [t for t in TEXTS for _ in range(2)]
    assert len(set(dataset["seed"])) == 2 * len(TEXTS)
    assert all(a != b for a, b in zip(dataset["generated"][::2], dataset["generated"][1::2], strict=True))


def test_parquet_and_saved_dataset_inputs_keep_their_types(sim, tmp_path) -> None:
    table = pa.table(
        {
            "text": TEXTS,
            "tags": [["a", "b"], [], ["c"], None, ["d"]],
            "when": pa.array([datetime.datetime(2024, 1, i + 1) for i in range(5)], pa.timestamp("ms")),
            "ok": [True, False, True, None, True],
        }
    )
    pq.write_table(table, tmp_path / "input.parquet")
    datasets.Dataset(table).save_to_disk(str(tmp_path / "saved"))
    for source in (tmp_path / "input.parquet", tmp_path / "saved"):
        dataset = _run(_stage(sim, source, input_limit=3), tmp_path / f"out-{source.name}")
        assert [{name: row[name] for name in table.column_names} for row in dataset] == table.slice(0, 3).to_pylist()
        for name in ("tags", "when", "ok"):
            assert dataset.features[name] == datasets.Features.from_arrow_schema(table.schema)[name]
        assert all(dataset["generated"])


def test_missing_placeholder_fails_before_any_request(sim, tmp_path) -> None:
    path = _jsonl(tmp_path)
    with pytest.raises(ValueError, match=r"\{body\}.*available columns: \['id', 'text', 'score'\]"):
        _stage(sim, path, "Rewrite: {body}")
    with pytest.raises(ValueError, match=r"system_template refers to \{topic\}"):
        _stage(sim, path, system_template="About {topic}")
    with pytest.raises(ValueError, match="must name an input column"):
        _stage(sim, path, "Rewrite: {}")
    with pytest.raises(ValueError, match="literal braces"):
        _stage(sim, path, "Rewrite: {text")
    assert sim.stats()["requests"] == 0


def test_bad_inputs_say_what_is_accepted(sim, tmp_path) -> None:
    (tmp_path / "rows.csv").write_text("text\nhello\n")
    for path in (tmp_path / "missing.jsonl", tmp_path / "rows.csv", tmp_path):
        with pytest.raises(ValueError, match=r"save_to_disk folder, a \.parquet file or a \.jsonl file"):
            _stage(sim, path)
    with pytest.raises(ValueError, match="output_column='text' clashes"):
        _stage(sim, _jsonl(tmp_path), output_column="text")
    with pytest.raises(ValueError, match=r"input columns \['seed'\] clash"):
        _stage(sim, _jsonl(tmp_path, [{"text": "a", "seed": 1}]))
    with pytest.raises(ValueError, match="samples_per_row=0"):
        _stage(sim, _jsonl(tmp_path), samples_per_row=0)
    with pytest.raises(ValueError, match="input_limit=0 must be an integer >= 1"):
        _stage(sim, _jsonl(tmp_path), input_limit=0)
    with pytest.raises(ValueError, match="has no rows"):
        _stage(sim, _jsonl(tmp_path, []))


def test_stage_pickles_without_its_rows_and_plans_the_same(sim, tmp_path) -> None:
    stage = _stage(sim, _jsonl(tmp_path), samples_per_row=2)
    copy = pickle.loads(pickle.dumps(stage))
    assert copy._table is None  # workers load the input themselves
    assert [copy.make_task(i, 9) for i in range(10)] == [stage.make_task(i, 9) for i in range(10)]
    assert copy.schema() == stage.schema()


def test_changed_input_is_detected_in_a_worker(sim, tmp_path) -> None:
    path = _jsonl(tmp_path)
    copy = pickle.loads(pickle.dumps(_stage(sim, path)))
    _jsonl(tmp_path, [{"id": 0, "text": "only one", "score": 0.0}])
    with pytest.raises(RuntimeError, match="changed since the stage was built"):
        copy.make_task(0, 0)


# ---------------------------------------------------------------- structured output


def test_structured_rows_parse_or_say_parse_error(sim_factory, tmp_path) -> None:
    sim = sim_factory(p_bad_json=0.2, seed=11)
    stage = _stage(sim, _jsonl(tmp_path), "Ask about: {text}", samples_per_row=4, output_schema=QA_SCHEMA)
    dataset = _run(stage, tmp_path / "out")
    assert len(dataset) == 4 * len(TEXTS)
    retries = list(dataset["parse_retries"])
    failed = [row for row in dataset if row["error"]]
    for row in dataset:
        if row["error"]:
            assert row["error"].startswith("parse_error: ") and row["question"] is None and row["answer"] is None
            assert row["parse_retries"] == 2
        else:
            assert json.loads(row["generated"]) == {"question": row["question"], "answer": row["answer"]}
            assert isinstance(row["question"], str) and isinstance(row["answer"], str)
    stats = sim.stats()
    # Every broken answer was re-asked, except the last one of a row that ran out of retries.
    assert sum(retries) > 0
    assert stats["bad_json"] == sum(retries) + len(failed)
    assert stats["requests"] == len(dataset) + sum(retries)
    assert sum(dataset["prompt_tokens"]) == stats["prompt_tokens"]
    retried = next(row for row in dataset if row["parse_retries"] and not row["error"])
    task_seed = stage.make_task(retried["index"], 3).seed
    k = retried["parse_retries"]
    assert retried["seed"] == derive_seed(task_seed, retried["index"], f"parse-retry-{k}")
    sent = _sent_requests(sim)[0]["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["schema"]["required"] == ["question", "answer"]


def test_always_broken_json_ends_in_parse_error_after_the_retries(sim_factory, tmp_path) -> None:
    sim = sim_factory(p_bad_json=1.0, seed=2)
    stage = _stage(sim, _jsonl(tmp_path), output_schema=QA_SCHEMA, max_parse_retries=1)
    result = Pipeline("t").add_stage(stage).run_detailed(LocalExecutor(), output_dir=tmp_path, progress=False)
    dataset = result.dataset
    assert len(dataset) == len(TEXTS) == result.num_failed_samples
    assert all(e.startswith("parse_error: ") for e in dataset["error"])
    assert list(dataset["parse_retries"]) == [1] * len(TEXTS)
    assert sim.stats()["requests"] == sim.stats()["bad_json"] == 2 * len(TEXTS)
    assert all(g is not None for g in dataset["generated"])  # the raw answer is kept to inspect


def test_cut_answers_are_parse_errors_with_a_hint_not_bad_json(sim, tmp_path) -> None:
    config = GenerationConfig(max_tokens=2)
    stage = _stage(sim, _jsonl(tmp_path), output_schema=QA_SCHEMA, max_parse_retries=0, generation_config=config)
    dataset = _run(stage, tmp_path / "out")
    assert all("invalid JSON" in e and "max_tokens" in e for e in dataset["error"])
    assert sim.stats()["bad_json"] == 0 and sim.stats()["requests"] == len(TEXTS)


def test_typed_fields_become_typed_columns(sim, tmp_path) -> None:
    spec = {"title": "string", "year": "int", "weight": "float", "open": "bool", "tags": "list[str]"}
    dataset = _run(_stage(sim, _jsonl(tmp_path), output_schema=spec), tmp_path / "out")
    expected = {"title": "string", "year": "int64", "weight": "float64", "open": "bool"}
    assert {name: dataset.features[name].dtype for name in expected} == expected
    assert dataset.features["tags"] == datasets.List(datasets.Value("string"))
    assert not any(dataset["error"]) and all(isinstance(y, int) for y in dataset["year"])
    assert list(dataset["parse_retries"]) == [0] * len(TEXTS)


def test_output_schema_mistakes_are_explained(sim, tmp_path) -> None:
    path = _jsonl(tmp_path)
    with pytest.raises(ValueError, match=r"output_schema.score: unknown type 'decimal'; use one of str, string"):
        _stage(sim, path, output_schema={"score": "decimal"})
    with pytest.raises(ValueError, match=r"fields \['text'\] clash"):
        _stage(sim, path, output_schema={"text": "str"})
    with pytest.raises(ValueError, match="n=1"):
        _stage(sim, path, output_schema=QA_SCHEMA, generation_config=GenerationConfig(n=2))
    nested = {"type": "object", "properties": {"meta": {"type": "object", "properties": {}}}}
    with pytest.raises(ValueError, match=r"properties.meta.*no column type"):
        _stage(sim, path, output_schema=nested)
    assert sim.stats()["requests"] == 0


def test_validator_subset() -> None:
    schema = {
        "type": "object",
        "properties": {
            "level": {"enum": ["easy", "hard"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "n": {"type": ["integer", "null"]},
        },
        "required": ["level"],
        "additionalProperties": False,
    }
    assert validate_json({"level": "easy", "tags": ["a"], "n": None}, schema) is None
    assert validate_json({"level": "easy", "n": 3.0}, schema) is None
    assert validate_json({"tags": []}, schema) == "$: missing required field 'level'"
    assert validate_json({"level": "medium"}, schema) == "$.level: 'medium' is not one of ['easy', 'hard']"
    assert validate_json({"level": "easy", "tags": ["a", 1]}, schema) == "$.tags[1]: expected string, got integer"
    assert validate_json({"level": "easy", "n": True}, schema) == "$.n: expected integer or null, got boolean"
    assert validate_json({"level": "easy", "x": 1}, schema) == "$: unexpected field 'x'"
    assert validate_json([], schema) == "$: expected object, got array"
    assert to_json_schema({"a": "str"}) == {
        "type": "object",
        "properties": {"a": {"type": "string"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    output = StructuredOutput(schema)
    assert output.parse('{"level": "hard", "n": 2.0}') == ({"level": "hard", "tags": None, "n": 2}, None)
    assert output.parse('{"level": "hard"')[1].startswith("invalid JSON: ")
