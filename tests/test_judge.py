"""The LLM judge on the simulated endpoint (real HTTP on 127.0.0.1), in-process; and the run's budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from sdg.client import AsyncOpenAIClient, GenerationConfig
from sdg.execution.local import LocalExecutor
from sdg.execution.stop import BudgetSpent
from sdg.metrics import Price, compute_metrics
from sdg.pipeline import Pipeline
from sdg.stages import FilterStage, QAMultilingualSyntheticStage
from sdg.stages.judge import LLMJudge, _rewrite

N = 24


def _stage(base_url: str, n: int = N) -> QAMultilingualSyntheticStage:
    client = AsyncOpenAIClient(base_url=base_url, api_key_env=None, max_concurrent_requests=8, base_delay=0.01)
    return QAMultilingualSyntheticStage(
        prompt="Write a question about science in {language}.",
        languages=["English", "French"],
        client=client,
        model_name="sim-model",
        num_samples=n,
        generation_config=GenerationConfig(max_tokens=64),
    )


def _judge(base_url: str, **options) -> LLMJudge:
    client = AsyncOpenAIClient(base_url=base_url, api_key_env=None, max_concurrent_requests=4)
    return LLMJudge(client, "sim-model", generation_config=GenerationConfig(max_tokens=128), **options)


def test_judge_scores_every_row_and_counts_its_requests_apart(sim, tmp_path: Path) -> None:
    pipeline = Pipeline("judged").add_stage(_stage(sim.base_url)).add_stage(_judge(sim.base_url))
    result = pipeline.run_detailed(LocalExecutor(), output_dir=tmp_path, progress=False)
    scores = list(result.dataset["judge_score"])
    assert len(scores) == N and all(1 <= s <= 5 for s in scores)
    assert all(isinstance(r, str) and r for r in result.dataset["judge_reason"])
    assert list(result.dataset["judge_error"]) == [None] * N
    assert result.stats.requests == N and result.judge_stats.requests == N  # apart: the run's are only its own
    with urllib.request.urlopen(sim.base_url.removesuffix("/v1") + "/requests?limit=1000") as answer:
        bodies = [item.get("body", item) for item in json.load(answer)]
    judged = [body for body in bodies if isinstance(body, dict) and body.get("response_format")]
    assert len(judged) == N  # the judge's requests ask for the verdict's JSON schema; the run's do not
    assert all(b["response_format"]["json_schema"]["schema"]["properties"]["score"]["maximum"] == 5 for b in judged)
    m = compute_metrics(result.dataset, stats=result.stats, judge_stats=result.judge_stats, price=Price(1.0, 2.0))
    assert m["judge_score_mean"] == pytest.approx(sum(scores) / N)
    assert m["judge_failed"] == 0 and m["judge_requests"] == N
    assert m["judge_cost_usd"] == (result.judge_stats.prompt_tokens + 2 * result.judge_stats.completion_tokens) / 1e6

    # Resumed: every row has its verdict already; the judge asks nothing again.
    again = Pipeline("judged").add_stage(_stage(sim.base_url)).add_stage(_judge(sim.base_url))
    resumed = again.run_detailed(LocalExecutor(), output_dir=tmp_path, resume=True, progress=False)
    assert resumed.judge_stats.requests == 0 and list(resumed.dataset["judge_score"]) == scores


def test_judge_answers_that_never_parse_fail_after_the_parse_retries(sim_factory, tmp_path: Path) -> None:
    sim = sim_factory(p_bad_json=1.0)  # every json_schema answer breaks the schema
    pipeline = Pipeline("bad").add_stage(_stage(sim.base_url, 6)).add_stage(_judge(sim.base_url, max_parse_retries=1))
    result = pipeline.run_detailed(LocalExecutor(), output_dir=tmp_path, progress=False)
    assert list(result.dataset["judge_score"]) == [None] * 6 and list(result.dataset["judge_reason"]) == [None] * 6
    assert all(e.startswith("parse_error: ") for e in result.dataset["judge_error"])
    assert result.judge_stats.requests == 6 * 2  # the first answer and one retry each
    assert list(result.dataset["error"]) == [None] * 6  # the generated rows themselves are fine
    m = compute_metrics(result.dataset, judge_stats=result.judge_stats)
    assert m["judge_failed"] == 6 and "judge_score_mean" not in m


def test_failed_and_flagged_rows_are_not_judged(sim_factory, tmp_path: Path) -> None:
    sim = sim_factory(p500=1.0)
    stage = _stage(sim.base_url, 4)
    stage.client = AsyncOpenAIClient(base_url=sim.base_url, api_key_env=None, max_retries=0)
    result = (
        Pipeline("failing")
        .add_stage(stage)
        .add_stage(_judge(sim.base_url))
        .run_detailed(LocalExecutor(), output_dir=tmp_path, progress=False)
    )
    assert all(result.dataset["error"]) and list(result.dataset["judge_score"]) == [None] * 4
    assert result.judge_stats.requests == 0

    ok = sim_factory()
    flagging = FilterStage("text", min_words=1000, action="keep")  # flags every row
    result = (
        Pipeline("flagged")
        .add_stage(_stage(ok.base_url, 4))
        .add_stage(flagging)
        .add_stage(_judge(ok.base_url))
        .run_detailed(LocalExecutor(), output_dir=tmp_path / "flagged", progress=False)
    )
    assert list(result.dataset["judge_score"]) == [None] * 4 and result.judge_stats.requests == 0


def test_rubric_placeholders_name_columns_and_keep_their_format() -> None:
    judge = LLMJudge(AsyncOpenAIClient(base_url="http://127.0.0.1:9/v1", api_key_env=None), "m", "{prompt}: {output}")
    judge.check_columns(["prompt", "text"])
    with pytest.raises(ValueError, match=r"\{title\}"):
        LLMJudge(judge.client, "m", "{title} {output}").check_columns(["prompt", "text"])
    with pytest.raises(ValueError, match="placeholder"):
        LLMJudge(judge.client, "m", "no placeholder")
    assert _rewrite('{{"score": 1}} {text:.20} {prompt!r}', {"text": "c0", "prompt": "c1"}) == (
        '{{"score": 1}} {c0:.20} {c1!r}'
    )


def test_max_cost_usd_stops_generation_and_a_resume_goes_on(sim, tmp_path: Path) -> None:
    price = Price(0.5, 1.5)
    notices: list[str] = []
    with pytest.raises(BudgetSpent, match=r"max_cost_usd=0.0005 spent"):
        Pipeline("budget").add_stage(_stage(sim.base_url, 40)).run_detailed(
            LocalExecutor(batch_size=4), output_dir=tmp_path, progress=False, price=price, max_cost_usd=0.0005
        )
    kept = sum(1 for path in (tmp_path / "parts").glob("*.jsonl") for _ in path.open())
    assert 0 < kept < 40
    # The same budget again: what the first attempt spent counts, so it stops at its first batch.
    with pytest.raises(BudgetSpent):
        Pipeline("budget").add_stage(_stage(sim.base_url, 40)).run_detailed(
            LocalExecutor(batch_size=4),
            output_dir=tmp_path,
            resume=True,
            progress=False,
            price=price,
            max_cost_usd=0.0005,
        )
    done = (
        Pipeline("budget")
        .add_stage(_stage(sim.base_url, 40))
        .run_detailed(
            LocalExecutor(), output_dir=tmp_path, resume=True, progress=False, price=price, on_notice=notices.append
        )
    )
    assert len(done.dataset) == 40 and list(done.dataset["index"]) == list(range(40))
    assert done.num_requested < 40 - kept + 1


def _sdg(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, "-m", "sdg.run", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )


@pytest.mark.slow
def test_cli_max_cost_usd_stops_with_one_line_and_the_resume_command_finishes(tmp_path: Path) -> None:
    common = [
        "client=sim",
        "stage.num_samples=120",
        "ray.num_workers=0",
        "mlflow.enabled=false",
        "output.progress=false",
    ]
    stopped = _sdg(*common, "output.max_cost_usd=0.002", cwd=tmp_path)  # the sim's price: ~$0.00007 a sample
    assert stopped.returncode == 5, stopped.stderr
    (line,) = [line for line in stopped.stderr.splitlines() if line.startswith("sdg: error:")]
    assert "output.max_cost_usd=0.002 spent: $0.00" in line and "finished samples are kept in" in line
    command = line.split("Resume with: python -m sdg.run ", 1)[1].split()
    assert "output.max_cost_usd=0.004" in command and command[-1].startswith("resume=")
    run_dir = Path(command[-1].removeprefix("resume="))
    kept = sum(1 for path in (run_dir / "parts").glob("*.jsonl") for _ in path.open())
    assert 0 < kept < 120
    finished = _sdg(*common, "output.max_cost_usd=null", command[-1], cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr
    assert "cost $" in finished.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["num_rows"] == 120 and metrics["num_requested"] == 120 - kept
    # This attempt's requests only, priced at the sim's 0.5 / 1.5 USD per million tokens.
    assert metrics["cost_usd"] == (metrics["prompt_tokens"] * 0.5 + metrics["completion_tokens"] * 1.5) / 1e6


@pytest.mark.slow
def test_cli_config_mistakes_of_cost_and_judge_are_one_line(tmp_path: Path) -> None:
    no_price = _sdg(
        "client=sim", "client.default_price.input_per_mtok=null", "client.default_price.output_per_mtok=null",
        "output.max_cost_usd=1", cwd=tmp_path,
    )  # fmt: skip
    assert no_price.returncode == 2 and "output.max_cost_usd needs the price" in no_price.stderr
    bad_rubric = _sdg("client=sim", "judge=llm", "judge.rubric='Score {title}: {output}'", cwd=tmp_path)
    assert bad_rubric.returncode == 2 and "judge.rubric refers to {title}" in bad_rubric.stderr
    assert not list(tmp_path.glob("outputs/**/parts/*.jsonl"))
