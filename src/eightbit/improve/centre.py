"""Centring non-negative activations for a symmetric int8 grid (docs/numerics.md §Q16.1).

A symmetric grid (zero point 0, TensorRT) spends half its codes on negative values, so a
tensor after a Relu or ReLU6 uses 128 of its 256 codes: one bit lost against an affine
uint8 grid. The network computes the same function with such a tensor shifted by a
constant ``c`` (Q.15.1):

    y' = clamp(z − c, lo − c, hi − c) = y − c          (the source Conv's bias lowered by c)
    Conv(y) = Conv(Pad(y', −c)) + c · Σ W               (each reader's bias raised)

With ``c`` the middle of the calibrated range, ``y'`` is centred on 0 and the symmetric
grid covers it with all 256 codes: the bit comes back. The shift travels through what
commutes with it (``OpSpec.shift``: MaxPool, GlobalAveragePool, the moves but Pad, and a
residual Add whose other input is unshifted, into the clamp after it), so a ResNet
stage's chain of block outputs carries one shift; every path ends in a Conv or Gemm that
takes it back into its bias. A padded Conv's zero padding becomes an explicit ``Pad`` of
``−c`` (zero padding of ``y`` is ``−c`` padding of ``y'``), which moves int8 values (§Q11).
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
from eightbit.ops import Contraction, OpSpec, Shift, lookup
from eightbit.ops.spec import optional_input
from eightbit.steps import StepReport

NAME = "centre"
# Layers that take a shift back into their bias: every output reads the same number of
# inputs (a transposed convolution's border outputs read fewer).
_TAKE_BACK = (Contraction.CONVOLUTION, Contraction.MATRIX)


@dataclass(frozen=True)
class Group:
    """Tensors that all carry one shift ``c`` (Q.15.1).

    ``source``: the layer whose bias lowers by c; ``clamps``: the clamps whose bounds move
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
        note = "nothing centred: no clamp output whose every path ends in a Conv or Gemm"
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
    """The group that starts at ``clamp`` when its input is a layer with its own bias."""
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
    bounds = tuple((clamp, _bounds(graph, clamp) or (0.0, math.inf)) for clamp in clamps)
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
                queue.extend(name for name in reader.outputs if name)
            elif (clamp := _join_into_clamp(graph, reader, tensor, claimed, members)) is not None:
                members.append(reader.outputs[0])
                clamps.append(clamp)
                queue.append(clamp.outputs[0])
            else:
                return None
    return tuple(clamps), tuple(members), tuple(readers)


def _spec(node: Node) -> OpSpec | None:
    return lookup(node.op_type, node.domain)


def _bounds(graph: Graph, node: Node) -> tuple[float, float] | None:
    spec = _spec(node)
    return None if spec is None else spec.clamp_bounds(node, graph)


def _is_clamp_at_zero(graph: Graph, node: Node) -> bool:
    """A clamp (Relu, Clip) with constant bounds, the lower one 0: a non-negative output."""
    bounds = _bounds(graph, node)
    return bounds is not None and bounds[0] == 0.0 and len(node.outputs) == 1


def _lowers_by_bias(graph: Graph, layer: Node, tensor: str) -> bool:
    """``layer`` adds a bias only it reads, to an output only the clamp reads."""
    spec = _spec(layer)
    if spec is None or spec.bias_port is None or len(graph.consumers(tensor)) != 1:
        return False
    if spec.reason_not_quantized(layer, graph) is not None:
        return False  # e.g. Gemm's beta scales the bias
    return _own_constant(graph, optional_input(layer, spec.bias_port))


def _own_constant(graph: Graph, name: str | None) -> bool:
    return name is not None and name in graph.initializers and len(graph.consumers(name)) == 1


def _takes_back(graph: Graph, reader: Node, tensor: str) -> bool:
    """``reader`` adds ``c · Σ W`` to its own bias (Q.15.1): a Conv or Gemm reading
    ``tensor`` as its data input only, with its own constant weight and bias, and padding
    that is explicit (made a Pad of −c) or none."""
    spec = _spec(reader)
    if spec is None or spec.contraction not in _TAKE_BACK or spec.bias_port is None:
        return False
    if spec.weight_port is None or spec.weight_layout is None:
        return False
    if spec.data_ports(reader) != (0,) or reader.inputs[0] != tensor:
        return False
    if tensor in reader.inputs[1:] or spec.reason_not_quantized(reader, graph) is not None:
        return False
    weight = optional_input(reader, spec.weight_port)
    bias = optional_input(reader, spec.bias_port)
    if not _own_constant(graph, weight) or (bias is not None and not _own_constant(graph, bias)):
        return False
    assert weight is not None  # _own_constant said so
    shape = tuple(graph.initializers[weight].shape)
    if spec.weight_layout(reader.attrs, shape) is None:
        return False  # Gemm with transA = 1: the rows are not the data
    if bias is not None and graph.initializers[bias].ndim != 1:
        return False
    return spec.window is None or spec.window(reader.attrs, shape).auto_pad in _EXPLICIT


# Padding the edit can write as a Pad: explicit pads, or none.
_EXPLICIT = ("NOTSET", "VALID")


def _commutes(reader: Node, tensor: str) -> bool:
    """``reader`` passes the shift on, ``f(y − c) = f(y) − c``, reading it as data only."""
    spec = _spec(reader)
    if spec is None or spec.shift is not Shift.COMMUTES:
        return False
    return reader.inputs[0] == tensor and tensor not in reader.inputs[1:]


def _join_into_clamp(
    graph: Graph, reader: Node, tensor: str, claimed: set[str], members: list[str]
) -> Node | None:
    """The clamp after a residual Add of ``tensor`` and an unshifted tensor: the Add's output
    is c lower, and the clamp after it (its only reader) moves by −c with nothing else."""
    spec = _spec(reader)
    if spec is None or spec.shift is not Shift.SUMS:
        return None
    if len(reader.inputs) != 2 or reader.inputs.count(tensor) != 1:
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
        spec = None if producer is None else _spec(producer)
        if member not in ranges or (spec is not None and spec.shift is Shift.SUMS):
            continue  # a residual Add's output stays float (the clamp after it reads it)
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
