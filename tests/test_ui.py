"""`python -m sdg.ui` against a store holding a two-run sweep made by `python -m sdg.run -m`: its REST API, a real
headless Chromium on the experiment page, and Ctrl-C.

Set SDG_UI_SCREENSHOT=docs/mlflow-ui.png to also write the browser's screenshot there (the README's picture).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "PYTHONPATH": str(REPO)}
SWEEP = ["client=sim", "ray.num_workers=0", "stage.num_samples=4", "generation.temperature=0.2,0.9"]
CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser") if shutil.which(name)), None)


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose outputs/mlflow.db holds a two-job sweep (in-process, 4 samples each, simulated endpoint)."""
    folder = tmp_path_factory.mktemp("sweep")
    done = subprocess.run(
        [sys.executable, "-m", "sdg.run", "-m", *SWEEP],
        cwd=folder,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    store = folder / "outputs" / "mlflow.db"
    hint = f"sdg: browse runs: mlflow ui --backend-store-uri sqlite:///{store}"  # absolute: works from anywhere
    assert done.stdout.count(hint) == 2, done.stdout
    return folder


@pytest.fixture(scope="module")
def ui(sweep_dir: Path) -> Iterator[tuple[subprocess.Popen, str]]:
    """`python -m sdg.ui` started in the sweep's folder; yields the process and the printed experiment URL."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sdg.ui"],
        cwd=sweep_dir,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline, line = time.monotonic() + 180, ""
        while "MLflow UI at" not in line:
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "sdg.ui printed no URL"
            if select.select([proc.stdout], [], [], 1.0)[0]:
                line = proc.stdout.readline()
        url = line.split("MLflow UI at ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:") and url.endswith("/runs?workflowType=machine_learning"), line
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _api(base: str, endpoint: str, body: dict | None = None, **query: str) -> dict:
    url = f"{base}/api/2.0/mlflow/{endpoint}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def test_rest_api_finds_the_sweep_with_params_metrics_and_dataset(ui: tuple[subprocess.Popen, str]) -> None:
    base = ui[1].split("/#/")[0]
    experiment = _api(base, "experiments/get-by-name", experiment_name="sdg")["experiment"]
    runs = _api(base, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    tags = [{t["key"]: t["value"] for t in run["data"].get("tags", [])} for run in runs]
    (parent,) = [run for run, tag in zip(runs, tags, strict=True) if tag.get("sdg.role") == "sweep"]
    jobs = [(run, tag) for run, tag in zip(runs, tags, strict=True) if tag.get("sdg.role") != "sweep"]
    assert len(jobs) == 2
    assert {tag["mlflow.parentRunId"] for _, tag in jobs} == {parent["info"]["run_id"]}
    assert {tag["sdg.sweep"] for _, tag in jobs} == {tags[runs.index(parent)]["sdg.sweep"]}
    temperatures = set()
    for run, _ in jobs:
        run_id = run["info"]["run_id"]
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        temperatures.add(params["generation.temperature"])
        assert params["stage.num_samples"] == "4" and params["client.kind"] == "sim"
        assert metrics["num_rows"] == 4 and metrics["samples_per_s"] > 0
        history = _api(base, "metrics/get-history", run_id=run_id, metric_key="limiter_concurrency")["metrics"]
        assert history and all(m["value"] >= 1 for m in history)
        (logged,) = run["inputs"]["dataset_inputs"]
        dataset = logged["dataset"]
        source = Path(json.loads(dataset["source"])["uri"])
        assert source.name == "dataset" and (source / "dataset_info.json").exists()
        assert json.loads(dataset["profile"])["num_rows"] == 4 and len(dataset["digest"]) >= 8
        assert {t["key"]: t["value"] for t in logged["tags"]} == {"mlflow.data.context": "generated"}
        files = _api(base, "artifacts/list", run_id=run_id, path="dataset")["files"]
        assert [f["path"] for f in files] == ["dataset/README.md"]
    assert temperatures == {"0.2", "0.9"}


# Flags that work headless on this machine (closed network: no background connections).
_CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-port=0",
    "--window-size=1400,760",
]


class _Page:
    """The one tab of a headless Chromium, driven over the DevTools protocol (aiohttp's websocket client)."""

    def __init__(self, ws) -> None:
        self.ws, self.next_id = ws, 0

    async def call(self, method: str, **params: object) -> dict:
        self.next_id += 1
        await self.ws.send_json({"id": self.next_id, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json()
            if message.get("id") == self.next_id:
                assert "error" not in message, message
                return message["result"]

    async def evaluate(self, expression: str) -> object:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def wait_for_text(self, *texts: str, timeout: float = 60.0) -> str:
        deadline, body = time.monotonic() + timeout, ""
        while time.monotonic() < deadline:
            body = await self.evaluate("document.body ? document.body.innerText : ''") or ""
            if all(text in body for text in texts):
                return body
            await asyncio.sleep(0.3)
        raise AssertionError(f"{texts} not on the page after {timeout}s; it shows: {body[:2000]}")


async def _screenshot_experiment_page(url: str, screenshot: Path, profile: Path) -> str:
    import aiohttp

    browser = subprocess.Popen(
        [CHROMIUM, *_CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        port_file, deadline = profile / "DevToolsActivePort", time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert browser.poll() is None and time.monotonic() < deadline, "Chromium did not start"
            await asyncio.sleep(0.1)
        port = port_file.read_text().split()[0]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as answer:
                (tab,) = [t for t in await answer.json() if t["type"] == "page"]
            async with session.ws_connect(tab["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = _Page(ws)
                await page.call("Page.navigate", url=url)
                await page.wait_for_text("Runs", "sweep ")
                # The sweep's parent run is listed; open it to list its two runs (and close MLflow's assistant panel).
                clicked = await page.evaluate(
                    """(() => {
                        const close = document.querySelector('[data-component-id="mlflow.assistant.chat_panel.close"]');
                        if (close) close.click();
                        const expand = document.querySelector('button[data-component-id*="runnamecellrenderer"]');
                        if (!expand) return false;
                        expand.click();
                        return true;
                    })()"""
                )
                assert clicked, "no expander on the sweep's parent run"
                body = await page.wait_for_text("sdg #0", "sdg #1", "Generated")
                await asyncio.sleep(1.0)  # let the row animation settle before the picture
                shot = await page.call("Page.captureScreenshot", format="png")
                screenshot.write_bytes(base64.b64decode(shot["data"]))
                return body
    finally:
        os.killpg(browser.pid, signal.SIGTERM)
        browser.wait(30)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium: install Debian's chromium (.ci/run does when missing)")
def test_browser_lists_the_sweep_runs(ui: tuple[subprocess.Popen, str], tmp_path: Path) -> None:
    screenshot = tmp_path / "mlflow-ui.png"
    with tempfile.TemporaryDirectory() as profile:
        body = asyncio.run(_screenshot_experiment_page(ui[1], screenshot, Path(profile)))
    assert "sweep " in body and "sdg #0" in body and "sdg #1" in body
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and screenshot.stat().st_size > 10_000
    if os.environ.get("SDG_UI_SCREENSHOT"):
        shutil.copy(screenshot, os.environ["SDG_UI_SCREENSHOT"])


def test_ctrl_c_stops_the_server_and_all_its_processes(ui: tuple[subprocess.Popen, str]) -> None:
    """Last in this file: it stops the module's server."""
    proc, url = ui
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "the MLflow server runs in a child process"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "sdg.ui: stopped" in out and "Traceback" not in err
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, alive
    with pytest.raises(OSError):
        urllib.request.urlopen(url.split("/#/")[0] + "/health", timeout=5)


def test_no_store_is_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sdg.ui"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"sdg.ui: error: no MLflow store at {tmp_path.resolve() / 'outputs' / 'mlflow.db'}: "
        "run python -m sdg.run here first"
    ]
