"""Endpoints the run starts itself (sim, local model) as child processes that never outlive it.

The child gets PR_SET_PDEATHSIG, so even a SIGKILLed run leaves no server behind; `stop()` runs on normal
exit, errors and Ctrl-C (it is a context manager used in a `with`).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import select
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

__all__ = ["EndpointStartError", "ServerProcess", "sim_command", "sim_stats"]

_PR_SET_PDEATHSIG = 1


class EndpointStartError(RuntimeError):
    """A server the run starts did not come up; the message says what to check."""


def _die_with_parent() -> None:
    with contextlib.suppress(OSError):  # not Linux: stop() still runs on every normal path
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ServerProcess:
    """A server child process; ready when it prints its base URL (`ready_url=None`) or answers `ready_url`."""

    def __init__(
        self,
        argv: Sequence[str],
        name: str,
        *,
        ready_url: str | None = None,
        base_url: str | None = None,
        startup_timeout_s: float = 30.0,
        log_path: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        self.name = name
        self.ready_url = ready_url
        self.base_url = base_url
        self.startup_timeout_s = startup_timeout_s
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        """Launch and wait until ready; the base URL."""
        self.launch()
        return self.wait_ready()

    def launch(self) -> None:
        """Start the process without waiting, so the caller can do other work while it boots.

        Call from a thread that outlives the server: Linux sends the parent-death signal when the
        launching *thread* ends.
        """
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
        )
        if log is not subprocess.DEVNULL:
            log.close()  # the child holds its own descriptor

    def wait_ready(self) -> str:
        """Block until the launched server is ready; its base URL (the server is stopped on failure)."""
        try:
            self.base_url = self._wait_printed_url() if self.ready_url is None else self._wait_answering()
        except BaseException:
            self.stop()
            raise
        return self.base_url

    def _fail(self, why: str) -> EndpointStartError:
        where = f"; its log is {self.log_path}" if self.log_path else ""
        return EndpointStartError(f"the {self.name} server did not start: {why}{where}")

    def _wait_printed_url(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], self.startup_timeout_s)
        line = self.process.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("http"):
            code = self.process.poll()
            raise self._fail(f"exit status {code}" if code is not None else f"no URL within {self.startup_timeout_s}s")
        return line

    def _wait_answering(self) -> str:
        assert self.process is not None and self.ready_url is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise self._fail(f"it exited with status {code}")
            try:
                with urllib.request.urlopen(self.ready_url, timeout=2) as response:
                    if response.status == 200:
                        return self.base_url or self.ready_url
            except OSError:
                time.sleep(0.25)
        raise self._fail(f"it did not answer {self.ready_url} within {self.startup_timeout_s}s")

    def stop(self, grace_s: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def sim_command(options: Mapping[str, object] | None = None) -> list[str]:
    """argv for `python -m sdg.endpoints.sim` on 127.0.0.1 and a free port with the given `SimOptions` values.

    The flags come from the options' own fields (`options_argv`), so any option the sim has can be passed;
    bad values raise EndpointStartError at once, before a process is started.
    """
    from sdg.endpoints.sim import SimOptions, options_argv

    values = dict(options or {})
    if values.pop("api_key", None) is not None:
        raise EndpointStartError("the simulated server takes its key from the environment (--api-key-env), not argv")
    try:
        parsed = SimOptions(**values)
    except (TypeError, ValueError) as exc:
        raise EndpointStartError(f"bad option for the simulated server: {exc}") from None
    argv = [sys.executable, "-m", "sdg.endpoints.sim", "--host", "127.0.0.1", "--port", "0"]
    return argv + options_argv(parsed, skip=("host", "port"))


def sim_stats(base_url: str) -> dict[str, int]:
    """The simulated endpoint's own counts (GET /stats beside /v1)."""
    root = base_url.rstrip("/").removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/stats", timeout=10) as response:
        return {k: v for k, v in json.loads(response.read()).items() if isinstance(v, int | float)}
