"""`python -m sdg.compare`: runs side by side: the parameters that differ between them and headline metrics.

    python -m sdg.compare                                   # the latest sweep (or the 20 newest runs)
    python -m sdg.compare --last 50 --metrics judge_score_mean,cost_usd,distinct_2
    python -m sdg.compare --plot t.png --x generation.temperature --y judge_score_mean

Which setting gives the best data per dollar: sweep a parameter with a judge and a price, then compare.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sdg.tracking import SWEEP_TAG, default_tracking_uri

__all__ = ["HEADLINE_METRICS", "compare_table", "differing_params", "main", "select_runs"]

# Shown unless --metrics says otherwise: speed, rate-limit trouble, failures, quality, diversity, cost.
HEADLINE_METRICS = (
    "samples_per_s",
    "num_429",
    "num_failed_samples",
    "judge_score_mean",
    "distinct_2",
    "cost_usd",
)
_ROLE_TAG = "sdg.role"  # "sweep" on a sweep's parent run, which has no params of its own


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def differing_params(runs: Sequence) -> list[str]:
    """The params whose values are not the same in every run (a param missing in a run counts as different)."""
    keys = sorted({k for run in runs for k in run.data.params})
    return [k for k in keys if len({run.data.params.get(k) for run in runs}) > 1]


def compare_table(runs: Sequence, metrics: Sequence[str] = HEADLINE_METRICS) -> list[list[str]]:
    """Rows of strings: header, then one row per run; params only where the runs differ."""
    differing = differing_params(runs)
    header = ["run", "status", *differing, *metrics]
    rows = [header]
    for run in runs:
        rows.append(
            [
                f"{run.info.run_name or ''} {run.info.run_id[:8]}".strip(),
                run.info.status,
                *[_fmt(run.data.params.get(k)) for k in differing],
                *[_fmt(run.data.metrics.get(m)) for m in metrics],
            ]
        )
    return rows


def _render(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.rjust(w) if i > 1 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def select_runs(runs: Sequence, last: int | None) -> list:
    """Runs to compare, oldest first, sweep parents left out: the `last` newest, or else the newest run's sweep
    (all its jobs) when it belongs to one, or else the 20 newest. `runs` come newest first."""
    jobs = [run for run in runs if run.data.tags.get(_ROLE_TAG) != "sweep"]
    if last is None and jobs and jobs[0].data.tags.get(SWEEP_TAG):
        sweep = jobs[0].data.tags[SWEEP_TAG]
        chosen = [run for run in jobs if run.data.tags.get(SWEEP_TAG) == sweep]
    else:
        chosen = jobs[: last or 20]
    return sorted(chosen, key=lambda run: run.info.start_time or 0)


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _plot(runs: Sequence, x: str, y: str, path: Path) -> None:
    """`y` (a metric) against `x` (a param: numbers on a numeric axis, anything else as categories)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [
        (run.data.params[x], run.data.metrics[y]) for run in runs if x in run.data.params and y in run.data.metrics
    ]
    if not pairs:
        raise SystemExit(f"sdg.compare: error: no run has both param {x} and metric {y}")
    fig, ax = plt.subplots(figsize=(6, 4))
    if all(_number(p) is not None for p, _ in pairs):
        points = sorted((_number(p), value) for p, value in pairs)
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-")
    else:
        labels = sorted({p for p, _ in pairs})
        ax.scatter([labels.index(p) for p, _ in pairs], [value for _, value in pairs])
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sdg.compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tracking-uri", default=None, help="default: sqlite:///outputs/mlflow.db here")
    parser.add_argument("--experiment", default="sdg")
    parser.add_argument(
        "--last", type=int, default=None, help="the N newest runs (default: the latest sweep, else the 20 newest)"
    )
    parser.add_argument(
        "--metrics", default=",".join(HEADLINE_METRICS), help="comma-separated metric names (default: %(default)s)"
    )
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG of metric --y against param --x")
    parser.add_argument("--x", default="generation.temperature", help="param on the x axis of --plot")
    parser.add_argument(
        "--y", default=None, help="metric on the y axis of --plot (default: judge_score_mean, else samples_per_s)"
    )
    args = parser.parse_args(argv)
    uri = args.tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        sys.stderr.write(f"sdg.compare: error: no MLflow store at {uri}: run python -m sdg.run first\n")
        return 2
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        sys.stderr.write(f"sdg.compare: error: no experiment {args.experiment!r} in {uri}\n")
        return 2
    newest = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=max(args.last or 0, 200)
    )
    runs = select_runs(newest, args.last)
    if not runs:
        sys.stderr.write(f"sdg.compare: no runs in experiment {args.experiment!r}\n")
        return 1
    print(_render(compare_table(runs, [m for m in args.metrics.split(",") if m])))
    if args.plot:
        judged = any("judge_score_mean" in run.data.metrics for run in runs)
        _plot(runs, args.x, args.y or ("judge_score_mean" if judged else "samples_per_s"), args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
