"""`python -m sdg.compare`: which runs, which params, which metrics; and the issue's sweep with a judge, end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from sdg.compare import HEADLINE_METRICS, compare_table, differing_params, select_runs


def _run(run_id: str, start: int, params: dict, metrics: dict | None = None, **tags: str) -> SimpleNamespace:
    return SimpleNamespace(
        info=SimpleNamespace(run_id=run_id * 8, run_name=f"sdg {run_id}", status="FINISHED", start_time=start),
        data=SimpleNamespace(params=params, metrics=metrics or {}, tags=tags),
    )


def test_the_latest_sweep_is_compared_without_its_parent_run() -> None:
    old = _run("a", 1, {"generation.temperature": "0.7", "seed": "0"})
    parent = _run("p", 2, {}, **{"sdg.sweep": "s1", "sdg.role": "sweep"})
    cold = _run("c", 3, {"generation.temperature": "0.2", "seed": "0"}, {"distinct_2": 0.5}, **{"sdg.sweep": "s1"})
    hot = _run("h", 4, {"generation.temperature": "0.9", "seed": "0"}, {"distinct_2": 0.75}, **{"sdg.sweep": "s1"})
    newest_first = [hot, cold, parent, old]
    assert select_runs(newest_first, None) == [cold, hot]
    assert select_runs(newest_first, 3) == [old, cold, hot]
    assert select_runs([old], None) == [old]
    assert differing_params([cold, hot]) == ["generation.temperature"]
    header, *rows = compare_table([cold, hot], ["distinct_2", "cost_usd"])
    assert header == ["run", "status", "generation.temperature", "distinct_2", "cost_usd"]
    assert rows == [["sdg c cccccccc", "FINISHED", "0.2", "0.5", ""], ["sdg h hhhhhhhh", "FINISHED", "0.9", "0.75", ""]]


def test_headline_metrics_answer_which_setting_gives_the_best_data_per_dollar() -> None:
    assert {"samples_per_s", "num_429", "num_failed_samples", "judge_score_mean", "distinct_2", "cost_usd"} == set(
        HEADLINE_METRICS
    )


def _cli(*args: str, module: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240
    )


@pytest.mark.slow
def test_sweep_with_a_judge_then_compare_shows_temperature_score_diversity_and_cost(tmp_path: Path) -> None:
    swept = _cli(
        "-m", "generation.temperature=0.2,0.9", "judge=llm", "client=sim", "stage.num_samples=8", "ray.num_workers=0",
        module="sdg.run", cwd=tmp_path,
    )  # fmt: skip
    assert swept.returncode == 0, swept.stderr
    assert swept.stdout.count("sdg: data: ") == 2 and "judge " in swept.stdout
    shown = _cli(module="sdg.compare", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    header, _, *rows = shown.stdout.splitlines()
    columns = header.split()
    assert columns[2] == "generation.temperature"  # the only param that differs
    for name in ("judge_score_mean", "distinct_2", "cost_usd", "samples_per_s"):
        assert name in columns, name
    assert len(rows) == 2
    for row, temperature in zip(rows, ("0.2", "0.9"), strict=True):
        cells = row.split()
        assert cells[4] == temperature  # "sdg #0 <id> FINISHED 0.2 ..."
        values = dict(zip(columns[3:], cells[5:], strict=True))
        assert 1 <= float(values["judge_score_mean"]) <= 5
        assert 0 < float(values["distinct_2"]) <= 1 and float(values["cost_usd"]) > 0
