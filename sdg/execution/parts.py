"""Part files: the driver appends the rows workers send back as JSON lines, flushed as they arrive.

Only the driver writes them (workers return rows), so a multi-node run needs no shared file system.
JSON lines because an append is atomic enough to survive a crash: at most the last line is cut,
and readers skip it. That is what makes a killed run resumable without re-asking finished samples.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "ROWS_PER_PART",
    "PartWriter",
    "RotatingPartWriter",
    "encode_rows",
    "finished_indexes",
    "part_files",
    "read_rows",
]


def encode_rows(rows: Iterable[dict[str, Any]]) -> bytes:
    """Rows as JSON lines (UTF-8), the form they travel in from a worker and are appended in."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode()


class PartWriter:
    """Appends rows to one part file and flushes after each write."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[bytes] = open(path, "ab")  # noqa: SIM115 - closed in close()
        if self._file.tell() > 0:
            self._terminate_cut_line(path)

    def _terminate_cut_line(self, path: Path) -> None:
        # A crash may have left half a line; start ours on a fresh one so both stay parseable.
        with open(path, "rb") as existing:
            existing.seek(-1, 2)
            if existing.read(1) != b"\n":
                self._file.write(b"\n")

    def write(self, rows: Iterable[dict[str, Any]]) -> None:
        self.write_lines(encode_rows(rows))

    def write_lines(self, lines: bytes) -> None:
        """Append already encoded JSON lines (as `encode_rows` makes them)."""
        self._file.write(lines)
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


ROWS_PER_PART = 10_000  # the driver starts a new part file after this many rows


class RotatingPartWriter:
    """The driver's writer: `part-<attempt>-<n>.jsonl`, a new file every `rows_per_part` rows.

    Bounded parts keep collecting the dataset light: it reads one part at a time.
    """

    def __init__(self, parts_dir: Path, attempt_tag: str, rows_per_part: int = ROWS_PER_PART) -> None:
        self.parts_dir = parts_dir
        self.attempt_tag = attempt_tag
        self.rows_per_part = rows_per_part
        self._writer: PartWriter | None = None
        self._rows_in_part = 0
        self._parts = 0
        self.rows = 0

    def write_lines(self, lines: bytes, num_rows: int) -> None:
        if not num_rows:
            return
        if self._writer is None or self._rows_in_part >= self.rows_per_part:
            self.close()
            self._writer = PartWriter(self.parts_dir / f"part-{self.attempt_tag}-{self._parts:04d}.jsonl")
            self._parts += 1
            self._rows_in_part = 0
        self._writer.write_lines(lines)
        self._rows_in_part += num_rows
        self.rows += num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


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
