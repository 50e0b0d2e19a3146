"""Checking user arrays and turning them into exact dyadic integers (docs/numerics.md §1.3).

Every finite float64 is ``M · 2^E`` with an integer ``|M| < 2^53``; an integer is ``M · 2^0``.
The fixed-point core works on ``(M, E)`` only, so no floating-point rounding ever happens
between a user's value and its stored integer.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from eightbit.errors import FixedPointError

IntArray = npt.NDArray[np.int64]
RealArray = npt.NDArray[Any]  # float64 or int64

_INT64_MAX = np.iinfo(np.int64).max


def as_real_array(values: npt.ArrayLike) -> RealArray:
    """``values`` as a float64 or int64 array, refusing anything that would change a value."""
    array = np.asarray(values)
    kind = array.dtype.kind
    if kind == "b" or kind == "i":
        return array.astype(np.int64)
    if kind == "u":
        if array.size and int(array.max()) > _INT64_MAX:
            raise FixedPointError(
                f"unsigned integer {int(array.max())} is above the int64 range of stored "
                "integers; give values below 2^63"
            )
        return array.astype(np.int64)
    if kind == "f":
        converted = array.astype(np.float64)
        if array.dtype.itemsize > 8 and not np.array_equal(
            converted.astype(array.dtype), array, equal_nan=True
        ):
            raise FixedPointError(
                f"{array.dtype} values are not all exact float64 numbers; "
                "round them to float64 first (numpy.float64)"
            )
        return converted
    raise FixedPointError(
        f"values must be real numbers (a float or integer array); got dtype {array.dtype}"
    )


def describe_index(flat_index: int, shape: tuple[int, ...]) -> str:
    """Name one element of an array of ``shape`` for an error message."""
    if not shape:
        return "the value"
    if len(shape) == 1:
        return f"element {flat_index}"
    position = tuple(int(i) for i in np.unravel_index(flat_index, shape))
    return f"element {position}"


def reject_nan(array: RealArray) -> None:
    """Raise ``FixedPointError`` naming the first NaN of ``array``, if any."""
    if array.dtype.kind != "f":
        return
    nan = np.isnan(array)
    if nan.any():
        where = describe_index(int(np.flatnonzero(nan)[0]), array.shape)
        raise FixedPointError(
            f"{where} is NaN ({int(nan.sum())} NaN in total); fixed-point numbers have no NaN: "
            "remove or replace them first (for example with numpy.nan_to_num)"
        )


def to_dyadic(array: RealArray) -> tuple[IntArray, IntArray]:
    """Exact ``(M, E)`` with ``array == M · 2^E`` for every finite element.

    Non-finite elements give ``(0, 0)``; callers handle them before or after.
    """
    if array.dtype.kind != "f":
        return array.astype(np.int64), np.zeros(array.shape, dtype=np.int64)
    finite = np.where(np.isfinite(array), array, 0.0)
    # frexp is exact: finite = mantissa · 2^exponent with mantissa in [1/2, 1) (or 0), so
    # mantissa · 2^53 is an integer of at most 53 bits, also for subnormals.
    mantissa, exponent = np.frexp(finite)
    significand = np.ldexp(mantissa, 53).astype(np.int64)
    return significand, exponent.astype(np.int64) - 53
