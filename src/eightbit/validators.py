"""The small checks of user-given numbers, with the one wording of their messages.

Every configuration value (``QuantConfig``, ``ImproveConfig``, ``CalibrationConfig``, the
fallback's budget and options, the learned-weights options) is checked on construction; a
bad value raises ``ConfigError`` naming the field, what was expected and what was given
(docs/design.md: bad input is one ``error:`` line and exit 2). ``bool`` is refused where a
number is expected: ``True`` is an ``int`` to Python, never a count to a user.
"""

from __future__ import annotations

import math

from eightbit.errors import ConfigError


def is_real(value: object) -> bool:
    """An int or a float, not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_finite(value: object) -> bool:
    """A real number that is neither infinite nor NaN."""
    return is_real(value) and math.isfinite(value)  # type: ignore[arg-type]


def require_bool(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{name!r} must be True or False (got {value!r})")


def require_int(name: str, value: object, least: int) -> None:
    """An integer (not a bool) of at least ``least``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{name!r} must be an integer >= {least} (got {value!r})")


def require_at_least_zero(name: str, value: object, example: str = "") -> None:
    """A finite number >= 0; ``example`` (e.g. ", e.g. 0.01 for one point") follows the rule."""
    if not (is_finite(value) and value >= 0):  # type: ignore[operator]
        raise ConfigError(f"{name!r} must be a number >= 0{example} (got {value!r})")


def require_positive(name: str, value: object, what: str = "a number", example: str = "") -> None:
    """A finite number > 0, described as ``what`` (e.g. "a ratio")."""
    if not (is_finite(value) and value > 0):  # type: ignore[operator]
        raise ConfigError(f"{name!r} must be {what} > 0{example} (got {value!r})")


def require_finite(name: str, value: object, unit: str = "") -> None:
    """A finite number (``unit``, e.g. " of dB", follows "a finite number")."""
    if not is_finite(value):
        raise ConfigError(f"{name!r} must be a finite number{unit} (got {value!r})")
