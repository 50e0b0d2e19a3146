"""C99 text: identifiers, integer types and literals, const tables, and a code builder.

Everything the emitters write goes through these helpers, so the generated files share one
look: ``static const`` tables with a fixed number of values per line, loops indented by four
spaces, integer literals that are valid C for every int32 value (``INT32_MIN`` has no literal
of its own: ``-2147483648`` is a negated ``long``).
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from eightbit.errors import ModelError

# C types of the stored integers; int32 holds biases and requantization multipliers.
C_TYPES = {"int8": "int8_t", "uint8": "uint8_t", "int16": "int16_t", "int32": "int32_t"}
_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-(2**15), 2**15 - 1)}
_C_WORDS = (
    "auto break case char const continue default do double else enum extern float for goto "
    "if inline int long register restrict return short signed sizeof static struct switch "
    "typedef union unsigned void volatile while main"
)
# Functions GCC knows as built-ins: a static function of that name draws a warning (-Werror).
_C_LIBRARY = (
    "abort abs acos asin atan atan2 calloc ceil cos cosh div exit exp exp2 expm1 fabs floor "
    "fma fmax fmin fmod fprintf fputs free frexp labs ldexp llabs log log10 log1p log2 lrint "
    "malloc memchr memcmp memcpy memmove memset modf nearbyint pow printf putchar puts "
    "realloc remainder rint round scalbn sin sinh snprintf sprintf sqrt strcat strchr strcmp "
    "strcpy strlen strncmp strncpy tan tanh trunc"
)
_C_KEYWORDS = frozenset(_C_WORDS.split(" ")) | frozenset(_C_LIBRARY.split(" "))
_UNSAFE = re.compile(r"[^A-Za-z0-9]+")
_PER_LINE = 16


def c_type(dtype: str) -> str:
    """The C type of a stored integer type name (``"uint8"`` -> ``"uint8_t"``)."""
    if dtype not in C_TYPES:
        raise ModelError(f"generated C stores int8, uint8, int16 or int32 (got {dtype})")
    return C_TYPES[dtype]


def smallest_type(values: np.ndarray) -> str:
    """The narrowest of int8/uint8/int16/int32 that holds every value (for index tables)."""
    if values.size == 0:
        return "uint8"
    low, high = int(values.min()), int(values.max())
    for name in ("uint8", "int8", "int16"):
        bottom, top = _RANGES[name]
        if bottom <= low and high <= top:
            return name
    if low >= -(2**31) and high < 2**31:
        return "int32"
    raise ModelError(f"a table value does not fit int32 ([{low}, {high}])")


def literal(value: int) -> str:
    """A C literal of type int (or wider) for an int32 value."""
    value = int(value)
    if value == -(2**31):
        return "(-2147483647 - 1)"
    return str(value)


def identifier(name: str, taken: set[str], fallback: str = "tensor") -> str:
    """A C identifier for ``name``: unsafe characters as '_', unique within ``taken``.

    Leading underscores are dropped (reserved in C) and a leading digit gets a letter, so a
    node called ``/features/features.0/Conv`` becomes ``features_features_0_Conv``.
    """
    stem = _UNSAFE.sub("_", name).strip("_") or fallback
    if stem[0].isdigit():
        stem = f"n{stem}"
    if stem in _C_KEYWORDS or keyword.iskeyword(stem) or stem.lower().startswith("eb_"):
        stem = f"{stem}_"
    candidate, suffix = stem, 1
    while candidate in taken:
        suffix += 1
        candidate = f"{stem}_{suffix}"
    taken.add(candidate)
    return candidate


def shape_text(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ")"


@dataclass(frozen=True, eq=False)
class Table:
    """A ``static const`` array of a generated file: ``name`` is its C identifier."""

    name: str
    dtype: str
    values: np.ndarray
    comment: str = ""

    def definition(self) -> str:
        flat = np.asarray(self.values).reshape(-1)
        lines = [f"/* {self.comment} */"] if self.comment else []
        lines.append(f"static const {c_type(self.dtype)} {self.name}[{max(flat.size, 1)}] = {{")
        if flat.size == 0:
            lines.append("    0")  # C has no empty arrays; the value is never read
        for start in range(0, flat.size, _PER_LINE):
            chunk = ", ".join(literal(v) for v in flat[start : start + _PER_LINE])
            last = start + _PER_LINE >= flat.size
            lines.append(f"    {chunk}{'' if last else ','}")
        lines.append("};")
        return "\n".join(lines)

    @property
    def nbytes(self) -> int:
        return int(np.asarray(self.values).size) * np.dtype(self.dtype).itemsize


class Code:
    """Lines of C with the indentation of the block they are in."""

    def __init__(self, depth: int = 1) -> None:
        self.lines: list[str] = []
        self.depth = depth

    def line(self, text: str = "") -> None:
        self.lines.append(("    " * self.depth + text) if text else "")

    @contextmanager
    def block(self, head: str) -> Iterator[None]:
        """``head {`` ... ``}``, the body one level deeper."""
        self.line(f"{head} {{")
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            self.line("}")

    @contextmanager
    def loops(
        self, counters: Sequence[tuple[str, int]], keep: Sequence[str] = ()
    ) -> Iterator[list[str]]:
        """Nested ``for`` loops, one per (counter, count), outermost first.

        Yields the expression of each counter: its name, or ``"0"`` for a loop of one
        iteration, which is not written (the caller builds its indices from the yield)
        unless the counter is in ``keep`` (a table index that names it).
        """
        opened = 0
        names = []
        try:
            for counter, count in counters:
                if int(count) == 1 and counter not in keep:
                    names.append("0")
                    continue
                names.append(counter)
                self.line(f"for (int32_t {counter} = 0; {counter} < {int(count)}; ++{counter}) {{")
                self.depth += 1
                opened += 1
            yield names
        finally:
            for _ in range(opened):
                self.depth -= 1
                self.line("}")

    def text(self) -> str:
        return "\n".join(self.lines)


def linear(terms: Sequence[tuple[str, int]], constant: int = 0) -> str:
    """``oy * 2 - 1 + ky`` from [("oy", 2), ("ky", 1)] and -1: Σ counter · coefficient +
    constant, leaving out zero coefficients and counters that are ``"0"``."""
    parts = []
    for counter, coefficient in terms:
        if coefficient == 0 or counter == "0":
            continue
        size = abs(int(coefficient))
        parts.append((coefficient < 0, counter if size == 1 else f"{counter} * {size}"))
    if constant:
        parts.append((constant < 0, str(abs(int(constant)))))
    return signed_sum(parts)


def signed_sum(parts: Sequence[tuple[bool, str]]) -> str:
    """``a - b + c`` from (negative, term) pairs; ``"0"`` for none."""
    if not parts:
        return "0"
    negative, first = parts[0]
    text = f"-{first}" if negative else first
    for negative, term in parts[1:]:
        text += f" - {term}" if negative else f" + {term}"
    return text


def plus(pointer: str, offset: str) -> str:
    """``pointer + offset`` as C, or ``pointer`` for an offset of 0."""
    return pointer if offset == "0" else f"{pointer} + {offset}"
