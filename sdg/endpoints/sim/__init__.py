"""Simulated OpenAI-compatible chat endpoint for dry runs, load tests and fault tests.

Run it as ``python -m sdg.endpoints.sim`` (the first stdout line is the base URL) or in-process with
:class:`SimServer` (own thread and event loop) or :class:`Simulator` (on the caller's loop).
The text is deterministic in the request, faults are drawn from a seeded RNG in arrival order, and
``GET /stats`` counts everything served so tests can compare it with what a client observed. It can
answer like real servers do: ``retry_after_style``, ``ratelimit_headers``, ``error_style``, reasoning
models, HTML pages, refusals and empty answers (see :class:`SimOptions`).

Modules: ``options`` (SimOptions, the one declaration of every option), ``faker`` (text and JSON
values), ``bucket`` (token bucket and rate-limit headers), ``errors`` (error body shapes), ``server``
(Simulator, SimServer), ``cli`` (the flags, generated from the options).
"""

import importlib
from typing import Any

# Where each public name lives. Loaded on first use: the run's config needs only `options`, and importing the
# server (aiohttp.web) on every `python -m sdg.run` would cost ~70 ms for nothing.
_HOMES = {
    "build_parser": "cli",
    "main": "cli",
    "options_argv": "cli",
    "ERROR_STYLES": "options",
    "FAULT_KINDS": "options",
    "REASONING_FIELDS": "options",
    "RETRY_AFTER_STYLES": "options",
    "SimOptions": "options",
    "SimServerConfig": "options",
    "STAT_KEYS": "server",
    "SimServer": "server",
    "Simulator": "server",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)


__all__ = [
    "ERROR_STYLES",
    "FAULT_KINDS",
    "REASONING_FIELDS",
    "RETRY_AFTER_STYLES",
    "STAT_KEYS",
    "SimOptions",
    "SimServer",
    "SimServerConfig",
    "Simulator",
    "build_parser",
    "main",
    "options_argv",
]
