"""An LLM judge: after generation, each generated row is scored 1..5 with a reason by a model of your choice.

The judge is a prompt-template stage over the finished rows: its rubric's `{column}` placeholders are filled
from each row (`{output}` is the stage's generated text, whatever its column is called), and the answer is
asked for as JSON `{"score": 1..5, "reason": str}` through the structured-output path, parse retries
included. It runs on the same executor as the generation, so its requests go through the same client
machinery and adaptive limit, and its own stats count them apart from the run's.

Rows that failed (an `error`) or that a filter flagged (`filtered_by`) are not judged. Verdicts are written
to parts like generated rows (`judge/<fingerprint>/parts/`), keyed by the judged row's (index, choice): a
resumed run asks only for verdicts it has not got, and a changed rubric or judge model starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import asdict
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc

from sdg.client.base import AsyncLLMClient
from sdg.client.generation import GenerationConfig
from sdg.seeding import derive_seed
from sdg.stages.base import Task
from sdg.stages.template import PromptTemplateStage, template_fields

__all__ = [
    "DEFAULT_RUBRIC",
    "JUDGE_COLUMNS",
    "JUDGE_SCHEMA",
    "VERDICT_SCHEMA",
    "JudgeStage",
    "LLMJudge",
    "best_verdicts",
]

# The answer the judge must give; the sim answers such a schema with valid fake JSON.
JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "score": {"type": "integer", "minimum": 1, "maximum": 5},
        "reason": {"type": "string"},
    },
    "required": ["score", "reason"],
    "additionalProperties": False,
}
OUTPUT_ALIAS = "output"  # the placeholder for the generated text, whatever the stage's text column is
JUDGED_INDEX = "judged_index"
JUDGED_CHOICE = "judged_choice"
JUDGE_RAW = "judge_raw"
JUDGE_COLUMNS = ("judge_score", "judge_reason", "judge_error")
# What is read back from the judge's parts: the judged row's key, the verdict and what it cost.
VERDICT_SCHEMA = pa.schema(
    [
        (JUDGED_INDEX, pa.int64()),
        (JUDGED_CHOICE, pa.int64()),
        ("score", pa.int64()),
        ("reason", pa.string()),
        ("error", pa.string()),
        ("prompt_tokens", pa.int64()),
        ("completion_tokens", pa.int64()),
    ]
)
DEFAULT_RUBRIC = """You grade synthetic training data. Score the text below from 1 to 5:
5 = correct, coherent, complete and useful; 4 = good, with small flaws; 3 = usable but mediocre;
2 = mostly wrong, incoherent or off-topic; 1 = unusable (empty, garbled, refusing, or in the wrong language).
Give the score and a one-sentence reason, as JSON: {{"score": <1-5>, "reason": "<why>"}}

Text:
{output}"""


def _rewrite(template: str, renames: dict[str, str]) -> str:
    """`template` with each placeholder's column renamed (format specs, conversions and literal braces kept)."""
    out: list[str] = []
    for literal, name, spec, conversion in string.Formatter().parse(template):
        out.append(literal.replace("{", "{{").replace("}", "}}"))
        if name is None:
            continue
        column = name.split(".", 1)[0].split("[", 1)[0]
        field = renames[column] + name[len(column) :]
        out.append("{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}")
    return "".join(out)


class JudgeStage(PromptTemplateStage):
    """The judge's requests: one per row to judge, over the rows (their placeholder columns) it carries itself.

    The rows travel with the stage (the driver made them; a worker on another node has no path to read).
    Request seeds derive from the run seed and the judged row's (index, choice), not from its position.
    """

    name = "judge"

    def __init__(
        self,
        rows: pa.Table,
        rubric: str,
        *,
        client: AsyncLLMClient,
        model_name: str,
        generation_config: GenerationConfig,
        max_parse_retries: int,
        where: Path,
        response_format: str = "json_schema",
    ) -> None:
        self._judged_rows = rows  # not `_rows`: that is GenerationStage's method turning an answer into rows
        super().__init__(
            input_path=where,
            user_template=rubric,
            client=client,
            model_name=model_name,
            generation_config=generation_config.replace(n=1),
            output_column=JUDGE_RAW,
            output_schema=JUDGE_SCHEMA,
            max_parse_retries=max_parse_retries,
            response_format=response_format,
        )

    def _load(self) -> pa.Table:
        return self._judged_rows

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def make_task(self, index: int, run_seed: int) -> Task:
        task = super().make_task(index, run_seed)
        key = task.columns[JUDGED_INDEX]
        task.seed = derive_seed(run_seed, key, f"judge-{task.columns[JUDGED_CHOICE]}")
        return task


class LLMJudge:
    """Scores generated rows: `Pipeline(...).add_stage(stage).add_stage(LLMJudge(client, model))`.

    `rubric` is a template over the row's columns (`{output}`: the generated text); `price` prices the judge's
    tokens (None: the run's price). The dataset gets `judge_score` (1..5), `judge_reason` and `judge_error`.
    """

    name = "judge"

    def __init__(
        self,
        client: AsyncLLMClient,
        model_name: str,
        rubric: str = DEFAULT_RUBRIC,
        *,
        generation_config: GenerationConfig | None = None,
        max_parse_retries: int = 2,
        price: Any = None,
        response_format: str = "json_schema",
    ) -> None:
        if not isinstance(rubric, str) or not rubric.strip():
            raise ValueError("rubric must be a non-empty template, e.g. 'Score 1-5 as JSON: {output}'")
        self.placeholders = template_fields(rubric, "rubric")
        if not self.placeholders:
            raise ValueError(
                "rubric has no {column} placeholder: put the row in it, e.g. {output} for the generated text"
            )
        if not model_name:
            raise ValueError("the judge needs a model name")
        if isinstance(max_parse_retries, bool) or not isinstance(max_parse_retries, int) or max_parse_retries < 0:
            raise ValueError(f"max_parse_retries={max_parse_retries!r} must be an integer >= 0")
        self.client = client
        self.model_name = model_name
        self.rubric = rubric
        self.generation_config = (generation_config or GenerationConfig()).replace(n=1)
        self.max_parse_retries = max_parse_retries
        self.price = price
        self.response_format = response_format  # how the judge's endpoint takes a JSON schema

    def check_columns(self, columns: list[str]) -> None:
        """ValueError naming each placeholder that is not a column of the generated rows (nor `{output}`)."""
        missing = [name for name in self.placeholders if name not in columns and name != OUTPUT_ALIAS]
        if missing:
            raise ValueError(
                f"rubric refers to {', '.join(f'{{{m}}}' for m in missing)} but the generated rows have no such "
                f"column; columns: {columns} (and {{{OUTPUT_ALIAS}}}: the generated text)"
            )

    def fingerprint(self) -> str:
        """What determines the verdicts: the rubric, model, sampling and parse retries."""
        determined = {
            "rubric": self.rubric,
            "model": self.model_name,
            "generation": asdict(self.generation_config),
            "max_parse_retries": self.max_parse_retries,
            "schema": JUDGE_SCHEMA,
        }
        return hashlib.sha256(json.dumps(determined, sort_keys=True, default=str).encode()).hexdigest()[:12]

    def to_judge(self, table: pa.Table) -> pa.Array:
        """Which rows are judged: those without error and not flagged by a filter."""
        keep = pc.is_null(table.column("error")) if "error" in table.column_names else pa.array([True] * len(table))
        if "filtered_by" in table.column_names:
            keep = pc.and_(keep, pc.is_null(table.column("filtered_by")))
        return keep

    def stage_for(
        self, table: pa.Table, text_column: str, judged: set[tuple[int, int]], where: Path
    ) -> JudgeStage | None:
        """The judge's stage over the rows still to judge (None when every one has a verdict)."""
        self.check_columns(table.column_names)
        keep = self.to_judge(table)
        rows = table.filter(keep)
        if judged:
            done = [
                (i, c) in judged
                for i, c in zip(rows.column("index").to_pylist(), rows.column("choice").to_pylist(), strict=True)
            ]
            rows = rows.filter(pa.array([not d for d in done]))
        if rows.num_rows == 0:
            return None
        renames = {name: f"c{i}" for i, name in enumerate(self.placeholders)}
        columns = {
            renames[name]: rows.column(text_column if name == OUTPUT_ALIAS and name not in rows.column_names else name)
            for name in self.placeholders
        }
        projected = pa.table(
            {
                **columns,
                JUDGED_INDEX: rows.column("index").cast(pa.int64()),
                JUDGED_CHOICE: rows.column("choice").cast(pa.int64()),
            }
        )
        return JudgeStage(
            projected,
            _rewrite(self.rubric, renames),
            client=self.client,
            model_name=self.model_name,
            generation_config=self.generation_config,
            max_parse_retries=self.max_parse_retries,
            where=where,
            response_format=self.response_format,
        )

    def merge(self, dataset: datasets.Dataset, verdicts: pa.Table) -> datasets.Dataset:
        """The dataset with `judge_score`, `judge_reason` and `judge_error` (null for rows not judged)."""
        import uuid

        from datasets.table import InMemoryTable

        table = dataset.with_format("arrow")[0 : len(dataset)] if len(dataset) else dataset.data.table
        table = table.drop_columns([c for c in JUDGE_COLUMNS if c in table.column_names])
        width = 1 + max(
            pc.max(table.column("choice")).as_py() or 0, pc.max(verdicts.column(JUDGED_CHOICE)).as_py() or 0
        )
        keys = pc.add(
            pc.multiply(table.column("index").cast(pa.int64()), width), table.column("choice").cast(pa.int64())
        )
        verdict_keys = pc.add(pc.multiply(verdicts.column(JUDGED_INDEX), width), verdicts.column(JUDGED_CHOICE))
        at = pc.index_in(keys, value_set=verdict_keys)
        failed = pc.is_valid(verdicts.column("error"))
        table = (
            table.append_column("judge_score", verdicts.column("score").take(at))
            .append_column(
                "judge_reason", pc.if_else(failed, pa.scalar(None, pa.string()), verdicts.column("reason")).take(at)
            )
            .append_column("judge_error", verdicts.column("error").take(at))
        )
        info = datasets.DatasetInfo(features=datasets.Features.from_arrow_schema(table.schema))
        return datasets.Dataset(InMemoryTable(table), info=info, fingerprint=uuid.uuid4().hex)


def best_verdicts(table: pa.Table) -> pa.Table:
    """One verdict per judged row: its last successful one, else its last failed one (in the parts' order)."""
    if table.num_rows == 0:
        return VERDICT_SCHEMA.empty_table()
    import pandas as pd

    frame = table.to_pandas()
    frame["ok"] = frame["error"].isna()
    frame["order"] = range(len(frame))
    frame = frame.sort_values(["ok", "order"], kind="stable").drop_duplicates(
        [JUDGED_INDEX, JUDGED_CHOICE], keep="last"
    )
    frame = frame.sort_values([JUDGED_INDEX, JUDGED_CHOICE]).drop(columns=["ok", "order"])
    return pa.Table.from_pandas(pd.DataFrame(frame), schema=VERDICT_SCHEMA, preserve_index=False)
