"""Deterministic text and JSON-schema values: the same request and seed always give the same answer."""

from __future__ import annotations

import hashlib
import json
import math
import random
from typing import Any

__all__ = ["break_json", "choice_rng", "fake_value", "qa_text", "reasoning_text", "request_digest", "words"]

_VOCAB = (
    "the", "a", "model", "data", "answer", "question", "system", "value", "time", "number", "river",
    "city", "light", "energy", "market", "process", "theory", "result", "method", "signal", "network",
    "language", "history", "science", "planet", "water", "forest", "music", "engine", "policy", "graph",
    "memory", "pattern", "source", "is", "are", "was", "can", "will", "should", "why", "how", "what",
    "which", "when", "does", "of", "in", "on", "for", "with", "by", "from", "and", "or", "because",
    "often", "usually", "rarely", "quickly", "simple", "complex", "large", "small", "early", "modern",
)  # fmt: skip
_THINKING_OPENERS = ("Okay, so", "Hmm,", "Let me think:", "First,", "Wait,")


def request_digest(model: str, messages: Any, seed: int | None, temperature: float | None, top_p: float | None):
    """Hash of everything the text depends on except the choice index (copied per choice)."""
    key = [model, messages, seed, temperature, top_p]
    return hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=16)


def choice_rng(digest: Any, index: int, salt: bytes = b"") -> random.Random:
    """The RNG of one choice; a salt gives an independent stream (thinking) without changing the answer's."""
    h = digest.copy()
    h.update(index.to_bytes(4, "little") + salt)
    return random.Random(int.from_bytes(h.digest(), "little"))


def words(rng: random.Random, k: int) -> str:
    return " ".join(rng.choices(_VOCAB, k=k))


def qa_text(rng: random.Random) -> str:
    """A Q&A-shaped text of 12–60 words ("Question:" and "Answer:" count as words)."""
    length = rng.randint(12, 60)
    q_len = rng.randint(3, length // 2 - 1)
    question = words(rng, q_len).capitalize()
    answer = words(rng, length - 2 - q_len).capitalize()
    return f"Question: {question}? Answer: {answer}."


def reasoning_text(rng: random.Random, count: int) -> str:
    """`count` space-separated words of "thinking" (a word is a token here)."""
    tokens = [*rng.choice(_THINKING_OPENERS).split(" "), *words(rng, count).split(" ")]
    return " ".join(tokens[:count])


def _resolve_ref(root: dict[str, Any], ref: str) -> dict[str, Any]:
    node: Any = root
    for part in ref.lstrip("#/").split("/"):
        node = node[part]
    return node


def fake_value(schema: dict[str, Any], rng: random.Random, root: dict[str, Any], depth: int = 0) -> Any:
    """A value valid for the common JSON-schema subset (types, properties, enum, const, $ref, anyOf)."""
    if "$ref" in schema:
        schema = _resolve_ref(root, schema["$ref"])
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return rng.choice(schema["enum"])
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        non_null = [o for o in options if o.get("type") != "null"]
        return fake_value((non_null or options)[0], rng, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    return _FAKERS[kind](schema, rng, root, depth)


def _fake_object(schema: dict[str, Any], rng: random.Random, root: dict[str, Any], depth: int) -> dict[str, Any]:
    props = schema.get("properties", {})
    return {name: fake_value(sub, rng, root, depth + 1) for name, sub in props.items()}


def _fake_array(schema: dict[str, Any], rng: random.Random, root: dict[str, Any], depth: int) -> list[Any]:
    lo = schema.get("minItems", 1)
    hi = max(lo, min(schema.get("maxItems", lo + 2), lo + 3))
    count = rng.randint(lo, hi) if depth < 4 else lo  # depth cap keeps recursive schemas finite
    items = schema.get("items", {"type": "string"})
    return [fake_value(items, rng, root, depth + 1) for _ in range(count)]


def _fake_string(schema: dict[str, Any], rng: random.Random, root: dict[str, Any], depth: int) -> str:
    text = words(rng, rng.randint(2, 8)).ljust(schema.get("minLength", 0), "x")
    max_length = schema.get("maxLength")
    return text if max_length is None else text[:max_length]


def _bounds(schema: dict[str, Any], step: float) -> tuple[float, float]:
    """Inclusive numeric range from (exclusive) minimum/maximum, defaulting to a 100-wide span."""
    lo, hi = schema.get("minimum"), schema.get("maximum")
    if lo is None and "exclusiveMinimum" in schema:
        lo = schema["exclusiveMinimum"] + step
    if hi is None and "exclusiveMaximum" in schema:
        hi = schema["exclusiveMaximum"] - step
    if lo is None:
        lo = 0 if hi is None or hi >= 0 else hi - 100
    if hi is None:
        hi = lo + 100
    return lo, max(lo, hi)


def _fake_integer(schema: dict[str, Any], rng: random.Random, root: dict[str, Any], depth: int) -> int:
    lo, hi = _bounds(schema, 1)
    return rng.randint(math.ceil(lo), max(math.ceil(lo), math.floor(hi)))


def _fake_number(schema: dict[str, Any], rng: random.Random, root: dict[str, Any], depth: int) -> float:
    lo, hi = _bounds(schema, 1e-6)
    return min(hi, max(lo, round(rng.uniform(lo, hi), 3)))


_FAKERS = {
    "object": _fake_object,
    "array": _fake_array,
    "string": _fake_string,
    "integer": _fake_integer,
    "number": _fake_number,
    "boolean": lambda schema, rng, root, depth: rng.random() < 0.5,
    "null": lambda schema, rng, root, depth: None,
}


def break_json(value: Any, schema: dict[str, Any], rng: random.Random) -> str:
    """Invalid output: drop a required top-level field if there is one, else truncate the JSON."""
    required = [k for k in schema.get("required", ()) if isinstance(value, dict) and k in value]
    if required and rng.random() < 0.5:
        del value[rng.choice(required)]
        return json.dumps(value)
    text = json.dumps(value)
    return text[: max(1, len(text) // 2)]
