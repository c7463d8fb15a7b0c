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

from sdg.endpoints.sim.cli import build_parser, main, options_argv
from sdg.endpoints.sim.options import (
    ERROR_STYLES,
    FAULT_KINDS,
    REASONING_FIELDS,
    RETRY_AFTER_STYLES,
    SimOptions,
    SimServerConfig,
)
from sdg.endpoints.sim.server import STAT_KEYS, SimServer, Simulator

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
