"""`python -m sdg.compare`: the runs of an experiment side by side, the params that differ and key metrics."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from sdg.tracking import default_tracking_uri

__all__ = ["compare_table", "main"]

KEY_METRICS = (
    "samples_per_s",
    "requests_per_s",
    "output_tokens_per_s",
    "num_429",
    "num_retries",
    "num_failed_samples",
    "latency_p50_s",
    "latency_p95_s",
    "wall_s",
)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def compare_table(runs: Sequence, metrics: Sequence[str] = KEY_METRICS) -> list[list[str]]:
    """Rows of strings: header, then one row per run; params only where the runs differ."""
    all_keys = sorted({k for run in runs for k in run.data.params})
    differing = [k for k in all_keys if len({run.data.params.get(k) for run in runs}) > 1]
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


def _plot(runs: Sequence, x: str, y: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = sorted(
        (float(run.data.params[x]), run.data.metrics[y])
        for run in runs
        if x in run.data.params and y in run.data.metrics
    )
    if not points:
        raise SystemExit(f"sdg.compare: error: no run has both param {x} and metric {y}")
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p[0] for p in points], [p[1] for p in points], "o-")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdg.compare", description=__doc__)
    parser.add_argument("--tracking-uri", default=None, help="default: sqlite:///outputs/mlflow.db here")
    parser.add_argument("--experiment", default="sdg")
    parser.add_argument("--last", type=int, default=20, help="how many of the newest runs")
    parser.add_argument("--metrics", default=",".join(KEY_METRICS), help="comma-separated metric names")
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG of --y against --x")
    parser.add_argument("--x", default="generation.temperature", help="param on the x axis of --plot")
    parser.add_argument("--y", default="samples_per_s", help="metric on the y axis of --plot")
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
    runs = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=args.last
    )
    if not runs:
        sys.stderr.write(f"sdg.compare: no runs in experiment {args.experiment!r}\n")
        return 1
    print(_render(compare_table(runs, [m for m in args.metrics.split(",") if m])))
    if args.plot:
        _plot(runs, args.x, args.y, args.plot)
        print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
