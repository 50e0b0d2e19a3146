"""Exact float32 arithmetic for Prepare: what ONNX Runtime computes, reproduced bit for bit.

Some ONNX Runtime kernels (QLinearAdd) chain several float32 operations, so their result is
not one rounding of an exact value. Prepare reproduces such chains exactly and tabulates
them over every 8-bit input (§E.4); Eval then reads integers from the table. These helpers
never run at Eval time.

``fma`` is IEEE fused multiply-add in float32, x·y + z rounded once, ties to even. float32
products have 48 bits, exact in float64; the float64 sum s is corrected with the error term
e of Knuth's TwoSum (s + e = x·y + z exactly, |e| <= ulp64(s)/2), so s rounds to the right
float32 except when s is exactly halfway between two float32: there the exact value lies
on e's side of s. A float32 halfway point has 25 significant bits, so it is a float64; no
float64 lies strictly between s and the exact value, so no other halfway point can.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def fma(x: npt.ArrayLike, y: npt.ArrayLike, z: npt.ArrayLike) -> np.ndarray:
    """float32(x·y + z) with one rounding, ties to even, for float32 x, y, z (broadcast)."""
    x64 = np.asarray(x, dtype=np.float32).astype(np.float64)
    y64 = np.asarray(y, dtype=np.float32).astype(np.float64)
    z64 = np.asarray(z, dtype=np.float32).astype(np.float64)
    product = x64 * y64  # exact: 24 + 24 significant bits
    total = product + z64
    virtual = total - z64
    error = (product - virtual) + (z64 - (total - virtual))  # TwoSum: total + error exact
    nearest = total.astype(np.float32)
    nearest64 = nearest.astype(np.float64)
    toward = np.where(total > nearest64, np.float32(np.inf), np.float32(-np.inf))
    other = np.nextafter(nearest, toward)
    gap = np.abs(other.astype(np.float64) - nearest64)
    halfway = (total != nearest64) & (2 * np.abs(total - nearest64) == gap)
    # At a halfway point float64 -> float32 rounded to even; the exact value decides.
    beyond = halfway & (error != 0) & (np.sign(error) == np.sign(total - nearest64))
    return np.asarray(np.where(beyond, other, nearest), dtype=np.float32)


def multiply(x: npt.ArrayLike, y: npt.ArrayLike) -> np.ndarray:
    """float32(x·y), one rounding (numpy's float32 multiply is IEEE)."""
    return np.asarray(np.multiply(x, y, dtype=np.float32))


def divide(x: npt.ArrayLike, y: npt.ArrayLike) -> np.ndarray:
    """float32(x / y), one rounding."""
    return np.asarray(np.divide(x, y, dtype=np.float32))
