"""Generating over the user's own data from the CLI: template stage, structured output, filters in MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from sdg.client import AsyncOpenAIClient, GenerationConfig
from sdg.execution.local import LocalExecutor
from sdg.pipeline import Pipeline
from sdg.stages import PromptTemplateStage
from tests.test_run_cli import _dataset_dirs, _mlflow_runs, sdg

pytestmark = pytest.mark.slow


def _write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"doc": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    return path


def test_template_over_a_jsonl_keeps_input_columns_is_seeded_and_filters_are_counted(tmp_path: Path, sim) -> None:
    source = _write_jsonl(tmp_path / "in.jsonl", [f"Passage number {i} about rivers and hills." for i in range(12)])
    done = sdg(
        "client=sim",
        "stage=template",
        f"stage.input.path={source}",
        "stage.system_template=null",
        "stage.user_template='Rewrite: {text}'",
        "generation.max_tokens=64",
        "stage.filters=[{column:generated,min_words:30}]",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    (folder,) = _dataset_dirs(tmp_path)
    dataset = datasets.load_from_disk(str(folder))
    metrics = _mlflow_runs(tmp_path)[0].data.metrics
    dropped = int(metrics["num_filtered_min_words"])
    assert 0 < dropped < 12 and len(dataset) == 12 - dropped
    assert {"doc", "text", "generated", "index", "seed", "finish_reason", "latency_s", "error"} <= set(
        dataset.column_names
    )
    assert all(len(g.split()) >= 30 for g in dataset["generated"])
    assert "num_filtered_min_words" in (folder / "README.md").read_text()

    # The same stage and seed through the library, against another sim process: the same text.
    client = AsyncOpenAIClient(base_url=sim.base_url, api_key_env=None)
    stage = PromptTemplateStage(
        input_path=source,
        user_template="Rewrite: {text}",
        client=client,
        model_name="sim-model",
        generation_config=GenerationConfig(max_tokens=64, temperature=0.7),
    )
    again = Pipeline("t").add_stage(stage).run(LocalExecutor(), seed=0, output_dir=tmp_path / "lib", progress=False)
    kept = set(dataset["doc"])
    assert [g for d, g in zip(again["doc"], again["generated"], strict=True) if d in kept] == list(dataset["generated"])


def test_structured_output_with_broken_json_is_parsed_or_marked(tmp_path: Path) -> None:
    done = sdg(
        "client=sim",
        "stage=extract_qa",
        "client.sim.p_bad_json=0.2",
        "client.sim.seed=11",
        "stage.filters=[]",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    (folder,) = _dataset_dirs(tmp_path)
    dataset = datasets.load_from_disk(str(folder))
    assert len(dataset) == 16  # 8 passages x 2 samples
    for row in dataset:
        assert (row["question"] and row["answer"] and not row["error"]) or row["error"].startswith("parse_error")
    metrics = _mlflow_runs(tmp_path)[0].data.metrics
    assert metrics["num_parse_retries"] == sum(dataset["parse_retries"]) > 0
    assert metrics["sim_bad_json"] == metrics["num_parse_retries"] + sum(
        1 for e in dataset["error"] if e and e.startswith("parse_error")
    )
