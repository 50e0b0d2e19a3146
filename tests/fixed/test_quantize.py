"""quantize and fi: MATLAB golden cases, tie tables, and Hypothesis against Fractions."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from eightbit.errors import FixedPointError
from eightbit.fixed import FixedFormat, FixedPointWarning, fi, quantize
from tests.fixed.reference import (
    PROPERTY,
    finite_floats,
    formats,
    int64s,
    overflows,
    quantize_exact,
    round_exact,
    roundings,
    value_exact,
    values_near,
)

# --- golden cases from MATLAB's documentation ------------------------------------------


@pytest.mark.parametrize(
    ("value", "word_length", "signed", "fraction_length", "stored"),
    [
        (math.pi, 16, True, 13, 25736),  # fi(pi)
        (math.pi, 8, True, 5, 101),  # fi(pi, 1, 8) = 3.15625
        (math.pi, 20, True, 17, 411775),  # fi(pi, 1, 20)
        (0.1, 16, True, 18, 26214),  # fi(0.1) = 0.0999984741210938
        (math.e, 20, False, 18, 712581),  # fi(exp(1), 0, 20) = 2.71828079223633
        (16000.0, 8, True, -7, 125),  # negative fraction length
        (0.0234, 8, True, 12, 96),  # fraction length > word length
        (-0.5, 8, True, 8, -128),
        (0.0269, 8, True, 12, 110),
    ],
)
def test_matlab_best_precision_golden(
    value: float, word_length: int, signed: bool, fraction_length: int, stored: int
) -> None:
    x = fi(value, word_length, signed=signed)
    assert x.format == FixedFormat(word_length, fraction_length, signed)
    assert int(x.stored) == stored


def test_matlab_default_word_golden_vector() -> None:
    x = fi([0.2, 0.3, 0.4, 0.5], 16)  # one shared format for the whole array
    assert x.format.fraction_length == 15
    assert x.stored.tolist() == [6554, 9830, 13107, 16384]


def test_matlab_unsigned_saturates_negatives() -> None:
    x = fi([-math.pi, 0.5, math.pi], 8, signed=False)  # fi([-pi .5 pi], 0, 8)
    assert x.format.fraction_length == 6
    assert x.values().tolist() == [0.0, 0.5, 3.140625]


def test_0269_in_8_bits_displays_like_matlab() -> None:
    x = fi(0.0269)
    assert x.bin().item() == "01101110"
    assert x.hex().item() == "6E"
    assert x.values().item() == 0.02685546875
    assert "2^-12" in str(x.format)


@pytest.mark.parametrize(("overflow", "stored"), [("saturate", 127), ("wrap", -128)])
def test_one_at_signed_8_fraction_7(overflow: str, stored: int) -> None:
    assert int(quantize(1.0, FixedFormat(8, 7), overflow=overflow).stored) == stored


@pytest.mark.parametrize(("overflow", "stored"), [("saturate", 127), ("wrap", -128)])
def test_best_precision_value_that_rounds_past_the_top(overflow: str, stored: int) -> None:
    x = fi(0.998, 8, overflow=overflow)
    assert x.format.fraction_length == 7  # 0.998 · 128 = 127.74 rounds to 128
    assert int(x.stored) == stored


# --- tie tables ------------------------------------------------------------------------

TIES = [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]
NON_TIES = [-1.75, -1.25, 1.25, 1.75]
TIE_TABLE = {
    "nearest": ([-2, -1, 0, 1, 2, 3], [-2, -1, 1, 2]),
    "round": ([-3, -2, -1, 1, 2, 3], [-2, -1, 1, 2]),
    "convergent": ([-2, -2, 0, 0, 2, 2], [-2, -1, 1, 2]),
    "floor": ([-3, -2, -1, 0, 1, 2], [-2, -2, 1, 1]),
    "ceil": ([-2, -1, 0, 1, 2, 3], [-1, -1, 2, 2]),
    "zero": ([-2, -1, 0, 0, 1, 2], [-1, -1, 1, 1]),
}


@pytest.mark.parametrize("rounding", list(TIE_TABLE))
@pytest.mark.parametrize("fraction_length", [0, 4, -3, 40])
def test_tie_table(rounding: str, fraction_length: int) -> None:
    """Same table in LSB units at several scalings (exercising different shift amounts)."""
    ties, non_ties = TIE_TABLE[rounding]
    fmt = FixedFormat(16, fraction_length)
    scale = 2.0**-fraction_length
    got_ties = quantize(np.array(TIES) * scale, fmt, rounding)
    got_non_ties = quantize(np.array(NON_TIES) * scale, fmt, rounding)
    assert got_ties.stored.tolist() == ties
    assert got_non_ties.stored.tolist() == non_ties


@pytest.mark.parametrize(
    ("rounding", "expected"),
    [
        ("nearest", [1, 0]),
        ("round", [1, -1]),
        ("convergent", [0, 0]),
        ("floor", [0, -1]),
        ("ceil", [1, 0]),
        ("zero", [0, 0]),
    ],
)
def test_ties_of_subnormals(rounding: str, expected: list[int]) -> None:
    """±2^-1074 with f = 1073 is exactly ±1/2 LSB: a tie found 53 bits below the LSB."""
    tiny = math.ldexp(1.0, -1074)
    x = quantize([tiny, -tiny], FixedFormat(8, 1073), rounding)
    assert x.stored.tolist() == expected


@pytest.mark.parametrize(
    ("rounding", "half", "quarter"),
    [
        ("nearest", 0, 0),
        ("round", -1, 0),
        ("convergent", 0, 0),
        ("floor", -1, -1),
        ("ceil", 0, 0),
        ("zero", 0, 0),
    ],
)
def test_shifts_of_64_bits_and_more(rounding: str, half: int, quarter: int) -> None:
    """-2^63 at f = -64 is exactly -1/2 LSB, at f = -65 exactly -1/4 LSB."""
    most_negative = np.array([np.iinfo(np.int64).min])
    assert int(quantize(most_negative, FixedFormat(8, -64), rounding).stored[0]) == half
    assert int(quantize(most_negative, FixedFormat(8, -65), rounding).stored[0]) == quarter


@pytest.mark.parametrize(
    ("fraction_length", "rounding", "stored"),
    [(2000, "nearest", 127), (-2000, "nearest", 0), (-2000, "ceil", 1), (-2000, "floor", 0)],
)
def test_huge_fraction_lengths_are_exact(fraction_length: int, rounding: str, stored: int) -> None:
    """1.0 · 2^2000 saturates; 1.0 · 2^-2000 is a tiny positive number of LSBs."""
    assert int(quantize(1.0, FixedFormat(8, fraction_length), rounding).stored) == stored


@pytest.mark.parametrize(
    ("fraction_length", "saturated", "wrapped"),
    [
        (6, [-64, 64], [-64, 64]),
        (7, [-128, 127], [-128, -128]),  # -1 · 2^7 is the most negative word
        (8, [-128, 127], [0, 0]),  # ±2^8 is 0 modulo 2^8
        (9, [-128, 127], [0, 0]),
    ],
)
def test_left_shift_overflow_boundaries(
    fraction_length: int, saturated: list[int], wrapped: list[int]
) -> None:
    ones = np.array([-1, 1], dtype=np.int64)
    fmt = FixedFormat(8, fraction_length)
    assert quantize(ones, fmt).stored.tolist() == saturated
    assert quantize(ones, fmt, overflow="wrap").stored.tolist() == wrapped


@pytest.mark.parametrize(("fraction_length", "stored"), [(62, 2**62), (63, -(2**63)), (64, 0)])
def test_wrap_of_left_shifts_in_64_bit_words(fraction_length: int, stored: int) -> None:
    one = np.array([1], dtype=np.int64)
    assert quantize(one, FixedFormat(64, fraction_length), overflow="wrap").stored[0] == stored


# --- inputs ----------------------------------------------------------------------------


def test_nan_is_an_error_naming_the_element() -> None:
    with pytest.raises(FixedPointError, match=r"element 2 is NaN"):
        quantize([0.5, 1.0, math.nan], FixedFormat(8, 4))
    with pytest.raises(FixedPointError, match=r"element \(1, 0\) is NaN"):
        fi(np.array([[0.5, 1.0], [math.nan, 2.0]]))


def test_infinities_saturate_with_a_warning_in_both_overflow_modes() -> None:
    for overflow in ("saturate", "wrap"):
        with pytest.warns(FixedPointWarning, match=r"2 infinite value\(s\) saturated"):
            x = quantize([math.inf, 1.0, -math.inf], FixedFormat(8, 4), overflow=overflow)
        assert x.stored.tolist() == [127, 16, -128]


def test_finite_values_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quantize([1e300, -1e300], FixedFormat(8, 0))


def test_best_precision_ignores_infinities() -> None:
    with pytest.warns(FixedPointWarning):
        x = fi([math.inf, 0.75])
    assert x.format.fraction_length == 7


def test_integer_inputs_are_exact_beyond_2_to_53() -> None:
    big = np.array([2**62 + 1, -(2**62) - 3], dtype=np.int64)
    x = quantize(big, FixedFormat(64, 0))
    assert x.stored.tolist() == big.tolist()  # float64 would have rounded them
    assert fi(big, 64).format.fraction_length == 0


@pytest.mark.parametrize(
    "bad", [["a", "b"], [1 + 2j], np.array([2**64 - 1], dtype=np.uint64), [2**70]]
)
def test_non_real_inputs_are_refused(bad: object) -> None:
    with pytest.raises(FixedPointError):
        quantize(bad, FixedFormat(8, 0))


def test_bad_modes_name_the_choices() -> None:
    with pytest.raises(
        ValueError, match=r"'rounding' must be one of \['nearest'.*\(got 'nearst'\)"
    ):
        quantize(1.0, FixedFormat(8, 0), "nearst")
    with pytest.raises(ValueError, match=r"'overflow' must be one of \['saturate', 'wrap'\]"):
        quantize(1.0, FixedFormat(8, 0), overflow="clamp")


def test_shape_is_kept() -> None:
    x = quantize(np.zeros((2, 3, 4)), FixedFormat(8, 0))
    assert x.shape == (2, 3, 4)
    assert x.stored.dtype == np.int64
    assert not x.stored.flags.writeable


# --- properties against the Fraction oracle --------------------------------------------


@PROPERTY
@given(data=st.data(), fmt=formats(), rounding=roundings, overflow=overflows)
def test_quantize_matches_the_exact_oracle(
    data: st.DataObject, fmt: FixedFormat, rounding: str, overflow: str
) -> None:
    values = data.draw(st.lists(values_near(fmt), min_size=1, max_size=8))
    got = quantize(np.array(values), fmt, rounding, overflow)
    assert got.stored.tolist() == [quantize_exact(v, fmt, rounding, overflow) for v in values]


@PROPERTY
@given(
    values=st.lists(int64s, min_size=1, max_size=8),
    fmt=formats(),
    rounding=roundings,
    overflow=overflows,
)
def test_int64_inputs_match_the_exact_oracle(
    values: list[int], fmt: FixedFormat, rounding: str, overflow: str
) -> None:
    got = quantize(np.array(values, dtype=np.int64), fmt, rounding, overflow)
    assert got.stored.tolist() == [quantize_exact(v, fmt, rounding, overflow) for v in values]


def _fits(x: float, fmt: FixedFormat, rounding: str) -> bool:
    ideal = round_exact(Fraction(x) * Fraction(2) ** fmt.fraction_length, rounding)
    return fmt.min_int <= ideal <= fmt.max_int


@PROPERTY
@given(data=st.data(), fmt=formats(), rounding=st.sampled_from(["nearest", "round", "convergent"]))
def test_nearest_modes_err_by_at_most_half_an_lsb(
    data: st.DataObject, fmt: FixedFormat, rounding: str
) -> None:
    x = data.draw(values_near(fmt))
    if not _fits(x, fmt, rounding):
        return
    q = int(quantize(x, fmt, rounding).stored)
    assert (
        abs(value_exact(q, fmt) - Fraction(x))
        <= Fraction(1, 2) * Fraction(2) ** -fmt.fraction_length
    )


@PROPERTY
@given(data=st.data(), fmt=formats())
def test_floor_below_ceil_above(data: st.DataObject, fmt: FixedFormat) -> None:
    x = data.draw(values_near(fmt))
    if not (_fits(x, fmt, "floor") and _fits(x, fmt, "ceil")):
        return
    low = value_exact(int(quantize(x, fmt, "floor").stored), fmt)
    high = value_exact(int(quantize(x, fmt, "ceil").stored), fmt)
    assert low <= Fraction(x) <= high
    assert high - low in (0, Fraction(2) ** -fmt.fraction_length)


@PROPERTY
@given(data=st.data(), fmt=formats(), rounding=roundings)
def test_wrap_is_congruent_modulo_two_to_the_word_length(
    data: st.DataObject, fmt: FixedFormat, rounding: str
) -> None:
    x = data.draw(values_near(fmt))
    wrapped = int(quantize(x, fmt, rounding, "wrap").stored)
    ideal = round_exact(Fraction(x) * Fraction(2) ** fmt.fraction_length, rounding)
    assert (wrapped - ideal) % (1 << fmt.word_length) == 0
    assert fmt.min_int <= wrapped <= fmt.max_int


@PROPERTY
@given(values=st.lists(finite_floats, min_size=1, max_size=6), rounding=roundings)
def test_quantize_is_monotonic(values: list[float], rounding: str) -> None:
    fmt = FixedFormat(16, 6)
    ordered = sorted(values)
    stored = quantize(np.array(ordered), fmt, rounding).stored
    assert np.all(np.diff(stored) >= 0)


@PROPERTY
@given(data=st.data(), fmt=formats(), rounding=roundings, overflow=overflows)
def test_grid_values_round_trip(
    data: st.DataObject, fmt: FixedFormat, rounding: str, overflow: str
) -> None:
    """A value already on fmt's grid comes back unchanged, in every mode."""
    q = data.draw(st.integers(fmt.min_int, fmt.max_int))
    value = value_exact(q, fmt)
    try:
        as_float = float(value)
    except OverflowError:
        return
    if Fraction(as_float) != value:
        return  # not a float64 (too many bits, or underflow): no float round trip
    assert int(quantize(as_float, fmt, rounding, overflow).stored) == q
