"""Fixed-point formats and best-precision scaling (docs/numerics.md §1.1-1.2)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from eightbit.errors import FixedPointError
from eightbit.fixed.inputs import as_real_array, reject_nan

MIN_WORD_LENGTH = 2
# Stored integers are int64: 64 bits hold a signed word, only 63 an unsigned one.
MAX_SIGNED_WORD_LENGTH = 64
MAX_UNSIGNED_WORD_LENGTH = 63
# Far beyond float64's exponent range (2^-1074 ... 2^1024), and keeps every shift
# amount computed from a fraction length comfortably inside int64.
MAX_ABS_FRACTION_LENGTH = 65535


def _as_int(value: object) -> int | None:
    """``value`` as a Python int when it is an integer (bools are not), else None."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    return None


def check_word_length(word_length: object, signed: bool) -> int:
    """Return ``word_length`` as an int, or raise ``FixedPointError`` naming the legal range."""
    top = MAX_SIGNED_WORD_LENGTH if signed else MAX_UNSIGNED_WORD_LENGTH
    value = _as_int(word_length)
    if value is None or not MIN_WORD_LENGTH <= value <= top:
        kind = "signed" if signed else "unsigned"
        hint = ""
        if not signed and value == MAX_SIGNED_WORD_LENGTH:
            hint = "; stored integers are int64, so an unsigned word holds at most 63 bits"
        raise FixedPointError(
            f"'word_length' must be an integer in [{MIN_WORD_LENGTH}, {top}] for {kind} "
            f"formats (got {word_length!r}){hint}"
        )
    return value


def check_fraction_length(fraction_length: object) -> int:
    """Return ``fraction_length`` as an int, or raise ``FixedPointError``."""
    value = _as_int(fraction_length)
    if value is None or abs(value) > MAX_ABS_FRACTION_LENGTH:
        raise FixedPointError(
            f"'fraction_length' must be an integer in [{-MAX_ABS_FRACTION_LENGTH}, "
            f"{MAX_ABS_FRACTION_LENGTH}] (got {fraction_length!r})"
        )
    return value


def pow2(exponent: int) -> float:
    """2^exponent as a float64: exact, or 0.0 / inf beyond float64's range."""
    if exponent > 1023:
        return math.inf
    if exponent < -1074:
        return 0.0
    return math.ldexp(1.0, exponent)


def scaled_float(integer: int, fraction_length: int) -> float:
    """integer · 2^-fraction_length as a float64: exact when representable, inf when too large."""
    try:
        return math.ldexp(float(integer), -fraction_length)
    except OverflowError:
        return math.copysign(math.inf, integer)


def scaled_text(integer: int, fraction_length: int) -> str:
    """integer · 2^-fraction_length as text: the float64 when it is exact, else a power of 2.

    Past float64's range the float would read 0.0 or inf; ``-2^1024`` or
    ``(2^63-1)*2^-65535`` say the value itself.
    """
    value = scaled_float(integer, fraction_length)
    representable = math.isfinite(value) and (value != 0.0 or integer == 0)
    if representable and Fraction(value) == Fraction(integer) * Fraction(2) ** -fraction_length:
        return repr(value)
    sign, magnitude = ("-" if integer < 0 else ""), abs(integer)
    if magnitude & (magnitude - 1) == 0:  # a power of two: fold it into the exponent
        return f"{sign}2^{magnitude.bit_length() - 1 - fraction_length}"
    if (magnitude + 1) & magnitude == 0:  # 2^k - 1, the largest stored integer
        return f"{sign}(2^{magnitude.bit_length()}-1)*2^{-fraction_length}"
    return f"{integer}*2^{-fraction_length}"


@dataclass(frozen=True)
class FixedFormat:
    """A binary-point fixed-point format: real value = stored integer · 2^-fraction_length.

    ``fraction_length`` may be negative or larger than ``word_length``. Word lengths run
    from 2 to 64 bits signed and 63 unsigned (stored integers are int64).
    """

    word_length: int
    fraction_length: int
    signed: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.signed, (bool, np.bool_)):
            raise FixedPointError(f"'signed' must be True or False (got {self.signed!r})")
        object.__setattr__(self, "signed", bool(self.signed))
        object.__setattr__(self, "word_length", check_word_length(self.word_length, self.signed))
        object.__setattr__(self, "fraction_length", check_fraction_length(self.fraction_length))

    @property
    def integer_length(self) -> int:
        """Bits left of the binary point, sign bit included: word_length - fraction_length."""
        return self.word_length - self.fraction_length

    @property
    def min_int(self) -> int:
        """Smallest stored integer."""
        return -(1 << (self.word_length - 1)) if self.signed else 0

    @property
    def max_int(self) -> int:
        """Largest stored integer."""
        return (1 << (self.word_length - (1 if self.signed else 0))) - 1

    @property
    def resolution(self) -> float:
        """Value of one LSB, 2^-fraction_length (0.0 or inf beyond float64's range)."""
        return pow2(-self.fraction_length)

    @property
    def min_value(self) -> float:
        """Smallest representable value as a float64 (exact when representable)."""
        return scaled_float(self.min_int, self.fraction_length)

    @property
    def max_value(self) -> float:
        """Largest representable value as a float64 (exact when representable)."""
        return scaled_float(self.max_int, self.fraction_length)

    @property
    def range(self) -> tuple[float, float]:
        """(min_value, max_value)."""
        return (self.min_value, self.max_value)

    @property
    def name(self) -> str:
        """MATLAB's short type name: ``sfix8_En12``, ``ufix16_E2``, ``sfix8``."""
        base = f"{'s' if self.signed else 'u'}fix{self.word_length}"
        if self.fraction_length > 0:
            return f"{base}_En{self.fraction_length}"
        if self.fraction_length < 0:
            return f"{base}_E{-self.fraction_length}"
        return base

    def __str__(self) -> str:
        return (
            f"{self.name}: {'signed' if self.signed else 'unsigned'}, "
            f"word length {self.word_length}, fraction length {self.fraction_length}, "
            f"resolution 2^{-self.fraction_length}, "
            f"range [{scaled_text(self.min_int, self.fraction_length)}, "
            f"{scaled_text(self.max_int, self.fraction_length)}]"
        )

    def describe(self) -> str:
        """The format block of MATLAB's ``fi`` display."""
        return "\n".join(
            [
                "          DataTypeMode: Fixed-point: binary point scaling",
                f"            Signedness: {'Signed' if self.signed else 'Unsigned'}",
                f"            WordLength: {self.word_length}",
                f"        FractionLength: {self.fraction_length}",
            ]
        )


def _floor_log2(value: float | int) -> int:
    """⌊log2 value⌋ for a positive finite float or integer, exactly."""
    if isinstance(value, int):
        return value.bit_length() - 1
    _, exponent = math.frexp(value)  # value = m · 2^exponent, m in [1/2, 1)
    return exponent - 1


def _ceil_log2(value: float | int) -> int:
    """⌈log2 value⌉ for a positive finite float or integer, exactly."""
    if isinstance(value, int):
        return (value - 1).bit_length()
    mantissa, exponent = math.frexp(value)
    return exponent - 1 if mantissa == 0.5 else exponent


def best_precision_fraction_length(
    values: npt.ArrayLike, word_length: int = 8, signed: bool = True
) -> int:
    """The largest fraction length whose range holds the extremes of ``values`` (MATLAB rule).

    signed: ``min(w - ⌊log2 max⌋ - 2, w - ⌈log2 -min⌉ - 1)`` over the positive and the
    negative values; unsigned: ``w - ⌊log2 max⌋ - 1``. All-zero (or empty, or only
    infinite) input gives ``w - 1`` signed and ``w`` unsigned. NaN is an error.
    """
    array = as_real_array(values)
    reject_nan(array)
    word_length = check_word_length(word_length, bool(signed))
    finite = array[np.isfinite(array)] if array.dtype.kind == "f" else array
    candidates: list[int] = []
    positive = finite[finite > 0]
    if positive.size:
        # .item() gives a Python float or an exact Python int (int64 beyond 2^53 too).
        top = _floor_log2(positive.max().item())
        candidates.append(word_length - top - (2 if signed else 1))
    negative = finite[finite < 0]
    if signed and negative.size:
        candidates.append(word_length - _ceil_log2(-negative.min().item()) - 1)
    if not candidates:
        return word_length - 1 if signed else word_length
    return min(candidates)
