"""Exact arithmetic with growth, casts and comparisons, against Fractions."""

from __future__ import annotations

import operator
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eightbit.errors import FixedPointError
from eightbit.fixed import (
    FixedArray,
    FixedFormat,
    difference_format,
    fi,
    negation_format,
    product_format,
    sum_format,
)
from tests.fixed.reference import (
    PROPERTY,
    formats,
    overflow_exact,
    overflows,
    round_exact,
    roundings,
    value_exact,
)

S8_4 = FixedFormat(8, 4)
U8_2 = FixedFormat(8, 2, signed=False)


@st.composite
def fixed_arrays(
    draw: st.DrawFn, size: int = 4, max_word: int = 32, max_fraction: int = 40
) -> FixedArray:
    """Arrays of one format, with stored integers covering the whole range (limits included)."""
    signed = draw(st.booleans())
    word_length = draw(st.integers(2, max_word if signed else min(max_word, 63)))
    fraction_length = draw(st.integers(-max_fraction, max_fraction))
    fmt = FixedFormat(word_length, fraction_length, signed)
    stored = draw(
        st.lists(
            st.one_of(
                st.integers(fmt.min_int, fmt.max_int), st.sampled_from([fmt.min_int, fmt.max_int])
            ),
            min_size=size,
            max_size=size,
        )
    )
    return FixedArray(np.array(stored, dtype=np.int64), fmt)


def exact_values(x: FixedArray) -> list[Fraction]:
    return [value_exact(int(q), x.format) for q in x.stored.ravel()]


# --- growth rules -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "a", "b", "expected"),
    [
        (sum_format, S8_4, S8_4, FixedFormat(9, 4)),
        (sum_format, S8_4, FixedFormat(8, 6), FixedFormat(11, 6)),
        (sum_format, U8_2, U8_2, FixedFormat(9, 2, signed=False)),
        (sum_format, S8_4, U8_2, FixedFormat(12, 4)),  # unsigned needs 7 signed integer bits
        (difference_format, U8_2, U8_2, FixedFormat(9, 2)),
        (difference_format, S8_4, S8_4, FixedFormat(9, 4)),
        (product_format, S8_4, S8_4, FixedFormat(16, 8)),
        (product_format, S8_4, U8_2, FixedFormat(16, 6)),
        (product_format, U8_2, U8_2, FixedFormat(16, 4, signed=False)),
        (product_format, FixedFormat(32, 31), FixedFormat(32, 31), FixedFormat(64, 62)),
    ],
)
def test_growth_rules(
    rule: Callable[[FixedFormat, FixedFormat], FixedFormat],
    a: FixedFormat,
    b: FixedFormat,
    expected: FixedFormat,
) -> None:
    assert rule(a, b) == expected


def test_negation_grows_one_bit() -> None:
    assert negation_format(S8_4) == FixedFormat(9, 4)
    assert negation_format(U8_2) == FixedFormat(9, 2)
    most_negative = FixedArray(np.array([-128]), S8_4)
    assert (-most_negative).values().tolist() == [8.0]  # exact, no saturation


def test_results_wider_than_int64_are_refused() -> None:
    u32 = FixedFormat(32, 0, signed=False)
    with pytest.raises(
        FixedPointError, match=r"product of ufix32 and ufix32 needs a 64-bit unsigned"
    ):
        product_format(u32, u32)
    with pytest.raises(FixedPointError, match=r"sum of sfix64 and sfix64 needs a 65-bit signed"):
        sum_format(FixedFormat(64, 0), FixedFormat(64, 0))
    big = FixedArray(np.array([1]), FixedFormat(40, 0))
    with pytest.raises(FixedPointError, match="cast an operand to a narrower format"):
        big * big


def test_thirty_two_bit_products_are_exact() -> None:
    a = FixedArray(np.array([-(2**31), 2**31 - 1, -(2**31)]), FixedFormat(32, 31))
    b = FixedArray(np.array([-(2**31), -(2**31), 2**31 - 1]), FixedFormat(32, 31))
    product = a * b
    assert product.format == FixedFormat(64, 62)
    assert product.stored.tolist() == [2**62, -(2**62) + 2**31, -(2**62) + 2**31]


ARITHMETIC: list[tuple[str, Callable[[object, object], object]]] = [
    ("+", operator.add),
    ("-", operator.sub),
    ("*", operator.mul),
]


@PROPERTY
@given(
    # Up to 32 bits and |f| <= 12, sums and differences stay within 57 bits; only an
    # unsigned product may be too wide.
    a=fixed_arrays(max_fraction=12),
    b=fixed_arrays(max_fraction=12),
    operation=st.sampled_from(ARITHMETIC),
)
def test_arithmetic_is_exact(
    a: FixedArray, b: FixedArray, operation: tuple[str, Callable[[object, object], object]]
) -> None:
    _, op = operation
    try:
        result = op(a, b)
    except FixedPointError:
        assert op is operator.mul and not (a.format.signed or b.format.signed)
        assert a.format.word_length + b.format.word_length > 63
        return
    assert isinstance(result, FixedArray)
    expected = [op(x, y) for x, y in zip(exact_values(a), exact_values(b), strict=True)]
    assert exact_values(result) == expected


@PROPERTY
@given(a=fixed_arrays(max_word=63))
def test_negation_is_exact(a: FixedArray) -> None:
    assert exact_values(-a) == [-x for x in exact_values(a)]


def test_arithmetic_broadcasts() -> None:
    column = fi(np.array([[0.5], [-0.25]]), 8)
    row = fi(np.array([1.0, 2.0, 3.0]), 8)
    assert (column * row).values().tolist() == [[0.5, 1.0, 1.5], [-0.25, -0.5, -0.75]]


def test_arithmetic_with_non_fixed_operands_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        fi(0.5) + 1.0  # type: ignore[operator]
    with pytest.raises(TypeError, match="compares only with a FixedArray"):
        _ = fi(0.5) < 1.0  # type: ignore[operator]


# --- casts ------------------------------------------------------------------------------


@PROPERTY
@given(a=fixed_arrays(), target=formats(), rounding=roundings, overflow=overflows)
def test_cast_matches_the_exact_oracle(
    a: FixedArray, target: FixedFormat, rounding: str, overflow: str
) -> None:
    result = a.cast(target, rounding, overflow)  # type: ignore[arg-type]
    scale = Fraction(2) ** target.fraction_length
    expected = [
        overflow_exact(round_exact(x * scale, rounding), target, overflow) for x in exact_values(a)
    ]
    assert result.format == target
    assert result.stored.tolist() == expected


def test_cast_from_a_64_bit_product_to_16_bits() -> None:
    product = FixedArray(np.array([2**62, -(2**62) + 2**31]), FixedFormat(64, 62))
    cast = product.cast(FixedFormat(16, 14), "nearest", "saturate")
    assert cast.stored.tolist() == [2**14, -(2**14)]  # 1.0, and -1 + 2^-31 rounds to -1.0
    assert product.cast(FixedFormat(16, 15), overflow="wrap").stored.tolist() == [
        -(2**15),
        -(2**15),
    ]


# --- comparisons ------------------------------------------------------------------------

COMPARISONS = [operator.lt, operator.le, operator.gt, operator.ge, operator.eq, operator.ne]


@PROPERTY
@given(a=fixed_arrays(max_word=64), b=fixed_arrays(max_word=64), op=st.sampled_from(COMPARISONS))
def test_comparisons_are_exact(a: FixedArray, b: FixedArray, op: Callable[..., object]) -> None:
    got = op(a, b)
    expected = [op(x, y) for x, y in zip(exact_values(a), exact_values(b), strict=True)]
    assert isinstance(got, np.ndarray) and got.dtype == np.bool_
    assert got.tolist() == expected


@pytest.mark.parametrize("d", [0, 1, 62, 63, 64, 65, 200])
def test_comparisons_across_huge_fraction_length_gaps(d: int) -> None:
    """q_a = -2^63 at fraction length d vs q_b = -1 at 0: equal exactly when d = 63."""
    a = FixedArray(np.array([-(2**63), 0, 5]), FixedFormat(64, d))
    b = FixedArray(np.array([-1, 0, 0]), FixedFormat(64, 0))
    x, y = exact_values(a), exact_values(b)
    assert (a == b).tolist() == [p == q for p, q in zip(x, y, strict=True)]
    assert (a < b).tolist() == [p < q for p, q in zip(x, y, strict=True)]
    assert (b < a).tolist() == [q < p for p, q in zip(x, y, strict=True)]


def test_equal_values_in_different_formats_compare_equal() -> None:
    a = FixedArray(np.array([3]), FixedFormat(8, 1))  # 1.5
    b = FixedArray(np.array([96]), FixedFormat(16, 6))  # 1.5
    assert (a == b).tolist() == [True]
    assert (a != b).tolist() == [False]
