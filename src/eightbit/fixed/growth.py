"""Result formats of exact (full-precision) arithmetic (docs/numerics.md §1.5).

Each function returns the smallest format in which every possible result of the operation
is representable, so the operation on stored integers needs no rounding and cannot
overflow. A result wider than int64 can hold is refused.
"""

from __future__ import annotations

from eightbit.errors import FixedPointError
from eightbit.fixed.format import (
    MAX_SIGNED_WORD_LENGTH,
    MAX_UNSIGNED_WORD_LENGTH,
    FixedFormat,
)


def _signed_integer_length(fmt: FixedFormat) -> int:
    """Integer bits the format's values need as a signed number (one more when unsigned)."""
    return fmt.integer_length + (0 if fmt.signed else 1)


def _grown(operation: str, word_length: int, fraction_length: int, signed: bool) -> FixedFormat:
    top = MAX_SIGNED_WORD_LENGTH if signed else MAX_UNSIGNED_WORD_LENGTH
    if word_length > top:
        kind = "signed" if signed else "unsigned"
        raise FixedPointError(
            f"the exact {operation} needs a {word_length}-bit {kind} word, but stored integers "
            f"are int64 (at most {top} bits {kind}); cast an operand to a narrower format first"
        )
    return FixedFormat(word_length, fraction_length, signed)


def _integer_length_of_sum_or_difference(a: FixedFormat, b: FixedFormat) -> int:
    if not a.signed and not b.signed:
        return max(a.integer_length, b.integer_length) + 1
    return max(_signed_integer_length(a), _signed_integer_length(b)) + 1


def sum_format(a: FixedFormat, b: FixedFormat) -> FixedFormat:
    """Format of a + b: fraction length max(f_a, f_b), one integer bit more than the wider."""
    fraction_length = max(a.fraction_length, b.fraction_length)
    integer_length = _integer_length_of_sum_or_difference(a, b)
    signed = a.signed or b.signed
    return _grown(
        f"sum of {a.name} and {b.name}", integer_length + fraction_length, fraction_length, signed
    )


def difference_format(a: FixedFormat, b: FixedFormat) -> FixedFormat:
    """Format of a - b: as the sum, but always signed."""
    fraction_length = max(a.fraction_length, b.fraction_length)
    integer_length = _integer_length_of_sum_or_difference(a, b)
    return _grown(
        f"difference of {a.name} and {b.name}",
        integer_length + fraction_length,
        fraction_length,
        True,
    )


def product_format(a: FixedFormat, b: FixedFormat) -> FixedFormat:
    """Format of a * b: word length w_a + w_b, fraction length f_a + f_b."""
    return _grown(
        f"product of {a.name} and {b.name}",
        a.word_length + b.word_length,
        a.fraction_length + b.fraction_length,
        a.signed or b.signed,
    )


def negation_format(a: FixedFormat) -> FixedFormat:
    """Format of -a: signed, one bit wider, so that -min_int is representable."""
    return _grown(f"negation of {a.name}", a.word_length + 1, a.fraction_length, True)
