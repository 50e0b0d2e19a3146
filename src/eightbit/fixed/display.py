"""Bit patterns and MATLAB-style display of stored integers (docs/numerics.md §1.7).

All patterns are the two's complement word of the stored integer, built with vectorized
bit extraction; the results are numpy string arrays shaped like the input.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from eightbit.fixed.format import FixedFormat
from eightbit.fixed.inputs import IntArray

StrArray = npt.NDArray[np.str_]

_HEX_DIGITS = np.frombuffer(b"0123456789ABCDEF", dtype=np.uint8)


def _digit_strings(codes: npt.NDArray[np.uint8]) -> StrArray:
    """Join the last axis of an array of ASCII codes into strings."""
    width = codes.shape[-1]
    joined = np.ascontiguousarray(codes).view(f"S{width}")[..., 0]
    return joined.astype(str)


def _word_pattern(stored: IntArray, fmt: FixedFormat) -> IntArray:
    """The low ``word_length`` bits of each stored integer (all 64 bits of a 64-bit word)."""
    if fmt.word_length >= 64:
        return stored
    return stored & ~(np.int64(-1) << fmt.word_length)


def bin_strings(stored: IntArray, fmt: FixedFormat) -> StrArray:
    """The ``word_length``-bit two's complement pattern of each stored integer (MATLAB ``bin``)."""
    positions = np.arange(fmt.word_length - 1, -1, -1, dtype=np.int64)
    bits = (stored[..., np.newaxis] >> positions) & 1
    return _digit_strings((bits + ord("0")).astype(np.uint8))


def hex_strings(stored: IntArray, fmt: FixedFormat) -> StrArray:
    """The word as ⌈word_length / 4⌉ upper-case hex digits (MATLAB ``hex``)."""
    digits = math.ceil(fmt.word_length / 4)
    positions = 4 * np.arange(digits - 1, -1, -1, dtype=np.int64)
    nibbles = (_word_pattern(stored, fmt)[..., np.newaxis] >> positions) & 0xF
    return _digit_strings(_HEX_DIGITS[nibbles])


def dec_strings(stored: IntArray, fmt: FixedFormat) -> StrArray:
    """The word read as an unsigned decimal integer (MATLAB ``dec``: -1 in 8 bits is 255)."""
    # astype(uint64) is modular, which is the unsigned reading of a 64-bit word.
    return _word_pattern(stored, fmt).astype(np.uint64).astype(str)


def sdec_strings(stored: IntArray) -> StrArray:
    """The signed stored integers in decimal (MATLAB ``sdec``)."""
    return stored.astype(str)


def matlab_display(values: npt.NDArray[np.float64], fmt: FixedFormat) -> str:
    """MATLAB's ``fi`` display: the values, then the format block."""
    shape = "x".join(str(n) for n in values.shape) or "scalar"
    body = np.array2string(values, floatmode="unique", separator="  ")
    indented = "\n".join("    " + line for line in body.splitlines())
    return f"fi {shape} {fmt.name} =\n\n{indented}\n\n{fmt.describe()}"
