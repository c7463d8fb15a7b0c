"""Each user mistake: one line on stderr saying what is wrong and how to fix it, exit 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_run_cli import sdg

CASES = [
    (["client=nvidia", "generation.temperature=0.9"], "NVIDIA_API_KEY is not set"),
    (["generation.temperature=3"], "generation.temperature=3.0 is out of range: it must be between 0.0 and 2.0"),
    (["generation.top_p=1.5"], "generation.top_p=1.5 is out of range"),
    (["client.max_concurrent_requests=0"], "client.max_concurrent_requests=0 must be >= 1"),
    (["stage.num_samples=-1"], "stage.num_samples=-1 must be a non-negative integer"),
    (["stage.prompt=hello"], "stage.prompt must contain the placeholder {language}"),
    (["stage.languages=[]"], "stage.languages must be a non-empty list"),
    (["stage.nonsense=1"], "Key 'nonsense' is not in struct (list the valid keys with"),
    (["stage=template", "stage.input.path=nope.jsonl"], "stage.input.path"),
    (["stage=template", "stage.user_template='Hi {missing}'"], "{missing}"),
    (["client.nonsense=1"], "Key 'nonsense' not in 'ClientConfig'"),
    (["client=nvida"], "Available options in 'client': local, nvidia, openai, sim"),
    (["client.max_retries=abc"], "Value 'abc' of type 'str' could not be converted to Integer"),
    (["client=openai", "client.base_url=localhost:8000"], "is not an http(s) URL"),
    (["client.api_key=sk-planted-123"], "do not pass the API key on the command line"),
    (["+client.api_key=sk-planted-123"], "client.api_key_env=NAME"),
    (["client=openai", "client.default_headers={api-key: sk-planted-123}"], "do not pass the API key"),
    (["judge=llm", "judge.client.default_headers={Authorization: Bearer sk-planted-123}"], "do not pass the API key"),
]


@pytest.mark.parametrize(("args", "expected"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_input_is_one_clear_line(args: list[str], expected: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("NVIDIA_API_KEY", raising=False)
    done = sdg(*args, cwd=tmp_path, timeout=60)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("sdg: error: ") and expected in lines[0]
    assert "Traceback" not in done.stderr + done.stdout
    assert "sk-planted-123" not in done.stderr + done.stdout
    assert not list(tmp_path.glob("outputs/**/dataset"))
    assert not any(
        "sk-planted-123" in path.read_text(errors="replace") for path in tmp_path.rglob("*") if path.is_file()
    )
