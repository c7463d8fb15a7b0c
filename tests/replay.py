"""A tiny HTTP server on 127.0.0.1 that answers every request with one recorded answer.

A recorded answer (a fixture in `tests/fixtures/contract/`) is a JSON file with its `source` and what the
server sent: `status`, `headers`, and one of `body` (JSON, sent as is), `body_text` (raw text) or `sse` (a
list of server-sent events, each sent as its own chunk followed by a blank line). The server keeps the
requests it got, so a test can also check what was sent.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from aiohttp import web

FIXTURES = Path(__file__).parent / "fixtures" / "contract"


def load_fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def fixture_names() -> list[str]:
    return sorted(path.stem for path in FIXTURES.glob("*.json"))


class ReplayServer:
    """Serves `answer` for any path; `requests` holds (method, path, headers, body) of what it received."""

    def __init__(self, answer: dict[str, Any], ssl_context: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.ssl_context = ssl_context  # serve HTTPS with this (server) context
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.query_strings: list[str] = []
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/v1"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.headers), await request.read()))
        self.query_strings.append(request.query_string)
        answer = self.answer
        headers = dict(answer.get("headers") or {})
        status = int(answer.get("status", 200))
        if "sse" in answer:
            response = web.StreamResponse(status=status, headers=headers)
            await response.prepare(request)
            for event in answer["sse"]:
                await response.write(event.encode() + b"\n\n")
            await response.write_eof()
            return response
        data = answer["body_text"].encode() if "body_text" in answer else json.dumps(answer["body"]).encode()
        return web.Response(status=status, body=data, headers=headers)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def start(self) -> ReplayServer:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="replay-server", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), loop).result(timeout=30)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._loop.close()
        self._loop = None


@contextmanager
def replaying(answer: dict[str, Any] | str, ssl_context: ssl.SSLContext | None = None) -> Iterator[ReplayServer]:
    """A running replay server for `answer` (a fixture name or an answer dict), stopped afterwards."""
    server = ReplayServer(load_fixture(answer) if isinstance(answer, str) else answer, ssl_context).start()
    try:
        yield server
    finally:
        server.stop()
