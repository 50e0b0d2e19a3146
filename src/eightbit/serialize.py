"""JSON in, JSON out, for the frozen dataclasses eightbit saves (plans, steps, configs).

``to_dict`` writes every field by name, in declaration order: a nested value with its own
``to_dict`` writes itself, a tuple becomes a list, and an infinite float (an exact match's
SQNR) becomes the string ``"inf"`` because JSON has no infinities. ``check_fields`` and
``from_dict`` read it back, refusing unknown and missing fields with one wording. A
dataclass whose JSON differs from its fields (arrays, a format tag) writes its own and
uses ``check_fields`` only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import fields
from typing import Any, TypeVar

from eightbit.errors import ConfigError

T = TypeVar("T")


def to_dict(value: object) -> dict[str, Any]:
    """The fields of the dataclass ``value``, JSON-ready."""
    return {field.name: _json_value(getattr(value, field.name)) for field in fields(value)}  # type: ignore[arg-type]


def field_names(cls: type) -> list[str]:
    return [field.name for field in fields(cls)]


def check_fields(
    what: str, data: object, known: Iterable[str], required: Iterable[str] = ()
) -> Mapping[str, Any]:
    """``data`` as a mapping with no field outside ``known`` and every one of ``required``;
    ``what`` names it in the message (e.g. "a plan step")."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{what} must be an object (got {data!r})")
    known = list(known)
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{what} has unknown field(s) {unknown}; expected {known}")
    missing = [name for name in required if name not in data]
    if missing:
        raise ConfigError(f"{what} needs the field(s) {missing}")
    return data


def from_dict(cls: type[T], what: str, data: object) -> T:
    """``cls(**data)`` after ``check_fields``: the dataclass checks its own values."""
    return cls(**dict(check_fields(what, data, field_names(cls))))


def json_float(value: float) -> float | str:
    """JSON has no infinities: an exact match (SQNR = +inf) is written as the string "inf"."""
    return value if math.isfinite(value) else str(value)


def _json_value(value: object) -> object:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, tuple | list):
        return [_json_value(item) for item in value]
    if isinstance(value, float):
        return json_float(value)
    return value
