"""Filters applied to a generated dataset: drop (or flag) rows whose text fails simple quality checks.

Each row counts under its first failing reason only, so the counts add up to the rows filtered. Rows whose
column is null (failed generations) are left alone: they already say why in `error`. With action="keep",
rows flagged by an earlier filter are skipped too, so "keep" and "drop" count exactly the same rows.
"""

from __future__ import annotations

import re
from typing import Any

import datasets

__all__ = ["ACTIONS", "FILTERED_BY", "REASONS", "FilterStage"]

REASONS = ("min_words", "max_words", "must_match", "must_not_match", "required_prefix", "duplicate")
ACTIONS = ("drop", "keep")
FILTERED_BY = "filtered_by"


def _compile(option: str, pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    if not isinstance(pattern, str):
        raise ValueError(f"{option}={pattern!r} must be a regular expression string")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(
            f"{option}={pattern!r} is not a valid regular expression ({exc}); escape special characters, e.g. \\?"
        ) from None


def _check_words(option: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise ValueError(f"{option}={value!r} must be a non-negative integer (a number of words) or null")


class FilterStage:
    """Checks one text column; `process` returns the filtered dataset and how many rows failed each check.

    must_match / must_not_match are searched anywhere in the text (use ^...$ to anchor them);
    required_prefix is checked after leading whitespace; words are whitespace-separated tokens.
    """

    name = "filter"

    def __init__(
        self,
        column: str,
        *,
        min_words: int | None = None,
        max_words: int | None = None,
        must_match: str | None = None,
        must_not_match: str | None = None,
        required_prefix: str | None = None,
        drop_duplicates: bool = False,
        action: str = "drop",
    ) -> None:
        if not isinstance(column, str) or not column:
            raise ValueError(f"column={column!r} must name the text column to check, e.g. generated")
        _check_words("min_words", min_words)
        _check_words("max_words", max_words)
        if min_words is not None and max_words is not None and min_words > max_words:
            raise ValueError(f"min_words={min_words} is above max_words={max_words}: no row could pass")
        if required_prefix is not None and not isinstance(required_prefix, str):
            raise ValueError(f"required_prefix={required_prefix!r} must be a string, e.g. 'Question:'")
        if not isinstance(drop_duplicates, bool):
            raise ValueError(f"drop_duplicates={drop_duplicates!r} must be true or false")
        if action not in ACTIONS:
            raise ValueError(f"action={action!r} is not known; use one of {', '.join(ACTIONS)}")
        self.column = column
        self.min_words = min_words
        self.max_words = max_words
        self.must_match = _compile("must_match", must_match)
        self.must_not_match = _compile("must_not_match", must_not_match)
        self.required_prefix = required_prefix
        self.drop_duplicates = drop_duplicates
        self.action = action

    @property
    def reasons(self) -> list[str]:
        """The checks this filter makes, in the order they are tried."""
        enabled = {
            "min_words": self.min_words is not None,
            "max_words": self.max_words is not None,
            "must_match": self.must_match is not None,
            "must_not_match": self.must_not_match is not None,
            "required_prefix": self.required_prefix is not None,
            "duplicate": self.drop_duplicates,
        }
        return [reason for reason in REASONS if enabled[reason]]

    def failing_reason(self, text: str, seen: set[str]) -> str | None:
        """The first check `text` fails, or None; `seen` holds the values of earlier checked rows."""
        words = len(text.split())
        if self.min_words is not None and words < self.min_words:
            return "min_words"
        if self.max_words is not None and words > self.max_words:
            return "max_words"
        if self.must_match is not None and not self.must_match.search(text):
            return "must_match"
        if self.must_not_match is not None and self.must_not_match.search(text):
            return "must_not_match"
        if self.required_prefix is not None and not text.lstrip().startswith(self.required_prefix):
            return "required_prefix"
        if self.drop_duplicates and text in seen:
            return "duplicate"
        seen.add(text)
        return None

    def process(self, dataset: datasets.Dataset) -> tuple[datasets.Dataset, dict[str, int]]:
        """The dataset without (or, with action="keep", flagging) failing rows, and the count per reason."""
        self._check_column(dataset)
        flagged = dataset[FILTERED_BY] if FILTERED_BY in dataset.column_names else [None] * len(dataset)
        counts = dict.fromkeys(self.reasons, 0)
        seen: set[str] = set()
        verdicts: list[str | None] = []
        for text, earlier in zip(dataset[self.column], flagged, strict=True):
            reason = None if text is None or earlier is not None else self.failing_reason(text, seen)
            if reason is not None:
                counts[reason] += 1
            verdicts.append(earlier or reason)
        if self.action == "drop":
            kept = [i for i, (verdict, earlier) in enumerate(zip(verdicts, flagged, strict=True)) if verdict == earlier]
            return dataset.select(kept), counts
        if FILTERED_BY in dataset.column_names:
            dataset = dataset.remove_columns(FILTERED_BY)
        return dataset.add_column(FILTERED_BY, verdicts, feature=datasets.Value("string")), counts

    def _check_column(self, dataset: datasets.Dataset) -> None:
        if self.column not in dataset.column_names:
            raise ValueError(
                f"filter column {self.column!r} is not in the dataset; available columns: {dataset.column_names}"
            )
        feature = dataset.features[self.column]
        if not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
            raise ValueError(
                f"filter column {self.column!r} holds {feature}, not text: point the filter at a string column"
            )

    def __repr__(self) -> str:
        return f"FilterStage({self.column!r}, checks={self.reasons}, action={self.action!r})"
