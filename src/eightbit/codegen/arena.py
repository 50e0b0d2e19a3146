"""Static memory for the tensors between layers: lifetimes, offsets, and the lower bound.

Every tensor a step writes lives from that step to the last step that reads it. Tensors
whose lifetimes do not overlap may share bytes. Offsets are assigned greedily by size, as
TensorFlow Lite Micro's ``GreedyMemoryPlanner`` does: the largest tensor first, each at the
lowest offset where it overlaps no placed tensor that is alive at the same time.

No placement can use fewer bytes than the largest total of tensors alive at one step
(``lower_bound``): those all need distinct bytes at once. The plan states both numbers.
A tensor given as an alias (a Reshape's output is its input's bytes) shares its source's
buffer, which then lives until the alias is last read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

# Offsets are multiples of 4 bytes: word loads on a Cortex-M stay aligned.
ALIGNMENT = 4


@dataclass(frozen=True)
class Buffer:
    """A run of bytes needed from step ``first`` to step ``last`` (inclusive)."""

    name: str
    size: int
    first: int
    last: int

    def overlaps(self, other: Buffer) -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass(frozen=True)
class ArenaPlan:
    offsets: Mapping[str, int]  # tensor -> byte offset (aliases point at their source's)
    size: int  # bytes of the arena, aligned
    lower_bound: int  # the most bytes alive at once
    buffers: tuple[Buffer, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "offsets", MappingProxyType(dict(self.offsets)))


def lifetimes(
    steps: Sequence[tuple[Sequence[str], Sequence[str]]],
    sizes: Mapping[str, int],
    aliases: Mapping[str, str],
) -> list[Buffer]:
    """One buffer per tensor of ``sizes`` (or per alias group), over (inputs, outputs) steps.

    ``aliases`` maps a tensor to the tensor whose bytes it reuses (which may itself be an
    alias). Tensors not in ``sizes`` (the caller's input and output buffers) are ignored.
    """

    def root(name: str) -> str:
        while name in aliases:
            name = aliases[name]
        return name

    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for index, (inputs, outputs) in enumerate(steps):
        for name in (*inputs, *outputs):
            source = root(name)
            if source not in sizes:
                continue
            first.setdefault(source, index)
            last[source] = index
    return [Buffer(name, sizes[name], first[name], last[name]) for name in first]


def plan_arena(buffers: Iterable[Buffer], alignment: int = ALIGNMENT) -> ArenaPlan:
    """Greedy-by-size offsets for ``buffers``; the arena size and its lower bound."""
    ordered = sorted(buffers, key=lambda b: (-b.size, b.first, b.name))
    placed: list[tuple[int, Buffer]] = []
    offsets: dict[str, int] = {}
    for buffer in ordered:
        candidate = 0
        busy = sorted(((o, b) for o, b in placed if b.overlaps(buffer)), key=lambda pair: pair[0])
        for offset, other in busy:
            if candidate + buffer.size <= offset:
                break  # the gap before ``other`` holds it
            candidate = max(candidate, _aligned(offset + other.size, alignment))
        offsets[buffer.name] = candidate
        placed.append((candidate, buffer))
    size = max((o + b.size for o, b in placed), default=0)
    return ArenaPlan(offsets, _aligned(size, alignment), lower_bound(ordered), tuple(ordered))


def lower_bound(buffers: Sequence[Buffer]) -> int:
    """max over steps of the bytes of the buffers alive at that step."""
    if not buffers:
        return 0
    steps = range(min(b.first for b in buffers), max(b.last for b in buffers) + 1)
    return max(sum(b.size for b in buffers if b.first <= t <= b.last) for t in steps)


def _aligned(value: int, alignment: int) -> int:
    return -(-value // alignment) * alignment
