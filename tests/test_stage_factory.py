"""`build_stages`: each config shape builds its stage and filters; every mistake names its config key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sdg.client import AsyncOpenAIClient, GenerationConfig
from sdg.execution.local import LocalExecutor
from sdg.pipeline import Pipeline
from sdg.stages import FilterStage, PromptTemplateStage, QAMultilingualSyntheticStage, build_stages

ROOT = Path(__file__).resolve().parents[1]
QA = {
    "name": "qa_multilingual",
    "prompt": "Generate a Q&A pair about science in {language}.",
    "languages": ["English", "French"],
    "num_samples": 6,
    "system_prompt": None,
    "filters": [],
}
TEMPLATE = {
    "name": "template",
    "input": {"path": "data/passages.jsonl", "limit": 3},
    "system_template": "You write encyclopedia entries.",
    "user_template": "Rewrite as an encyclopedia paragraph titled {title}:\n\n{text}",
    "samples_per_row": 2,
    "output_column": "rewritten",
    "output_schema": None,
    "max_parse_retries": 2,
    "filters": [{"column": "rewritten", "min_words": 5, "must_not_match": "(?i)as an ai"}],
}
EXTRACT = {
    **TEMPLATE,
    "user_template": "Write one question answered by this passage, and its answer, as JSON.\n\n{text}",
    "system_template": None,
    "samples_per_row": 1,
    "output_column": "raw_json",
    "output_schema": {"question": "str", "answer": "str"},
    "filters": [{"column": "question", "must_match": r"\S", "drop_duplicates": True, "action": "keep"}],
}


def _build(sim, cfg: dict[str, Any], **kwargs: Any):
    client = AsyncOpenAIClient(base_url=sim.base_url, api_key_env=None)
    config = GenerationConfig(temperature=0.7, max_tokens=256)
    return build_stages(cfg, client=client, model_name="sim-model", generation_config=config, **kwargs)


def test_qa_shape_builds_the_qa_stage(sim) -> None:
    stage, filters = _build(sim, QA)
    assert isinstance(stage, QAMultilingualSyntheticStage) and filters == []
    assert stage.num_tasks == 6 and stage.languages == ["English", "French"]
    assert stage.generation_config.temperature == 0.7


def test_template_shape_builds_stage_and_filters_that_run(sim, tmp_path) -> None:
    stage, filters = _build(sim, TEMPLATE, base_dir=ROOT)
    assert isinstance(stage, PromptTemplateStage)
    assert stage.input_path == ROOT / "data" / "passages.jsonl"
    assert stage.num_tasks == 6 and stage.output_column == "rewritten" and stage.structured is None
    assert [type(f) for f in filters] == [FilterStage] and filters[0].reasons == ["min_words", "must_not_match"]
    dataset = Pipeline("t").add_stage(stage).run(LocalExecutor(), seed=0, output_dir=tmp_path, progress=False)
    assert list(dataset["row_index"]) == [0, 0, 1, 1, 2, 2] and all(dataset["rewritten"])
    kept, counts = filters[0].process(dataset)
    assert counts == {"min_words": 0, "must_not_match": 0} and len(kept) == 6


def test_structured_shape_sends_the_schema(sim, tmp_path) -> None:
    stage, filters = _build(sim, EXTRACT, base_dir=ROOT)
    assert stage.structured is not None and stage.structured.field_names == ["question", "answer"]
    assert stage.generation_config.extra_body["response_format"]["type"] == "json_schema"
    assert filters[0].action == "keep" and filters[0].reasons == ["must_match", "duplicate"]
    dataset = Pipeline("t").add_stage(stage).run(LocalExecutor(), seed=0, output_dir=tmp_path, progress=False)
    assert all(dataset["question"]) and list(dataset["parse_retries"]) == [0, 0, 0]


def test_relative_input_path_uses_base_dir(sim, tmp_path, monkeypatch) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "passages.jsonl").write_text('{"title": "t", "text": "x"}\n')
    stage, _ = _build(sim, TEMPLATE, base_dir=tmp_path)
    assert stage.num_rows == 1
    monkeypatch.chdir(tmp_path)  # the default base_dir is the current directory
    assert _build(sim, TEMPLATE)[0].input_path == tmp_path / "data" / "passages.jsonl"


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        ({"name": "summarize"}, r"stage.name='summarize' is not a known stage; known stages: qa_multilingual, templ"),
        ({**QA, "languages_": ["x"]}, r"stage.languages_ is not an option of stage qa_multilingual; options: name, "),
        ({**TEMPLATE, "prompt": "x"}, r"stage.prompt is not an option of stage template; options: .*user_template"),
        ({**TEMPLATE, "input": {"path": "data/passages.jsonl", "rows": 2}}, r"stage.input.rows is not an option"),
        ({**QA, "prompt": None}, r"stage.prompt is required by stage qa_multilingual"),
        ({**QA, "prompt": "no placeholder"}, r"stage.prompt must contain the placeholder \{language\}"),
        ({**QA, "num_samples": -1}, r"stage.num_samples=-1 must be a non-negative integer"),
        ({**TEMPLATE, "input": {"path": "nope.jsonl"}}, r"stage.input.path '.*nope.jsonl' does not exist; give a"),
        ({**TEMPLATE, "input": {"path": "data/passages.jsonl", "limit": -2}}, r"stage.input.limit=-2 must be"),
        ({**TEMPLATE, "user_template": "{body}"}, r"stage.user_template refers to \{body\}.*\['id', 'title', 'text'\]"),
        ({**TEMPLATE, "samples_per_row": 0}, r"stage.samples_per_row=0 must be an integer >= 1"),
        ({**EXTRACT, "output_schema": {"q": "text"}}, r"stage.output_schema.q: unknown type 'text'"),
        ({**TEMPLATE, "filters": {"column": "x"}}, r"stage.filters must be a list of filters"),
        ({**TEMPLATE, "filters": [{"column": "x", "min_word": 3}]}, r"stage.filters\[0\].min_word is not an option of"),
        ({**TEMPLATE, "filters": [{"column": "x"}, {"must_match": "a"}]}, r"stage.filters\[1\].column is required"),
        (
            {**TEMPLATE, "filters": [{"column": "x"}, {"column": "x", "must_match": "(a"}]},
            r"stage.filters\[1\].must_match='\(a' is not a valid regular expression",
        ),
        ({**TEMPLATE, "filters": [{"column": "x", "action": "hide"}]}, r"stage.filters\[0\].action='hide' is not"),
    ],
)
def test_mistakes_name_the_config_key(sim, cfg, message) -> None:
    with pytest.raises(ValueError, match=message):
        _build(sim, cfg, base_dir=ROOT)
    assert sim.stats()["requests"] == 0


def test_hydra_config_objects_are_accepted(sim) -> None:
    from omegaconf import OmegaConf

    stage, filters = _build(sim, OmegaConf.create(EXTRACT), base_dir=ROOT)
    assert stage.structured.field_names == ["question", "answer"] and len(filters) == 1


def test_shipped_sample_data_has_the_documented_fields() -> None:
    rows = [json.loads(line) for line in (ROOT / "data" / "passages.jsonl").read_text().splitlines()]
    assert len(rows) >= 8 and [row["id"] for row in rows] == list(range(len(rows)))
    assert all(set(row) == {"id", "title", "text"} and len(row["text"].split()) >= 40 for row in rows)
