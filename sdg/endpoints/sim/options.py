"""What the simulated endpoint does: one dataclass, the single source of its CLI, its argv and its Hydra schema.

Every field carries ``metadata={"help": ..., "choices": ...}``; `cli.py` turns the fields into flags, and
`SimServerConfig` (the `client.sim` section of a run) is generated from the same fields minus host, port
and api_key. The dataclass itself is also a valid OmegaConf structured config: no tuples, no Literal.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any

from sdg.schema import fields_of

__all__ = [
    "ERROR_STYLES",
    "FAULT_KINDS",
    "REASONING_FIELDS",
    "RETRY_AFTER_STYLES",
    "SERVER_ONLY_FIELDS",
    "SimOptions",
    "SimServerConfig",
]

RETRY_AFTER_STYLES = ("seconds", "ms", "both", "date", "none")
ERROR_STYLES = ("openai", "vllm", "fastapi", "rfc7807", "text")
REASONING_FIELDS = ("reasoning_content", "reasoning")
# Exclusive per-request outcomes drawn from one seeded RNG in this order (new kinds go last, so old seeds
# keep drawing the same sequence); their probabilities sum to at most 1.
FAULT_KINDS = (
    "p429",
    "p_quota",
    "p500",
    "p503",
    "p_reset",
    "p_hang",
    "p_malformed",
    "p_html",
    "p_refusal",
    "p_empty",
)
# Set by whoever starts the server (the run always binds 127.0.0.1 on a free port; a key comes from the
# environment): not part of a run's config.
SERVER_ONLY_FIELDS = ("host", "port", "api_key")
_NON_NEGATIVE = ("latency_ms", "jitter_ms", "tokens_per_s", "rate_limit_rps", "burst", "hang_s", "reasoning_words")


def _opt(default: Any, help: str, **metadata: Any) -> Any:
    """A field with its help text (and optional `choices`, or `cli=False`)."""
    return field(default=default, metadata={"help": help, **metadata})


@dataclass
class SimOptions:
    """Behaviour of the simulated endpoint; validated on construction so bad values fail early."""

    host: str = _opt("127.0.0.1", "address to listen on")
    port: int = _opt(0, "port to listen on; 0 picks a free port")
    latency_ms: float = _opt(0.0, "latency before an answer (or its first chunk)")
    jitter_ms: float = _opt(0.0, "uniform extra latency 0..jitter")
    tokens_per_s: float = _opt(0.0, "generation speed; 0 = instant")
    rate_limit_rps: float = _opt(0.0, "token-bucket rate limit in requests/s; 0 = none")
    burst: int = _opt(0, "token-bucket size; 0 = max(1, ceil(rps))")
    p429: float = _opt(0.0, "probability of a random 429 rate_limit_exceeded")
    p_quota: float = _opt(0.0, "probability of a 429 insufficient_quota (not retryable)")
    p500: float = _opt(0.0, "probability of a 500")
    p503: float = _opt(0.0, "probability of a 503")
    p_reset: float = _opt(0.0, "probability of a dropped connection (TCP RST, no answer)")
    p_hang: float = _opt(0.0, "probability of a request held hang_s, then dropped")
    p_malformed: float = _opt(0.0, "probability of a 200 with truncated JSON")
    p_html: float = _opt(0.0, "probability of a 200 text/html page (login wall, captive proxy)")
    p_refusal: float = _opt(0.0, "probability of a 200 refusal: content null, `refusal` set")
    p_empty: float = _opt(0.0, "probability of a 200 with content null and finish_reason stop")
    p_bad_json: float = _opt(0.0, "share of json_schema answers that do not validate")
    fault_retry_after_ms: float | None = _opt(None, "retry hint on random 429s (p429); unset = no hint")
    retry_after_style: str = _opt(
        "seconds",
        "how 429s hint the wait: seconds = `Retry-After: N` (whole, >= 1), ms = `retry-after-ms` only, "
        "both, date = `Retry-After: <HTTP-date>`, none",
        choices=RETRY_AFTER_STYLES,
    )
    ratelimit_headers: bool = _opt(True, "send x-ratelimit-* headers when rate limited")
    error_style: str = _opt(
        "openai", "body shape of error answers (like OpenAI, vLLM, FastAPI, RFC 7807/NVCF, plain text)",
        choices=ERROR_STYLES,
    )  # fmt: skip
    reasoning: bool = _opt(False, "answer like a reasoning model: think first, counted against max_tokens")
    reasoning_field: str = _opt(
        "reasoning_content", "message field of the thinking (newer vLLM: reasoning)", choices=REASONING_FIELDS
    )
    reasoning_words: int = _opt(48, "words of thinking before the answer")
    hang_s: float = _opt(600.0, "how long a hung request is held")
    api_key: str | None = field(default=None, repr=False, metadata={"help": "required bearer key", "cli": False})
    models: list[str] = field(default_factory=list, metadata={"help": "accepted model names; empty = any"})
    seed: int = _opt(0, "seeds the fault RNG")

    def __post_init__(self) -> None:
        self.models = [str(m) for m in self.models]
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the first bad option."""
        for name in (*FAULT_KINDS, "p_bad_json"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        total = math.fsum(getattr(self, name) for name in FAULT_KINDS)
        if total > 1.0 + 1e-9:
            raise ValueError(f"fault probabilities {', '.join(FAULT_KINDS)} sum to {total:g} > 1")
        for name in _NON_NEGATIVE:
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        if self.fault_retry_after_ms is not None and not self.fault_retry_after_ms >= 0:
            raise ValueError(f"fault_retry_after_ms must be >= 0, got {self.fault_retry_after_ms}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        for f in fields(self):
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) not in choices:
                raise ValueError(f"{f.name} must be one of {', '.join(choices)}, got {getattr(self, f.name)!r}")


def _config_class() -> type:
    """`SimOptions` minus host, port and api_key, as a plain dataclass for the run's Hydra schema."""
    spec = fields_of(SimOptions, exclude=SERVER_ONLY_FIELDS)

    def to_options(self: Any, **server: Any) -> SimOptions:
        """Validated `SimOptions` with these values (plus host/port/api_key if given)."""
        return SimOptions(**{f.name: getattr(self, f.name) for f in fields(self)}, **server)

    cls = make_dataclass("SimServerConfig", spec, namespace={"to_options": to_options})
    cls.__module__ = __name__
    cls.__doc__ = (
        "Options of the simulated endpoint when `client.kind=sim`: the fields of `SimOptions` minus "
        f"{', '.join(SERVER_ONLY_FIELDS)} (see `python -m sdg.endpoints.sim --help`)."
    )
    return cls


SimServerConfig = _config_class()
