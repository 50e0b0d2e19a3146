"""What an emitter receives and returns, and the pieces several emitters share.

An emitter turns one engine ``Step`` into a ``Layer``: the body of one C function named
after the ONNX node, the ``static const`` tables it reads (weights, biases, multipliers,
lookup tables), and the comment that states its shapes and integer parameters. The writer
puts the functions in execution order and passes each its tensors as pointers.

``Context`` gives an emitter the static shape and C type of every tensor and names its
tables. ``Store`` prints the one output stage every rescaling kernel shares (E.1), from the
``Requantization`` the engine prepared: never recomputed from a float scale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from eightbit.codegen.c import Code, Table, c_type, identifier, literal
from eightbit.codegen.integer_program import Interface
from eightbit.engine import Step
from eightbit.engine.kernels.requantize import Requantization, Rescale
from eightbit.fixed.requantize import MULTIPLIER_BITS

_LARGEST_SHIFT = 63


@dataclass(frozen=True)
class Argument:
    """A pointer parameter of a layer function: the tensor it points at and its C name."""

    tensor: str
    name: str
    writes: bool


@dataclass(frozen=True)
class Layer:
    """One generated C function (``body`` is its statements, indented one level).

    ``alias`` marks a step that moves nothing (a Reshape): its output may share its input's
    bytes, and the function copies only when the two live in different buffers.
    ``in_place`` lists the arguments the function may overwrite with its output (it reads
    element i before writing element i, and nothing else). ``checks`` says the function
    returns a status (an accumulator that Prepare could not bound).
    """

    arguments: tuple[Argument, ...]
    comment: tuple[str, ...]
    body: str
    tables: tuple[Table, ...] = ()
    alias: bool = False
    checks: bool = False
    in_place: tuple[int, ...] = ()


@dataclass(frozen=True, eq=False)
class Context:
    """Shapes and types for the emitters; ``prefix`` names the layer's tables."""

    interface: Interface
    prefix: str
    taken: set[str] = field(default_factory=set)  # C identifiers in use in the file
    tables: list[Table] = field(default_factory=list)

    def shape(self, tensor: str) -> tuple[int, ...]:
        return self.interface.shapes[tensor]

    def dtype(self, tensor: str) -> str:
        return self.interface.dtypes[tensor]

    def ctype(self, tensor: str) -> str:
        return c_type(self.dtype(tensor))

    def size(self, tensor: str) -> int:
        return int(np.prod(self.shape(tensor), dtype=np.int64))

    def table(self, suffix: str, dtype: str, values: np.ndarray, comment: str = "") -> str:
        """Register a ``static const`` table of this layer; its C name."""
        name = identifier(f"{self.prefix}_{suffix}", self.taken)
        self.tables.append(Table(name, dtype, np.asarray(values).astype(np.int64), comment))
        return name

    def layer(
        self,
        arguments: Sequence[Argument],
        comment: Sequence[str],
        body: str,
        *,
        alias: bool = False,
        checks: bool = False,
        in_place: Sequence[int] = (),
    ) -> Layer:
        return Layer(
            tuple(arguments),
            tuple(comment),
            body,
            tuple(self.tables),
            alias,
            checks,
            tuple(in_place),
        )


Emitter = Callable[[Step, Context], Layer]


def shifts(rescale: Rescale) -> np.ndarray:
    """t = 24 − shift per entry (in [−7, 63]: negative shifts left), capped at 63 as the
    engine caps it (E.2)."""
    return np.minimum(MULTIPLIER_BITS - np.asarray(rescale.shift, dtype=np.int64), _LARGEST_SHIFT)


@dataclass(frozen=True)
class Store:
    """C expressions for ``clamp(z + rescale(acc))``, per tensor or indexed per channel."""

    multiplier: str
    shift: str
    zero: int
    low: int
    high: int
    text: str  # for the layer comment
    wide: bool = False  # a 16x8 accumulator: eb_requantize_wide (E.13a)

    def hoisted(self, code: Code) -> Store:
        """Declare a per-channel multiplier and shift once per channel (``m``, ``t``)."""
        multiplier, shift = self.multiplier, self.shift
        if multiplier.endswith("]"):
            code.line(f"const int32_t m = {multiplier};")
            multiplier = "m"
        if shift.endswith("]"):
            code.line(f"const int32_t t = {shift};")
            shift = "t"
        return Store(multiplier, shift, self.zero, self.low, self.high, self.text, self.wide)

    def __call__(self, acc: str) -> str:
        function = "eb_requantize_wide" if self.wide else "eb_requantize"
        return (
            f"{function}({acc}, {self.multiplier}, {self.shift}, {literal(self.zero)}, "
            f"{literal(self.low)}, {literal(self.high)})"
        )


def rescale_terms(rescale: Rescale, context: Context, index: str, name: str) -> tuple[str, str]:
    """(multiplier, t) as literals for one pair, or table reads ``name_multiplier[index]``."""
    multiplier = np.asarray(rescale.multiplier, dtype=np.int64).reshape(-1)
    t = shifts(rescale).reshape(-1)
    # One value for every channel (power-of-two scales give M = 2^23 throughout): a literal.
    if np.all(multiplier == multiplier[0]):
        m_term = literal(int(multiplier[0]))
    else:
        table = context.table(f"{name}multiplier", "int32", multiplier, "multipliers M")
        m_term = f"{table}[{index}]"
    if np.all(t == t[0]):
        t_term = literal(int(t[0]))
    else:
        table = context.table(f"{name}shift", "int8", t, "right shifts t = 24 - shift")
        t_term = f"{table}[{index}]"
    return m_term, t_term


def store(requantization: Requantization, context: Context, channel: str = "c") -> Store:
    """The output stage of ``requantization``; ``channel`` indexes per-channel tables."""
    multiplier, shift = rescale_terms(requantization.rescale, context, channel, "")
    per_channel = [term for term in (multiplier, shift) if term.endswith("]")]
    text = f"M = {multiplier}, t = {shift}"
    if per_channel:
        text += f" per channel ({np.size(requantization.rescale.multiplier)} channels)"
    summary = (
        f"requantize: q = clamp({requantization.zero_point} + "
        "round_half_even(round24(round24(acc) * M) / 2^t), "
        f"{requantization.low}, {requantization.high}); {text}"
    )
    return Store(
        multiplier,
        shift,
        requantization.zero_point,
        requantization.low,
        requantization.high,
        summary,
        requantization.rescale.wide,
    )


def tensor_line(role: str, name: str, context: Context, extra: str = "") -> str:
    """``x: (1, 16, 14, 14) uint8 '<tensor name>'`` for a layer comment."""
    shape = ", ".join(str(d) for d in context.shape(name))
    tail = f", {extra}" if extra else ""
    return f"{role}: ({shape}) {context.dtype(name)}{tail}  [{name}]"


def zero_text(params_zero: int) -> str:
    return f"zero point {params_zero}"


def strides_of(shape: Sequence[int]) -> tuple[int, ...]:
    """Row-major strides (in elements) of ``shape``."""
    strides, running = [], 1
    for size in reversed(shape):
        strides.append(running)
        running *= int(size)
    return tuple(reversed(strides))


def as_2d(values: Sequence[int], fill: int) -> tuple[int, int]:
    """A (height, width) pair from 1-D or 2-D values: a 1-D window has height ``fill``."""
    pair = (fill, *values) if len(values) == 1 else tuple(values)
    if len(pair) != 2:
        raise ValueError(f"expected one or two spatial values (got {list(values)})")
    return int(pair[0]), int(pair[1])


def centered(value: str, zero: int) -> str:
    """``(int32_t)value - zero`` as C, leaving out a zero point of 0."""
    return f"(int32_t){value}" if zero == 0 else f"((int32_t){value} - {literal(zero)})"
