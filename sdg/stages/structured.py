"""Structured output: a JSON schema sent as `response_format`, and each answer parsed into typed columns.

Answers are validated with the `jsonschema` library against the whole schema (`minimum`, `maximum`,
`pattern`, `enum`, `minLength`, `items`, nested objects...): an endpoint's guided decoding may ignore
keywords it does not support, so what comes back is checked, not trusted. The first way an answer breaks
the schema ends up in the `error` column, so the common reasons are phrased short (`$.level: missing
required field 'level'`); the rest use jsonschema's own message, with the JSON path of the value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
from jsonschema import exceptions as jsonschema_errors
from jsonschema import validators as jsonschema_validators

__all__ = ["RESPONSE_FORMS", "TYPE_NAMES", "StructuredOutput", "to_json_schema", "validate_json"]

# How an endpoint takes a JSON schema. json_schema: OpenAI's `{"type": "json_schema", "json_schema": {...}}`, read
# by OpenAI, vLLM, NIM and llama.cpp's own server; json_object: `{"type": "json_object", "schema": {...}}`, the
# only form llama-cpp-python's server (the embedded local model) reads: it answers 500 to the other.
RESPONSE_FORMS = ("json_schema", "json_object")

# Short type names accepted in the field -> type mapping form, and the JSON schema each one stands for.
TYPE_NAMES: dict[str, dict[str, Any]] = {
    "str": {"type": "string"},
    "string": {"type": "string"},
    "int": {"type": "integer"},
    "integer": {"type": "integer"},
    "float": {"type": "number"},
    "number": {"type": "number"},
    "bool": {"type": "boolean"},
    "boolean": {"type": "boolean"},
    "list[str]": {"type": "array", "items": {"type": "string"}},
}
_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
}
_JSON_TYPES = ("string", "integer", "number", "boolean", "array", "object", "null")
MAX_REASON_CHARS = 200


def to_json_schema(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON schema for `spec`: a JSON schema dict as it is, or `{field: type name}` made strict."""
    if not isinstance(spec, Mapping) or not spec:
        raise ValueError(
            f"output_schema must be a non-empty mapping, e.g. {{question: str, answer: str}} or a JSON schema "
            f"with type: object and properties; got {spec!r}"
        )
    if "properties" in spec or spec.get("type") == "object":
        return _plain(spec)
    properties: dict[str, Any] = {}
    for name, type_name in spec.items():
        key = str(type_name).strip().lower().replace(" ", "") if isinstance(type_name, str) else None
        if key not in TYPE_NAMES:
            raise ValueError(
                f"output_schema.{name}: unknown type {type_name!r}; use one of {', '.join(TYPE_NAMES)}, "
                "or give a full JSON schema with type: object and properties"
            )
        properties[str(name)] = dict(TYPE_NAMES[key])
    # Strict mode (OpenAI) wants every field required and no other field allowed.
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def _plain(value: Any) -> Any:
    """Plain dicts and lists (a Hydra DictConfig or tuple becomes JSON-serialisable)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _types(schema: Mapping[str, Any]) -> list[str]:
    kind = schema.get("type")
    if kind is None:
        return []
    return [kind] if isinstance(kind, str) else list(kind)


def validate_json(value: Any, schema: Mapping[str, Any], path: str = "$") -> str | None:
    """The first way `value` breaks `schema` (JSON Schema, via jsonschema), or None when it is valid."""
    return _first_error(_validator(schema), value, path)


def _validator(schema: Mapping[str, Any]) -> Any:
    """A jsonschema validator for `schema` (its `$schema` draft, else 2020-12); ValueError for a broken schema."""
    cls = jsonschema_validators.validator_for(schema, default=jsonschema_validators.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema_errors.SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "the top level"
        raise ValueError(f"output_schema is not a valid JSON schema at {where}: {exc.message}") from None
    return cls(schema)


def _first_error(validator: Any, value: Any, path: str = "$") -> str | None:
    error = jsonschema_errors.best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = path + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    return f"{where}: {_reason(error)}"


def _reason(error: Any) -> str:
    """A short reason for the common failures; jsonschema's message for the others."""
    instance, expected = error.instance, error.validator_value
    if error.validator == "required" and isinstance(instance, dict):
        missing = [name for name in expected if name not in instance]
        if missing:
            return f"missing required field {missing[0]!r}"
    if error.validator == "type":
        types = [expected] if isinstance(expected, str) else list(expected)
        return f"expected {' or '.join(types)}, got {_json_type(instance)}"
    if error.validator == "enum":
        return f"{instance!r} is not one of {expected!r}"
    if error.validator == "additionalProperties" and expected is False and isinstance(instance, dict):
        known = error.schema.get("properties") or {}
        extra = [name for name in instance if name not in known]
        if extra:
            return f"unexpected field {extra[0]!r}"
    return error.message


def _is_type(value: Any, kind: str) -> bool:
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    python = {"string": str, "boolean": bool, "array": list, "object": dict, "null": type(None)}.get(kind)
    return python is not None and isinstance(value, python)


def _json_type(value: Any) -> str:
    for kind in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _is_type(value, kind):
            return kind
    return type(value).__name__


def _column_type(name: str, schema: Mapping[str, Any]) -> tuple[str, pa.DataType]:
    """The JSON type of one top-level field and its column type; ValueError when it has no column type."""
    types = [t for t in _types(schema) if t != "null"]
    if not types and schema.get("enum"):
        kinds = {_json_type(v) for v in schema["enum"] if v is not None}
        types = sorted(kinds) if len(kinds) == 1 else types
    if len(types) == 1 and types[0] in _ARROW_TYPES:
        return types[0], _ARROW_TYPES[types[0]]
    items = schema.get("items")
    if types == ["array"] and isinstance(items, Mapping) and _types(items) == ["string"]:
        return "array", pa.list_(pa.string())
    raise ValueError(
        f"output_schema.properties.{name}: {dict(schema)!r} has no column type; each field must be a string, "
        "integer, number, boolean (optionally with null) or an array of strings"
    )


class StructuredOutput:
    """One output schema: the `response_format` to send, the columns it makes, and how an answer is parsed."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        schema = to_json_schema(spec)
        properties = schema.get("properties")
        if schema.get("type") != "object" or not isinstance(properties, Mapping) or not properties:
            raise ValueError(
                "output_schema must describe an object with fields: give type: object and a non-empty properties "
                f"mapping, or the short form {{question: str, answer: str}}; got {schema!r}"
            )
        required = schema.get("required") or []
        unknown = [name for name in required if name not in properties]
        if unknown:
            raise ValueError(f"output_schema.required names {unknown} which are not in properties {list(properties)}")
        if any(t not in _JSON_TYPES for t in _types(schema)):
            raise ValueError(f"output_schema.type must be one of {_JSON_TYPES}; got {schema.get('type')!r}")
        self.schema = schema
        self._validator = _validator(schema)  # checks the schema itself now, not at the first answer
        self._kinds = {name: _column_type(name, sub) for name, sub in properties.items()}

    def __getstate__(self) -> dict[str, Any]:
        # Workers rebuild the validator from the schema; validator objects do not all pickle.
        return {**self.__dict__, "_validator": None}

    @property
    def field_names(self) -> list[str]:
        return list(self._kinds)

    def arrow_fields(self) -> list[pa.Field]:
        """One typed column per top-level field, null where an answer could not be parsed."""
        return [pa.field(name, arrow) for name, (_, arrow) in self._kinds.items()]

    def response_format(self, form: str = "json_schema") -> dict[str, Any]:
        """The request's `response_format` in the form the endpoint reads (`RESPONSE_FORMS`)."""
        if form == "json_object":
            return {"type": "json_object", "schema": self.schema}
        return {"type": "json_schema", "json_schema": {"name": "output", "schema": self.schema, "strict": True}}

    def empty(self) -> dict[str, Any]:
        return dict.fromkeys(self._kinds)

    def parse(self, text: str | None, finish_reason: str | None = None) -> tuple[dict[str, Any], str | None]:
        """(field columns, None) for a valid answer; (null columns, short reason) for an invalid one."""
        if text is None:
            return self.empty(), "empty answer"
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            cut = " (finish_reason=length: the answer was cut, raise max_tokens)" if finish_reason == "length" else ""
            return self.empty(), _short(f"invalid JSON: {exc.msg} at char {exc.pos}{cut}")
        if self._validator is None:
            self._validator = _validator(self.schema)
        if reason := _first_error(self._validator, value):
            return self.empty(), _short(reason)
        return {name: _column_value(value.get(name), kind) for name, (kind, _) in self._kinds.items()}, None


def _column_value(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "integer":
        return int(value)
    if kind == "number":
        return float(value)
    return value


def _short(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 3] + "..."
