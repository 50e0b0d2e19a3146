"""The output stage every rescaling kernel shares (docs/numerics.md §E.2).

``Rescale`` holds what Prepare computes once from float scales: an int32 multiplier and a
shift per channel (``eightbit.fixed.quantize_multiplier``). ``Requantization`` adds the
output zero point and the clamp. At run time, integers only:

    q = clamp(z + round_half_even(acc · M · 2^(shift − 31)), low, high)

one rounding of the exact int64 product, ties to even (``ENGINE_ROUNDING``, the
``convergent`` mode of docs/numerics.md §1.3; §E.2 says why not ties toward +inf).
``requantize_reference`` is the definition, written with the fixed-point core's rounding
function; ``Rescale.apply`` is the same rule as whole-array int64 operations,
``(p + 2^(t−1) − 1 + ((p >> t) & 1)) >> t`` with ``p = acc·M`` and ``t = 31 − shift``, and
must equal it bit for bit (tests/engine/test_requantize.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from eightbit.engine.kernels._scratch import scratch
from eightbit.errors import ModelError
from eightbit.fixed import quantize_multiplier
from eightbit.fixed.modes import Rounding
from eightbit.fixed.requantize import REQUANTIZE_ROUNDING, requantize

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
_MULTIPLIER_BITS = 31
# Ties to even, as ONNX QuantizeLinear and ONNX Runtime's requantization round (§E.2).
ENGINE_ROUNDING: Rounding = REQUANTIZE_ROUNDING
_STORAGE_TYPES: dict[str, type[np.integer]] = {"int8": np.int8, "uint8": np.uint8}


def storage_type(dtype: str) -> type[np.integer]:
    """The numpy type of an 8-bit storage type name ("int8" or "uint8")."""
    if dtype not in _STORAGE_TYPES:
        raise ModelError(f"the integer engine stores activations as int8 or uint8 (got {dtype})")
    return _STORAGE_TYPES[dtype]


def check_int32(acc: np.ndarray) -> None:
    """Refuse accumulators a 32-bit device register could not hold."""
    if acc.size and (int(acc.min()) < INT32_MIN or int(acc.max()) > INT32_MAX):
        raise ModelError(
            f"an accumulator left the int32 range ([{int(acc.min())}, {int(acc.max())}]); "
            "the weights, bias or input parameters of this node are out of the planned bounds"
        )


def requantize_reference(
    acc: npt.ArrayLike, multiplier: npt.ArrayLike, shift: npt.ArrayLike
) -> np.ndarray:
    """The definition, ``eightbit.fixed.requantize``: round(acc·M·2^(shift−31)), ties to even."""
    acc = np.asarray(acc, dtype=np.int64)
    check_int32(acc)
    return requantize(acc, multiplier, shift)


@dataclass(frozen=True, eq=False)
class Rescale:
    """``acc ↦ round_half_even(acc · M · 2^(shift − 31))``, per tensor or per channel.

    ``multiplier`` and ``shift`` are int64 arrays, 0-d or 1-D (one entry per channel along
    ``axis`` of the accumulator).
    """

    multiplier: np.ndarray
    shift: np.ndarray
    axis: int | None = None

    @classmethod
    def from_real(cls, real_multiplier: npt.ArrayLike, *, axis: int | None = None) -> Rescale:
        """Multipliers and shifts for the real ratios ``real_multiplier`` (float64)."""
        reals = np.asarray(real_multiplier, dtype=np.float64)
        pairs = [quantize_multiplier(float(real)) for real in reals.reshape(-1)]
        multiplier = np.array([m for m, _ in pairs], dtype=np.int64).reshape(reals.shape)
        shift = np.array([s for _, s in pairs], dtype=np.int64).reshape(reals.shape)
        return cls(multiplier, shift, None if reals.ndim == 0 else axis)

    def _along(self, values: np.ndarray, ndim: int) -> np.ndarray:
        """Per-channel ``values`` shaped to broadcast along ``axis`` of an ndim-array."""
        if values.ndim == 0 or self.axis is None:
            return values
        shape = [1] * ndim
        shape[self.axis % ndim] = values.size
        return values.reshape(shape)

    def apply_reference(self, acc: npt.ArrayLike) -> np.ndarray:
        """The definition, ``requantize_reference`` (int64 result)."""
        acc = np.asarray(acc, dtype=np.int64)
        return requantize_reference(
            acc, self._along(self.multiplier, acc.ndim), self._along(self.shift, acc.ndim)
        )

    @cached_property
    def _constants(self) -> tuple[np.ndarray, np.ndarray, bool]:
        """(t, 2^(t−1) − 1, whether every t >= 1), computed once."""
        t = np.minimum(_MULTIPLIER_BITS - self.shift, 63)
        below_half = np.where(t >= 1, np.left_shift(1, np.maximum(t - 1, 0)) - 1, 0)
        return t, below_half, bool(np.all(t >= 1))

    def apply(self, acc: npt.ArrayLike, *, bounded: bool = False) -> np.ndarray:
        """The same as ``apply_reference`` in whole-array int64 operations.

        ``bounded``: the caller has proven |acc| < 2^31 (Prepare's static bound), so the
        run-time range check is skipped.
        """
        acc = np.asarray(acc, dtype=np.int64)
        if not bounded:
            check_int32(acc)
        product = np.asarray(acc * self._along(self.multiplier, acc.ndim))  # 0-d: an array
        self.round_in_place(product)
        return product

    def round_in_place(self, product: np.ndarray) -> None:
        """``product`` = acc · M (int64) becomes round_half_even(product · 2^(shift − 31))."""
        t, below_half, all_shifted = self._constants
        ndim = product.ndim
        t = self._along(t, ndim)
        # p = floor·2^t + r: adding 2^(t-1) - 1 carries into floor when r > 2^(t-1), and
        # the parity bit of floor decides r = 2^(t-1) (ties to even). |p| < 2^62, so no
        # overflow. t >= 63 (multipliers below 2^-32) leaves 0, t = 0 (shift 31) leaves p.
        odd = np.right_shift(product, t, out=scratch("rescale.odd", product.shape, np.int64))
        odd &= 1
        if not all_shifted:
            odd *= self._along(np.asarray(self.shift < _MULTIPLIER_BITS, np.int64), ndim)
        product += self._along(below_half, ndim)
        product += odd
        product >>= t


@dataclass(frozen=True, eq=False)
class Requantization:
    """An accumulator rescaled to a stored 8-bit tensor: zero point added, then clamped.

    ``low``/``high`` is the output type's range, narrowed by a fused Relu/Clip.
    """

    rescale: Rescale
    zero_point: int
    low: int
    high: int
    dtype: str

    @classmethod
    def from_real(
        cls,
        real_multiplier: npt.ArrayLike,
        zero_point: int,
        dtype: str,
        *,
        axis: int | None = None,
        clamp: tuple[int, int] | None = None,
    ) -> Requantization:
        limits = np.iinfo(storage_type(dtype))
        low, high = int(limits.min), int(limits.max)
        if clamp is not None:
            low, high = max(low, clamp[0]), min(high, clamp[1])
        rescale = Rescale.from_real(real_multiplier, axis=axis)
        return cls(rescale, int(zero_point), low, high, dtype)

    def apply_reference(self, acc: npt.ArrayLike) -> np.ndarray:
        return self._store(self.rescale.apply_reference(acc) + self.zero_point)

    def apply(self, acc: npt.ArrayLike, *, bounded: bool = False) -> np.ndarray:
        acc = np.asarray(acc)
        if acc.dtype.kind != "i":
            acc = acc.astype(np.int64)
        if not bounded:
            check_int32(acc)
        multiplier = self.rescale._along(self.rescale.multiplier, acc.ndim)
        shape = np.broadcast_shapes(acc.shape, multiplier.shape)
        product = scratch("requantize.product", shape, np.int64)
        np.multiply(acc, multiplier, out=product, dtype=np.int64)
        return self._finish(product)

    def exact_in_float64(self, largest: npt.ArrayLike) -> bool:
        """Whether ``apply_sum(..., in_float=True)`` is exact for every accumulator with
        |acc| <= ``largest`` (< 2^31; per channel along ``axis``, or one bound).

        With t = 31 − shift and v = acc · M / 2^t, y = float64(acc) · float64(M · 2^−t) is v
        rounded once (|y − v| <= 2^−53 |v|). If t <= 44 and |v| < 384, every half-integer
        other than v lies 2^−t or more from v (v · 2^t is an integer), further than y, so
        rint(y) = round_half_even(v) (a half-integer v is exact in y). If |v| >= 384, both
        roundings are >= 384 in magnitude with the same sign, and z + that lies outside
        [−128, 255]: both clamp to the same end. A channel with acc · M < 2^53 has y = v.
        """
        t = np.asarray(_MULTIPLIER_BITS - self.rescale.shift, dtype=np.int64)
        multiplier = np.asarray(self.rescale.multiplier, dtype=np.int64)
        bound = np.asarray(largest, dtype=np.int64)
        if bound.size and int(bound.max()) > INT32_MAX:
            return False
        return bool(np.all((t <= 44) | (bound * multiplier < 2**53)))

    @cached_property
    def _real(self) -> np.ndarray:
        """M · 2^(shift − 31) in float64, exact (M has 31 bits)."""
        multiplier = np.asarray(self.rescale.multiplier, dtype=np.float64)
        return np.ldexp(multiplier, np.asarray(self.rescale.shift - _MULTIPLIER_BITS, np.int32))

    def apply_sum(
        self,
        total: np.ndarray,
        bias: np.ndarray | None = None,
        *,
        bounded: bool = False,
        in_float: bool = False,
    ) -> np.ndarray:
        """``apply(total + bias)`` for an exact integer-valued float ``total`` (the fast
        weighted kernels' sums) and an integer-valued float64 ``bias`` broadcasting to it.

        total + bias is formed in float64, exact below 2^53. ``in_float``: the caller has
        checked ``exact_in_float64`` for its accumulators (and ``bounded``), so the
        rescaling is rint(acc · μ) in float64; else it is the int64 rule of ``apply``.
        """
        if in_float:
            scaled = scratch("requantize.product", total.shape, np.float64)
            if bias is None:
                np.copyto(scaled, total)
            else:
                np.add(total, bias, out=scaled)
            scaled *= self.rescale._along(self._real, scaled.ndim)
            np.rint(scaled, out=scaled)
            np.clip(scaled, self.low - self.zero_point, self.high - self.zero_point, out=scaled)
            stored = np.empty(total.shape, dtype=storage_type(self.dtype))
            np.add(scaled, self.zero_point, out=stored, casting="unsafe")
            return stored
        acc = scratch("requantize.product", total.shape, np.int64)
        if bias is None:
            np.copyto(acc, total, casting="unsafe")
        else:
            np.add(total, bias, out=acc, dtype=np.float64, casting="unsafe")
        if not bounded:
            check_int32(acc)
        acc *= self.rescale._along(self.rescale.multiplier, acc.ndim)
        return self._finish(acc)

    def _finish(self, product: np.ndarray) -> np.ndarray:
        """Round ``product`` = acc · M (a work buffer, changed), add z, clamp, store."""
        self.rescale.round_in_place(product)
        product += self.zero_point
        np.maximum(product, self.low, out=product)
        np.minimum(product, self.high, out=product)
        return product.astype(storage_type(self.dtype))

    def _store(self, values: np.ndarray) -> np.ndarray:
        return np.clip(values, self.low, self.high, out=values).astype(storage_type(self.dtype))
