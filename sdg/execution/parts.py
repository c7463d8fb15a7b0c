"""Part files: each worker appends its finished rows as JSON lines, flushed as they complete.

JSON lines because an append is atomic enough to survive a crash: at most the last line is cut,
and readers skip it. That is what makes a killed run resumable without re-asking finished samples.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["PartWriter", "finished_indexes", "part_files", "read_rows"]


class PartWriter:
    """Appends rows to one part file and flushes after each finished task."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if self._file.tell() > 0:
            self._terminate_cut_line(path)

    def _terminate_cut_line(self, path: Path) -> None:
        # A crash may have left half a line; start ours on a fresh one so both stay parseable.
        with open(path, "rb") as existing:
            existing.seek(-1, 2)
            if existing.read(1) != b"\n":
                self._file.write("\n")

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        self._file.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def part_files(parts_dir: Path) -> list[Path]:
    return sorted(parts_dir.glob("part-*.jsonl")) if parts_dir.exists() else []


def read_rows(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """Every complete row of the given part files; a line cut by a crash is skipped."""
    for path in paths:
        with open(path, encoding="utf-8") as lines:
            for line in lines:
                if not line.endswith("\n"):
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    continue


def finished_indexes(paths: Iterable[Path]) -> set[int]:
    """Indexes that already have rows without an error (failed ones are asked again)."""
    return {row["index"] for row in read_rows(paths) if not row.get("error")}
