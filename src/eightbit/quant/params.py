"""``QuantParams``: how one tensor is stored as integers (docs/numerics.md §Q, eq. Q.1).

A real value ``r`` stands for ``scale · (q − zero_point)`` with ``q`` in ``[qmin, qmax]``.
Per-tensor parameters have 0-d ``scale`` and ``zero_point``; per-channel parameters have
one entry per slice of the tensor along ``axis``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, cast, get_args

import numpy as np
import numpy.typing as npt

from eightbit.errors import ConfigError

QuantType = Literal["int8", "uint8", "int32", "int16"]
QUANT_TYPES: tuple[QuantType, ...] = get_args(QuantType)

_LIMITS: dict[str, tuple[int, int]] = {
    "int8": (-128, 127),
    "uint8": (0, 255),
    "int32": (-(2**31), 2**31 - 1),
    "int16": (-(2**15), 2**15 - 1),  # 16x8 activations (docs/numerics.md §Q17)
}
_NUMPY_TYPES: dict[str, type[np.integer[Any]]] = {
    "int8": np.int8,
    "uint8": np.uint8,
    "int32": np.int32,
    "int16": np.int16,
}


@dataclass(frozen=True, eq=False)
class QuantParams:
    """Scale, zero point and storage type of a quantized tensor.

    ``narrow_range`` drops the most negative code of a signed type (weights use [−127, 127]
    so that ``−w`` quantizes to ``−q``). Arrays are stored read-only, ``scale`` as float32
    and ``zero_point`` as int64, whatever was passed in.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    dtype: QuantType
    axis: int | None = None
    narrow_range: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in _LIMITS:
            raise ConfigError(f"'dtype' must be one of {list(QUANT_TYPES)} (got {self.dtype!r})")
        scale = _frozen_array(self.scale, np.float32)
        zero_point = _frozen_array(self.zero_point, np.int64)
        if scale.ndim > 1 or scale.shape != zero_point.shape:
            raise ConfigError(
                f"'scale' and 'zero_point' must have the same shape, () or (channels,) "
                f"(got {scale.shape} and {zero_point.shape})"
            )
        if (scale.ndim == 1) != (self.axis is not None):
            raise ConfigError(
                f"'axis' must be given exactly when the parameters are per channel "
                f"(got axis={self.axis!r} with {scale.size} scale(s) of shape {scale.shape})"
            )
        if scale.ndim == 1 and scale.size == 0:
            raise ConfigError("per-channel 'scale' must have at least one channel (got none)")
        if not np.all(np.isfinite(scale) & (scale > 0)):
            raise ConfigError(f"'scale' must be finite and > 0 (got {scale.tolist()})")
        if self.narrow_range and self.dtype == "uint8":
            raise ConfigError("'narrow_range' needs a signed dtype (got 'uint8')")
        low, high = _limits(self.dtype, self.narrow_range)
        if np.any((zero_point < low) | (zero_point > high)):
            raise ConfigError(
                f"'zero_point' must lie in [{low}, {high}] for {self.dtype} "
                f"(got {zero_point.tolist()})"
            )
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "zero_point", zero_point)

    @property
    def qmin(self) -> int:
        return _limits(self.dtype, self.narrow_range)[0]

    @property
    def qmax(self) -> int:
        return _limits(self.dtype, self.narrow_range)[1]

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(_NUMPY_TYPES[self.dtype])

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    @property
    def fraction_lengths(self) -> np.ndarray | None:
        """``f`` with ``scale = 2^-f`` (int64, shaped like scale) for power-of-two parameters.

        None when a scale is not an exact power of two or a zero point is not 0.
        """
        mantissa, exponent = np.frexp(self.scale.astype(np.float64))
        if np.any(mantissa != 0.5) or np.any(self.zero_point != 0):
            return None
        # scale = 0.5 · 2^e = 2^(e-1), so f = 1 - e.
        return (1 - exponent).astype(np.int64)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; floats are written so that float32 scales round-trip exactly.

        Power-of-two parameters also show their fraction length ``f`` (scale = 2^-f, the
        format ``eightbit fi`` displays); it is redundant with the scale and checked on load.
        """
        data: dict[str, Any] = {
            "dtype": self.dtype,
            "scale": self.scale.astype(np.float64).tolist(),
            "zero_point": self.zero_point.tolist(),
            "axis": self.axis,
            "narrow_range": self.narrow_range,
        }
        fraction_lengths = self.fraction_lengths
        if fraction_lengths is not None:
            data["fraction_length"] = fraction_lengths.tolist()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantParams:
        known = {"dtype", "scale", "zero_point", "axis", "narrow_range", "fraction_length"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"quantization parameters have unknown field(s) {unknown}; expected {sorted(known)}"
            )
        missing = sorted({"dtype", "scale", "zero_point"} - set(data))
        if missing:
            raise ConfigError(f"quantization parameters miss field(s) {missing}")
        axis = data.get("axis")
        if axis is not None and (not isinstance(axis, int) or isinstance(axis, bool)):
            raise ConfigError(f"'axis' must be an integer or null (got {axis!r})")
        params = cls(
            scale=_array_field(data["scale"], np.float32, "scale"),
            zero_point=_array_field(data["zero_point"], np.int64, "zero_point"),
            dtype=cast(QuantType, data["dtype"]),
            axis=axis,
            narrow_range=bool(data.get("narrow_range", False)),
        )
        if "fraction_length" in data:
            implied = params.fraction_lengths
            given = np.asarray(data["fraction_length"])
            if implied is None or not np.array_equal(implied, given):
                raise ConfigError(
                    f"'fraction_length' {data['fraction_length']!r} does not match scale "
                    f"{data['scale']!r} (scale must be 2^-fraction_length); fix or remove one"
                )
        return params

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantParams):
            return NotImplemented
        return (
            self.dtype == other.dtype
            and self.axis == other.axis
            and self.narrow_range == other.narrow_range
            and self.scale.shape == other.scale.shape
            and bool(np.array_equal(self.scale, other.scale))
            and bool(np.array_equal(self.zero_point, other.zero_point))
        )

    def __hash__(self) -> int:
        return hash((self.dtype, self.axis, self.narrow_range, self.scale.tobytes()))

    def __repr__(self) -> str:
        where = "per-tensor" if self.axis is None else f"axis={self.axis}"
        return (
            f"QuantParams({self.dtype}, {where}, scale={self.scale.tolist()}, "
            f"zero_point={self.zero_point.tolist()})"
        )


def _limits(dtype: str, narrow_range: bool) -> tuple[int, int]:
    low, high = _LIMITS[dtype]
    return (-high if narrow_range else low), high


def _frozen_array(values: npt.ArrayLike, dtype: type[np.generic]) -> np.ndarray:
    array = np.array(values, dtype=dtype)  # a copy: later changes to the input do not leak in
    array.flags.writeable = False
    return array


def _array_field(value: Any, dtype: type[np.generic], name: str) -> np.ndarray:
    kinds = "fiu" if dtype is np.float32 else "iu"
    expected = "numbers" if dtype is np.float32 else "integers"
    try:
        array = np.asarray(value)
    except ValueError:  # ragged nesting
        array = np.asarray(None)
    if array.dtype.kind not in kinds:
        raise ConfigError(f"{name!r} must be one of {expected} or a list of them (got {value!r})")
    if dtype is np.float32 and not np.array_equal(array.astype(np.float32), array):
        raise ConfigError(f"{name!r} must hold float32 values (got {value!r})")
    return array.astype(dtype)
