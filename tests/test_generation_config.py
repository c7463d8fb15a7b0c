from __future__ import annotations

import pytest

from sdg.client import GenerationConfig


def test_defaults_match_nemo_curator() -> None:
    config = GenerationConfig()
    assert (config.max_tokens, config.temperature, config.top_p, config.top_k) == (2048, 0.0, 0.95, None)
    assert (config.seed, config.stop, config.stream, config.n) == (0, None, False, 1)


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("temperature", 2.5, "between 0.0 and 2.0"),
        ("temperature", -0.1, "between 0.0 and 2.0"),
        ("top_p", 1.5, "between 0.0 and 1.0"),
        ("max_tokens", 0, ">= 1"),
        ("n", 0, ">= 1"),
        ("top_k", -1, ">= 0"),
    ],
)
def test_out_of_range_names_field_and_range(field: str, value: float, words: str) -> None:
    with pytest.raises(ValueError, match=field) as info:
        GenerationConfig(**{field: value})
    assert words in str(info.value)


def test_top_k_goes_to_the_body_and_stop_accepts_str_or_list() -> None:
    body = GenerationConfig(top_k=40, stop="###", seed=7).request_body()
    assert body["top_k"] == 40 and body["stop"] == "###" and body["seed"] == 7
    assert GenerationConfig(stop=("a", "b")).request_body()["stop"] == ["a", "b"]
    with pytest.raises(ValueError, match="stop"):
        GenerationConfig(stop=["a", 3])  # type: ignore[list-item]


def test_extra_body_is_merged_and_stream_asks_for_usage() -> None:
    body = GenerationConfig(extra_body={"repetition_penalty": 1.1}, stream=True).request_body()
    assert body["repetition_penalty"] == 1.1
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
