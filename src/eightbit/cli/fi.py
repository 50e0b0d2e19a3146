"""``eightbit fi``: show numbers as fixed-point values (MATLAB ``fi``), one shared format."""

from __future__ import annotations

import json
import math
import warnings
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any

import click
import numpy as np
from rich.console import Console, JustifyMethod
from rich.table import Table

from eightbit import fixed
from eightbit.errors import ConfigError
from eightbit.fixed.format import scaled_float, scaled_text
from eightbit.fixed.modes import check_overflow, check_rounding
from eightbit.serialize import json_float

# Wide enough that a 32-bit row is never cut when the output is not a terminal.
_PIPE_WIDTH = 160
_COLUMNS: tuple[tuple[str, JustifyMethod], ...] = (
    ("input", "right"),
    ("stored integer", "right"),
    ("bits", "left"),
    ("hex", "left"),
    ("value", "right"),
    ("error", "right"),
)
# Decimal exponents past float64's range (about 1e±308, subnormals to 1e-324).
_EXACT_EXPONENT_LIMIT = 400


def _parse_values(texts: tuple[str, ...]) -> list[Decimal]:
    """VALUEs as exact decimals (the error column is measured against what was typed)."""
    if not texts:
        raise ConfigError("give at least one VALUE, for example: eightbit fi 0.0269")
    numbers = []
    for position, text in enumerate(texts, start=1):
        try:
            number = Decimal(text.strip())
        except InvalidOperation:
            raise ConfigError(
                f"VALUE {text!r} (position {position}) is not a number; give decimal numbers "
                "such as 0.0269 or -1e-3 (see eightbit fi --help for the options)"
            ) from None
        if number.is_nan():
            raise ConfigError(
                f"VALUE {text!r} (position {position}) is NaN; fixed-point numbers have no NaN"
            )
        numbers.append(number)
    return numbers


def _parse_int(text: str, option: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{option} must be an integer (got {text!r})") from None


def _exact(typed: Decimal) -> Fraction | None:
    """The typed VALUE as an exact fraction; None when it lies far past float64's range."""
    if not typed.is_finite() or abs(typed.adjusted()) > _EXACT_EXPONENT_LIMIT:
        return None
    return Fraction(typed)


def _error(stored: int, fraction_length: int, typed: Decimal) -> float:
    """value - typed, computed exactly and rounded once to float64.

    The value is taken from the stored integer, not from its float64: -2^1024, the value
    of -1.7976931348623157e308 in 8 bits, is -inf as a float but 2^970 from the input.
    """
    value = Fraction(stored) * Fraction(2) ** -fraction_length
    exact = _exact(typed)
    if exact is None:
        # Beyond float64 the typed value reads as 0 or inf; an exact difference would only
        # cost time to round to the same result.
        return float(scaled_float(stored, fraction_length)) - float(typed)
    difference = value - exact
    try:
        return float(difference)
    except OverflowError:
        return math.inf if difference > 0 else -math.inf


def _rows(typed: list[Decimal], result: fixed.FixedArray) -> list[dict[str, Any]]:
    values = result.values()
    fraction_length = result.format.fraction_length
    return [
        {
            "input": float(number),
            "stored_integer": int(q),
            "bin": str(bits),
            "hex": str(digits),
            "value": float(value),
            "value_text": scaled_text(int(q), fraction_length),
            "error": _error(int(q), fraction_length, number),
        }
        for number, q, bits, digits, value in zip(
            typed, result.stored, result.bin(), result.hex(), values, strict=True
        )
    ]


def _outside(typed: list[Decimal], fmt: fixed.FixedFormat) -> int:
    """How many finite VALUEs lie outside the format's range (saturated or wrapped)."""
    low = Fraction(fmt.min_int) * Fraction(2) ** -fmt.fraction_length
    high = Fraction(fmt.max_int) * Fraction(2) ** -fmt.fraction_length
    count = 0
    for number in typed:
        exact = _exact(number)
        if exact is None:  # past float64: outside every range whose ends are not
            exact = Fraction(float(number)) if math.isfinite(float(number)) else None
        if exact is not None and not low <= exact <= high:
            count += 1
    return count


def _print_table(rows: list[dict[str, Any]], summary: str) -> None:
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = max(console.width, _PIPE_WIDTH)
    table = Table()
    for name, justify in _COLUMNS:
        table.add_column(name, justify=justify, no_wrap=True)
    for row in rows:
        table.add_row(
            repr(row["input"]),
            str(row["stored_integer"]),
            row["bin"],
            row["hex"],
            row["value_text"],
            repr(row["error"]),
        )
    console.print(table)
    console.print(summary, markup=False)


@click.command(context_settings={"ignore_unknown_options": True})
@click.argument("values", nargs=-1)
@click.option(
    "-w", "--word-length", default="8", metavar="W", show_default=True, help="Bits per word."
)
@click.option(
    "--fraction-length",
    default=None,
    metavar="F",
    help="Fraction bits (may be negative or exceed W). Default: best precision over all VALUEs.",
)
@click.option("--unsigned", is_flag=True, help="Unsigned words (default: signed).")
@click.option(
    "--rounding",
    default="nearest",
    metavar="MODE",
    show_default=True,
    help=f"One of {', '.join(fixed.ROUNDING_MODES)}.",
)
@click.option(
    "--overflow",
    default="saturate",
    metavar="MODE",
    show_default=True,
    help=f"One of {', '.join(fixed.OVERFLOW_MODES)}.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of a table.")
def fi(
    values: tuple[str, ...],
    word_length: str,
    fraction_length: str | None,
    unsigned: bool,
    rounding: str,
    overflow: str,
    as_json: bool,
) -> None:
    """Show VALUEs as fixed-point numbers sharing one format (MATLAB fi semantics).

    VALUEs are read as float64 numbers; the error column is the represented value minus the
    VALUE as typed. Negative values work as they are (eightbit fi -0.5 0.25); '--' also
    ends the options (eightbit fi --json -- -0.5).
    """
    typed = _parse_values(values)
    words = _parse_int(word_length, "--word-length")
    fraction_bits = (
        None if fraction_length is None else _parse_int(fraction_length, "--fraction-length")
    )
    rounding_mode, overflow_mode = check_rounding(rounding), check_overflow(overflow)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", fixed.FixedPointWarning)
        result = fixed.fi(
            np.array([float(number) for number in typed], dtype=np.float64),
            word_length=words,
            fraction_length=fraction_bits,
            signed=not unsigned,
            rounding=rounding_mode,
            overflow=overflow_mode,
        )
    for warning in caught:
        click.echo(f"warning: {warning.message}", err=True)
    fmt = result.format
    outside = _outside(typed, fmt)
    if outside:
        done = "saturated to" if overflow_mode == "saturate" else "wrapped around"
        click.echo(
            f"warning: {outside} value(s) outside the range of {fmt.name}, {done} its limits",
            err=True,
        )
    rows = _rows(typed, result)
    if as_json:
        payload = {
            "word_length": fmt.word_length,
            "fraction_length": fmt.fraction_length,
            "signed": fmt.signed,
            "rounding": rounding_mode,
            "overflow": overflow_mode,
            "values": [
                {
                    key: json_float(v) if isinstance(v, float) else v
                    for key, v in row.items()
                    if key != "value_text"
                }
                for row in rows
            ],
        }
        click.echo(json.dumps(payload, allow_nan=False))
        return
    _print_table(rows, f"{fmt}; rounding {rounding_mode}, overflow {overflow_mode}")
