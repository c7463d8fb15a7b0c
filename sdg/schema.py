"""Hydra schema fields derived from a library dataclass, so an option is declared once, in the library.

Used by `sdg.config` (client, generation, judge sections) and by the simulated endpoint's run section.
"""

from __future__ import annotations

from dataclasses import MISSING, field, fields
from types import UnionType
from typing import Any, get_args, get_origin, get_type_hints

__all__ = ["fields_of"]


def fields_of(source: type, exclude: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """`source`'s fields (but `exclude`) as `make_dataclass` specs that OmegaConf accepts.

    OmegaConf takes no Union of several types: such a field (e.g. `stop: str | list[str] | None`) becomes Any
    and the library checks it when the run builds it. A mapping is Any too: a typed Dict node under Hydra's
    struct flag refuses new keys from the command line (`generation.extra_body={min_p: 0.05}` would need `++`).
    Defaults and metadata (e.g. a field's help) are kept.
    """
    hints = get_type_hints(source)
    derived = []
    for spec in fields(source):
        if spec.name in exclude:
            continue
        kind = hints[spec.name]
        members = [m for m in get_args(kind) if m is not type(None)] if isinstance(kind, UnionType) else [kind]
        if len(members) > 1 or get_origin(members[0]) is dict:
            kind = Any
        if spec.default_factory is not MISSING:
            default = field(default_factory=spec.default_factory, metadata=spec.metadata)
        else:
            default = field(default=spec.default, metadata=spec.metadata)
        derived.append((spec.name, kind, default))
    return derived
