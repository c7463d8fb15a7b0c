"""`Pipeline(name).add_stage(stage).run()`: plan, execute, collect the rows into a `datasets.Dataset`."""

from __future__ import annotations

import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.compute
import pyarrow.json as pa_json
from datasets.table import InMemoryTable
from tqdm.auto import tqdm

from sdg.client.stats import ClientStats
from sdg.execution.base import ExecutionReport, Executor
from sdg.execution.parts import finished_indexes, part_files, read_rows
from sdg.stages.base import GenerationStage
from sdg.stages.filters import FilterStage

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

    Parts are read into Arrow, not Python objects, one at a time, keeping only their rows that stay: the
    driver holds the dataset and one part in flight (as dicts, 100k rows took ~17x the dataset).
    """
    import pandas as pd

    paths = part_files(parts_dir)
    keys = (
        pd.concat(
            [_keys(_read_part(path, schema).select(["index", "choice", "error"]), i) for i, path in enumerate(paths)]
        )
        if paths
        else None
    )
    if keys is None or keys.empty:
        return datasets.Dataset(InMemoryTable(schema.empty_table()), info=_info(schema), fingerprint=uuid.uuid4().hex)
    kept = _rows_to_keep(keys, num_tasks)
    pieces = []
    for part, path in enumerate(paths):
        rows = kept[kept["part"] == part]
        if len(rows):
            pieces.append(_read_part(path, schema).take(pa.array(rows["row"].to_numpy())))
    table = pa.concat_tables(pieces).cast(schema)
    del pieces
    order = pa.compute.sort_indices(table, sort_keys=[("index", "ascending"), ("choice", "ascending")])
    table = table.take(order)
    # A fingerprint given, not computed: computing one hashes the whole table (a transient copy of it).
    return datasets.Dataset(InMemoryTable(table), info=_info(schema), fingerprint=uuid.uuid4().hex)


def _info(schema: pa.Schema) -> datasets.DatasetInfo:
    return datasets.DatasetInfo(features=datasets.Features.from_arrow_schema(schema))


class _ProgressBar:
    """samples done, attempts per second, 429s and failures, on stderr."""

    def __init__(self, total: int, initial: int, enabled: bool) -> None:
        self.bar = tqdm(
            total=total, initial=initial, unit="sample", disable=not enabled, dynamic_ncols=True, leave=False
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
    """A generation stage, then filters over its dataset, in the order they were added."""

    def __init__(self, name: str = "pipeline") -> None:
        self.name = name
        self.stages: list[GenerationStage] = []
        self.filters: list[FilterStage] = []

    def add_stage(self, stage: GenerationStage | FilterStage) -> Pipeline:
        if isinstance(stage, FilterStage):
            if not self.stages:
                raise ValueError("add the generation stage before its filters")
            self.filters.append(stage)
        elif isinstance(stage, GenerationStage):
            if self.stages:
                raise ValueError("a pipeline has one generation stage; add filters after it")
            self.stages.append(stage)
        else:
            raise TypeError(f"add_stage takes a generation stage or a FilterStage, got {type(stage).__name__}")
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
    ) -> PipelineResult:
        """Generate; with `resume`, tasks that already have rows in `output_dir/parts` are not asked again."""
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
        bar = _ProgressBar(stage.num_tasks, stage.num_tasks - len(indexes), progress)
        started = time.perf_counter()
        try:
            report = (
                executor.run(stage, indexes, seed, parts_dir, uuid.uuid4().hex[:8], bar)
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
        )
