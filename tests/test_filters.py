"""Filters over a generated dataset: each reason counted once per row, drop vs keep, nulls left alone."""

from __future__ import annotations

import datasets
import pytest

from sdg.client import AsyncOpenAIClient, GenerationConfig
from sdg.execution.local import LocalExecutor
from sdg.pipeline import Pipeline
from sdg.stages import FilterStage, QAMultilingualSyntheticStage

TEXTS = [
    "Question: what is light? Answer: a wave.",  # 0 passes everything below
    "Question: short?",  # 1 min_words
    "Question: " + "word " * 30,  # 2 max_words
    "Question: no answer here at all",  # 3 must_match
    "Question: what? Answer: I cannot help with that.",  # 4 must_not_match
    "Answer: first. Question: second?",  # 5 required_prefix
    "Question: what is light? Answer: a wave.",  # 6 duplicate of 0
    None,  # 7 a failed generation
    "  Question: indented but fine? Answer: yes it is.",  # 8 passes (prefix after whitespace)
]


def _dataset(texts: list[str | None] = TEXTS) -> datasets.Dataset:
    features = datasets.Features({"index": datasets.Value("int64"), "generated": datasets.Value("string")})
    return datasets.Dataset.from_dict({"index": list(range(len(texts))), "generated": texts}, features=features)


def _filter(**options) -> FilterStage:
    defaults = {
        "min_words": 4,
        "max_words": 20,
        "must_match": r"Answer:",
        "must_not_match": r"(?i)cannot help",
        "required_prefix": "Question:",
        "drop_duplicates": True,
    }
    return FilterStage("generated", **{**defaults, **options})


def test_each_reason_is_counted_and_dropped() -> None:
    dataset, counts = _filter().process(_dataset())
    assert counts == {
        "min_words": 1,
        "max_words": 1,
        "must_match": 1,
        "must_not_match": 1,
        "required_prefix": 1,
        "duplicate": 1,
    }
    assert list(dataset["index"]) == [0, 7, 8]  # the null row is left for its error to speak
    assert "filtered_by" not in dataset.column_names


def test_keep_flags_the_first_failing_reason() -> None:
    dataset, counts = _filter(action="keep").process(_dataset())
    assert list(dataset["index"]) == list(range(len(TEXTS)))
    assert dataset.features["filtered_by"] == datasets.Value("string")
    assert list(dataset["filtered_by"]) == [
        None,
        "min_words",
        "max_words",
        "must_match",
        "must_not_match",
        "required_prefix",
        "duplicate",
        None,
        None,
    ]
    assert counts == _filter().process(_dataset())[1]


def test_only_enabled_checks_are_reported_and_applied() -> None:
    dataset, counts = FilterStage("generated", min_words=6).process(_dataset())
    assert counts == {"min_words": 2}  # rows 1 (2 words) and 5 (5 words)
    assert list(dataset["index"]) == [0, 2, 3, 4, 6, 7, 8]


def test_duplicates_keep_the_first_occurrence() -> None:
    texts = ["a b", "c d", "a b", None, None, "a b", "c d "]
    dataset, counts = FilterStage("generated", drop_duplicates=True).process(_dataset(texts))
    assert counts == {"duplicate": 2}  # "c d " differs from "c d": duplicates are exact
    assert list(dataset["generated"]) == ["a b", "c d", None, None, "c d "]


def test_a_later_filter_skips_rows_an_earlier_keep_filter_flagged() -> None:
    first, _ = FilterStage("generated", min_words=4, action="keep").process(_dataset())
    second, counts = FilterStage("generated", required_prefix="Question:", action="keep").process(first)
    assert counts == {"required_prefix": 1}
    assert second["filtered_by"][1] == "min_words" and second["filtered_by"][5] == "required_prefix"
    dropped, _ = FilterStage("generated", required_prefix="Question:").process(first)
    assert list(dropped["index"]) == [0, 1, 2, 3, 4, 6, 7, 8]  # flagged rows stay; only the new failure goes


def test_filter_after_a_real_generation_run(sim, tmp_path) -> None:
    client = AsyncOpenAIClient(base_url=sim.base_url, api_key_env=None)
    stage = QAMultilingualSyntheticStage(
        prompt="A Q&A pair in {language}.",
        languages=["English"],
        client=client,
        model_name="sim-model",
        num_samples=20,
        generation_config=GenerationConfig(temperature=0.9, max_tokens=256),
    )
    generated = Pipeline("t").add_stage(stage).run(LocalExecutor(), seed=1, output_dir=tmp_path, progress=False)
    dataset, counts = FilterStage("text", min_words=30, required_prefix="Question:").process(generated)
    short = sum(len(t.split()) < 30 for t in generated["text"])
    assert counts == {"min_words": short, "required_prefix": 0}
    assert 0 < short < len(generated) and len(dataset) == len(generated) - short
    assert all(len(t.split()) >= 30 for t in dataset["text"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"must_match": "(unclosed"}, r"must_match='\(unclosed' is not a valid regular expression"),
        ({"must_not_match": "*"}, r"must_not_match='\*' is not a valid regular expression"),
        ({"action": "flag"}, r"action='flag' is not known; use one of drop, keep"),
        ({"min_words": -1}, r"min_words=-1 must be a non-negative integer"),
        ({"min_words": 5, "max_words": 2}, r"min_words=5 is above max_words=2"),
        ({"drop_duplicates": "yes"}, r"drop_duplicates='yes' must be true or false"),
    ],
)
def test_bad_options_are_named(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        FilterStage("generated", **options)


def test_wrong_column_is_explained() -> None:
    with pytest.raises(ValueError, match=r"'answer' is not in the dataset; available columns: \['index', 'gener"):
        FilterStage("answer", min_words=1).process(_dataset())
    with pytest.raises(ValueError, match=r"'index' holds .*int64.*not text"):
        FilterStage("index", min_words=1).process(_dataset())
