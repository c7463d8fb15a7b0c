"""What a client did, counted per attempt, so runs can report 429s, retries and latency honestly."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, fields

__all__ = ["ClientStats", "percentile"]


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class ClientStats:
    """Counters of one client; `a + b` adds two (e.g. the stats of several Ray workers).

    `requests` are calls to `complete`; `attempts` are HTTP calls, so `attempts - requests` >= retries.
    `latencies_s` holds one end-to-end latency per successful request (retries and backoff included).
    """

    requests: int = 0
    successes: int = 0
    failures: int = 0
    attempts: int = 0
    retries: int = 0
    backoff_s: float = 0.0
    status_429: int = 0
    timeouts: int = 0
    connection_errors: int = 0
    malformed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    other_statuses: Counter[int] = field(default_factory=Counter)
    failures_by_kind: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)

    def __add__(self, other: ClientStats) -> ClientStats:
        # Every field (int, float, Counter, list) adds with `+`.
        return ClientStats(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    def latency_percentile(self, q: float) -> float:
        return percentile(self.latencies_s, q)
