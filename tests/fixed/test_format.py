"""FixedFormat validation and properties; best-precision fraction lengths."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eightbit.errors import FixedPointError
from eightbit.fixed import FixedFormat, best_precision_fraction_length
from tests.fixed.reference import PROPERTY, finite_floats


def test_signed_8_bit_limits() -> None:
    fmt = FixedFormat(8, 12)
    assert (fmt.min_int, fmt.max_int) == (-128, 127)
    assert fmt.resolution == 2.0**-12
    assert fmt.range == (-0.03125, 127 / 4096)
    assert fmt.integer_length == -4


def test_unsigned_and_wide_limits_are_exact_integers() -> None:
    assert (FixedFormat(8, 0, signed=False).min_int, FixedFormat(8, 0, False).max_int) == (0, 255)
    assert FixedFormat(64, 0).min_int == -(2**63)
    assert FixedFormat(64, 0).max_int == 2**63 - 1
    assert FixedFormat(63, 0, signed=False).max_int == 2**63 - 1


def test_values_beyond_float64_range() -> None:
    assert FixedFormat(8, -2000).resolution == math.inf
    assert FixedFormat(8, 2000).resolution == 0.0
    assert FixedFormat(8, -2000).max_value == math.inf
    assert FixedFormat(8, 1080).max_value == math.ldexp(127.0, -1080)  # subnormal, exact


@pytest.mark.parametrize(
    ("fmt", "name"),
    [
        (FixedFormat(8, 12), "sfix8_En12"),
        (FixedFormat(16, -2, signed=False), "ufix16_E2"),
        (FixedFormat(8, 0), "sfix8"),
    ],
)
def test_matlab_type_names(fmt: FixedFormat, name: str) -> None:
    assert fmt.name == name


def test_str_and_matlab_block() -> None:
    fmt = FixedFormat(8, 12)
    assert str(fmt) == (
        "sfix8_En12: signed, word length 8, fraction length 12, resolution 2^-12, "
        "range [-0.03125, 0.031005859375]"
    )
    assert fmt.describe().splitlines()[1:] == [
        "            Signedness: Signed",
        "            WordLength: 8",
        "        FractionLength: 12",
    ]


def test_formats_are_immutable_and_hashable() -> None:
    fmt = FixedFormat(8, 4)
    with pytest.raises(AttributeError):
        fmt.word_length = 9  # type: ignore[misc]
    assert {fmt, FixedFormat(8, 4)} == {fmt}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((1, 0), r"'word_length' must be an integer in \[2, 64\] for signed formats \(got 1\)"),
        ((65, 0), r"\[2, 64\] for signed formats \(got 65\)"),
        ((64, 0, False), r"\[2, 63\] for unsigned formats \(got 64\); stored integers are int64"),
        ((8.0, 0), r"'word_length' must be an integer .* \(got 8.0\)"),
        ((True, 0), r"'word_length' must be an integer .* \(got True\)"),
        ((8, 70000), r"'fraction_length' must be an integer in \[-65535, 65535\] \(got 70000\)"),
        ((8, 1.5), r"'fraction_length' .* \(got 1.5\)"),
        ((8, 0, "yes"), r"'signed' must be True or False \(got 'yes'\)"),
    ],
)
def test_invalid_formats_are_refused_with_attrs_style_messages(
    args: tuple[object, ...], message: str
) -> None:
    with pytest.raises(FixedPointError, match=message):
        FixedFormat(*args)  # type: ignore[arg-type]


def test_numpy_integers_are_accepted() -> None:
    assert FixedFormat(np.int64(8), np.int32(3)) == FixedFormat(8, 3)  # type: ignore[arg-type]


# --- best precision --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "word_length", "signed", "expected"),
    [
        ([math.pi], 16, True, 13),
        ([-0.5], 8, True, 8),
        ([0.5], 8, True, 7),  # ⌊log2 0.5⌋ = -1 exactly; 0.5 needs 2^-1, -0.5 does not
        ([0.998], 8, True, 7),
        ([16000.0], 8, True, -7),
        ([0.0234], 8, True, 12),
        ([1.0], 8, True, 6),
        ([-1.0], 8, True, 7),
        ([0.25, -1.0], 8, True, 7),  # the negative side decides
        ([math.pi], 8, False, 6),
        ([-math.pi, 0.5], 8, False, 8),  # unsigned ignores negatives
        ([np.nextafter(2.0, 0.0)], 8, True, 6),  # just below 2: ⌊log2⌋ = 0, not 1
        ([2.0**-1074], 8, True, 1080),  # smallest subnormal
        ([np.finfo(np.float64).max], 8, True, -1017),
    ],
)
def test_best_precision_golden(
    values: list[float], word_length: int, signed: bool, expected: int
) -> None:
    assert best_precision_fraction_length(values, word_length, signed) == expected


@pytest.mark.parametrize(("signed", "expected"), [(True, 7), (False, 8)])
@pytest.mark.parametrize("values", [[0.0], [], [0.0, -0.0], [math.inf, 0.0]])
def test_all_zero_input_gets_the_unit_range(
    values: list[float], signed: bool, expected: int
) -> None:
    assert best_precision_fraction_length(values, 8, signed) == expected


def test_best_precision_of_integers_is_exact_beyond_2_to_53() -> None:
    just_below = np.array([2**60 - 1], dtype=np.int64)  # float64 would round it up to 2^60
    assert best_precision_fraction_length(just_below, 64) == 64 - 59 - 2
    most_negative = np.array([-(2**63)], dtype=np.int64)
    assert best_precision_fraction_length(most_negative, 64) == 0


def test_best_precision_refuses_nan_and_bad_word_lengths() -> None:
    with pytest.raises(FixedPointError, match="element 1 is NaN"):
        best_precision_fraction_length([1.0, math.nan])
    with pytest.raises(FixedPointError, match="word_length"):
        best_precision_fraction_length([1.0], 70)


@PROPERTY
@given(
    values=st.lists(finite_floats, min_size=1, max_size=6),
    word_length=st.integers(2, 63),
    signed=st.booleans(),
)
def test_best_precision_is_the_largest_fraction_length_that_holds_the_extremes(
    values: list[float], word_length: int, signed: bool
) -> None:
    """Before rounding, every value fits with f (q_min <= x·2^f < q_max + 1), not with f + 1."""
    f = best_precision_fraction_length(values, word_length, signed)
    considered = [Fraction(v) for v in values if v != 0 and (signed or v > 0)]
    if not considered:
        return

    def fits(fraction_length: int) -> bool:
        fmt = FixedFormat(word_length, fraction_length, signed)
        scale = Fraction(2) ** fraction_length
        return all(fmt.min_int <= v * scale < fmt.max_int + 1 for v in considered)

    assert fits(f)
    assert not fits(f + 1)
