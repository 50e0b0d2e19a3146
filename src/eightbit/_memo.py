"""A bounded memo keyed by constants' bytes, for work a fallback repeats on every rebuild.

A fallback plans and exports the model once per candidate (docs/numerics.md §R.10), and
most of what it computes from the model's constants (weight parameters, integer weights) is
the same every time. ``ConstantsMemo`` returns what was computed before for equal bytes
under an equal key: the bytes are compared, not hashed (a comparison costs less than a
hash and cannot collide), and at most ``max_bytes`` are held (the first met), so a big
model's constants are not held twice.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

Value = TypeVar("Value")


class ConstantsMemo(Generic[Value]):
    """``cached(key, data, compute, size)``: ``compute()``, or what it returned before for
    ``key`` and equal ``data``; ``held`` counts the bytes kept, ``entries`` the values."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes, self.held = max_bytes, 0
        self.entries: dict[Hashable, list[tuple[object, Value]]] = {}

    def cached(
        self,
        key: Hashable,
        data: object,
        compute: Callable[[], Value],
        size: Callable[[Value], int],
    ) -> Value:
        """``data``: the constants' bytes (compared with ==); ``size(value)``: the bytes an
        entry holds, counted against ``max_bytes``."""
        for known, value in self.entries.get(key, ()):
            if known == data:
                return value
        value = compute()
        cost = size(value)
        if self.held + cost <= self.max_bytes:
            self.entries.setdefault(key, []).append((data, value))
            self.held += cost
        return value
