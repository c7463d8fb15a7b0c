"""`python -m sdg.run`: compose the config, validate it, start the endpoint, generate on Ray, save, track.

The only module that knows Hydra, Ray and MLflow together. User mistakes end with one line on stderr and
exit status 2; an interrupted run says how to resume it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from sdg.client.errors import LLMClientError
from sdg.client.settings import validate_base_url
from sdg.config import ConfigError, RunConfig, register_configs
from sdg.endpoints.process import EndpointStartError, sim_stats
from sdg.execution.base import ExecutionFailed
from sdg.execution.stop import BudgetSpent, EndpointUnusable
from sdg.metrics import Price, compute_metrics
from sdg.pipeline import Pipeline, PipelineResult
from sdg.runtime import (
    NOT_STARTED_URL,
    SECRET_HEADER,
    build_client,
    build_stage,
    check_client,
    endpoint_server,
    fingerprint,
    generation_config,
    preflight,
    resolve_api_key,
    validate,
)
from sdg.stages.base import GenerationStage
from sdg.stages.filters import FILTERED_BY, FilterStage
from sdg.stages.judge import DEFAULT_RUBRIC, LLMJudge

__all__ = ["main", "run"]

log = logging.getLogger("sdg.run")
EXIT_USER_ERROR = 2
EXIT_TOO_MANY_FAILURES = 3
EXIT_EXECUTION_FAILED = 4  # Ray could not start, or lost more than the run can survive
EXIT_BUDGET_SPENT = 5  # output.max_cost_usd was spent; a resume with a higher budget goes on
EXIT_INTERRUPTED = 130
# ray.num_workers=auto: fewer samples than this run in this process (Ray's start-up would cost more than it saves).
AUTO_MIN_SAMPLES_FOR_RAY = 200
# Absolute, so the config is found however sdg.run is started.
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during a run; carries the folder whose parts a resume picks up."""

    def __init__(self, output_dir: Path) -> None:
        super().__init__(str(output_dir))
        self.output_dir = output_dir


class Stopped(RuntimeError):
    """The run stopped early (the endpoint refuses every sample, or Ray failed); finished rows are kept."""

    def __init__(self, message: str, output_dir: Path, exit_code: int, resume_with: list[str] | None = None) -> None:
        super().__init__(message)
        self.output_dir = output_dir
        self.exit_code = exit_code
        self.resume_with = resume_with or []  # overrides the resume command needs (e.g. a higher budget)


class TooManyFailures(RuntimeError):
    """More samples failed than `output.max_failed_share` allows; the dataset is saved all the same."""


def refuse_key_on_command_line(argv: list[str]) -> None:
    """A key typed as an override would be written to .hydra/ and MLflow: refuse before Hydra sees it."""
    for arg in argv:
        key, _, value = arg.lstrip("+~").partition("=")
        credential_header = "default_headers" in key and SECRET_HEADER.search(key + value)
        if key.endswith("api_key") or key.endswith(".key") or credential_header:
            sys.stderr.write(
                f"sdg: error: do not pass the API key on the command line ({key}=...): it would be saved in the run "
                "folder. Export it in an environment variable and name that variable with client.api_key_env=NAME\n"
            )
            sys.exit(EXIT_USER_ERROR)


def run_metrics(result: PipelineResult) -> dict[str, float]:
    stats, wall = result.stats, max(result.wall_s, 1e-9)
    five_xx = sum(count for status, count in stats.other_statuses.items() if status >= 500)
    return {
        "wall_s": result.wall_s,
        "startup_s": result.startup_s,
        "num_samples": result.num_tasks,
        "num_requested": result.num_requested,
        "num_rows": len(result.dataset),
        "num_failed_samples": result.num_failed_samples,
        "num_workers": result.num_workers,
        "num_worker_restarts": result.num_worker_restarts,
        "samples_per_s": result.num_requested / wall,
        "requests_per_s": stats.requests / wall,
        "attempts_per_s": stats.attempts / wall,
        "output_tokens_per_s": stats.completion_tokens / wall,
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "num_attempts": stats.attempts,
        "num_429": stats.status_429,
        "num_5xx": five_xx,
        "num_timeouts": stats.timeouts,
        "num_connection_errors": stats.connection_errors,
        "num_malformed": stats.malformed,
        "num_retries": stats.retries,
        "backoff_s": stats.backoff_s,
        "latency_p50_s": stats.latency_percentile(50),
        "latency_p95_s": stats.latency_percentile(95),
        "latency_p99_s": stats.latency_percentile(99),
        **{f"num_status_{status}": count for status, count in sorted(stats.other_statuses.items())},
        **{f"num_filtered_{reason}": count for reason, count in sorted(result.filter_counts.items())},
        **({"num_parse_retries": result.parse_retries} if result.parse_retries is not None else {}),
    }


def _find_resume_dir(resume: Any, print_: str, launch_dir: Path) -> Path | None:
    """None (fresh run), a named run dir, or the latest run dir with the same fingerprint."""
    if resume in (False, None, "false"):
        return None
    if resume not in (True, "true"):
        target = Path(str(resume))
        if not (target / "fingerprint.json").exists():
            raise ConfigError(f"resume={resume}: no sdg run folder there (it has no fingerprint.json)")
        if json.loads((target / "fingerprint.json").read_text())["fingerprint"] != print_:
            raise ConfigError(f"resume={resume}: that run has another stage/model/generation/seed; use the same")
        return target
    candidates = [
        path.parent
        for path in (launch_dir / "outputs").glob("**/fingerprint.json")
        if json.loads(path.read_text()).get("fingerprint") == print_
    ]
    if not candidates:
        raise ConfigError("resume=true: no earlier run with this stage, model, generation and seed under outputs/")
    return max(candidates, key=lambda p: (p / "fingerprint.json").stat().st_mtime)


def _tracker(cfg: RunConfig, launch_dir: Path):  # type: ignore[no-untyped-def]
    if not cfg.mlflow.enabled:
        return None
    from sdg.tracking import MlflowTracker, default_tracking_uri

    uri = cfg.mlflow.tracking_uri or default_tracking_uri(launch_dir)
    return MlflowTracker(uri, cfg.mlflow.experiment, launch_dir / "outputs" / "mlartifacts")


def _start_tracking(tracker: Any, cfg: RunConfig, tags: dict[str, str]) -> None:
    from sdg.tracking import flatten

    params = flatten(OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True))  # type: ignore[arg-type]
    tracker.start(cfg.name, params, tags)


def _save_and_track(result: PipelineResult, cfg: RunConfig, output_dir: Path, tracker: Any) -> Path:
    """Dataset, card, metrics and resolved config into the run folder; the same (and the limiter) to MLflow."""
    from sdg.output import save_dataset

    resolved_yaml = OmegaConf.to_yaml(OmegaConf.structured(cfg))
    dataset_dir = save_dataset(
        result.dataset,
        output_dir,
        name=cfg.name,
        config_yaml=resolved_yaml,
        metrics=result.metrics,
        formats=cfg.output.formats,
        push_to_hub=cfg.output.push_to_hub,
    )
    (output_dir / "config.resolved.yaml").write_text(resolved_yaml)
    if tracker:
        tracker.log_metrics(result.metrics)
        tracker.log_steps(  # the run-wide limiter over time; step = milliseconds since the start
            [
                (int(elapsed * 1000), {"limiter_concurrency": concurrency, "limiter_rate_per_s": rate})
                for elapsed, concurrency, rate in result.limiter_history
            ]
        )
        tracker.log_dataset(result.dataset, dataset_dir, name=cfg.name)  # run input + card as dataset/README.md
        for artifact in (output_dir / "metrics.json", output_dir / "config.resolved.yaml"):
            tracker.log_artifact(artifact)
    return dataset_dir


def choose_workers(cfg: RunConfig, num_samples: int) -> tuple[int, str]:
    """How many Ray workers (0: this process) and why, for the report."""
    workers = cfg.ray.num_workers
    if workers != "auto":
        return int(workers), f"ray.num_workers={workers}"
    if cfg.client.kind == "local" or cfg.client.max_concurrent_requests <= 1:
        return 0, (
            f"ray.num_workers=auto: the endpoint takes one request at a time "
            f"(client.max_concurrent_requests={cfg.client.max_concurrent_requests}), more workers cannot help"
        )
    if num_samples < AUTO_MIN_SAMPLES_FOR_RAY:
        return 0, (
            f"ray.num_workers=auto: {num_samples} samples < {AUTO_MIN_SAMPLES_FOR_RAY}, "
            "starting Ray would take longer than it saves"
        )
    count = max(2, min(8, os.cpu_count() or 2))
    return count, f"ray.num_workers=auto: {num_samples} samples, one worker per core ({count})"


def _connect(stage: GenerationStage, cfg: RunConfig, base_url: str) -> None:
    """Point the stage at the endpoint, after checking that it answers and takes the key."""
    stage.client = build_client(cfg.client, base_url)
    warning = preflight(stage.client, cfg.endpoint.model)
    if warning:
        log.warning("sdg: %s", warning)


def prices(cfg: RunConfig) -> tuple[Price, Price]:
    """The run's price and the judge's (each null field of `judge.price` is the endpoint's); checked."""
    own, judge = cfg.endpoint.price, cfg.judge.price
    for where, price in (("endpoint.price", own), ("judge.price", judge)):
        for name in ("input_per_mtok", "output_per_mtok"):
            value = getattr(price, name)
            if value is not None and value < 0:
                raise ConfigError(f"{where}.{name}={value} must be >= 0 (USD per million tokens) or null")
    run_price = Price(own.input_per_mtok, own.output_per_mtok)
    judge_price = Price(
        judge.input_per_mtok if judge.input_per_mtok is not None else own.input_per_mtok,
        judge.output_per_mtok if judge.output_per_mtok is not None else own.output_per_mtok,
    )
    budget = cfg.output.max_cost_usd
    if budget is not None and budget <= 0:
        raise ConfigError(f"output.max_cost_usd={budget} must be > 0 (USD) or null")
    if budget is not None and not run_price.known:
        raise ConfigError(
            "output.max_cost_usd needs the price of the tokens: set endpoint.price.input_per_mtok and "
            "endpoint.price.output_per_mtok (USD per million tokens)"
        )
    return run_price, judge_price


def judge_client_config(cfg: RunConfig) -> Any:
    """The run's client settings with the judge's own (non-null) `judge.client.*` on top."""
    own = {name: value for name, value in dataclasses.asdict(cfg.judge.client).items() if value is not None}
    merged = dataclasses.replace(cfg.client, **own)
    return dataclasses.replace(merged, kind="remote") if own.get("base_url") else merged


def build_judge(cfg: RunConfig, stage: GenerationStage, filters: list[FilterStage]) -> LLMJudge | None:
    """The judge `cfg.judge` describes (None for judge=none), checked against the generated rows' columns.

    Its client points at a placeholder until the endpoint is up (`_connect_judge`).
    """
    judge = cfg.judge
    if judge.kind == "none":
        return None
    if judge.kind != "llm":
        raise ConfigError(f"judge.kind={judge.kind!r} must be none or llm (judge=none, judge=llm)")
    client_cfg = judge_client_config(cfg)
    check_client(client_cfg, "judge.client")
    resolve_api_key(client_cfg)
    own = {name: value for name, value in dataclasses.asdict(judge.generation).items() if value is not None}
    try:
        config = generation_config(cfg).replace(**own, n=1)
    except ValueError as exc:
        raise ConfigError(str(exc).replace("GenerationConfig.", "judge.generation.")) from None
    client = build_client(client_cfg, client_cfg.base_url or NOT_STARTED_URL)
    try:
        built = LLMJudge(
            client,
            judge.model or cfg.endpoint.model,
            judge.rubric or DEFAULT_RUBRIC,
            generation_config=config,
            max_parse_retries=judge.max_parse_retries,
            price=prices(cfg)[1],
            response_format=client_cfg.response_format,
        )
        keeps = any(f.action == "keep" for f in filters)
        built.check_columns([*stage.schema().names, *([FILTERED_BY] if keeps else [])])
    except ValueError as exc:
        raise ConfigError(f"judge.{exc}") from None
    return built


def _connect_judge(judge: LLMJudge, cfg: RunConfig, run_base_url: str) -> None:
    """The judge's client at its own endpoint (checked like the run's), or at the run's."""
    client_cfg = judge_client_config(cfg)
    if client_cfg.kind != "remote" or not cfg.judge.client.base_url:
        judge.client = build_client(client_cfg, run_base_url)
        return
    judge.client = build_client(client_cfg, validate_base_url(client_cfg.base_url))
    warning = preflight(judge.client, judge.model_name)
    if warning:
        log.warning("sdg: judge: %s", warning)


def run(cfg: RunConfig, run_dir: Path, *, overrides: list[str], sweep: str | None, launch_dir: Path) -> PipelineResult:
    """One run: everything the CLI does after Hydra composed the config."""
    config, client = validate(cfg)
    resolve_api_key(cfg.client)  # a missing key fails here, before any folder or server
    prices(cfg)
    # The stage is built (and its options checked) before any server starts; its client is replaced once the
    # endpoint's URL is known.
    stage, filters = build_stage(cfg, client, config, launch_dir)
    judge = build_judge(cfg, stage, filters)
    print_ = fingerprint(cfg, stage)
    output_dir = _find_resume_dir(cfg.resume, print_, launch_dir) or run_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "fingerprint.json").write_text(json.dumps({"fingerprint": print_}))
    tags = {"hydra.overrides": " ".join(overrides), "sdg.fingerprint": print_, "sdg.run_dir": str(run_dir)}
    tags.update({"sdg.sweep": sweep} if sweep else {})
    try:
        return _execute(cfg, stage, filters, judge, output_dir, run_dir=run_dir, launch_dir=launch_dir, tags=tags)
    except BudgetSpent as exc:
        budget = cfg.output.max_cost_usd or 0.0
        raise Stopped(
            f"{exc}; raise output.max_cost_usd to go on",
            output_dir,
            EXIT_BUDGET_SPENT,
            [f"output.max_cost_usd={budget * 2:g}"],
        ) from None
    except EndpointUnusable as exc:
        raise Stopped(str(exc), output_dir, EXIT_USER_ERROR) from None
    except ExecutionFailed as exc:
        raise Stopped(str(exc), output_dir, EXIT_EXECUTION_FAILED) from None


def _execute(
    cfg: RunConfig,
    stage: GenerationStage,
    filters: list[FilterStage],
    judge: LLMJudge | None,
    output_dir: Path,
    *,
    run_dir: Path,
    launch_dir: Path,
    tags: dict[str, str],
) -> PipelineResult:
    """Start the endpoint (and Ray, if it helps), generate, save, track."""
    from sdg.execution.local import LocalExecutor
    from sdg.execution.ray_executor import RayExecutor, ensure_ray

    num_workers, why = choose_workers(cfg, stage.num_tasks)
    secrets = resolve_api_key(cfg.client)
    if judge is not None:
        secrets.update(resolve_api_key(judge_client_config(cfg)))
    status = "FAILED"
    server = endpoint_server(cfg.client, output_dir)
    with contextlib.ExitStack() as cleanup, ThreadPoolExecutor(1) as background:
        if server is not None:
            cleanup.callback(server.stop)
            server.launch()  # it boots while Ray starts
        else:  # a remote endpoint: a wrong URL or key fails here in a second, before Ray starts
            _connect(stage, cfg, validate_base_url(cfg.client.base_url or ""))
        pending_tracker = background.submit(_tracker, cfg, launch_dir)  # MLflow's import overlaps Ray's start
        if num_workers > 0:
            ensure_ray(cfg.ray.address)
        if server is not None:
            _connect(stage, cfg, server.wait_ready())
        base_url = stage.client.base_url
        if judge is not None:
            _connect_judge(judge, cfg, base_url)
        tracker = pending_tracker.result()
        try:
            if tracker:
                _start_tracking(tracker, cfg, tags)
            pipeline = Pipeline(cfg.name).add_stage(stage)
            for stage_filter in filters:
                pipeline.add_stage(stage_filter)
            if judge is not None:
                pipeline.add_stage(judge)
            price, judge_price = prices(cfg)
            executor = (
                RayExecutor(num_workers, cfg.ray.address, environment=secrets) if num_workers > 0 else LocalExecutor()
            )
            result = pipeline.run_detailed(
                executor,
                seed=cfg.seed,
                output_dir=output_dir,
                resume=output_dir != run_dir,
                progress=cfg.output.progress,
                price=price,
                max_cost_usd=cfg.output.max_cost_usd,
                on_notice=_notice,
            )
            result.num_workers = num_workers
            result.execution = f"on Ray, {num_workers} workers" if num_workers else "in this process, without Ray"
            result.execution += f" ({why})"
            result.metrics = run_metrics(result)
            result.metrics.update(data_metrics(result, price, judge_price, has_filters=bool(filters)))
            if cfg.client.kind == "sim":  # what the endpoint itself counted, to check the client's counts against
                result.metrics.update({f"sim_{k}": v for k, v in sim_stats(base_url).items()})
            dataset_dir = _save_and_track(result, cfg, output_dir, tracker)
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise Interrupted(output_dir) from None
        except BudgetSpent:
            status = "KILLED"
            raise
        finally:
            if tracker:
                tracker.end(status)
    _report(result, dataset_dir, tracker)
    failed_share = result.num_failed_samples / max(result.num_tasks, 1)
    if failed_share > cfg.output.max_failed_share:
        first = next((e for e in result.dataset["error"] if e), "")
        raise TooManyFailures(
            f"{result.num_failed_samples} of {result.num_tasks} samples failed (more than "
            f"output.max_failed_share={cfg.output.max_failed_share}); first error: {first}"
        )
    return result


def data_metrics(result: PipelineResult, price: Price, judge_price: Price, *, has_filters: bool) -> dict[str, float]:
    """The run's data metrics (`sdg.metrics`), their cost in time (`metrics_s`) and the judge's wall time."""
    started = time.perf_counter()
    try:
        values = compute_metrics(
            result.dataset,
            text_column=result.text_column,
            filter_counts=result.filter_counts if has_filters else None,
            stats=result.stats,
            price=price,
            judge_stats=result.judge_stats,
            judge_price=judge_price,
        )
    except Exception as exc:  # the generated (and paid for) dataset is saved all the same
        log.warning(
            "sdg: the data metrics could not be computed (%s: %s); the dataset is saved", type(exc).__name__, exc
        )
        values = {}
    values["metrics_s"] = time.perf_counter() - started
    if result.judge_stats is not None:
        values["judge_wall_s"] = result.judge_wall_s
    return values


def _notice(message: str) -> None:
    """A line for the user in the middle of a run (above the progress bar)."""
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stdout)


def _data_line(m: dict[str, float]) -> str:
    """What the data is like and what it cost, in one line of the report."""
    parts = []
    if "text_words_mean" in m:
        parts.append(f"{m['text_words_mean']:.0f} words/text")
    if "distinct_2" in m:
        parts.append(f"distinct-2 {m['distinct_2']:.2f}")
    for name, label in (("duplicate_share", "duplicates"), ("truncated_share", "cut at max_tokens")):
        if name in m:
            parts.append(f"{m[name]:.0%} {label}")
    if "language_match_share" in m:
        parts.append(f"{m['language_match_share']:.0%} in the language asked")
    if "judge_score_mean" in m:
        parts.append(f"judge {m['judge_score_mean']:.2f}/5 ({m.get('judge_failed', 0):.0f} failed)")
    if "cost_usd" in m:
        judge = f" + judge ${m['judge_cost_usd']:.4f}" if "judge_cost_usd" in m else ""
        parts.append(f"cost ${m['cost_usd']:.4f}{judge}")
    return "sdg: data: " + ", ".join(parts) if parts else ""


def _report(result: PipelineResult, dataset_dir: Path, tracker: Any) -> None:
    m = result.metrics
    lines = [
        f"sdg: {m['num_rows']} rows ({result.num_failed_samples} failed) in {m['wall_s']:.1f}s, "
        f"{m['samples_per_s']:.1f} samples/s, {m['num_429']} x 429, {m['num_retries']} retries "
        f"(+{m['startup_s']:.1f}s starting workers)",
        *([line] if (line := _data_line(m)) else []),
        f"sdg: ran {result.execution}",
        f"sdg: dataset: {dataset_dir}  (datasets.load_from_disk('{dataset_dir}'))",
    ]
    if result.num_worker_restarts:
        lines.insert(
            2,
            f"sdg: {result.num_worker_restarts} Ray worker(s) lost during the run and restarted; "
            "their unfinished batches were asked again (every sample written once)",
        )
    if tracker:
        lines.append(f"sdg: MLflow run {tracker.run_id} in {tracker.tracking_uri}")
        lines.append("sdg: compare runs: python -m sdg.compare  (or in MLflow's UI: python -m sdg.ui)")
        lines.append(f"sdg: browse runs: mlflow ui --backend-store-uri {tracker.tracking_uri}")
    print("\n".join(lines), flush=True)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@hydra.main(version_base=None, config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    launch_dir = Path(hydra_cfg.runtime.cwd)
    sweep = hydra_cfg.sweep.dir if hydra_cfg.mode.name == "MULTIRUN" else None
    overrides = list(hydra_cfg.overrides.task)
    started = time.perf_counter()
    try:
        typed: RunConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
        result = run(typed, run_dir, overrides=overrides, sweep=sweep, launch_dir=launch_dir)
    except (ConfigError, EndpointStartError) as exc:
        sys.stderr.write(f"sdg: error: {exc}\n")
        sys.exit(EXIT_USER_ERROR)
    except LLMClientError as exc:
        sys.stderr.write(f"sdg: error: {exc}\n")
        sys.exit(EXIT_USER_ERROR)
    except Stopped as exc:
        sys.stderr.write(
            f"sdg: error: {exc}; finished samples are kept in {exc.output_dir / 'parts'}. "
            f"Resume with: python -m sdg.run {_resume_args(overrides, exc.output_dir, exc.resume_with)}\n"
        )
        sys.exit(exc.exit_code)
    except TooManyFailures as exc:
        sys.stderr.write(f"sdg: error: {exc}\n")
        sys.exit(EXIT_TOO_MANY_FAILURES)
    except KeyboardInterrupt as exc:
        output_dir = exc.output_dir if isinstance(exc, Interrupted) else run_dir
        sys.stderr.write(
            f"\nsdg: interrupted after {time.perf_counter() - started:.0f}s; finished samples are kept in "
            f"{output_dir / 'parts'}. Resume with: python -m sdg.run {_resume_args(overrides, output_dir)}\n"
        )
        sys.exit(EXIT_INTERRUPTED)
    return result.metrics.get("samples_per_s")


def _resume_args(overrides: list[str], output_dir: Path, extra: list[str] | None = None) -> str:
    """The overrides again (those `extra` sets replaced), then `extra`, then the run folder to resume."""
    replaced = ("resume=", *(e.split("=", 1)[0] + "=" for e in extra or []))
    return " ".join([*(o for o in overrides if not o.startswith(replaced)), *(extra or []), f"resume={output_dir}"])


def one_line(error: BaseException) -> str:
    """Hydra/OmegaConf's multi-line composition errors as one line: what is wrong and the options."""
    text = str(error)
    if error.__cause__ is not None and str(error.__cause__) not in text:
        text += "\n" + str(error.__cause__)
    parts: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("full_key:", "reference_type=", "object_type=", "provider=")):
            continue
        if stripped.startswith(("Config search path", "To append to your config")):
            continue
        if line.startswith("\t") and parts:  # one option of a list, e.g. "Available options in 'client':"
            parts[-1] += (" " if parts[-1].endswith(":") else ", ") + stripped
        else:
            parts.append(stripped.rstrip("."))
    message = "; ".join(parts)
    if " not in '" in message or "not in struct" in message:
        message += " (list the valid keys with: python -m sdg.run --cfg job)"
    return message


def main() -> None:
    refuse_key_on_command_line(sys.argv[1:])
    register_configs()
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    logging.getLogger("sdg").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    import datasets

    datasets.disable_progress_bars()
    if os.environ.get("HYDRA_FULL_ERROR"):  # the user asked for Hydra's own full traces
        _hydra_main()
        return
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let composition errors reach us, to print them as one line
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        _hydra_main()
    except (HydraException, OmegaConfBaseException) as exc:
        sys.stderr.write(f"sdg: error: {one_line(exc)}\n")
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main()
