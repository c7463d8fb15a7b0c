"""Per-sample randomness derived from (run seed, sample index, purpose) only.

Never from worker, shard or completion order: the same config gives the same dataset with 1 or 16
workers. blake2b rather than `hash()` because Python salts `hash` per process.
"""

from __future__ import annotations

import hashlib
import random

__all__ = ["derive_seed", "sample_rng"]

_SEED_BITS = 31  # request seeds must fit a signed 32-bit int on some servers (llama.cpp, vLLM)


def derive_seed(run_seed: int, index: int, purpose: str) -> int:
    """A stable non-negative 31-bit seed for one purpose ("request", "language", ...) of one sample."""
    digest = hashlib.blake2b(f"{run_seed}:{index}:{purpose}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - _SEED_BITS)


def sample_rng(run_seed: int, index: int, purpose: str) -> random.Random:
    """A private random generator for one purpose of one sample."""
    return random.Random(derive_seed(run_seed, index, purpose))
