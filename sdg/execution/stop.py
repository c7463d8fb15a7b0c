"""When to stop a run early: decided once for the whole run, on the driver, from typed error kinds.

Every failed sample carries its error's kind (`error_kind`: `LLMClientError.kind`, e.g. `auth`, `bad_request`),
never parsed out of the message. The driver sees every finished sample of the run, whichever worker sent it,
so "no success yet" means the run's, not one worker's.
"""

from __future__ import annotations

__all__ = ["FATAL_KINDS", "SYSTEMATIC_KINDS", "UNREACHABLE_KINDS", "EndpointUnusable", "StopRule"]

# Errors that every other sample would hit too: stop the run instead of paying for N failures.
FATAL_KINDS = frozenset({"auth", "permission", "not_found", "quota"})
# Unreachable before anything succeeded in the run: the endpoint is down or the URL is wrong, not a passing fault.
UNREACHABLE_KINDS = frozenset({"connection", "timeout"})
# Non-retryable error statuses (400/422, other 4xx): systematic when the run's first samples all get the same one.
SYSTEMATIC_KINDS = frozenset({"bad_request", "status"})
SYSTEMATIC_AFTER = 20  # that many first samples, all failed the same way and none succeeded

_HINTS = {
    "bad_request": "the endpoint rejects the request itself: check generation.* and stage options against what "
    "the model accepts",
    "status": "the endpoint refuses every request with the same status",
}


class EndpointUnusable(RuntimeError):
    """The endpoint refuses every sample the same way (bad key, unknown model, down, a rejected parameter)."""


class StopRule:
    """Fed each finished sample's outcome in the order the driver receives them; says when the run must stop."""

    def __init__(self, systematic_after: int = SYSTEMATIC_AFTER) -> None:
        self.systematic_after = systematic_after
        self.successes = 0
        self.seen = 0
        self._first_kind: str | None = None
        self._same_so_far = True

    def observe(self, kind: str | None, error: str | None = None) -> str | None:
        """One finished sample: `kind` None for a success. Returns why the run stops, or None to go on."""
        self.seen += 1
        if kind is None:
            self.successes += 1
            self._same_so_far = False
            return None
        message = _message(kind, error)
        if kind in FATAL_KINDS:
            return message
        if kind in UNREACHABLE_KINDS and not self.successes:
            return message
        if self.seen == 1:
            self._first_kind = kind
        self._same_so_far = self._same_so_far and kind == self._first_kind and kind in SYSTEMATIC_KINDS
        if self._same_so_far and self.seen == self.systematic_after:
            hint = _HINTS.get(kind, "")
            return f"the first {self.seen} samples all failed the same way and none succeeded ({hint}): {message}"
        return None


def _message(kind: str, error: str | None) -> str:
    """The row's error text without its `kind: ` prefix (display only; decisions use `kind`)."""
    if not error:
        return kind
    prefix = f"{kind}: "
    return error[len(prefix) :] if error.startswith(prefix) else error
