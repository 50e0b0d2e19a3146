"""Rounding and overflow modes, named as in MATLAB's ``fimath`` (see docs/numerics.md §1.3-1.4)."""

from __future__ import annotations

from typing import Literal, get_args

from eightbit.errors import ConfigError

Rounding = Literal["nearest", "round", "convergent", "floor", "ceil", "zero"]
Overflow = Literal["saturate", "wrap"]

ROUNDING_MODES: tuple[Rounding, ...] = get_args(Rounding)
OVERFLOW_MODES: tuple[Overflow, ...] = get_args(Overflow)


def check_rounding(rounding: str) -> Rounding:
    """Return ``rounding`` as a ``Rounding`` or raise ``ConfigError`` naming the choices."""
    if rounding not in ROUNDING_MODES:
        raise ConfigError(f"'rounding' must be one of {list(ROUNDING_MODES)} (got {rounding!r})")
    return rounding


def check_overflow(overflow: str) -> Overflow:
    """Return ``overflow`` as an ``Overflow`` or raise ``ConfigError`` naming the choices."""
    if overflow not in OVERFLOW_MODES:
        raise ConfigError(f"'overflow' must be one of {list(OVERFLOW_MODES)} (got {overflow!r})")
    return overflow
