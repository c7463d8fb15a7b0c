"""A prompt template over an input dataset: one request per (row, sample), the row's columns kept in the output.

The stage is pickled to every worker, so it carries only the input's path, schema and row count; each process
loads the rows itself (once) and checks they are still the rows the run was planned on.
"""

from __future__ import annotations

import datetime
import decimal
import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from sdg.client.base import AsyncLLMClient, Messages
from sdg.client.errors import LLMClientError
from sdg.client.generation import GenerationConfig
from sdg.seeding import derive_seed
from sdg.stages.base import RECORD_SCHEMA, GenerationStage, Task, choice_columns
from sdg.stages.structured import RESPONSE_FORMS, StructuredOutput

__all__ = ["INPUT_KINDS", "PromptTemplateStage", "load_input_table", "template_fields"]

INPUT_KINDS = "a datasets.save_to_disk folder, a .parquet file or a .jsonl file"
ROW_INDEX = "row_index"
PARSE_RETRIES = "parse_retries"
# Input columns may not reuse these: the stage writes them itself.
RESERVED_COLUMNS = frozenset({f.name for f in RECORD_SCHEMA if f.name != "text"} | {ROW_INDEX, PARSE_RETRIES})


def load_input_table(path: Path) -> pa.Table:
    """The rows at `path` as an Arrow table; ValueError naming the accepted kinds for anything else."""
    if not path.exists():
        raise ValueError(f"input_path {str(path)!r} does not exist; give {INPUT_KINDS}")
    if path.is_dir():
        return _load_saved_dataset(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pq.read_table(path)
        if suffix == ".jsonl":
            if path.stat().st_size == 0:
                return pa.table({})  # pyarrow refuses an empty file; the caller reports "no rows"
            # One block for the whole file, so column types are inferred from every row, not the first MiB.
            options = pa_json.ReadOptions(block_size=max(1 << 20, path.stat().st_size + 1))
            return pa_json.read_json(path, read_options=options)
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"input_path {str(path)!r} could not be read as {suffix[1:]}: {exc}") from None
    raise ValueError(f"input_path {str(path)!r} is not a supported input: give {INPUT_KINDS}")


def _load_saved_dataset(path: Path) -> pa.Table:
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise ValueError(
            f"input_path {str(path)!r} is a folder but not one written by datasets' save_to_disk; give {INPUT_KINDS}"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        raise ValueError(
            f"input_path {str(path)!r} holds a DatasetDict with splits {list(loaded)}: point at one split's folder, "
            f"e.g. {str(path / next(iter(loaded), 'train'))!r}"
        )
    return loaded.flatten_indices().data.table


def template_fields(template: str, option: str) -> list[str]:
    """The column names a template's `{placeholders}` refer to; ValueError for unnamed or broken ones."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{option} is not a valid template ({exc}); write literal braces as {{{{ and }}}}") from None
    names: list[str] = []
    for _, field, _, _ in parsed:
        if field is None:
            continue
        column = field.split(".", 1)[0].split("[", 1)[0]
        if not column or column.isdigit():
            raise ValueError(
                f"{option} has the placeholder {{{field}}}: placeholders must name an input column, e.g. {{text}}"
            )
        if column not in names:
            names.append(column)
    return names


def _plain_schema(schema: pa.Schema) -> pa.Schema:
    """Names and types only: metadata (e.g. datasets' features) is not part of what the stage writes."""
    return pa.schema([pa.field(f.name, f.type, f.nullable) for f in schema])


def _unsupported(kind: pa.DataType) -> bool:
    """Types that cannot travel through the JSON part files and come back as they were."""
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return _unsupported(kind.value_type)
    if pa.types.is_struct(kind):
        return any(_unsupported(kind.field(i).type) for i in range(kind.num_fields))
    return any(
        check(kind)
        for check in (
            pa.types.is_binary,
            pa.types.is_large_binary,
            pa.types.is_fixed_size_binary,
            pa.types.is_time,
            pa.types.is_duration,
            pa.types.is_interval,
            pa.types.is_map,
            pa.types.is_union,
        )
    )


def _json_safe(value: Any) -> Any:
    """Row values as JSON; timestamps, dates and decimals as strings that cast back to their column type."""
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def _check_count(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}={value!r} must be an integer >= {low}")


class PromptTemplateStage(GenerationStage):
    """Task i renders the templates with row i // samples_per_row of the input; the answer lands in `output_column`.

    With `output_schema`, answers are asked for as JSON of that schema, parsed into one column per field, and
    re-asked with a seed derived from the task's seed (up to `max_parse_retries` times) while they are invalid.
    """

    name = "template"

    def __init__(
        self,
        input_path: str | Path,
        user_template: str,
        client: AsyncLLMClient,
        model_name: str,
        generation_config: GenerationConfig | None = None,
        system_template: str | None = None,
        samples_per_row: int = 1,
        output_column: str = "generated",
        input_limit: int | None = None,
        output_schema: Mapping[str, Any] | None = None,
        max_parse_retries: int = 2,
        response_format: str = "json_schema",
    ) -> None:
        if response_format not in RESPONSE_FORMS:
            raise ValueError(f"response_format={response_format!r} must be one of {list(RESPONSE_FORMS)}")
        self.response_format = response_format
        _check_count("samples_per_row", samples_per_row, 1)
        _check_count("max_parse_retries", max_parse_retries, 0)
        if input_limit is not None:
            _check_count("input_limit", input_limit, 1)
        if not isinstance(output_column, str) or not output_column:
            raise ValueError(f"output_column={output_column!r} must be a non-empty column name, e.g. generated")
        if not isinstance(user_template, str) or not user_template.strip():
            raise ValueError("user_template must be a non-empty template, e.g. 'Rewrite: {text}'")
        if system_template is not None and not isinstance(system_template, str):
            raise ValueError(f"system_template must be a string template or null, got {system_template!r}")
        self.input_path = Path(input_path).expanduser().resolve()
        self.input_limit = input_limit
        table = self._load()
        if table.num_rows == 0:
            raise ValueError(f"input_path {str(self.input_path)!r} has no rows: there is nothing to generate from")
        self.input_schema = _plain_schema(table.schema)
        self.num_rows = table.num_rows
        self.user_template = user_template
        self.system_template = system_template
        self.samples_per_row = samples_per_row
        self.output_column = output_column
        self.text_column = output_column
        self.max_parse_retries = max_parse_retries
        self.structured = StructuredOutput(output_schema) if output_schema is not None else None
        self._check_columns()
        super().__init__(
            client=client,
            model_name=model_name,
            num_samples=self.num_rows * samples_per_row,
            generation_config=self._with_response_format(generation_config or GenerationConfig()),
        )
        self._table: pa.Table | None = table
        self._messages(self._row(0))  # a bad format spec (e.g. {text:d}) fails now, not in a worker

    # ---------------------------------------------------------------- planning

    def _load(self) -> pa.Table:
        table = load_input_table(self.input_path)
        return table.slice(0, self.input_limit) if self.input_limit is not None else table

    def _check_columns(self) -> None:
        """Every placeholder names a column and no column is written twice, before any request is sent."""
        self._check_placeholders()
        self._check_input_types()
        self._check_names()

    def _check_placeholders(self) -> None:
        columns = self.input_schema.names
        for option, template in (("user_template", self.user_template), ("system_template", self.system_template)):
            missing = [name for name in template_fields(template or "", option) if name not in columns]
            if missing:
                raise ValueError(
                    f"{option} refers to {', '.join(f'{{{m}}}' for m in missing)} but the input has no such column; "
                    f"available columns: {columns}"
                )

    def _check_input_types(self) -> None:
        bad_types = [f"{f.name} ({f.type})" for f in self.input_schema if _unsupported(f.type)]
        if bad_types:
            raise ValueError(
                f"input columns {bad_types} cannot be carried into the output rows; cast them to string or drop "
                "them in the input first"
            )

    def _check_names(self) -> None:
        columns = self.input_schema.names
        reserved = sorted(RESERVED_COLUMNS.intersection(columns))
        if reserved:
            raise ValueError(
                f"input columns {reserved} clash with columns the stage writes ({sorted(RESERVED_COLUMNS)}); "
                "rename or drop them in the input, e.g. dataset.rename_column('seed', 'source_seed')"
            )
        if self.output_column in columns or self.output_column in RESERVED_COLUMNS:
            raise ValueError(
                f"output_column={self.output_column!r} clashes with an input column or a column the stage writes; "
                "choose another name, e.g. output_column: generated"
            )
        if self.structured is not None:
            taken = {*columns, *RESERVED_COLUMNS, self.output_column}
            clash = [name for name in self.structured.field_names if name in taken]
            if clash:
                raise ValueError(
                    f"output_schema fields {clash} clash with input columns or columns the stage writes "
                    f"({sorted(taken)}); rename the fields"
                )

    def _with_response_format(self, config: GenerationConfig) -> GenerationConfig:
        if self.structured is None:
            return config
        extra = dict(config.extra_body or {})
        if "response_format" in extra:
            raise ValueError(
                "output_schema and generation extra_body.response_format both set the answer format; keep one"
            )
        if (config.n or 1) != 1:
            raise ValueError(
                f"output_schema needs generation n=1 (got n={config.n}): each answer is parsed and re-asked on its "
                "own; use samples_per_row for more answers per row"
            )
        answer_format = self.structured.response_format(self.response_format)
        return config.replace(extra_body={**extra, "response_format": answer_format})

    def columns_schema(self) -> pa.Schema:
        fields = [*self.input_schema, pa.field(ROW_INDEX, pa.int64()), pa.field(self.output_column, pa.string())]
        if self.structured is not None:
            fields += [*self.structured.arrow_fields(), pa.field(PARSE_RETRIES, pa.int32())]
        return pa.schema(fields)

    def make_task(self, index: int, run_seed: int) -> Task:
        row_index = index // self.samples_per_row
        row = self._row(row_index)
        return Task(
            index=index,
            messages=self._messages(row),
            seed=self.request_seed(index, run_seed),
            columns={**{k: _json_safe(v) for k, v in row.items()}, ROW_INDEX: row_index},
        )

    def _messages(self, row: dict[str, Any]) -> Messages:
        messages = [{"role": "user", "content": self.user_template.format_map(row)}]
        if self.system_template:
            messages.insert(0, {"role": "system", "content": self.system_template.format_map(row)})
        return messages

    def _row(self, row_index: int) -> dict[str, Any]:
        if not 0 <= row_index < self.num_rows:
            raise IndexError(f"row {row_index} is outside the input's {self.num_rows} rows")
        return self._input().slice(row_index, 1).to_pylist()[0]

    def _input(self) -> pa.Table:
        """The input rows, loaded once per process and checked against the plan."""
        if self._table is None:
            table = self._load()
            if table.num_rows != self.num_rows or not _plain_schema(table.schema).equals(self.input_schema):
                raise RuntimeError(
                    f"{self.input_path} changed since the stage was built ({self.num_rows} rows planned, "
                    f"{table.num_rows} found): rebuild the stage, or restore the input"
                )
            self._table = table
        return self._table

    def __getstate__(self) -> dict[str, Any]:
        # Workers load the rows themselves; shipping the table would copy the whole input per worker.
        return {**self.__dict__, "_table": None}

    # ---------------------------------------------------------------- running

    async def run_task(self, task: Task) -> list[dict[str, Any]]:
        if self.structured is None:
            return await super().run_task(task)
        return [await self._run_structured(task, self.structured)]

    async def _run_structured(self, task: Task, structured: StructuredOutput) -> dict[str, Any]:
        """Ask until the answer parses (at most 1 + max_parse_retries requests); usage sums over all of them."""
        spent = dict.fromkeys(("prompt_tokens", "completion_tokens", "latency_s", "attempts"), 0)
        seed, reason = task.seed, None
        for retry in range(self.max_parse_retries + 1):
            if retry:
                seed = derive_seed(task.seed, task.index, f"parse-retry-{retry}")
            base = {**task.columns, "index": task.index, "model": self.model_name, "seed": seed, PARSE_RETRIES: retry}
            config = self.generation_config.replace(seed=seed)
            try:
                completion = await self.client.complete(task.messages, self.model_name, config)
            except LLMClientError as error:
                row = {**self._error_row(base, error, self.output_column), **structured.empty()}
                return {**row, **_summed(spent, row)} if retry else row
            answer = choice_columns(completion, 0, self.output_column)
            text, finish = answer[self.output_column], answer["finish_reason"]
            spent = _summed(spent, vars(completion))
            values, reason = structured.parse(text, finish)
            row = {**base, "choice": 0, **answer, **values, **spent}
            if reason is None:
                return {**row, "error": None, "error_kind": None}
        return {**row, "error": f"parse_error: {reason}", "error_kind": "parse_error"}


def _summed(total: dict[str, Any], spent: Mapping[str, Any]) -> dict[str, Any]:
    """Usage summed over a task's requests, so column sums equal what every request cost."""
    return {key: total[key] + (spent.get(key) or 0) for key in total}
