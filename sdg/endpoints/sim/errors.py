"""Error answers in the body shapes real OpenAI-compatible servers use (`SimOptions.error_style`).

Every style keeps the HTTP status; only the body and its content type change:

- ``openai``: ``{"error": {"message", "type", "param", "code"}}``, application/json
  (https://platform.openai.com/docs/guides/error-codes; the openai SDK reads ``body["error"]``).
- ``vllm``: vLLM's ``ErrorResponse`` up to v0.10.0, flat:
  ``{"object": "error", "message": ..., "type": "BadRequestError", "param": null, "code": 400}``
  (vllm/entrypoints/openai/protocol.py: ``class ErrorResponse(OpenAIBaseModel): object: str = "error";
  message: str; type: str; param: Optional[str] = None; code: int``; serving_engine.py
  ``create_error_response(message, err_type="BadRequestError", status_code=HTTPStatus.BAD_REQUEST)``, and
  ``err_type="NotFoundError"`` for an unknown model). Newer vLLM nests the same fields under ``"error"``
  (``class ErrorResponse(OpenAIBaseModel): error: ErrorInfo``, still ``code: int``).
- ``fastapi``: what a FastAPI app sends by default (fastapi/exception_handlers.py):
  ``HTTPException`` -> ``{"detail": exc.detail}``, a ``RequestValidationError`` ->
  ``{"detail": jsonable_encoder(exc.errors())}``, items like
  ``{"type": "missing", "loc": ["body", "price"], "msg": "Field required", "input": {...}}``
  (fastapi tests/test_tutorial/test_body/test_tutorial001.py) and, for an unparsable body,
  ``{"type": "json_invalid", "loc": ("body", e.pos), "msg": "JSON decode error", "input": {}, "ctx":
  {"error": e.msg}}`` (fastapi/routing.py). FastAPI answers validation errors with 422; here the status
  stays 400 so that only the shape changes.
- ``rfc7807``: problem details, application/problem+json (RFC 7807 §3.1, https://www.rfc-editor.org/rfc/rfc7807:
  ``type`` "about:blank" means the title is the HTTP status phrase), as NVIDIA's API gateway sends, e.g.
  ``{"status": 429, "title": "Too Many Requests"}`` (reported in
  https://github.com/NousResearch/hermes-agent/issues/69802).
- ``text``: the message alone as text/plain, like a bare proxy or ``starlette.responses.PlainTextResponse``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

__all__ = ["ApiError", "render_error"]

# vLLM's own err_type names (BadRequestError, NotFoundError, InternalServerError); the statuses vLLM never
# sends itself (401, 429, 503 come from a proxy in front of it) are named the same way.
_VLLM_TYPES = {
    400: "BadRequestError",
    401: "UnauthorizedError",
    404: "NotFoundError",
    429: "TooManyRequestsError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


@dataclass(frozen=True, slots=True)
class ApiError:
    """One error answer, independent of its body shape.

    `type`/`code` are OpenAI's; `validation` is a FastAPI/pydantic error item when the request failed
    validation (`loc`, `msg`, `type`, `input`, optional `ctx`).
    """

    status: int
    message: str
    type: str
    param: str | None = None
    code: str | None = None
    validation: dict[str, Any] | None = None


def render_error(error: ApiError, style: str) -> tuple[bytes, str]:
    """(body, content type) of `error` in `style`."""
    if style == "text":
        return error.message.encode(), "text/plain"
    if style == "rfc7807":
        title = HTTPStatus(error.status).phrase
        body: Any = {"type": "about:blank", "title": title, "status": error.status, "detail": error.message}
        return json.dumps(body).encode(), "application/problem+json"
    if style == "vllm":
        vllm_type = _VLLM_TYPES.get(error.status, HTTPStatus(error.status).phrase.replace(" ", "") + "Error")
        body = {"object": "error", "message": error.message, "type": vllm_type, "param": error.param}
        body["code"] = error.status
    elif style == "fastapi":
        body = {"detail": [error.validation] if error.validation is not None else error.message}
    else:
        body = {"error": {"message": error.message, "type": error.type, "param": error.param, "code": error.code}}
    return json.dumps(body).encode(), "application/json"
