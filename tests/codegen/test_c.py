"""The C text helpers: identifiers that compile, index expressions, table types."""

from __future__ import annotations

import numpy as np
import pytest

from eightbit.codegen.c import Table, identifier, linear, literal, smallest_type


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("/features/features.0/Conv", "features_features_0_Conv"),
        ("1x1", "n1x1"),
        ("", "tensor"),
        ("int", "int_"),  # a keyword
        ("exp", "exp_"),  # a GCC built-in: a static exp() would draw a warning
        ("eb_requantize", "eb_requantize_"),  # the runtime's prefix
    ],
)
def test_identifiers_are_valid_and_free(name: str, expected: str) -> None:
    assert identifier(name, set()) == expected


def test_identifiers_are_unique() -> None:
    taken: set[str] = set()
    assert [identifier("a.b", taken), identifier("a/b", taken), identifier("a_b", taken)] == [
        "a_b",
        "a_b_2",
        "a_b_3",
    ]


def test_linear_expressions_read_like_arithmetic() -> None:
    assert linear([("oy", 2), ("ky", 1)], -1) == "oy * 2 + ky - 1"
    assert linear([("0", 5), ("i", -2)], 29) == "-i * 2 + 29"
    assert linear([("n", 0)]) == "0"
    assert literal(-(2**31)) == "(-2147483647 - 1)"


def test_tables_take_the_narrowest_type_and_print_every_value() -> None:
    assert smallest_type(np.array([0, 255])) == "uint8"
    assert smallest_type(np.array([-1, 127])) == "int8"
    assert smallest_type(np.array([-1, 200])) == "int16"
    assert smallest_type(np.array([0, 40000])) == "int32"
    values = np.arange(-20, 20)
    text = Table("t", "int8", values, "why").definition()
    assert text.startswith("/* why */\nstatic const int8_t t[40] = {")
    body = text[text.index("{") + 1 : text.rindex("}")]
    assert [int(v) for v in body.replace("\n", " ").split(",")] == values.tolist()
