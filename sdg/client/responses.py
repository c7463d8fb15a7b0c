"""Reading what an endpoint answered: chat completions (whole or streamed) and error bodies.

Kept apart from the transport so the shapes real servers send (OpenAI, vLLM, llama.cpp, NIM) can be
read and tested on their own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import aiohttp

from sdg.client.base import Completion
from sdg.client.errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    MalformedResponseError,
    NotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
)
from sdg.client.retry import parse_retry_after

__all__ = ["json_or_none", "parse_completion", "read_stream", "status_error"]


def json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def parse_completion(body: Any, model: str, url: str) -> Completion:
    try:
        choices = sorted(body["choices"], key=lambda c: c.get("index", 0))
        texts = [c["message"].get("content") or "" for c in choices]
        reasons = [c.get("finish_reason") for c in choices]
        usage = body.get("usage") or {}
        if not choices:
            raise ValueError("no choices")
        return Completion(
            texts=texts,
            finish_reasons=reasons,
            model=body.get("model") or model,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedResponseError(f"answer from {url} is not a chat completion ({exc!r})", url=url) from None


async def read_stream(response: aiohttp.ClientResponse, model: str, url: str) -> Completion:
    """Assemble server-sent chat.completion.chunk events into one completion per choice."""
    texts: dict[int, list[str]] = {}
    reasons: dict[int, str | None] = {}
    usage: dict[str, Any] = {}
    served_model = model
    async for raw_line in response.content:
        line = raw_line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        chunk = json_or_none(data)
        if not isinstance(chunk, dict):
            raise MalformedResponseError(f"stream from {url} sent an event that is not JSON", url=url)
        if "error" in chunk:
            raise status_error(500, {}, chunk, url=url, model=model, base_url=url, api_key_env=None)
        served_model = chunk.get("model") or served_model
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            index = choice.get("index", 0)
            delta = choice.get("delta") or {}
            texts.setdefault(index, []).append(delta.get("content") or "")
            if choice.get("finish_reason") is not None:
                reasons[index] = choice["finish_reason"]
    if not texts:
        raise MalformedResponseError(f"stream from {url} ended without any choice", url=url)
    order = sorted(texts)
    return Completion(
        texts=["".join(texts[i]) for i in order],
        finish_reasons=[reasons.get(i) for i in order],
        model=served_model,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )


def _should_retry_header(headers: Mapping[str, str]) -> bool | None:
    value = headers.get("x-should-retry")
    if value == "true":
        return True
    if value == "false":
        return False
    return None


def _hint(status: int, api_key_env: str | None, model: str, base_url: str) -> str:
    key_source = f"the environment variable {api_key_env}" if api_key_env else "the api_key argument"
    hints = {
        400: "check the generation parameters and the messages",
        401: f"check the API key in {key_source}",
        403: f"check that the key in {key_source} may use model {model!r}",
        404: f"check the model name {model!r} and the base URL {base_url}",
        422: "check the generation parameters and the messages",
    }
    return hints.get(status, "")


def status_error(
    status: int,
    headers: Mapping[str, str],
    body: object,
    *,
    url: str,
    model: str,
    base_url: str,
    api_key_env: str | None,
) -> APIStatusError:
    """The typed error for an HTTP error answer, with a message that says what to check."""
    detail = body.get("error") if isinstance(body, dict) else None
    if not isinstance(detail, dict):
        detail = {"message": detail} if isinstance(detail, str) else {}
    code = detail.get("code") or detail.get("type")
    server_message = str(detail.get("message") or "").strip()[:300]
    kwargs = {
        "status_code": status,
        "url": url,
        "error_code": str(code) if code is not None else None,
        "retry_after": parse_retry_after(headers),
        "should_retry": _should_retry_header(headers),
    }
    cls: type[APIStatusError]
    if status == 429 and code == "insufficient_quota":
        cls = QuotaExceededError
    elif status == 429:
        cls = RateLimitError
    elif status in (400, 422):
        cls = BadRequestError
    elif status == 401:
        cls = AuthenticationError
    elif status == 403:
        cls = PermissionDeniedError
    elif status == 404:
        cls = NotFoundError
    elif status in (408, 409) or status >= 500:
        cls = ServerError
    else:
        cls = APIStatusError
    hint = _hint(status, api_key_env, model, base_url)
    message = f"HTTP {status} from {url}"
    if server_message:
        message += f": {server_message}"
    if hint:
        message += f" ({hint})"
    return cls(message, **kwargs)  # type: ignore[arg-type]
