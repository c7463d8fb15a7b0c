"""Everything that makes a client, declared once: the constructor, pickling and the run's Hydra schema
(`sdg.config.ClientConfig`) are all derived from `ClientSettings`.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass, field, fields
from urllib.parse import urlsplit

from sdg.client.limits import LimitSettings

__all__ = ["DEFAULT_API_KEY_ENV", "DEFAULT_BASE_URL", "ClientSettings", "validate_base_url"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"


def validate_base_url(base_url: str) -> str:
    """`base_url` without a trailing slash; a clear ValueError when it is not an http(s) URL."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"base_url {base_url!r} is not an http(s) URL: use the form http://host:port/v1 "
            "(the OpenAI-compatible API root)"
        )
    try:
        _ = parts.port
    except ValueError:
        raise ValueError(f"base_url {base_url!r} has an invalid port") from None
    return base_url.rstrip("/")


@dataclass(frozen=True)
class ClientSettings:
    """A client's settings, checked on construction; they rebuild the client in another process.

    The key travels only if it was given directly (`api_key`); otherwise each process reads the variable
    named by `api_key_env` when it sends, as `organization`/`project` fall back to `OPENAI_ORG_ID` /
    `OPENAI_PROJECT_ID` like the openai SDK.

    Timeouts: `connect_timeout` bounds reaching the host (a dead host fails fast); `timeout` is how long
    the endpoint may stay silent while answering (the openai SDK's read timeout), so a streamed answer may
    last as long as it keeps sending. Network: `trust_env` follows HTTP(S)_PROXY / NO_PROXY (and .netrc);
    `ca_bundle` adds a PEM file of trusted CAs (a corporate proxy's); `verify=False` skips TLS checks.
    """

    api_key: str | None = field(default=None, repr=False)
    base_url: str = DEFAULT_BASE_URL
    api_key_env: str | None = DEFAULT_API_KEY_ENV
    max_concurrent_requests: int = 5
    max_retries: int = 3
    base_delay: float = 1.0
    max_delay: float = 60.0
    timeout: float | None = 120.0
    connect_timeout: float | None = 10.0
    rpm: float | None = None  # requests per minute never to exceed (None: learn it from the endpoint)
    tpm: float | None = None  # tokens per minute never to exceed
    adaptive_concurrency: bool = True  # slow start, AIMD on 429, pacing by x-ratelimit-*; False: fixed slots
    default_headers: dict[str, str] | None = None
    default_query: dict[str, str] | None = None
    organization: str | None = None
    project: str | None = None
    trust_env: bool = True
    verify: bool = True
    ca_bundle: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "base_url", validate_base_url(self.base_url))
        if self.max_concurrent_requests < 1:
            raise ValueError(
                f"max_concurrent_requests={self.max_concurrent_requests} must be >= 1 "
                "(it is how many requests may be in flight at once)"
            )
        if self.max_retries < 0:
            raise ValueError(f"max_retries={self.max_retries} must be >= 0")
        for name in ("base_delay", "max_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0 seconds")
        for name in ("timeout", "connect_timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name}={value} must be > 0 seconds (or None for no timeout)")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name}={value} must be > 0 (or None for no limit)")
        if self.ca_bundle is not None and not os.path.isfile(self.ca_bundle):
            raise ValueError(f"ca_bundle={self.ca_bundle!r} is not a file: give the path of a PEM file of CAs")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def resolved_api_key(self) -> str | None:
        if self.api_key is not None:
            return self.api_key
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        key = self.resolved_api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        organization = self.organization or os.environ.get("OPENAI_ORG_ID")
        if organization:
            headers["OpenAI-Organization"] = organization
        project = self.project or os.environ.get("OPENAI_PROJECT_ID")
        if project:
            headers["OpenAI-Project"] = project
        headers.update(self.default_headers or {})
        return headers

    def limit_settings(self) -> LimitSettings:
        """The adaptive limit's settings (the same for a client alone and for a run's shared limit)."""
        return LimitSettings(
            max_concurrency=self.max_concurrent_requests,
            rpm=self.rpm,
            tpm=self.tpm,
            adaptive=self.adaptive_concurrency,
        )

    def ssl_context(self) -> ssl.SSLContext | bool:
        """What aiohttp's connector takes: False (no checks), a context with the extra CAs, or True (default)."""
        if not self.verify:
            return False
        if self.ca_bundle:
            return ssl.create_default_context(cafile=self.ca_bundle)
        return True
