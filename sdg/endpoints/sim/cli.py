"""`python -m sdg.endpoints.sim`: flags generated from `SimOptions`' fields, and the argv for them.

`--field-name` per field (help and choices from its metadata); booleans are `--x/--no-x`, lists are
comma-separated, an optional number accepts `none`. The key is never a flag: `--api-key-env NAME` reads
it from the environment. `options_argv` is the inverse, so a parent process can start the sim with the
same options.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, Field, fields
from typing import Any

from sdg.endpoints.sim.options import SimOptions
from sdg.endpoints.sim.server import Simulator

__all__ = ["build_parser", "main", "options_argv", "options_from_args"]

log = logging.getLogger("sdg.endpoints.sim")
PROG = "python -m sdg.endpoints.sim"


class _UsageError(Exception):
    """A bad flag or value: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise _UsageError(message)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _cli_fields() -> list[Field[Any]]:
    return [f for f in fields(SimOptions) if f.metadata.get("cli", True)]


def _default(f: Field[Any]) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _optional(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return None if text.lower() in ("", "none", "null") else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in "invalid float value: 'x'"
    return parse


def build_parser() -> argparse.ArgumentParser:
    """One flag per `SimOptions` field (except api_key), plus --api-key-env."""
    p = _Parser(
        prog=PROG,
        description="Simulated OpenAI-compatible chat endpoint. Prints the base URL as the first stdout line.",
    )
    hints = typing.get_type_hints(SimOptions)
    for f in _cli_fields():
        kind, default = hints[f.name], _default(f)
        shown = ",".join(default) if isinstance(default, list) else default
        kw: dict[str, Any] = {"dest": f.name, "default": default, "help": f"{f.metadata['help']} (default: {shown})"}
        if "choices" in f.metadata:
            kw["choices"] = list(f.metadata["choices"])
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
            kw["help"] = f.metadata["help"]  # BooleanOptionalAction appends the default itself
        elif typing.get_origin(kind) is list:
            kw.update(type=_comma_list, metavar="A,B")
        elif isinstance(kind, types.UnionType):
            (inner,) = (k for k in typing.get_args(kind) if k is not type(None))
            kw["type"] = _optional(inner)
        else:
            kw["type"] = kind
        p.add_argument(_flag(f.name), **kw)
    p.add_argument(
        "--api-key-env", metavar="NAME", help="require `Bearer $NAME` (the key is read from the environment)"
    )
    return p


def options_from_args(args: argparse.Namespace) -> SimOptions:
    """Validated options; raises ValueError with a one-line reason."""
    values = {f.name: getattr(args, f.name) for f in _cli_fields()}
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            raise ValueError(f"environment variable {args.api_key_env} (--api-key-env) is not set or empty")
        values["api_key"] = key
    return SimOptions(**values)


def options_argv(options: SimOptions, skip: tuple[str, ...] = ()) -> list[str]:
    """The flags that give `options` back (values equal to the default are left out); never the key."""
    argv: list[str] = []
    for f in _cli_fields():
        value = getattr(options, f.name)
        if f.name in skip or value == _default(f):
            continue
        if isinstance(value, bool):
            argv.append(_flag(f.name) if value else "--no-" + f.name.replace("_", "-"))
        elif isinstance(value, list):
            argv += [_flag(f.name), ",".join(value)]
        else:
            argv += [_flag(f.name), "none" if value is None else str(value)]
    return argv


async def _serve_until_signal(options: SimOptions) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before printing the URL, so a quick signal still exits 0
        loop.add_signal_handler(sig, stop.set)
    sim = Simulator(options)
    base_url = await sim.start()
    print(base_url, flush=True)
    log.info("sim listening on %s (%s)", base_url, options)
    try:
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    """CLI entry: exit 0 on SIGTERM/SIGINT, 2 on bad options (one line), 1 if the port cannot be bound."""
    try:
        options = options_from_args(build_parser().parse_args(argv))
    except (_UsageError, ValueError) as e:
        print(f"sim: error: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    try:
        asyncio.run(_serve_until_signal(options))
    except OSError as e:
        print(f"sim: error: cannot listen on {options.host}:{options.port}: {e}", file=sys.stderr)
        return 1
    return 0
