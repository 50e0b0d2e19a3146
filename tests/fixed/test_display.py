"""Bit patterns (bin, hex, dec, sdec), values() and the MATLAB-style display."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eightbit.errors import FixedPointError
from eightbit.fixed import FixedArray, FixedFormat, fi
from tests.fixed.reference import PROPERTY


def test_matlab_bin_hex_dec_sdec_golden() -> None:
    x = fi([-1.0, 1.0], 8, fraction_length=7)  # fi([-1 1], 1, 8, 7)
    assert x.stored.tolist() == [-128, 127]
    assert x.bin().tolist() == ["10000000", "01111111"]
    assert x.hex().tolist() == ["80", "7F"]
    assert x.dec().tolist() == ["128", "127"]
    assert x.sdec().tolist() == ["-128", "127"]


def test_negative_fraction_length_pattern() -> None:
    x = fi(16000.0, 8)  # MATLAB: bin(x) = 01111101 with f = -7
    assert x.bin().item() == "01111101"


def test_odd_word_lengths_pad_the_top_hex_digit() -> None:
    x = FixedArray(np.array([-1, 5]), FixedFormat(10, 0))
    assert x.bin().tolist() == ["1111111111", "0000000101"]
    assert x.hex().tolist() == ["3FF", "005"]
    three_bit = FixedArray(np.array([-1]), FixedFormat(3, 1))  # -0.5 is 11.1
    assert three_bit.bin().item() == "111"
    assert three_bit.values().item() == -0.5


def test_64_bit_patterns() -> None:
    x = FixedArray(np.array([-(2**63), -1]), FixedFormat(64, 0))
    assert x.hex().tolist() == ["8000000000000000", "FFFFFFFFFFFFFFFF"]
    assert x.dec().tolist() == [str(2**63), str(2**64 - 1)]
    assert x.bin()[1] == "1" * 64


def test_patterns_keep_the_array_shape() -> None:
    x = fi(np.zeros((2, 3)), 8)
    assert x.bin().shape == (2, 3)
    assert x.hex().shape == (2, 3)
    assert fi(0.5).bin().shape == ()


@PROPERTY
@given(data=st.data(), word_length=st.integers(2, 64), signed=st.booleans())
def test_patterns_are_the_word_modulo_two_to_the_w(
    data: st.DataObject, word_length: int, signed: bool
) -> None:
    word_length = word_length if signed else min(word_length, 63)
    fmt = FixedFormat(word_length, 0, signed)
    stored = data.draw(st.lists(st.integers(fmt.min_int, fmt.max_int), min_size=1, max_size=5))
    x = FixedArray(np.array(stored, dtype=np.int64), fmt)
    unsigned = [q % (1 << word_length) for q in stored]
    assert [int(b, 2) for b in x.bin().tolist()] == unsigned
    assert all(len(b) == word_length for b in x.bin().tolist())
    assert [int(h, 16) for h in x.hex().tolist()] == unsigned
    assert [int(d) for d in x.dec().tolist()] == unsigned
    assert [int(d) for d in x.sdec().tolist()] == stored


def test_repr_is_matlab_like() -> None:
    text = repr(fi(0.0269))
    assert "0.02685546875" in text
    assert "Signedness: Signed" in text
    assert "WordLength: 8" in text
    assert "FractionLength: 12" in text


def test_fixed_arrays_are_immutable_and_validated() -> None:
    x = fi([0.5, 0.25])
    with pytest.raises(ValueError, match="read-only"):
        x.stored[0] = 1
    with pytest.raises(AttributeError):
        x.format = FixedFormat(8, 0)  # type: ignore[misc]
    with pytest.raises(FixedPointError, match=r"stored integer 128 at element 1 is outside sfix8"):
        FixedArray(np.array([1, 128]), FixedFormat(8, 0))
    with pytest.raises(FixedPointError, match="must be an integer array"):
        FixedArray(np.array([0.5]), FixedFormat(8, 0))  # type: ignore[arg-type]


def test_indexing_keeps_the_format() -> None:
    x = fi([0.5, 0.25, -0.125])
    assert x[1].values().item() == 0.25
    assert x[1:].format == x.format
    assert len(x) == 3
