"""Reading what an endpoint answered: chat completions (whole or streamed) and error bodies.

Kept apart from the transport so the shapes real servers send (OpenAI, vLLM, llama.cpp, NIM) can be
read and tested on their own; `tests/fixtures/contract/` holds answers those servers document.

What counts as an answer:
- each choice keeps its text, reasoning (`reasoning_content` or `reasoning`), refusal, finish reason and
  logprobs; the answer's `model` is the served model;
- a choice with neither content nor a refusal is not an answer: the whole request fails with
  `EmptyAnswerError` saying why (reasoning spent the token budget, tool calls only, nothing at all). With
  n > 1 one empty choice fails all n, so a sample's rows are all answers or one error row, never a row
  that silently holds nothing;
- a refusal (`message.refusal`) is an answer: it is kept, with no text, for the dataset's `refusal` column;
- a 200 that is not JSON (a login wall, a captive proxy) fails with `NotJSONResponseError` naming its
  content type and first characters; one labelled JSON that does not parse (cut on the way) is a
  retryable `MalformedResponseError`.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from sdg.client.base import Choice, Completion
from sdg.client.errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    EmptyAnswerError,
    MalformedResponseError,
    NotFoundError,
    NotJSONResponseError,
    PermissionDeniedError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
)
from sdg.client.retry import parse_retry_after

__all__ = [
    "MAX_REASON_CHARS",
    "RawBody",
    "check_content",
    "decode_body",
    "json_or_none",
    "parse_completion",
    "read_body",
    "read_stream",
    "scrub",
    "server_reason",
    "status_error",
]

MAX_REASON_CHARS = 300
_PREVIEW_CHARS = 120
_MASK = "***"
# Credentials a server may echo back: an Authorization header, or keys of the usual providers.
_SECRET_PATTERNS = (
    re.compile(r"(?i)\bBearer\s+[^\s\"',;]+"),
    re.compile(r"\b(?:sk|nvapi|gsk)[-_][A-Za-z0-9*][A-Za-z0-9_*.\-]{10,}"),
)
_HTML_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_HTML_DROP = re.compile(r"<(script|style)\b.*?</\1>", re.IGNORECASE | re.DOTALL)
_HTML_TAG = re.compile(r"<[^>]+>")
_SSE_FIELDS = (b"data:", b"event:", b"id:", b"retry:", b":")


class _KeySource(Protocol):
    def resolved_api_key(self) -> str | None: ...


@dataclass(frozen=True)
class RawBody:
    """A body that is not JSON: its content type and text (with the API key already masked)."""

    content_type: str
    text: str

    def __getitem__(self, key: object) -> Any:
        raise TypeError(f"the answer is {self.describe()}, not JSON")

    def describe(self) -> str:
        kind = self.content_type or "no content type"
        preview = _squash(self.text)[:_PREVIEW_CHARS]
        return f"{kind}: {preview!r}" if preview else f"{kind} with an empty body"


def json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None


def decode_body(raw: bytes, content_type: str = "", secret: str | None = None, *, masked: bool = False) -> Any:
    """The JSON in `raw`, or a `RawBody`; with `masked`, `secret` is masked before anything reads the text."""
    if not masked:
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            pass
    text = _mask(raw.decode("utf-8", errors="replace"), secret)
    try:
        return json.loads(text)
    except ValueError:
        return RawBody(content_type.split(";")[0].strip(), text)


async def read_body(response: aiohttp.ClientResponse, keys: _KeySource | None = None) -> Any:
    """The answer's body: JSON, or a `RawBody`. An error answer is read with the client's key masked."""
    raw = await response.read()
    if response.status < 400:  # the usual answer: JSON, and no need to look the key up
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            pass
    secret = keys.resolved_api_key() if keys is not None else None
    return decode_body(raw, response.headers.get("Content-Type", ""), secret, masked=True)


def _text_of(content: Any) -> str | None:
    """`message.content` as text: a string, or the text parts of a list of content parts."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") or "" for p in content if isinstance(p, dict) and p.get("type") in ("text", None)]
        return "".join(parts)
    raise TypeError(f"message.content is {type(content).__name__}, not text")


def _reasoning_of(message: Mapping[str, Any]) -> str | None:
    return message.get("reasoning_content") or message.get("reasoning") or None


def parse_completion(body: Any, model: str, url: str, max_tokens: int | None = None) -> Completion:
    """A whole (non-streamed) chat completion; typed errors for what is not one (see the module doc)."""
    if isinstance(body, RawBody) and "json" in body.content_type:
        # Labelled JSON but cut or garbled on the way: a transfer problem, worth another attempt.
        raise MalformedResponseError(f"answer from {url} is not valid JSON: {body.describe()}", url=url)
    if isinstance(body, RawBody):
        raise NotJSONResponseError(
            f"answer from {url} is not JSON but {body.describe()} (a login page or a proxy? check the base URL, "
            "the network and any proxy settings)",
            url=url,
        )
    if isinstance(body, dict) and "choices" not in body and body.get("error"):
        raise _error_in_answer(body, url, model)
    try:
        raw_choices = body["choices"]
        if not isinstance(raw_choices, list) or not raw_choices:
            raise ValueError("no choices")
        choices = []
        for raw in sorted(raw_choices, key=lambda c: c.get("index") or 0):
            message = raw.get("message") or {}
            choices.append(
                Choice(
                    text=_text_of(message.get("content")),
                    finish_reason=raw.get("finish_reason"),
                    reasoning=_reasoning_of(message),
                    refusal=message.get("refusal") or None,
                    logprobs=raw.get("logprobs"),
                    tool_calls=bool(message.get("tool_calls") or message.get("function_call")),
                )
            )
        usage = body.get("usage") or {}
        served = body.get("model") or None
        completion = Completion(
            choices=choices,
            model=served or model,
            served_model=served,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedResponseError(f"answer from {url} is not a chat completion ({exc!r})", url=url) from None
    check_content(completion, url, max_tokens)
    return completion


def check_content(completion: Completion, url: str, max_tokens: int | None = None) -> None:
    """Raise `EmptyAnswerError` when any choice has neither content nor a refusal."""
    empty = [i for i, c in enumerate(completion.choices) if not c.refusal and not (c.text or "").strip()]
    if not empty:
        return
    reason = _empty_reason(completion, completion.choices[empty[0]], max_tokens)
    n = len(completion.choices)
    if n > 1:
        which = ", ".join(str(i) for i in empty)
        reason = f"choice {which} of {n} (one empty choice fails all {n}): {reason}"
    raise EmptyAnswerError(reason, url=url, completion=completion)


def _empty_reason(completion: Completion, choice: Choice, max_tokens: int | None) -> str:
    finish = f"finish_reason={choice.finish_reason}"
    if max_tokens is not None:
        budget = f"max_tokens={max_tokens}"
    elif completion.completion_tokens:
        budget = f"its whole token budget ({completion.completion_tokens} completion tokens)"
    else:
        budget = "its whole token budget"
    if choice.tool_calls:
        return f"the model answered with tool calls only and no text ({finish}); do not send tools for generation"
    if choice.finish_reason == "length" and choice.reasoning:
        return f"the model spent {budget} on reasoning and wrote no answer ({finish}); raise generation.max_tokens"
    if choice.finish_reason == "length":
        return f"the answer was cut at {budget} before any content ({finish}); raise generation.max_tokens"
    if choice.reasoning:
        return f"the model wrote only reasoning and no answer ({finish})"
    return f"the endpoint answered 200 with no content ({finish})"


class _StreamChoice:
    __slots__ = ("finish_reason", "logprobs", "reasoning", "refusal", "text", "tool_calls")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.reasoning: list[str] = []
        self.refusal: list[str] = []
        self.logprobs: dict[str, list[Any]] | None = None
        self.finish_reason: str | None = None
        self.tool_calls = False

    def add(self, choice: Mapping[str, Any]) -> None:
        delta = choice.get("delta") or {}
        if delta.get("content"):
            self.text.append(_text_of(delta["content"]) or "")
        if reasoning := _reasoning_of(delta):
            self.reasoning.append(reasoning)
        if delta.get("refusal"):
            self.refusal.append(delta["refusal"])
        if delta.get("tool_calls") or delta.get("function_call"):
            self.tool_calls = True
        logprobs = choice.get("logprobs")
        if isinstance(logprobs, dict):
            merged = self.logprobs if self.logprobs is not None else {}
            for key, items in logprobs.items():
                if isinstance(items, list):
                    merged.setdefault(key, []).extend(items)
                else:
                    merged.setdefault(key, None)
            self.logprobs = merged
        if choice.get("finish_reason") is not None:
            self.finish_reason = choice["finish_reason"]

    def choice(self) -> Choice:
        return Choice(
            text="".join(self.text) if self.text else None,
            finish_reason=self.finish_reason,
            reasoning="".join(self.reasoning) or None,
            refusal="".join(self.refusal) or None,
            logprobs=self.logprobs,
            tool_calls=self.tool_calls,
        )


async def read_stream(
    response: aiohttp.ClientResponse,
    model: str,
    url: str,
    max_tokens: int | None = None,
    keys: _KeySource | None = None,
) -> Completion:
    """Assemble server-sent chat.completion.chunk events into one completion per choice.

    A server that ignored `stream` and sent one JSON answer is read as such; anything else that is not
    server-sent events is a `NotJSONResponseError`.
    """
    choices: dict[int, _StreamChoice] = {}
    usage: dict[str, Any] = {}
    served: str | None = None
    started = False
    async for raw_line in response.content:
        line = raw_line.strip()
        if not line:
            continue
        if not started and not line.startswith(_SSE_FIELDS):
            rest = await response.content.read()
            secret = keys.resolved_api_key() if keys is not None else None
            body = decode_body(raw_line + rest, response.headers.get("Content-Type", ""), secret, masked=True)
            return parse_completion(body, model, url, max_tokens)
        started = True
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            break
        chunk = json_or_none(data)
        if not isinstance(chunk, dict):
            raise MalformedResponseError(f"stream from {url} sent an event that is not JSON", url=url)
        if chunk.get("error") and not chunk.get("choices"):
            raise _error_in_answer(chunk, url, model, keys.resolved_api_key() if keys is not None else None)
        served = chunk.get("model") or served
        usage = chunk.get("usage") or usage
        for choice in chunk.get("choices") or []:
            choices.setdefault(choice.get("index") or 0, _StreamChoice()).add(choice)
    if not choices:
        raise MalformedResponseError(f"stream from {url} ended without any choice", url=url)
    completion = Completion(
        choices=[choices[i].choice() for i in sorted(choices)],
        model=served or model,
        served_model=served,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )
    check_content(completion, url, max_tokens)
    return completion


def _error_in_answer(body: Mapping[str, Any], url: str, model: str, secret: str | None = None) -> APIStatusError:
    """An error carried inside a 200 answer or a stream: typed by the status it names, else as a server error."""
    error = body.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    status = code if isinstance(code, int) and 400 <= code < 600 else 500
    return status_error(status, {}, body, url=url, model=model, base_url=url, api_key_env=None, secret=secret)


# ---------------------------------------------------------------------------------------------- errors


def _squash(text: str) -> str:
    return " ".join(text.split())


def _mask(text: str, secret: str | None) -> str:
    """`text` with every whole occurrence of `secret` masked (whole, so a short key does not mangle words)."""
    if not secret or secret not in text:
        return text
    return re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", _MASK, text)


def scrub(text: str, secret: str | None = None) -> str:
    """`text` with `secret` and anything that looks like a bearer token or provider key masked."""
    text = _mask(text, secret)
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: "Bearer " + _MASK if m.group(0).lower().startswith("bearer") else _MASK, text)
    return text


def _cut(text: str) -> str:
    text = _squash(text)
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def _fastapi_details(items: list[Any]) -> str:
    """FastAPI / pydantic validation errors: `[{"loc": [...], "msg": ...}]` as `body.top_k: msg; ...`."""
    parts = []
    for item in items:
        if isinstance(item, dict) and item.get("msg"):
            loc = ".".join(str(p) for p in item.get("loc") or [])
            parts.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
        else:
            parts.append(_as_text(item))
    return "; ".join(parts)


def _html_text(text: str) -> str:
    title = _HTML_TITLE.search(text)
    if title and title.group(1).strip():
        return html.unescape(title.group(1))
    return html.unescape(_HTML_TAG.sub(" ", _HTML_DROP.sub(" ", text)))


def server_reason(body: Any) -> tuple[str, str | None]:
    """(the server's own reason, its error code or type) from any error body shape; the reason not yet cut.

    OpenAI / llama.cpp / new vLLM: `{"error": {"message", "type", "code"}}`; old vLLM: `{"object": "error",
    "message", "type", "code"}`; FastAPI: `{"detail": "..."}` or `{"detail": [{"loc", "msg"}]}`; RFC 7807
    (NVIDIA NIM / NVCF): `{"type", "title", "status", "detail"}`; anything else: its text.
    """
    if isinstance(body, RawBody):
        text = _html_text(body.text) if "html" in body.content_type or "<html" in body.text[:200].lower() else body.text
        text = _squash(text)
        return (f"{text} ({body.content_type})" if text and body.content_type else text), None
    if not isinstance(body, dict):
        return _as_text(body), None
    code: Any = None
    error = body.get("error")
    if isinstance(error, dict):
        message = _as_text(error.get("message") or error.get("detail") or error.get("msg"))
        code = error.get("code") if isinstance(error.get("code"), str) else error.get("type") or error.get("code")
        if not message:
            message = _as_text({k: v for k, v in error.items() if k not in ("code", "type", "param")} or error)
    elif isinstance(error, str) and error:
        message = error
        code = body.get("code") if isinstance(body.get("code"), str) else body.get("type")
    elif body.get("message"):
        message = _as_text(body["message"])
        code = body.get("code") if isinstance(body.get("code"), str) else body.get("type") or body.get("code")
    elif "detail" in body or "title" in body:
        detail = body.get("detail")
        detail_text = _fastapi_details(detail) if isinstance(detail, list) else _as_text(detail)
        title = _as_text(body.get("title"))
        message = f"{title}: {detail_text}" if title and detail_text and title != detail_text else title or detail_text
        code = body.get("type") if isinstance(body.get("type"), str) and body.get("type") != "about:blank" else None
    else:
        message = _as_text(body) if body else ""
    return message, (str(code) if code not in (None, "") else None)


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
    secret: str | None = None,
) -> APIStatusError:
    """The typed error for an HTTP error answer: the server's own reason (cut, key masked) and what to check."""
    reason, code = server_reason(body)
    server_message = _cut(scrub(reason, secret))
    kwargs = {
        "status_code": status,
        "url": url,
        "error_code": code,
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
