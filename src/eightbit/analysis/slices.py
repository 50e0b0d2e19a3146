"""Per-slice and per-part verdicts of one output, float vs int8 (docs/numerics.md §A.9).

A whole-tensor SQNR is ruled by the largest-magnitude values of an output: a part that
int8 squeezed to zero vanishes in it. ``SliceSums`` accumulates, batch by batch, the sums
of every slice along every non-sample axis (Σr², Σ(r−q)², min and max of r and of q), so
the SQNR of each slice and of each contiguous part along an axis is a sum away. The
verdict (``SliceVerdict``) names the worst slice along the judged axes (axis 1 and the
last axis), the SQNR of each part where the output is a Concat of parts, and every
collapsed slice: int8 values that carry no signal (§A.9).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from eightbit.analysis.metrics import json_number, sqnr_from_sums
from eightbit.ops.joined_axis import joining_concat, static_size
from eightbit.ops.probability import is_probability
from eightbit.ops.spatial import spatial_axes
from eightbit.serialize import to_dict

if TYPE_CHECKING:
    from eightbit.graph import Graph

# A slice or part at or below this SQNR is collapsed: its int8 error is as large as its
# signal, whatever its values (§A.9).
COLLAPSE_DB = 0.0
# The worst slice of every output must reach this SQNR (§I.9): 10 dB is an error of a
# third of the signal's RMS, where a detector's scores or a regressor's values are still
# ordered as in float; the target for every zoo model is the same 10 dB.
SAFETY_FLOOR_DB = 10.0
# A probability is read on the 8-bit grid of [0, 1]: its step (A.11).
PROBABILITY_STEP = 1 / 255
# A probability slice whose mean square is below this is silent (A.11): the rounding noise
# of the ideal 8-bit [0, 1] grid, Δ²/12, is already more than the floor allows it.
SILENT_MEAN_SQUARE = 10 ** (SAFETY_FLOOR_DB / 10) * PROBABILITY_STEP**2 / 12


@dataclass(frozen=True)
class Part:
    """A contiguous block ``[start, stop)`` of an output along ``axis`` (a Concat input)."""

    name: str
    axis: int
    start: int
    stop: int


@dataclass(frozen=True)
class Probability:
    """Slices of an output that hold probabilities in [0, 1] (A.11): along ``axis`` those
    in ``[start, stop)`` (a Concat part), or every slice when ``axis`` is None."""

    axis: int | None = None
    start: int = 0
    stop: int = 0

    def covers(self, axis: int, index: int) -> bool:
        return self.axis is None or (self.axis == axis and self.start <= index < self.stop)


@dataclass(frozen=True)
class PartVerdict:
    name: str
    axis: int
    start: int
    stop: int
    sqnr_db: float
    collapsed: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "axis": self.axis,
            "start": self.start,
            "stop": self.stop,
            "sqnr_db": json_number(self.sqnr_db),
            "collapsed": self.collapsed,
        }


@dataclass(frozen=True)
class SliceVerdict:
    """The worst slice of an output, its collapsed slices and its parts (§A.9).

    ``worst_axis``/``worst_index``: where the worst slice is (None for an output with no
    axis besides the samples, judged whole). ``collapsed``: (axis, index) of every
    collapsed slice along the judged axes; ``slices``: how many slices were judged.
    ``sqnrs``: (axis, SQNR of every slice along it) per judged axis, for the report's
    chart; not in ``to_dict`` (its size is the output's dimensions). ``silent``: how many
    probability slices carried too little signal to be judged (A.11); they are neither
    the worst slice nor collapsed.
    """

    worst_sqnr_db: float
    worst_axis: int | None
    worst_index: int | None
    slices: int
    collapsed: tuple[tuple[int, int], ...]
    parts: tuple[PartVerdict, ...] = ()
    sqnrs: tuple[tuple[int, tuple[float, ...]], ...] = ()
    silent: int = 0

    @property
    def has_collapse(self) -> bool:
        return bool(self.collapsed) or any(part.collapsed for part in self.parts)

    def describe_collapse(self) -> str:
        """One line naming the collapsed slices and parts (empty when none)."""
        texts = []
        collapsed_parts = [part for part in self.parts if part.collapsed]
        if collapsed_parts:
            names = ", ".join(f"{p.name!r} [{p.start}:{p.stop}]" for p in collapsed_parts)
            texts.append(f"part(s) {names} along axis {collapsed_parts[0].axis}")
        if self.collapsed:
            shown = ", ".join(f"{index}" for _, index in self.collapsed[:8])
            more = f" and {len(self.collapsed) - 8} more" if len(self.collapsed) > 8 else ""
            texts.append(
                f"{len(self.collapsed)} of {self.slices} slice(s) (axis "
                f"{self.collapsed[0][0]}: {shown}{more})"
            )
        return "; ".join(texts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "worst_sqnr_db": json_number(self.worst_sqnr_db),
            "worst_axis": self.worst_axis,
            "worst_index": self.worst_index,
            "slices": self.slices,
            "silent": self.silent,
            "collapsed": [list(entry) for entry in self.collapsed],
            "parts": [part.to_dict() for part in self.parts],
        }


# A finding's levels: an error fails the thresholds (§A.8); a warning is only shown.
ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """Something a user must see about the int8 model: ``level`` ``ERROR`` or ``WARNING``;
    ``output``: the output it concerns (empty: the whole model)."""

    level: str
    output: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return to_dict(self)

    def line(self) -> str:
        """The finding as printed: its level, then its message."""
        return f"{self.level.upper()}: {self.message}"


def collapse_finding(output: str, verdict: SliceVerdict) -> Finding:
    """The error-level finding of an output with collapsed slices or parts (§A.9)."""
    return Finding(
        ERROR,
        output,
        f"int8 collapsed {verdict.describe_collapse()} of output {output!r}: their int8 "
        "values carry no signal (constant while the float values vary, or SQNR <= 0 dB)",
    )


def judged_axes(ndim: int) -> tuple[int, ...]:
    """Axes judged slice by slice: axis 1 (channels first, features, classes) and the last
    axis (channels last), for an output with samples on axis 0 (§A.9)."""
    if ndim < 2:
        return ()
    return tuple(dict.fromkeys((1, ndim - 1)))


def score_axes(probabilities: Sequence[Probability]) -> tuple[int, ...]:
    """The axis along which an output joins probability parts with others (a detector's
    scores beside its box coordinates, §A.9): its slices are the features of a detection,
    and the output is judged along it alone; the other axis holds positions (anchors),
    whose slices are quiet boxes, not features. Empty for any other output."""
    return tuple(dict.fromkeys(p.axis for p in probabilities if p.axis is not None))


class SliceSums:
    """Per-slice sums along every non-sample axis, accumulated over batches (eq. A.9)."""

    def __init__(self) -> None:
        self.signal: list[np.ndarray] = []
        self.noise: list[np.ndarray] = []
        self.ref_low: list[np.ndarray] = []
        self.ref_high: list[np.ndarray] = []
        self.int8_low: list[np.ndarray] = []
        self.int8_high: list[np.ndarray] = []
        self.ndim: int | None = None
        self.varying = False
        self.rows = 0

    def update(self, reference: np.ndarray, quantized: np.ndarray) -> None:
        ref = np.asarray(reference, dtype=np.float64)
        out = np.asarray(quantized, dtype=np.float64)
        if self.varying or ref.size == 0 or ref.shape != out.shape:
            return  # the whole-tensor metrics already refuse mismatched shapes
        if self.ndim is None:
            self.ndim = ref.ndim
        elif self._sizes() != ref.shape[1:]:
            # A shape that changes between batches (a sequence length, a detection count)
            # has no fixed slices: the output is judged whole, as before §A.9.
            self.varying = True
            return
        self.rows += ref.shape[0]
        squared, error = ref * ref, (ref - out) ** 2
        for axis in range(1, ref.ndim):
            others = tuple(a for a in range(ref.ndim) if a != axis)
            values = (
                squared.sum(axis=others),
                error.sum(axis=others),
                ref.min(axis=others),
                ref.max(axis=others),
                out.min(axis=others),
                out.max(axis=others),
            )
            self._accumulate(axis - 1, values)

    def merge(self, batch: SliceSums) -> None:
        """Fold in the sums of one later batch as ``update`` would have (§S.2)."""
        if self.varying or batch.ndim is None:
            return
        if batch.varying:
            self.varying = True
            return
        if self.ndim is None:
            self.ndim = batch.ndim
        elif self._sizes() != batch._sizes():
            self.varying = True
            return
        self.rows += batch.rows
        stores = ("signal", "noise", "ref_low", "ref_high", "int8_low", "int8_high")
        for position in range(len(batch.signal)):
            # Copies: the first batch's arrays become the running sums, added to in place.
            values = tuple(np.array(getattr(batch, store)[position]) for store in stores)
            self._accumulate(position, values)

    def _sizes(self) -> tuple[int, ...]:
        return tuple(len(values) for values in self.signal)

    def _accumulate(self, position: int, values: tuple[np.ndarray, ...]) -> None:
        stores = (
            self.signal,
            self.noise,
            self.ref_low,
            self.ref_high,
            self.int8_low,
            self.int8_high,
        )
        if len(self.signal) <= position:
            for store, value in zip(stores, values, strict=True):
                store.append(value)
            return
        self.signal[position] += values[0]
        self.noise[position] += values[1]
        for store, value, pick in zip(
            stores[2:], values[2:], (np.minimum, np.maximum, np.minimum, np.maximum), strict=True
        ):
            store[position] = pick(store[position], value)

    def verdict(
        self,
        parts: Sequence[Part] = (),
        probabilities: Sequence[Probability] = (),
        spatial: Sequence[int] = (),
    ) -> SliceVerdict | None:
        """The worst slice, collapsed slices and part verdicts, silent probability slices
        left out (A.11), and no slice along a ``spatial`` axis (a map's rows and columns,
        ``output_spatial_axes``); None before any batch."""
        if self.varying or self.ndim is None or self.ndim < 2 or not self.signal:
            return None
        worst: tuple[float, int | None, int | None] = (math.inf, None, None)
        collapsed: list[tuple[int, int]] = []
        by_axis: list[tuple[int, tuple[float, ...]]] = []
        count = silent = 0
        axes = score_axes(probabilities) or judged_axes(self.ndim)
        for axis in (a for a in axes if a not in spatial):
            sqnrs = self._slice_sqnrs(axis)
            by_axis.append((axis, tuple(float(value) for value in sqnrs)))
            quiet = self._silent(axis, probabilities)
            flat = self._collapsed(axis, sqnrs)
            collapsed += [(axis, int(index)) for index in flat if not quiet[index]]
            count += len(sqnrs)
            silent += int(quiet.sum())
            judged = np.where(quiet, math.inf, sqnrs)
            index = int(np.argmin(judged))
            if judged[index] < worst[0]:
                worst = (float(judged[index]), axis, index)
        return SliceVerdict(
            worst_sqnr_db=worst[0],
            worst_axis=worst[1],
            worst_index=worst[2],
            slices=count,
            collapsed=tuple(collapsed),
            parts=tuple(self._part(part, probabilities) for part in parts if self._fits(part)),
            sqnrs=tuple(by_axis),
            silent=silent,
        )

    def _silent(self, axis: int, probabilities: Sequence[Probability]) -> np.ndarray:
        """Per slice along ``axis``: a probability whose mean square is under
        SILENT_MEAN_SQUARE (eq. A.11)."""
        signal = self.signal[axis - 1]
        silent = np.zeros(len(signal), dtype=bool)
        if not probabilities:
            return silent
        mean_square = signal / self._per_slice(axis)
        for index in np.flatnonzero(mean_square < SILENT_MEAN_SQUARE):
            silent[index] = any(p.covers(axis, int(index)) for p in probabilities)
        return silent

    def _per_slice(self, axis: int) -> int:
        """How many values one slice along ``axis`` holds, over every sample so far."""
        sizes = self._sizes()
        return max(self.rows * math.prod(sizes) // sizes[axis - 1], 1)

    def _slice_sqnrs(self, axis: int) -> np.ndarray:
        signal, noise = self.signal[axis - 1], self.noise[axis - 1]
        pairs = zip(signal.tolist(), noise.tolist(), strict=True)
        return np.array([sqnr_from_sums(s, n) for s, n in pairs])

    def _collapsed(self, axis: int, sqnrs: np.ndarray) -> np.ndarray:
        """Slices whose int8 values are constant while the float ones vary, or whose SQNR
        is at most COLLAPSE_DB (eq. A.10)."""
        position = axis - 1
        varies = self.ref_high[position] > self.ref_low[position]
        constant = self.int8_high[position] == self.int8_low[position]
        return np.flatnonzero((varies & constant) | (sqnrs <= COLLAPSE_DB))

    def _fits(self, part: Part) -> bool:
        return 1 <= part.axis < (self.ndim or 0) and part.stop <= len(self.signal[part.axis - 1])

    def _part(self, part: Part, probabilities: Sequence[Probability]) -> PartVerdict:
        position = part.axis - 1
        block = slice(part.start, part.stop)
        signal = float(self.signal[position][block].sum())
        sqnr = sqnr_from_sums(signal, float(self.noise[position][block].sum()))
        values = self._per_slice(part.axis) * (part.stop - part.start)
        silent = signal / values < SILENT_MEAN_SQUARE and all(
            any(p.covers(part.axis, index) for p in probabilities)
            for index in range(part.start, part.stop)
        )
        varies = bool(np.any(self.ref_high[position][block] > self.ref_low[position][block]))
        constant = bool(
            self.int8_high[position][block].max() == self.int8_low[position][block].min()
        )
        return PartVerdict(
            name=part.name,
            axis=part.axis,
            start=part.start,
            stop=part.stop,
            sqnr_db=sqnr,
            collapsed=not silent and ((varies and constant) or sqnr <= COLLAPSE_DB),
        )


def output_parts(graph: Graph) -> dict[str, tuple[Part, ...]]:
    """Output name -> its parts: along each axis but the samples' whose values a
    Concat laid side by side, directly or through moves after it (``joining_concat``: a
    detector head's box coordinates and scores, reshaped, joined by level and
    transposed), one part per Concat input, named after it.

    The sizes must be static in the normalized model, else that axis is judged by slices
    alone.
    """
    found: dict[str, tuple[Part, ...]] = {}
    for info in graph.outputs:
        if info.shape is None:
            continue
        parts: list[Part] = []
        for axis in range(1, len(info.shape)):
            parts += _parts_along(graph, info.name, axis)
        if parts:
            found[info.name] = tuple(parts)
    return found


def _parts_along(graph: Graph, output: str, axis: int) -> list[Part]:
    joined = joining_concat(graph, output, axis)
    if joined is None:
        return []
    concat, own_axis = joined
    sizes = [static_size(graph, name, own_axis) for name in concat.inputs]
    if any(size is None for size in sizes):
        return []
    parts, start = [], 0
    for name, size in zip(concat.inputs, sizes, strict=True):
        assert size is not None
        parts.append(Part(name, axis, start, start + size))
        start += size
    return parts


def output_probabilities(graph: Graph) -> dict[str, tuple[Probability, ...]]:
    """Output name -> the slices of it that hold probabilities (A.11): the whole output
    when a Sigmoid or Softmax makes it (through ops that only move values), else each
    Concat part made so."""
    found: dict[str, tuple[Probability, ...]] = {}
    parts = output_parts(graph)
    for info in graph.outputs:
        if is_probability(graph, info.name):
            found[info.name] = (Probability(),)
            continue
        spans = tuple(
            Probability(part.axis, part.start, part.stop)
            for part in parts.get(info.name, ())
            if is_probability(graph, part.name)
        )
        if spans:
            found[info.name] = spans
    return found


def slice_verdict(
    reference: np.ndarray,
    quantized: np.ndarray,
    parts: Sequence[Part] = (),
    probabilities: Sequence[Probability] = (),
    spatial: Sequence[int] = (),
) -> SliceVerdict | None:
    """``SliceSums`` over whole arrays (samples on axis 0)."""
    sums = SliceSums()
    sums.update(reference, quantized)
    return sums.verdict(parts, probabilities, spatial)


def output_spatial_axes(graph: Graph) -> dict[str, tuple[int, ...]]:
    """Output name -> its spatial axes, for the outputs a convolution, pool or resize
    writes (``ops.spatial``): their slices along those axes are not judged (§A.9)."""
    found = {info.name: spatial_axes(graph, info.name) for info in graph.outputs}
    return {name: axes for name, axes in found.items() if axes}
