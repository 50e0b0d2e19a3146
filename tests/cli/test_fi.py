"""``eightbit fi`` through click's runner."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner, Result

from eightbit.cli import main


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["fi", *args])


def test_0269_shows_stored_integer_bits_resolution_and_value() -> None:
    result = run("0.0269")
    assert result.exit_code == 0, result.output
    for text in ("110", "01101110", "6E", "2^-12", "0.02685546875", "-4.453125e-05"):
        assert text in result.stdout


def test_json_is_the_documented_object() -> None:
    result = run("0.0269", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "word_length": 8,
        "fraction_length": 12,
        "signed": True,
        "rounding": "nearest",
        "overflow": "saturate",
        "values": [
            {
                "input": 0.0269,
                "stored_integer": 110,
                "bin": "01101110",
                "hex": "6E",
                "value": 0.02685546875,
                "error": -4.453125e-05,
            }
        ],
    }


def _stored(result: Result) -> list[int]:
    assert result.exit_code == 0, result.output
    return [row["stored_integer"] for row in json.loads(result.stdout)["values"]]


def test_pi_in_16_bits() -> None:
    result = run("3.14159265358979", "-w", "16", "--json")
    assert _stored(result) == [25736]
    assert json.loads(result.stdout)["fraction_length"] == 13


@pytest.mark.parametrize(
    "args",
    [
        ("-0.5", "--json"),  # a negative number is not taken for an option
        ("--json", "--", "-0.5"),  # '--' ends the options
        ("--json", "-.5"),
        ("-5e-1", "--word-length", "8", "--json"),
    ],
)
def test_negative_values(args: tuple[str, ...]) -> None:
    result = run(*args)
    assert _stored(result) == [-128]
    assert json.loads(result.stdout)["fraction_length"] == 8


def test_all_values_share_one_best_precision_format() -> None:
    result = run("0.1", "-3", "--json")
    payload = json.loads(result.stdout)
    assert payload["fraction_length"] == 5  # -3 needs 2 integer bits plus sign
    assert _stored(result) == [3, -96]


@pytest.mark.parametrize(
    ("args", "stored"),
    [
        (("1.0", "--fraction-length", "7"), [127]),
        (("1.0", "--fraction-length", "7", "--overflow", "wrap"), [-128]),
        (("0.75", "--fraction-length", "0", "--rounding", "floor"), [0]),
        (("-0.5", "--fraction-length", "0", "--rounding", "round"), [-1]),
        (("-0.5", "--fraction-length", "0", "--rounding", "convergent"), [0]),
        (("-1", "200", "--unsigned"), [0, 200]),
        (("1", "--fraction-length", "-2", "--rounding", "ceil"), [1]),
    ],
)
def test_options(args: tuple[str, ...], stored: list[int]) -> None:
    assert _stored(run(*args, "--json")) == stored


def test_unsigned_json_fields() -> None:
    payload = json.loads(run("200", "--unsigned", "--rounding", "zero", "--json").stdout)
    assert (payload["signed"], payload["rounding"], payload["word_length"]) == (False, "zero", 8)


def test_32_bit_rows_are_not_cut() -> None:
    result = run("0.1", "-w", "32")
    assert "01100110011001100110011001100110" in result.stdout  # 0.1 · 2^34, rounded
    assert "66666666" in result.stdout


def test_infinity_saturates_with_a_warning_and_stays_strict_json() -> None:
    result = run("inf", "0.5", "--json")
    assert result.exit_code == 0
    assert "warning: 1 infinite value(s) saturated" in result.stderr
    row = json.loads(result.stdout)["values"][0]
    assert (row["input"], row["stored_integer"], row["error"]) == ("inf", 127, "-inf")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("abc",), "VALUE 'abc' (position 1) is not a number"),
        (("1", "--wordlength", "8"), "VALUE '--wordlength' (position 2) is not a number"),
        (("nan",), "is NaN"),
        ((), "give at least one VALUE"),
        (("1", "-w", "70"), "'word_length' must be an integer in [2, 64]"),
        (("1", "-w", "1"), "'word_length' must be an integer in [2, 64]"),
        (("1", "-w", "x"), "--word-length must be an integer (got 'x')"),
        (("1", "--fraction-length", "1.5"), "--fraction-length must be an integer"),
        (("1", "--rounding", "nearst"), "'rounding' must be one of ['nearest'"),
        (("1", "--overflow", "clamp"), "'overflow' must be one of ['saturate', 'wrap']"),
        (("1", "--unsigned", "-w", "64"), "[2, 63] for unsigned formats"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: ")
    assert message in lines[0]
    assert "Traceback" not in result.output
