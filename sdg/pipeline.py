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
    limiter_history: list[tuple[float, float, float]] = field(default_factory=list)


def collect_dataset(parts_dir: Path, schema: pa.Schema, num_tasks: int) -> datasets.Dataset:
    """One set of rows per index, ordered by index and choice: its successful rows, else its last error row."""
    successes: dict[int, dict[int, dict[str, Any]]] = {}
    errors: dict[int, dict[str, Any]] = {}
    for row in read_rows(part_files(parts_dir)):
        if row["index"] >= num_tasks:
            continue
        if row.get("error"):
            errors[row["index"]] = row
        else:
            successes.setdefault(row["index"], {})[row.get("choice", 0)] = row
    rows: list[dict[str, Any]] = []
    for index in sorted(successes.keys() | errors.keys()):
        choices = successes.get(index)
        rows.extend([choices[c] for c in sorted(choices)] if choices else [errors[index]])
    columns = schema.names
    features = datasets.Features.from_arrow_schema(schema)
    if not rows:
        return datasets.Dataset.from_dict({name: [] for name in columns}, features=features)
    return datasets.Dataset.from_list([{name: row.get(name) for name in columns} for row in rows], features=features)


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
        wall_s = time.perf_counter() - started
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
        )
