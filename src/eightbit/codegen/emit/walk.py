"""Loop nests over a tensor's elements, with each operand's offset per loop.

Element-wise ops (numpy broadcasting) and value-moving ops (Transpose, Slice, Pad, Resize
nearest) all read ``operand[base + Σ_k term_k(i_k)]`` while counting ``i`` over the output:
``term_k`` is ``i_k · stride`` or, where the move is not linear along an axis (reflect
padding, nearest-neighbour resize), a table of offsets indexed by ``i_k``. ``Walk.simplified``
drops loops of one iteration and merges neighbouring loops that every operand walks
contiguously, so a same-shape Add is one loop and a Transpose of (1, 7, 7, 16) two.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from eightbit.codegen.c import Code, signed_sum
from eightbit.codegen.emit.base import strides_of

Term = int | str  # a stride in elements, or the C name of an offset table


@dataclass(frozen=True)
class Walk:
    """``counts[k]`` iterations per loop; ``terms[j][k]`` and ``bases[j]`` per operand j."""

    counts: tuple[int, ...]
    terms: tuple[tuple[Term, ...], ...]
    bases: tuple[int, ...]

    def simplified(self) -> Walk:
        counts = list(self.counts)
        terms = [list(t) for t in self.terms]
        keep = [k for k, count in enumerate(counts) if count != 1]
        counts = [counts[k] for k in keep]
        terms = [[t[k] for k in keep] for t in terms]
        k = len(counts) - 2
        while k >= 0:
            inner = counts[k + 1]
            if all(_merges(t[k], t[k + 1], inner) for t in terms):
                counts[k : k + 2] = [counts[k] * inner]
                for t in terms:
                    t[k : k + 2] = [t[k + 1]]
            k -= 1
        return Walk(tuple(counts), tuple(tuple(t) for t in terms), self.bases)

    def index(self, operand: int, counters: Sequence[str]) -> str:
        base = self.bases[operand]
        parts = [(base < 0, str(abs(base)))] if base else []
        for counter, term in zip(counters, self.terms[operand], strict=True):
            if counter == "0":
                continue  # a loop of one iteration: offset tables start at 0
            if isinstance(term, str):
                parts.append((False, f"{term}[{counter}]"))
            elif term != 0:
                size = abs(term)
                parts.append((term < 0, counter if size == 1 else f"{counter} * {size}"))
        return signed_sum(parts)


def _merges(outer: Term, inner: Term, inner_count: int) -> bool:
    return isinstance(outer, int) and isinstance(inner, int) and outer == inner * inner_count


def broadcast_walk(out_shape: Sequence[int], operand_shapes: Sequence[Sequence[int]]) -> Walk:
    """The output (operand 0, contiguous) and each operand under numpy broadcasting."""
    rank = len(out_shape)
    terms: list[tuple[Term, ...]] = [strides_of(out_shape)]
    for shape in operand_shapes:
        aligned = (1,) * (rank - len(shape)) + tuple(shape)
        strides = strides_of(aligned)
        terms.append(tuple(0 if size == 1 else s for size, s in zip(aligned, strides, strict=True)))
    return Walk(tuple(out_shape), tuple(terms), (0,) * len(terms)).simplified()


@contextmanager
def walking(code: Code, walk: Walk) -> Iterator[list[str]]:
    """The loops of ``walk``; yields each operand's index expression inside them."""
    names = [f"i{k}" for k in range(len(walk.counts))]
    with code.loops(list(zip(names, walk.counts, strict=True))) as counters:
        yield [walk.index(j, counters) for j in range(len(walk.terms))]


def separable(indices: np.ndarray) -> tuple[int, list[np.ndarray]] | None:
    """``indices[i] = base + Σ_k f_k(i_k)``: (base, [f_k]) when it holds, else None."""
    if indices.size == 0:
        return None
    base = int(indices.reshape(-1)[0])
    parts = []
    total = np.full(indices.shape, base, dtype=np.int64)
    for axis in range(indices.ndim):
        along = [0] * indices.ndim
        along[axis] = slice(None)  # type: ignore[call-overload]
        part = indices[tuple(along)].astype(np.int64) - base
        shape = [1] * indices.ndim
        shape[axis] = indices.shape[axis]
        total = total + part.reshape(shape)
        parts.append(part)
    return (base, parts) if np.array_equal(total, indices) else None


def linear_stride(part: np.ndarray) -> int | None:
    """s when ``part[i] = i · s`` for every i, else None."""
    if part.size <= 1:
        return 0
    stride = int(part[1])
    return stride if np.array_equal(part, np.arange(part.size) * stride) else None
