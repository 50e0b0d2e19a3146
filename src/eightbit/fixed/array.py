"""Fixed-point arrays: quantization, exact arithmetic, casts and comparisons (MATLAB ``fi``).

A ``FixedArray`` is an immutable pair of stored integers (int64) and a ``FixedFormat``;
its real values are ``stored · 2^-fraction_length`` (docs/numerics.md §1).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from eightbit.errors import FixedPointError
from eightbit.fixed import display
from eightbit.fixed.format import FixedFormat, best_precision_fraction_length
from eightbit.fixed.growth import (
    difference_format,
    negation_format,
    product_format,
    sum_format,
)
from eightbit.fixed.inputs import (
    IntArray,
    as_real_array,
    describe_index,
    reject_nan,
    to_dyadic,
)
from eightbit.fixed.modes import Overflow, Rounding, check_overflow, check_rounding
from eightbit.fixed.scaling import compare_scaled, fit_scaled

BoolArray = npt.NDArray[np.bool_]


class FixedPointWarning(UserWarning):
    """A value was changed in a way the user should know about (an infinity saturated)."""


@dataclass(frozen=True, eq=False)
class FixedArray:
    """Stored integers with one fixed-point format; real value = stored · 2^-fraction_length.

    ``stored`` is a read-only int64 array whose elements all lie in
    ``[format.min_int, format.max_int]``. Arithmetic grows the format so results are exact;
    ``cast`` converts to another format with an explicit rounding and overflow mode.
    """

    stored: IntArray
    format: FixedFormat

    def __post_init__(self) -> None:
        if not isinstance(self.format, FixedFormat):
            raise FixedPointError(f"'format' must be a FixedFormat (got {self.format!r})")
        stored = np.asarray(self.stored)
        if stored.dtype.kind not in "iu":
            raise FixedPointError(
                f"stored integers must be an integer array (got dtype {stored.dtype}); "
                "use quantize() or fi() to convert real values"
            )
        stored = as_real_array(stored).copy()
        outside = (stored < self.format.min_int) | (stored > self.format.max_int)
        if outside.any():
            first = int(np.flatnonzero(outside)[0])
            raise FixedPointError(
                f"stored integer {stored.flat[first]} at {describe_index(first, stored.shape)} "
                f"is outside {self.format.name}'s range [{self.format.min_int}, "
                f"{self.format.max_int}]; cast or quantize into this format instead"
            )
        stored.flags.writeable = False
        object.__setattr__(self, "stored", stored)

    # -- shape -------------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, ...]:
        return self.stored.shape

    @property
    def size(self) -> int:
        return int(self.stored.size)

    def __len__(self) -> int:
        return len(self.stored)

    def __getitem__(self, index: Any) -> FixedArray:
        return FixedArray(np.asarray(self.stored[index]), self.format)

    # -- conversion and display --------------------------------------------------------

    def values(self) -> npt.NDArray[np.float64]:
        """Real values as float64: exact when the value is a float64 (always for word
        lengths up to 53 inside float64's exponent range), otherwise the nearest float64
        (stored integers above 2^53 are rounded once when converted)."""
        with np.errstate(over="ignore"):
            return np.ldexp(self.stored.astype(np.float64), -self.format.fraction_length)

    def bin(self) -> npt.NDArray[np.str_]:
        """Two's complement bit patterns of the stored integers (MATLAB ``bin``)."""
        return display.bin_strings(self.stored, self.format)

    def hex(self) -> npt.NDArray[np.str_]:
        """Upper-case hexadecimal patterns of the stored integers (MATLAB ``hex``)."""
        return display.hex_strings(self.stored, self.format)

    def dec(self) -> npt.NDArray[np.str_]:
        """The bit patterns read as unsigned decimals (MATLAB ``dec``)."""
        return display.dec_strings(self.stored, self.format)

    def sdec(self) -> npt.NDArray[np.str_]:
        """The stored integers in signed decimal (MATLAB ``sdec``)."""
        return display.sdec_strings(self.stored)

    def __repr__(self) -> str:
        return display.matlab_display(self.values(), self.format)

    # -- casts and arithmetic ------------------------------------------------------------

    def cast(
        self, fmt: FixedFormat, rounding: Rounding = "nearest", overflow: Overflow = "saturate"
    ) -> FixedArray:
        """The same real values in ``fmt``: rounded by ``rounding``, clamped by ``overflow``."""
        shift = fmt.fraction_length - self.format.fraction_length
        stored = fit_scaled(
            self.stored, shift, fmt, check_rounding(rounding), check_overflow(overflow)
        )
        return FixedArray(stored, fmt)

    def _aligned(self, fmt: FixedFormat) -> IntArray:
        """Stored integers rescaled to ``fmt``'s fraction length (exact: fmt holds them)."""
        return self.stored << (fmt.fraction_length - self.format.fraction_length)

    def __add__(self, other: FixedArray) -> FixedArray:
        if not isinstance(other, FixedArray):
            return NotImplemented
        fmt = sum_format(self.format, other.format)
        return FixedArray(self._aligned(fmt) + other._aligned(fmt), fmt)

    def __sub__(self, other: FixedArray) -> FixedArray:
        if not isinstance(other, FixedArray):
            return NotImplemented
        fmt = difference_format(self.format, other.format)
        return FixedArray(self._aligned(fmt) - other._aligned(fmt), fmt)

    def __mul__(self, other: FixedArray) -> FixedArray:
        if not isinstance(other, FixedArray):
            return NotImplemented
        fmt = product_format(self.format, other.format)
        return FixedArray(self.stored * other.stored, fmt)

    def __neg__(self) -> FixedArray:
        return FixedArray(-self.stored, negation_format(self.format))

    # -- comparisons (exact, on stored integers) ---------------------------------------

    def _compare(self, other: object) -> tuple[BoolArray, BoolArray]:
        if not isinstance(other, FixedArray):
            raise TypeError(
                f"a FixedArray compares only with a FixedArray (got {type(other).__name__}); "
                "quantize the other operand first"
            )
        return compare_scaled(
            self.stored, self.format.fraction_length, other.stored, other.format.fraction_length
        )

    def __lt__(self, other: FixedArray) -> BoolArray:
        less, _ = self._compare(other)
        return less

    def __le__(self, other: FixedArray) -> BoolArray:
        less, equal = self._compare(other)
        return less | equal

    def __gt__(self, other: FixedArray) -> BoolArray:
        less, equal = self._compare(other)
        return ~(less | equal)

    def __ge__(self, other: FixedArray) -> BoolArray:
        less, _ = self._compare(other)
        return ~less

    def __eq__(self, other: object) -> BoolArray:  # type: ignore[override]
        _, equal = self._compare(other)
        return equal

    def __ne__(self, other: object) -> BoolArray:  # type: ignore[override]
        _, equal = self._compare(other)
        return ~equal

    __hash__ = None  # type: ignore[assignment]


def quantize(
    values: npt.ArrayLike,
    fmt: FixedFormat,
    rounding: Rounding = "nearest",
    overflow: Overflow = "saturate",
) -> FixedArray:
    """Real ``values`` (float or integer arrays) as fixed-point numbers of ``fmt``.

    Exact for every float64 and int64 input: the only rounding is the one ``rounding``
    names. NaN raises ``FixedPointError``; ±inf saturates with a ``FixedPointWarning``.
    """
    if not isinstance(fmt, FixedFormat):
        raise FixedPointError(f"'fmt' must be a FixedFormat (got {fmt!r})")
    rounding, overflow = check_rounding(rounding), check_overflow(overflow)
    array = as_real_array(values)
    reject_nan(array)
    significand, exponent = to_dyadic(array)
    stored = fit_scaled(significand, exponent + fmt.fraction_length, fmt, rounding, overflow)
    if array.dtype.kind == "f":
        infinite = np.isinf(array)
        if infinite.any():
            first = describe_index(int(np.flatnonzero(infinite)[0]), array.shape)
            warnings.warn(
                f"{int(infinite.sum())} infinite value(s) saturated to the limits of "
                f"{fmt.name} (first: {first})",
                FixedPointWarning,
                stacklevel=2,
            )
            stored = np.where(infinite, np.where(array > 0, fmt.max_int, fmt.min_int), stored)
    return FixedArray(stored, fmt)


def fi(
    values: npt.ArrayLike,
    word_length: int = 8,
    fraction_length: int | None = None,
    signed: bool = True,
    rounding: Rounding = "nearest",
    overflow: Overflow = "saturate",
) -> FixedArray:
    """MATLAB's ``fi(v, signed, w, f)``: best precision over all values when ``fraction_length``
    is None (docs/numerics.md §1.2)."""
    if fraction_length is None:
        fraction_length = best_precision_fraction_length(values, word_length, signed)
    return quantize(values, FixedFormat(word_length, fraction_length, signed), rounding, overflow)
