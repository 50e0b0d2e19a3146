"""The output stage every rescaling kernel shares (docs/numerics.md §E.2).

``Rescale`` holds what Prepare computes once from float scales: the float32 scale of each
channel as its 24-bit significand M and exponent ``shift`` (``eightbit.fixed.
quantize_multiplier``). ``Requantization`` adds the output zero point and the clamp. At run
time:

    q = clamp(z + round_half_even(round24(round24(acc) · M) · 2^(shift − 24)), low, high)

``round24`` rounds to 24 significant bits, ties to even: this is ONNX Runtime's
``nearbyint(float(acc) * scale)`` in float32, written in integers (§1.8 proves it).
``requantize_reference`` is the definition, in int64 arithmetic (``eightbit.fixed.
requantize``). The fast path computes the same thing in numpy float32, which is IEEE
binary32 with round-to-nearest-even, so it is the definition and not an approximation:

* ``float32(acc)`` of an integer with |acc| < 2^53 is acc rounded once to 24 significant
  bits, ties to even: round24(acc) (the sums reach it exact in float64, or as int64);
* the float32 product of two float32 values is their exact product rounded once to 24
  significant bits, ties to even; the scale's power of two moves the binary point only, so
  that is round24(round24(acc) · M) · 2^(shift − 24), except for products below 2^−126
  (subnormal), which are below 1/2 both ways and give 0; |acc · S| < 2^31 · 2^31 never
  overflows;
* ``np.rint`` rounds half to even, as nearbyint and cvtps2dq do, and every value it returns
  is an integer below 2^62, exact in float32 and in int64.

tests/engine/test_requantize.py checks the fast path against the definition (Hypothesis,
whole int32 range, ties, |acc| >= 2^24, tiny and subnormal results).
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
from eightbit.fixed.requantize import (
    MULTIPLIER_BITS,
    REQUANTIZE_ROUNDING,
    bit_length,
    requantize,
    round_half_even_right,
    round_significant_array,
)

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
# A 16x8 accumulator (§E.13): |acc| < 2^39, so round24(acc) · M < 2^63 in int64.
WIDE_LIMIT = 2**39
# |round24(a · M)| < 2^48 shifted left by up to 14 bits stays below 2^62. A non-zero one is
# at least 2^23 (M >= 2^23), so beyond 14 bits it is past 2^37, outside every stored range:
# (E.13a) saturates it to ±2^40, which every caller clamps.
_SATURATING_SHIFT = 14
# Ties to even, as ONNX QuantizeLinear and ONNX Runtime's requantization round (§E.2).
ENGINE_ROUNDING: Rounding = REQUANTIZE_ROUNDING
_STORAGE_TYPES: dict[str, type[np.integer]] = {
    "int8": np.int8,
    "uint8": np.uint8,
    "int16": np.int16,
}


def storage_type(dtype: str) -> type[np.integer]:
    """The numpy type of a storage type name ("int8", "uint8", or "int16" for 16x8)."""
    if dtype not in _STORAGE_TYPES:
        raise ModelError(
            f"the integer engine stores activations as int8, uint8 or int16 (got {dtype})"
        )
    return _STORAGE_TYPES[dtype]


def check_wide(acc: np.ndarray) -> None:
    """Refuse 16x8 accumulators beyond (E.13)'s bound |acc| < 2^39."""
    if acc.size and (int(acc.min()) <= -WIDE_LIMIT or int(acc.max()) >= WIDE_LIMIT):
        raise ModelError(
            f"a 16x8 accumulator left the range |acc| < 2^39 ([{int(acc.min())}, "
            f"{int(acc.max())}]); the weights, bias or input parameters of this node are out "
            "of the planned bounds"
        )


def needs_wide(*dtypes: str) -> bool:
    """Whether an accumulator of operands of these stored types is a 16x8 one (§E.13)."""
    return "int16" in dtypes


def fits_wide(terms: int, bound: int, bias: np.ndarray | None) -> bool:
    """Prepare's proof for a 16x8 node: ``terms`` products bounded by ``bound``, plus the
    bias, stay below 2^39 in magnitude (E.13)."""
    largest_bias = 0 if bias is None or bias.size == 0 else int(np.max(np.abs(bias)))
    return terms * bound + largest_bias < WIDE_LIMIT


def requantize_wide_reference(
    acc: npt.ArrayLike, multiplier: npt.ArrayLike, shift: npt.ArrayLike
) -> np.ndarray:
    """(E.13a): §1.8's rule for an int64 accumulator |acc| < 2^39, in int64.

    round24(acc) = a · 2^e with |a| <= 2^24, so round24(round24(acc) · M) =
    round24(a · M) · 2^e (|a · M| < 2^48) and the result is round_half_even(round24(a · M)
    · 2^(shift − 24 + e)); a left shift beyond 14 bits saturates to ±2^40 (clamped later).
    """
    acc = np.asarray(acc, dtype=np.int64)
    check_wide(acc)
    rounded = round_significant_array(acc)
    e = np.maximum(bit_length(np.abs(rounded)) - MULTIPLIER_BITS, 0)
    significand = np.right_shift(rounded, e)  # exact: the low e bits of round24(acc) are 0
    product = round_significant_array(significand * np.asarray(multiplier, dtype=np.int64))
    t = MULTIPLIER_BITS - np.asarray(shift, dtype=np.int64) - e
    right = round_half_even_right(product, np.clip(t, 0, 63))
    left = np.left_shift(product, np.clip(-t, 0, _SATURATING_SHIFT))
    saturated = np.sign(product) << 40
    return np.where(t >= 0, right, np.where(-t > _SATURATING_SHIFT, saturated, left))


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
    """The definition, ``eightbit.fixed.requantize``: round24 twice, then half to even."""
    acc = np.asarray(acc, dtype=np.int64)
    check_int32(acc)
    return requantize(acc, multiplier, shift)


@dataclass(frozen=True, eq=False)
class Rescale:
    """``acc ↦ nearbyint(float32(acc) · S)`` with S = M · 2^(shift − 24), per tensor or per
    channel.

    ``multiplier`` and ``shift`` are int64 arrays, 0-d or 1-D (one entry per channel along
    ``axis`` of the accumulator).
    """

    multiplier: np.ndarray
    shift: np.ndarray
    axis: int | None = None
    wide: bool = False  # a 16x8 accumulator, |acc| < 2^39 (§E.13), else int32

    @classmethod
    def from_real(
        cls, real_multiplier: npt.ArrayLike, *, axis: int | None = None, wide: bool = False
    ) -> Rescale:
        """Multipliers and shifts for the scales ``real_multiplier``, rounded to float32
        (pass float32 scales computed in ONNX Runtime's order to match it exactly)."""
        reals = np.asarray(real_multiplier)
        pairs = [quantize_multiplier(float(real)) for real in reals.reshape(-1)]
        multiplier = np.array([m for m, _ in pairs], dtype=np.int64).reshape(reals.shape)
        shift = np.array([s for _, s in pairs], dtype=np.int64).reshape(reals.shape)
        if wide and np.any((MULTIPLIER_BITS - shift > 63) & (multiplier != 0)):
            raise ModelError(
                "a 16x8 requantization scale is below 2^-39, beyond what (E.13a) rounds "
                "exactly; check the scales of this node"
            )
        return cls(multiplier, shift, None if reals.ndim == 0 else axis, wide)

    def check(self, acc: np.ndarray) -> None:
        """Refuse an accumulator beyond this rescale's range (int32, or 2^39 when wide)."""
        if self.wide:
            check_wide(acc)
        else:
            check_int32(acc)

    def _along(self, values: np.ndarray, ndim: int) -> np.ndarray:
        """Per-channel ``values`` shaped to broadcast along ``axis`` of an ndim-array."""
        if values.ndim == 0 or self.axis is None:
            return values
        shape = [1] * ndim
        shape[self.axis % ndim] = values.size
        return values.reshape(shape)

    @cached_property
    def scale(self) -> np.ndarray:
        """S = M · 2^(shift − 24) as float32, exact (M has 24 bits; S is the float32 the
        multiplier came from). Shifts far below float32's range give 0, as they must."""
        exponent = np.clip(self.shift - MULTIPLIER_BITS, -1100, 100).astype(np.int32)
        return np.ldexp(self.multiplier.astype(np.float64), exponent).astype(np.float32)

    def apply_reference(self, acc: npt.ArrayLike) -> np.ndarray:
        """The definition, ``requantize_reference`` (int64 result)."""
        acc = np.asarray(acc, dtype=np.int64)
        rule = requantize_wide_reference if self.wide else requantize_reference
        return rule(acc, self._along(self.multiplier, acc.ndim), self._along(self.shift, acc.ndim))

    def scaled(self, acc: np.ndarray) -> np.ndarray:
        """float32(acc) · S in float32 (a new array), not yet rounded."""
        values = np.asarray(acc).astype(np.float32)
        values *= self._along(self.scale, values.ndim)
        return values

    def apply(self, acc: npt.ArrayLike, *, bounded: bool = False) -> np.ndarray:
        """The same as ``apply_reference`` in float32 (the module doc proves it).

        ``bounded``: the caller has proven |acc| < 2^31 (Prepare's static bound), so the
        run-time range check is skipped.
        """
        acc = np.asarray(acc)
        if acc.dtype.kind != "i":
            acc = acc.astype(np.int64)
        if not bounded:
            self.check(acc)
        return np.rint(self.scaled(acc)).astype(np.int64)


@dataclass(frozen=True, eq=False)
class Requantization:
    """An accumulator rescaled to a stored 8-bit tensor: zero point added, then clamped.

    ``low``/``high`` is the output type's range, narrowed by a fused Relu/Clip. ONNX
    Runtime clamps the float product to [low − z, high − z] before rounding it; with integer
    bounds that is the same as clamping the rounded integer (rounding is monotone and keeps
    integers).
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
        wide: bool = False,
    ) -> Requantization:
        limits = np.iinfo(storage_type(dtype))
        low, high = int(limits.min), int(limits.max)
        if clamp is not None:
            low, high = max(low, clamp[0]), min(high, clamp[1])
        rescale = Rescale.from_real(real_multiplier, axis=axis, wide=wide)
        return cls(rescale, int(zero_point), low, high, dtype)

    def apply_reference(self, acc: npt.ArrayLike) -> np.ndarray:
        return self._store(self.rescale.apply_reference(acc) + self.zero_point)

    def apply(self, acc: npt.ArrayLike, *, bounded: bool = False) -> np.ndarray:
        acc = np.asarray(acc)
        if acc.dtype.kind != "i":
            acc = acc.astype(np.int64)
        if not bounded:
            self.rescale.check(acc)
        scaled = scratch("requantize.scaled", acc.shape, np.float32)
        np.copyto(scaled, acc, casting="unsafe")  # float32(acc): one rounding, ties to even
        return self._finish(scaled)

    def exact_in_float64(self, largest: npt.ArrayLike) -> bool:
        """Whether ``apply_sum(..., in_float=True)`` equals the definition for every
        accumulator with |acc| <= ``largest`` (per channel, or one bound): it does whenever
        the accumulators are int32, since the float path is the definition (module doc)."""
        bound = np.asarray(largest, dtype=np.int64)
        return not (bound.size and int(bound.max()) > INT32_MAX)

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

        total + bias is formed in float64, exact below 2^53, and rounded once to float32:
        round24(acc), as ``apply`` does. ``in_float`` (the caller checked
        ``exact_in_float64``) changes nothing any more: both paths are the float32 rule.
        """
        del in_float  # kept for the callers: every path below is the definition
        if bias is None:
            acc = total
        else:
            acc = scratch("requantize.sum", total.shape, np.float64)
            np.add(total, bias, out=acc)
        if not bounded:
            self.rescale.check(acc)
        scaled = scratch("requantize.scaled", acc.shape, np.float32)
        np.copyto(scaled, acc, casting="unsafe")
        return self._finish(scaled)

    def _finish(self, scaled: np.ndarray) -> np.ndarray:
        """``scaled`` = float32(acc) (a work buffer, changed): times S, rounded half to
        even, clamped to [low − z, high − z], plus z, stored."""
        scaled *= self.rescale._along(self.rescale.scale, scaled.ndim)
        np.rint(scaled, out=scaled)
        np.clip(scaled, self.low - self.zero_point, self.high - self.zero_point, out=scaled)
        stored = np.empty(scaled.shape, dtype=storage_type(self.dtype))
        np.add(scaled, self.zero_point, out=stored, casting="unsafe")
        return stored

    def _store(self, values: np.ndarray) -> np.ndarray:
        return np.clip(values, self.low, self.high, out=values).astype(storage_type(self.dtype))
