"""Data metrics against values computed by hand on small fixed datasets (sdg.metrics)."""

from __future__ import annotations

import datasets
import pyarrow as pa
import pytest

from sdg.client.stats import ClientStats
from sdg.metrics import METRICS, Price, compute_metrics, describe, language_code

# index: text | error | finish_reason
ROWS = [
    ("The cat sat.", None, "stop"),  # a text: 3 words; tokens the cat sat
    ("The cat sat.", None, "stop"),  # the same text: an exact (and so a near) duplicate
    ("the CAT, sat!", None, "stop"),  # other text, same tokens: a near duplicate only
    ("A dog runs fast today", None, "length"),  # cut at max_tokens
    (None, None, "stop"),  # a refusal: answered, empty
    ("   ", None, "stop"),  # blank: answered, empty
    (None, "rate_limited: HTTP 429", None),  # never answered: in no share
    (None, "empty_answer: no content", "length"),  # answered (it spent tokens), empty and cut
]


def _table(**extra: list) -> pa.Table:
    return pa.table(
        {
            "index": list(range(len(ROWS))),
            "text": [r[0] for r in ROWS],
            "error": pa.array([r[1] for r in ROWS], pa.string()),
            "finish_reason": [r[2] for r in ROWS],
            **extra,
        }
    )


def test_length_emptiness_truncation_diversity_and_duplicates_by_hand() -> None:
    m = compute_metrics(_table())
    # texts: rows 0-3 (no error, not blank): words 3, 3, 3, 5
    assert m["text_words_mean"] == 3.5
    assert m["text_words_p50"] == 3.0
    assert m["text_words_p95"] == pytest.approx(4.7)  # rank 0.95 * 3 = 2.85: 3 + 0.85 * (5 - 3)
    # answered: rows 0-5 and 7 (7); empty: 4, 5, 7; cut: 3, 7
    assert m["empty_share"] == pytest.approx(3 / 7)
    assert m["truncated_share"] == pytest.approx(2 / 7)
    # tokens: the cat sat (x3), a dog runs fast today: 14, of which 8 distinct
    assert m["distinct_1"] == pytest.approx(8 / 14)
    # bigrams: (the cat) (cat sat) x3 + 4 of row 3: 10, of which 6 distinct
    assert m["distinct_2"] == pytest.approx(6 / 10)
    assert m["duplicate_share"] == 0.25  # row 1
    assert m["near_duplicate_share"] == 0.5  # rows 1 and 2
    for absent in ("language_match_share", "parse_ok_share", "filter_pass_share", "judge_score_mean", "cost_usd"):
        assert absent not in m, absent


def test_near_duplicates_need_most_3_grams_in_common() -> None:
    words = [f"word{i}" for i in range(45)]
    base = " ".join(words)  # 43 distinct trigrams
    texts = [
        base,
        base.rsplit(" ", 1)[0] + " other",  # last word changed: Jaccard 42/44 = 0.95: near
        " ".join(reversed(words)),  # same words, other order: no trigram in common
        "a completely different sentence about rivers and the sea",
        "A completely different sentence about rivers and the sea!",  # same tokens as the one above
    ]
    m = compute_metrics(pa.table({"text": texts}))
    assert m["near_duplicate_share"] == pytest.approx(2 / 5)
    assert m["duplicate_share"] == 0.0


def test_language_match_share_with_the_bundled_offline_model() -> None:
    table = pa.table(
        {
            "text": [
                "Question: Why is the sky blue? Answer: Because air scatters blue sunlight more than red light.",
                "Question : Pourquoi le ciel est-il bleu ? Réponse : Parce que l'air diffuse la lumière bleue.",
                "Question: How many legs does a spider have? Answer: A spider has eight legs.",  # asked in German
                "Frage: Was ist Wasser? Antwort: Eine Verbindung aus Wasserstoff und Sauerstoff.",  # unknown name
            ],
            "language": ["English", "fr", "German", "Klingon"],
        }
    )
    assert compute_metrics(table)["language_match_share"] == pytest.approx(2 / 3)
    assert language_code("French") == "fr" and language_code(" hindi ") == "hi" and language_code("Klingon") is None


def test_parse_ok_filter_pass_and_judge_shares_by_hand() -> None:
    structured = pa.table(
        {
            "generated": ['{"a": 1}', "not json", None],
            "error": pa.array([None, "parse_error: invalid JSON", "timeout: read"], pa.string()),
            "finish_reason": ["stop", "stop", None],
            "parse_retries": [0, 2, 1],
        }
    )
    # answered: rows 0 and 1; parsed: row 0
    assert compute_metrics(structured, text_column="generated")["parse_ok_share"] == 0.5

    # filters dropped 3 rows (counts per reason); 4 texts remain
    assert compute_metrics(_table(), filter_counts={"min_words": 2, "duplicate": 1})["filter_pass_share"] == 4 / 7
    # action=keep: flagged texts stay, with the reason in filtered_by
    flagged = _table(filtered_by=pa.array([None, "duplicate", None, "min_words", None, None, None, None], pa.string()))
    assert compute_metrics(flagged, filter_counts={"min_words": 1, "duplicate": 1})["filter_pass_share"] == 0.5

    judged = _table(
        judge_score=pa.array([5, 3, None, 1, None, None, None, None], pa.int64()),
        judge_error=pa.array([None, None, "parse_error: x", None, None, None, None, None], pa.string()),
    )
    m = compute_metrics(judged)
    assert m["judge_score_mean"] == 3.0
    assert m["judge_score_p10"] == pytest.approx(1.4)  # [1, 3, 5]: rank 0.2: 1 + 0.2 * (3 - 1)
    assert m["judge_failed"] == 1


def test_cost_is_tokens_times_price_exactly() -> None:
    stats = ClientStats(requests=10, prompt_tokens=1000, completion_tokens=500)
    judge = ClientStats(requests=12, prompt_tokens=3000, completion_tokens=100)
    m = compute_metrics(
        _table(), stats=stats, price=Price(2.0, 8.0), judge_stats=judge, judge_price=Price(output_per_mtok=10.0)
    )
    assert m["cost_usd"] == (1000 * 2.0 + 500 * 8.0) / 1e6 == 0.006
    assert m["judge_cost_usd"] == 100 * 10.0 / 1e6  # an unset input price counts as free
    assert m["judge_requests"] == 12
    assert "cost_usd" not in compute_metrics(_table(), stats=stats)  # no price: no cost, not a cost of 0
    assert Price(1.5, None).cost(2_000_000, 7) == 3.0


def test_a_datasets_dataset_with_an_indices_mapping_is_read_as_selected() -> None:
    dataset = datasets.Dataset(_table()).select([3, 0])
    m = compute_metrics(dataset)
    assert m["text_words_mean"] == 4.0 and m["truncated_share"] == 0.5


def test_every_metric_says_how_it_is_computed() -> None:
    assert len(METRICS) >= 17
    for name, fn in METRICS.items():
        assert fn.__doc__ and len(fn.__doc__) > 30, name
        assert f"{name}: " in describe()
