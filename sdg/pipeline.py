"""`Pipeline(name).add_stage(stage).run()`: plan, execute, collect the rows into a `datasets.Dataset`."""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json
from datasets.table import InMemoryTable
from tqdm.auto import tqdm

from sdg.client.stats import ClientStats
from sdg.execution.base import ExecutionReport, Executor
from sdg.execution.parts import ROWS_PER_PART, finished_indexes, part_files, read_rows
from sdg.execution.stop import SpendLimit, StopRule
from sdg.metrics import Price
from sdg.stages.base import GenerationStage
from sdg.stages.filters import FilterStage
from sdg.stages.judge import VERDICT_SCHEMA, LLMJudge, best_verdicts

__all__ = ["Pipeline", "PipelineResult", "collect_dataset"]


@dataclass
class PipelineResult:
    """The dataset and what producing it cost."""

    dataset: datasets.Dataset
    stats: ClientStats
    wall_s: float
    num_tasks: int
    num_requested: int
    num_failed_samples: int
    parts_dir: Path
    metrics: dict[str, float] = field(default_factory=dict)
    filter_counts: dict[str, int] = field(default_factory=dict)
    parse_retries: int | None = None
    startup_s: float = 0.0  # starting workers; not in wall_s, which times generation
    limiter_history: list[tuple[float, float, float]] = field(default_factory=list)
    num_worker_restarts: int = 0  # workers lost during the run; their batches were asked again elsewhere
    num_workers: int = 0  # Ray workers (0: in this process); set by whoever chose the executor
    execution: str = ""  # where it ran and why, for the report
    batches_by_node: dict[str, int] = field(default_factory=dict)
    text_column: str = "text"  # the generation stage's text column, which the data metrics read
    judge_stats: ClientStats | None = None  # the judge's requests, apart from the run's (None: no judge)
    judge_wall_s: float = 0.0
    spent_before_usd: float = 0.0  # what earlier attempts of a resumed run spent (with a price and a budget)


def _read_part(path: Path, schema: pa.Schema) -> pa.Table:
    """One part file as an Arrow table; a line cut by a crash (or any unparsable line) is skipped."""
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    single_threaded = pa_json.ReadOptions(use_threads=False)  # parallel blocks cost memory, not time, here
    with open(path, "rb") as stream:
        stream.seek(0, 2)
        if stream.tell() == 0:
            return schema.empty_table()
        stream.seek(-1, 2)
        whole_lines = stream.read(1) == b"\n"
    try:
        if whole_lines:  # the common case: let Arrow read the file itself, without a copy of its bytes
            return pa_json.read_json(path, read_options=single_threaded, parse_options=options)
        data = path.read_bytes()
        data = data[: data.rfind(b"\n") + 1]  # the last line was cut by a crash
        return pa_json.read_json(pa.BufferReader(data), read_options=single_threaded, parse_options=options)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        # A resumed part holds a cut line mid-file, or a column Arrow cannot read from JSON: go row by row.
        return pa.Table.from_pylist(list(read_rows([path])), schema=schema)


def _keys(table: pa.Table, part: int):  # type: ignore[no-untyped-def]
    import pandas as pd

    return pd.DataFrame(
        {
            "index": table["index"].to_numpy(zero_copy_only=False),
            "choice": table["choice"].fill_null(0).to_numpy(zero_copy_only=False),
            "failed": table["error"].is_valid().to_numpy(zero_copy_only=False),
            "part": part,
            "row": range(len(table)),
        }
    )


def _rows_to_keep(keys, num_tasks: int):  # type: ignore[no-untyped-def]
    """One set of rows per index: its successful rows (last per choice), else its last error; sorted."""
    import pandas as pd

    keys = keys[keys["index"] < num_tasks]
    succeeded = keys[~keys["failed"]].drop_duplicates(["index", "choice"], keep="last")
    failed = keys[keys["failed"] & ~keys["index"].isin(succeeded["index"])].drop_duplicates("index", keep="last")
    return pd.concat([succeeded, failed]).sort_values(["index", "choice"])


def collect_dataset(parts_dir: Path, schema: pa.Schema, num_tasks: int) -> datasets.Dataset:
    """One set of rows per index, ordered by index and choice: its successful rows, else its last error row.

    Parts are read into Arrow, not Python objects (as dicts, 100k rows took ~17x the dataset). A first pass
    reads only the keys (index, choice, error) of every part and decides which rows stay, in which order;
    the second builds the dataset in sorted chunks of `ROWS_PER_PART` rows from the few parts each chunk
    needs (the driver wrote them in about index order). The driver holds the dataset, the keys and two parts,
    never a second copy of the dataset for sorting it.
    """
    import numpy as np
    import pandas as pd

    paths = part_files(parts_dir)
    key_schema = pa.schema([schema.field(name) for name in ("index", "choice", "error")])
    keys = pd.concat([_keys(_read_part(path, key_schema), i) for i, path in enumerate(paths)]) if paths else None
    if keys is None or keys.empty:
        return datasets.Dataset(InMemoryTable(schema.empty_table()), info=_info(schema), fingerprint=uuid.uuid4().hex)
    kept = _rows_to_keep(keys, num_tasks)
    del keys
    cache: dict[int, pa.Table] = {}  # the last two parts read, in the order they were read

    def part_table(part: int) -> pa.Table:
        if part not in cache:
            if len(cache) >= 2:
                del cache[next(iter(cache))]
            cache[part] = _read_part(paths[part], schema)
        return cache[part]

    batches: list[pa.RecordBatch] = []
    for start in range(0, len(kept), ROWS_PER_PART):
        chunk = kept.iloc[start : start + ROWS_PER_PART].assign(
            position=np.arange(min(ROWS_PER_PART, len(kept) - start))
        )
        pieces, positions = [], []
        for part, rows in chunk.groupby("part", sort=False):
            pieces.append(part_table(int(part)).take(pa.array(rows["row"].to_numpy())))
            positions.append(rows["position"].to_numpy())
        piece = pa.concat_tables(pieces).take(pa.array(np.argsort(np.concatenate(positions), kind="stable")))
        batches.extend(piece.cast(schema).combine_chunks().to_batches())
    cache.clear()
    # A fingerprint given, not computed: computing one hashes the whole table (a transient copy of it).
    table = pa.Table.from_batches(batches, schema=schema)
    return datasets.Dataset(InMemoryTable(table), info=_info(schema), fingerprint=uuid.uuid4().hex)


def _info(schema: pa.Schema) -> datasets.DatasetInfo:
    return datasets.DatasetInfo(features=datasets.Features.from_arrow_schema(schema))


class _ProgressBar:
    """samples done, attempts per second, 429s and failures, on stderr."""

    def __init__(self, total: int, initial: int, enabled: bool, desc: str | None = None) -> None:
        self.bar = tqdm(
            total=total, initial=initial, unit="sample", disable=not enabled, dynamic_ncols=True, leave=False, desc=desc
        )
        self.initial = initial
        self.started = time.monotonic()

    def __call__(self, snapshot: dict[str, float]) -> None:
        done = self.initial + int(snapshot.get("tasks_done", 0))
        self.bar.update(done - self.bar.n)
        elapsed = max(time.monotonic() - self.started, 1e-9)
        self.bar.set_postfix(
            req_s=f"{snapshot.get('attempts', 0) / elapsed:.1f}",
            r429=int(snapshot.get("status_429", 0)),
            failed=int(snapshot.get("tasks_failed", 0)),
            refresh=False,
        )

    def close(self) -> None:
        self.bar.close()


class Pipeline:
    """A generation stage, then filters over its dataset in the order they were added, then an optional judge."""

    def __init__(self, name: str = "pipeline") -> None:
        self.name = name
        self.stages: list[GenerationStage] = []
        self.filters: list[FilterStage] = []
        self.judge: LLMJudge | None = None

    def add_stage(self, stage: GenerationStage | FilterStage | LLMJudge) -> Pipeline:
        if isinstance(stage, LLMJudge):
            if not self.stages or self.judge is not None:
                raise ValueError("add one judge, after the generation stage")
            self.judge = stage
        elif isinstance(stage, FilterStage):
            if not self.stages:
                raise ValueError("add the generation stage before its filters")
            self.filters.append(stage)
        elif isinstance(stage, GenerationStage):
            if self.stages:
                raise ValueError("a pipeline has one generation stage; add filters after it")
            self.stages.append(stage)
        else:
            raise TypeError(
                f"add_stage takes a generation stage, a FilterStage or an LLMJudge, got {type(stage).__name__}"
            )
        return self

    def run(self, executor: Executor | None = None, **kwargs: Any) -> datasets.Dataset:
        """Generate and return the dataset (on Ray unless told otherwise)."""
        return self.run_detailed(executor, **kwargs).dataset

    def run_detailed(
        self,
        executor: Executor | None = None,
        *,
        seed: int = 0,
        output_dir: str | Path | None = None,
        resume: bool = False,
        progress: bool = True,
        price: Price | None = None,
        max_cost_usd: float | None = None,
        on_notice: Callable[[str], None] | None = None,
    ) -> PipelineResult:
        """Generate; with `resume`, tasks that already have rows in `output_dir/parts` are not asked again.

        `price` prices the tokens; `max_cost_usd` stops the run (`BudgetSpent`) once generation and judge have
        spent that much, earlier attempts of a resumed run included. `on_notice` is told the estimated cost of a
        large run once its first samples are done.
        """
        if not self.stages:
            raise ValueError("the pipeline has no stage: call add_stage(...) first")
        stage = self.stages[0]
        if executor is None:
            from sdg.execution.ray_executor import RayExecutor

            executor = RayExecutor()
        base = Path(output_dir) if output_dir is not None else Path(tempfile.mkdtemp(prefix=f"sdg-{self.name}-"))
        parts_dir = base / "parts"
        if part_files(parts_dir) and not resume:
            raise FileExistsError(f"{parts_dir} already holds parts of a run: pass resume=True or another output_dir")
        done = finished_indexes(part_files(parts_dir)) if resume else set()
        indexes = [i for i in range(stage.num_tasks) if i not in done]
        price = price or Price()
        if max_cost_usd is not None and not price.known:
            raise ValueError("max_cost_usd needs a price of the tokens (input_per_mtok / output_per_mtok)")
        judge_price = (self.judge.price if self.judge is not None else None) or price
        judge_dir = base / "judge" / self.judge.fingerprint() if self.judge is not None else None
        spent_before = 0.0
        if resume and max_cost_usd is not None:
            spent_before = _spent(part_files(parts_dir), price) + _spent(_parts(judge_dir), judge_price)
        spend = SpendLimit(
            price.cost,
            max_cost_usd=max_cost_usd,
            spent_before_usd=spent_before,
            num_tasks=len(indexes),
            on_estimate=on_notice,
        )
        bar = _ProgressBar(stage.num_tasks, stage.num_tasks - len(indexes), progress)
        started = time.perf_counter()
        try:
            report = (
                executor.run(
                    stage, indexes, seed, parts_dir, uuid.uuid4().hex[:8], bar, stop_rule=StopRule(spend=spend)
                )
                if indexes
                else ExecutionReport(ClientStats())
            )
        finally:
            bar.close()
        wall_s = time.perf_counter() - started - report.startup_s
        dataset = collect_dataset(parts_dir, stage.schema(), stage.num_tasks)
        num_failed = len({i for i, e in zip(dataset["index"], dataset["error"], strict=True) if e})
        parse_retries = sum(dataset["parse_retries"]) if "parse_retries" in dataset.column_names else None
        filter_counts: dict[str, int] = {}
        for stage_filter in self.filters:
            dataset, counts = stage_filter.process(dataset)
            for reason, count in counts.items():
                filter_counts[reason] = filter_counts.get(reason, 0) + count
        judge_stats, judge_wall_s = None, 0.0
        if self.judge is not None and judge_dir is not None:
            generation_usd = price.cost(report.stats.prompt_tokens, report.stats.completion_tokens) or 0.0

            def judge_spend(num_tasks: int) -> SpendLimit:
                return SpendLimit(
                    judge_price.cost,
                    max_cost_usd=max_cost_usd,
                    spent_before_usd=spent_before + generation_usd,
                    num_tasks=num_tasks,
                    what="rows to judge",
                    on_estimate=on_notice,
                )

            judged = time.perf_counter()
            dataset, judge_stats = self._judge(
                self.judge, dataset, stage, executor, seed, judge_dir, judge_spend, progress
            )
            judge_wall_s = time.perf_counter() - judged
        return PipelineResult(
            dataset=dataset,
            stats=report.stats,
            wall_s=wall_s,
            num_tasks=stage.num_tasks,
            num_requested=len(indexes),
            num_failed_samples=num_failed,
            parts_dir=parts_dir,
            limiter_history=report.limiter_history,
            filter_counts=filter_counts,
            parse_retries=parse_retries,
            startup_s=report.startup_s,
            num_worker_restarts=report.num_worker_restarts,
            batches_by_node=report.batches_by_node,
            text_column=stage.text_column,
            judge_stats=judge_stats,
            judge_wall_s=judge_wall_s,
            spent_before_usd=spent_before,
        )

    @staticmethod
    def _judge(
        judge: LLMJudge,
        dataset: datasets.Dataset,
        stage: GenerationStage,
        executor: Executor,
        seed: int,
        judge_dir: Path,
        spend: Callable[[int], SpendLimit],
        progress: bool,
    ) -> tuple[datasets.Dataset, ClientStats]:
        """Ask the judge for every row without a verdict yet (on the same executor), then merge all verdicts."""
        parts_dir = judge_dir / "parts"
        table = dataset.with_format("arrow")[0 : len(dataset)] if len(dataset) else dataset.data.table
        earlier = _verdicts(parts_dir)
        ok = pc.is_null(earlier.column("error"))
        judged = set(
            zip(
                earlier.column("judged_index").filter(ok).to_pylist(),
                earlier.column("judged_choice").filter(ok).to_pylist(),
                strict=True,
            )
        )
        judge_stage = judge.stage_for(table, stage.text_column, judged, judge_dir)
        stats = ClientStats()
        if judge_stage is not None:
            bar = _ProgressBar(judge_stage.num_tasks, 0, progress, desc="judge")
            rule = StopRule(spend=spend(judge_stage.num_tasks))
            try:
                tag = uuid.uuid4().hex[:8]
                stats = executor.run(judge_stage, range(judge_stage.num_tasks), seed, parts_dir, tag, bar, rule).stats
            finally:
                bar.close()
        return judge.merge(dataset, _verdicts(parts_dir)), stats


def _parts(folder: Path | None) -> list[Path]:
    return part_files(folder / "parts") if folder is not None else []


def _spent(paths: list[Path], price: Price) -> float:
    """What the rows of these part files cost: their token columns (usage summed per task), priced."""
    usage = pa.schema([("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64())])
    prompt = completion = 0
    for path in paths:
        table = _read_part(path, usage)
        prompt += pc.sum(table.column("prompt_tokens")).as_py() or 0
        completion += pc.sum(table.column("completion_tokens")).as_py() or 0
    return price.cost(prompt, completion) or 0.0


def _verdicts(parts_dir: Path) -> pa.Table:
    """One verdict per judged row from the judge's part files (every attempt's)."""
    tables = [_read_part(path, VERDICT_SCHEMA) for path in part_files(parts_dir)]
    return best_verdicts(pa.concat_tables(tables) if tables else VERDICT_SCHEMA.empty_table())
