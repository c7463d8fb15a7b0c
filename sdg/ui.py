"""`python -m sdg.ui`: MLflow's own UI on a free 127.0.0.1 port against the project's store, until Ctrl-C.

It runs `mlflow server` (one worker, no job runner) in its own process group against `outputs/mlflow.db` under
the current directory (or `--tracking-uri`), prints the URL of the experiment page, and on Ctrl-C or SIGTERM
stops the whole group.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator

from sdg.tracking import default_tracking_uri, open_store, sqlite_path

__all__ = ["free_port", "main", "mlflow_server"]

START_TIMEOUT_S = 120.0  # importing MLflow in the server takes 5-20 s on a busy 2-core machine


class UIError(RuntimeError):
    """The server could not start: one line for the user."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _up(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def _stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM to the server's whole process group (uvicorn and its workers), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        with contextlib.suppress(ProcessLookupError):  # workers that outlived their parent
            os.killpg(proc.pid, signal.SIGKILL)
        return


@contextlib.contextmanager
def mlflow_server(tracking_uri: str, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """The MLflow UI/tracking server against `tracking_uri`; yields its base URL, stops it on exit."""
    open_store(tracking_uri)  # created or migrated under the store lock, not by the server racing a run
    port = port or free_port(host)
    db = sqlite_path(tracking_uri)
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        tracking_uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    if db is not None:  # where an experiment created in the UI keeps its artifacts: beside the store, not in cwd
        command += ["--artifacts-destination", str(db.parent / "mlartifacts")]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "PYTHONWARNINGS": "ignore"}
    url = f"http://{host}:{port}"
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not _up(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    lines = [line.strip() for line in log.read().splitlines() if line.strip()]
                    raise UIError(f"mlflow server did not start: {lines[-1] if lines else 'no output'}")
                time.sleep(0.25)
            yield url
        finally:
            _stop(proc)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sdg.ui", description=__doc__)
    parser.add_argument("--tracking-uri", default=None, help="default: sqlite:///outputs/mlflow.db here")
    parser.add_argument("--experiment", default="sdg", help="whose page the printed URL opens")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    args = parser.parse_args(argv)
    uri = args.tracking_uri or default_tracking_uri()
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        sys.stderr.write(f"sdg.ui: error: no MLflow store at {db}: run python -m sdg.run here first\n")
        return 2
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background of a script
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        with mlflow_server(uri, port=args.port) as url:
            experiment = open_store(uri).get_experiment_by_name(args.experiment)
            # MLflow 3's UI opens an experiment on its GenAI overview; sdg's runs are on the "Model training" side
            page = (
                f"{url}/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"
                if experiment
                else url
            )
            print(f"sdg.ui: MLflow UI at {page}  (store {uri}; Ctrl-C stops it)", flush=True)
            while True:
                time.sleep(3600)
    except KeyboardInterrupt:
        print("sdg.ui: stopped", flush=True)
        return 0
    except UIError as exc:
        sys.stderr.write(f"sdg.ui: error: {exc}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
