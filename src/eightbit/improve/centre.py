"""Centring non-negative activations for a symmetric int8 grid (docs/numerics.md §Q16.1).

A symmetric grid (zero point 0, TensorRT) spends half its codes on negative values, so a
tensor after a Relu or ReLU6 uses 128 of its 256 codes: one bit lost against an affine
uint8 grid. The network computes the same function with such a tensor shifted by a
constant ``c`` (Q.15.1):

    y' = clamp(z − c, lo − c, hi − c) = y − c          (the source Conv's bias lowered by c)
    Conv(y) = Conv(Pad(y', −c)) + c · Σ W               (each reader's bias raised)

With ``c`` the middle of the calibrated range, ``y'`` is centred on 0 and the symmetric
grid covers it with all 256 codes: the bit comes back. The shift travels through what
commutes with it (MaxPool, GlobalAveragePool, Flatten, Reshape, and a residual Add whose
other input is unshifted, into the clamp after it), so a ResNet stage's chain of block
outputs carries one shift; every path ends in a Conv or Gemm that takes it back into its
bias. A padded Conv's zero padding becomes an explicit ``Pad`` of ``−c`` (zero padding of
``y`` is ``−c`` padding of ``y'``), which moves int8 values (§Q11).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import onnx

from eightbit.calibrate import Ranges
from eightbit.graph import Graph, Node
from eightbit.improve.centre_edit import rewrite, shift_ranges
from eightbit.ops.spec import attr, optional_input
from eightbit.steps import StepReport

NAME = "centre"
# Clamps whose lower bound is 0 make a non-negative tensor.
_CLAMPS = ("Relu", "Clip")
# Readers the shift passes through unchanged: f(y − c) = f(y) − c.
_COMMUTING = ("MaxPool", "GlobalAveragePool", "Flatten", "Reshape")


@dataclass(frozen=True)
class Group:
    """Tensors that all carry one shift ``c`` (Q.15.1).

    ``source``: the Conv whose bias lowers by c; ``clamps``: the clamps whose bounds move
    by −c, with their bounds; ``members``: every tensor that is c lower than before (clamp,
    pool, layout and residual-Add outputs); ``readers``: each Conv or Gemm that takes c
    back into its bias, with the member it reads.
    """

    source: Node
    clamps: tuple[tuple[Node, tuple[float, float]], ...]
    members: tuple[str, ...]
    readers: tuple[tuple[Node, str], ...]
    shift: float


def centre_activations(
    model: onnx.ModelProto, ranges: Ranges
) -> tuple[onnx.ModelProto, Ranges, StepReport]:
    """``model`` with every centrable group of non-negative tensors shifted by its ``c``
    (Q.15.1), the ranges shifted with it, and what was done; the same function."""
    started = time.perf_counter()
    graph = Graph(model)
    groups = find_groups(graph, ranges)
    if not groups:
        note = "nothing centred: no Relu/Clip output whose every path ends in a Conv or Gemm"
        report = StepReport(NAME, time.perf_counter() - started, None, None, notes=(note,))
        return model, ranges, report
    result = onnx.ModelProto()
    result.CopyFrom(model)
    copies = rewrite(result, graph, groups)
    shifts = {member: group.shift for group in groups for member in group.members}
    shifted = shift_ranges(ranges, shifts, copies)
    centred = [m for group in groups for m in group.members if m in ranges]
    note = (
        f"{len(centred)} tensor(s) in {len(groups)} group(s) centred on 0 for the symmetric "
        f"grid (§Q16.1): {', '.join(centred[:4])}"
        + (f" and {len(centred) - 4} more" if len(centred) > 4 else "")
    )
    report = StepReport(NAME, time.perf_counter() - started, None, None, notes=(note,))
    return result, shifted, report


def find_groups(graph: Graph, ranges: Ranges) -> list[Group]:
    """Every group, in graph order; a tensor belongs to one group at most."""
    claimed: set[str] = set()
    groups = []
    for node in graph.nodes:
        group = _group_from(graph, node, ranges, claimed)
        if group is not None:
            claimed.update(group.members)
            groups.append(group)
    return groups


def _group_from(graph: Graph, clamp: Node, ranges: Ranges, claimed: set[str]) -> Group | None:
    """The group that starts at ``clamp`` when its input is a Conv with its own bias."""
    if not _is_clamp_at_zero(graph, clamp) or clamp.outputs[0] in claimed:
        return None
    source = graph.producer(clamp.inputs[0])
    if source is None or not _lowers_by_bias(graph, source, clamp.inputs[0]):
        return None
    grown = _grow(graph, clamp, claimed)
    if grown is None:
        return None
    clamps, members, readers = grown
    shift = _choose_shift(graph, members, ranges)
    if shift is None:
        return None
    bounds = tuple((clamp, clamp_bounds(graph, clamp) or (0.0, math.inf)) for clamp in clamps)
    return Group(source, bounds, members, readers, shift)


def _grow(
    graph: Graph, first: Node, claimed: set[str]
) -> tuple[tuple[Node, ...], tuple[str, ...], tuple[tuple[Node, str], ...]] | None:
    """Clamps, members and readers reached from ``first``'s output; None when some path
    meets a node the shift cannot pass or be taken back by."""
    outputs = {info.name for info in graph.outputs}
    clamps, members, readers = [first], [], []
    queue = [first.outputs[0]]
    while queue:
        tensor = queue.pop(0)
        if tensor in outputs or tensor in claimed or tensor in members:
            return None
        members.append(tensor)
        consumers = graph.consumers(tensor)
        if not consumers:
            return None
        for reader in consumers:
            if _takes_back(graph, reader, tensor):
                readers.append((reader, tensor))
            elif _commutes(reader, tensor):
                queue.append(reader.outputs[0])
            elif (clamp := _join_into_clamp(graph, reader, tensor, claimed, members)) is not None:
                members.append(reader.outputs[0])
                clamps.append(clamp)
                queue.append(clamp.outputs[0])
            else:
                return None
    return tuple(clamps), tuple(members), tuple(readers)


def _is_clamp_at_zero(graph: Graph, node: Node) -> bool:
    if node.op_type not in _CLAMPS or len(node.outputs) != 1:
        return False
    bounds = clamp_bounds(graph, node)
    return bounds is not None and bounds[0] == 0.0


def clamp_bounds(graph: Graph, node: Node) -> tuple[float, float] | None:
    """A Relu's or Clip's [low, high] when constant scalars (high = inf when unbounded)."""
    if node.op_type == "Relu":
        return 0.0, math.inf
    low, high = attr(node, "min", -math.inf), attr(node, "max", math.inf)
    for index, port in enumerate((1, 2)):
        name = optional_input(node, port)
        if name is None:
            continue
        if name not in graph.initializers or graph.initializers[name].size != 1:
            return None
        value = float(graph.initializers[name].reshape(-1)[0])
        low, high = (value, high) if index == 0 else (low, value)
    return float(low), float(high)


def _lowers_by_bias(graph: Graph, layer: Node, tensor: str) -> bool:
    """``layer`` is a Conv whose output only the clamp reads, with a bias only it reads."""
    if layer.op_type != "Conv" or len(graph.consumers(tensor)) != 1:
        return False
    return _own_constant(graph, optional_input(layer, 2))


def _own_constant(graph: Graph, name: str | None) -> bool:
    return name is not None and name in graph.initializers and len(graph.consumers(name)) == 1


def _takes_back(graph: Graph, reader: Node, tensor: str) -> bool:
    """``reader`` adds ``c · Σ W`` to its own bias: a Conv reading ``tensor`` as data (with
    explicit or no padding), or a plain Gemm reading it as A."""
    if reader.op_type not in ("Conv", "Gemm") or len(reader.inputs) < 2:
        return False
    if reader.inputs[0] != tensor or tensor in reader.inputs[1:]:
        return False
    bias = optional_input(reader, 2)
    if not _own_constant(graph, reader.inputs[1]):
        return False
    if bias is not None and (not _own_constant(graph, bias) or graph.initializers[bias].ndim != 1):
        return False
    if reader.op_type == "Conv":
        return attr(reader, "auto_pad", "NOTSET") in ("NOTSET", "VALID")
    if reader.op_type == "Gemm":
        plain = attr(reader, "alpha", 1.0) == 1.0 and attr(reader, "beta", 1.0) == 1.0
        return plain and not attr(reader, "transA", 0)
    return False


def _commutes(reader: Node, tensor: str) -> bool:
    """``reader`` passes the shift on: ``f(y − c) = f(y) − c`` (MaxPool pads with −inf)."""
    if reader.op_type not in _COMMUTING or reader.inputs[0] != tensor:
        return False
    return len([name for name in reader.outputs if name]) == 1


def _join_into_clamp(
    graph: Graph, reader: Node, tensor: str, claimed: set[str], members: list[str]
) -> Node | None:
    """The clamp after a residual Add of ``tensor`` and an unshifted tensor: the Add's output
    is c lower, and the clamp after it (its only reader) moves by −c with nothing else."""
    if reader.op_type != "Add" or len(reader.inputs) != 2 or reader.inputs.count(tensor) != 1:
        return None
    other = reader.inputs[1] if reader.inputs[0] == tensor else reader.inputs[0]
    if other in claimed or other in members:
        return None
    after = graph.consumers(reader.outputs[0])
    if len(after) != 1 or reader.outputs[0] in {info.name for info in graph.outputs}:
        return None
    return after[0] if _is_clamp_at_zero(graph, after[0]) else None


def _choose_shift(graph: Graph, members: tuple[str, ...], ranges: Ranges) -> float | None:
    """The ``c`` that most narrows the group's grids (Q.15.2), on whole histogram bins;
    None when no choice narrows them or a member's range is not non-negative."""
    highs, widths = [], []
    for member in members:
        producer = graph.producer(member)
        if member not in ranges or (producer is not None and producer.op_type == "Add"):
            continue  # an Add's output keeps its float (the clamp after it reads it)
        selected = ranges[member]
        if selected.min < 0.0 or selected.max <= 0.0:
            return None
        highs.append(selected.max)
        histogram = ranges.histogram(member)
        if histogram is not None and not histogram.empty:
            widths.append(math.ldexp(1.0, histogram.exponent))
    if not highs:
        return None
    shift = min((high / 2 for high in highs), key=lambda c: _grid_cost(c, highs))
    if widths:  # powers of two: a whole number of the widest bin is whole in every one
        shift = round(shift / max(widths)) * max(widths)
    return shift if shift > 0 and _grid_cost(shift, highs) < 0 else None


def _grid_cost(shift: float, highs: list[float]) -> float:
    """Σ log2(m'/m) over the group (Q.15.2): bits of grid step gained (< 0) or lost."""
    return float(sum(np.log2(max(shift, high - shift) / high) for high in highs))
