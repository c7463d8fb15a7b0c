"""When to stop a run early: decided once for the whole run, on the driver, from typed error kinds.

Every failed sample carries its error's kind (`error_kind`: `LLMClientError.kind`, e.g. `auth`, `bad_request`),
never parsed out of the message. The driver sees every finished sample of the run, whichever worker sent it,
so "no success yet" means the run's, not one worker's.
"""

from __future__ import annotations

from collections.abc import Callable

from sdg.client.stats import ClientStats

__all__ = [
    "FATAL_KINDS",
    "SYSTEMATIC_KINDS",
    "UNREACHABLE_KINDS",
    "BudgetSpent",
    "EndpointUnusable",
    "SpendLimit",
    "StopRule",
]

# Errors that every other sample would hit too: stop the run instead of paying for N failures.
FATAL_KINDS = frozenset({"auth", "permission", "not_found", "quota"})
# Unreachable before anything succeeded in the run: the endpoint is down or the URL is wrong, not a passing fault.
UNREACHABLE_KINDS = frozenset({"connection", "timeout"})
# Failures that repeat for every sample when they come from the setup, not the sample: non-retryable statuses
# (400/422, other 4xx), answers with no content (a reasoning model spending max_tokens on thinking), and 200s
# that are not JSON (a login wall). Systematic when the run's first samples all get the same one.
SYSTEMATIC_KINDS = frozenset({"bad_request", "status", "empty_answer", "not_json"})
SYSTEMATIC_AFTER = 20  # that many first samples, all failed the same way and none succeeded

_HINTS = {
    "bad_request": "the endpoint rejects the request itself: check generation.* and stage options against what "
    "the model accepts",
    "status": "the endpoint refuses every request with the same status",
    "empty_answer": "the model answers nothing: raise generation.max_tokens if it spends them on reasoning",
    "not_json": "the base URL answers with something that is not the API (a login page or a proxy?)",
}


class EndpointUnusable(RuntimeError):
    """The endpoint refuses every sample the same way (bad key, unknown model, down, a rejected parameter)."""


class BudgetSpent(RuntimeError):
    """The run spent `output.max_cost_usd`; what finished is kept, a resume with a higher budget goes on."""


# Before a pass of more than this many samples, its cost is estimated from its first finished ones.
ESTIMATE_ABOVE = 1000
ESTIMATE_AFTER = 50


class SpendLimit:
    """What a pass of the run spends, from the token counts its workers report, against the run's budget.

    `cost(prompt_tokens, completion_tokens)` prices tokens (None: no price known); `spent_before_usd` is what the
    run spent before this pass (earlier attempts of a resumed run, the generation before the judge). Once
    `ESTIMATE_AFTER` samples of a pass of more than `ESTIMATE_ABOVE` have finished, `on_estimate` is told what
    the whole pass will likely cost (or how many tokens it will take, without a price).
    """

    def __init__(
        self,
        cost: Callable[[int, int], float | None],
        *,
        max_cost_usd: float | None = None,
        spent_before_usd: float = 0.0,
        num_tasks: int = 0,
        what: str = "samples",
        on_estimate: Callable[[str], None] | None = None,
    ) -> None:
        self.cost = cost
        self.max_cost_usd = max_cost_usd
        self.spent_before_usd = spent_before_usd
        self.num_tasks = num_tasks
        self.what = what
        self.on_estimate = on_estimate if num_tasks > ESTIMATE_ABOVE else None
        self.spent_usd = 0.0

    def observe(self, stats: ClientStats, tasks_done: int) -> str | None:
        """The pass's totals so far; returns why the run stops (the budget is spent), or None to go on."""
        spent = self.cost(stats.prompt_tokens, stats.completion_tokens)
        self.spent_usd = spent or 0.0
        if self.on_estimate is not None and tasks_done >= ESTIMATE_AFTER:
            self.on_estimate(self._estimate(stats, spent, tasks_done))
            self.on_estimate = None
        total = self.spent_before_usd + self.spent_usd
        if self.max_cost_usd is not None and spent is not None and total >= self.max_cost_usd:
            return (
                f"output.max_cost_usd={self.max_cost_usd:g} spent: ${total:.4f} so far "
                f"({tasks_done} of {self.num_tasks} {self.what} of this pass done)"
            )
        return None

    def _estimate(self, stats: ClientStats, spent: float | None, done: int) -> str:
        scale = self.num_tasks / done
        if spent is None:
            return (
                f"sdg: the first {done} {self.what} took {stats.prompt_tokens} prompt + {stats.completion_tokens} "
                f"completion tokens: about {stats.prompt_tokens * scale:,.0f} + {stats.completion_tokens * scale:,.0f} "
                f"for all {self.num_tasks} (set endpoint.price.input_per_mtok / output_per_mtok to see the cost)"
            )
        budget = f"; output.max_cost_usd={self.max_cost_usd:g}" if self.max_cost_usd is not None else ""
        return (
            f"sdg: estimated cost of {self.num_tasks} {self.what}: about ${self.spent_before_usd + spent * scale:.4f} "
            f"(the first {done} cost ${spent:.4f}{budget})"
        )


class StopRule:
    """Fed each finished sample's outcome in the order the driver receives them; says when the run must stop.

    With a `spend` limit it also says when the run has spent its budget (`observe_spend`).
    """

    def __init__(self, systematic_after: int = SYSTEMATIC_AFTER, spend: SpendLimit | None = None) -> None:
        self.systematic_after = systematic_after
        self.spend = spend
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

    def observe_spend(self, stats: ClientStats, tasks_done: int) -> str | None:
        """The run's token counts so far (every finished batch's); returns why the run stops, or None."""
        return self.spend.observe(stats, tasks_done) if self.spend is not None else None


def _message(kind: str, error: str | None) -> str:
    """The row's error text without its `kind: ` prefix (display only; decisions use `kind`)."""
    if not error:
        return kind
    prefix = f"{kind}: "
    return error[len(prefix) :] if error.startswith(prefix) else error
