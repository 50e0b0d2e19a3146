"""The protos of eightbit.improve: edited copies of a model, and models that measure.

The steps decide with numpy on plain values; this module is where their decisions become
ONNX (new weights and biases, a Clip's new bound) and where the small models that measure
are built: a float model that also returns per-channel reductions of inner tensors, and a
float + int8 pair merged into one graph that returns sums of squared differences, so only
a few numbers per batch leave ONNX Runtime (docs/numerics.md §I.1).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import onnx.compose
from onnx import helper, numpy_helper

from eightbit.errors import ModelError
from eightbit.graph import FreshNames
from eightbit.graph.files import stub_of
from eightbit.graph.normalize import upgrade_opset

# ReduceMax, ReduceMin and ReduceSumSquare take their axes as an input from opset 18 (an
# attribute before); ReduceSum already from opset 13.
_AXES_INPUT_OPSET = 18
_SUM_AXES_INPUT_OPSET = 13
_FLOAT_PREFIX, _QUANT_PREFIX = "float/", "int8/"


def default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


class ModelEdit:
    """A copy of a model (or the model itself) whose node inputs are rewritten as constants.

    ``set`` overwrites an initializer read only by that node, and gives a shared or absent
    one a fresh initializer, so no other node sees the change (a weight shared by two
    nodes, or one Clip bound constant shared by every ReLU6 of the network).
    """

    def __init__(self, model: onnx.ModelProto, *, copy: bool = True) -> None:
        # ``copy=False`` edits ``model`` itself (a caller that gave it up).
        self.model = model
        if copy:
            self.model = onnx.ModelProto()
            self.model.CopyFrom(model)
        graph = self.model.graph
        self._tensors = {tensor.name: tensor for tensor in graph.initializer}
        self._nodes = {node.name: node for node in graph.node}
        self._readers = Counter(name for node in graph.node for name in set(node.input))
        self._readers.update(value.name for value in graph.output)
        taken = set(self._tensors) | {n for node in graph.node for n in node.output}
        self._names = FreshNames(taken | {value.name for value in graph.input})

    def value(self, node: str, port: int) -> np.ndarray | None:
        """The constant at input ``port`` of ``node`` (None when absent or not constant)."""
        proto = self._nodes[node]
        name = proto.input[port] if port < len(proto.input) else ""
        tensor = self._tensors.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)

    def set(self, node: str, port: int, value: np.ndarray, base: str) -> None:
        """Make input ``port`` of ``node`` the constant ``value``."""
        proto = self._nodes[node]
        current = proto.input[port] if port < len(proto.input) else ""
        if current in self._tensors and self._readers[current] == 1:
            self._tensors[current].CopyFrom(numpy_helper.from_array(value, current))
            return
        name = self._fresh(base)
        self.model.graph.initializer.append(numpy_helper.from_array(value, name))
        self._tensors[name] = self.model.graph.initializer[-1]
        self._readers[name] += 1
        if current:
            self._readers[current] -= 1
        while len(proto.input) <= port:
            proto.input.append("")
        proto.input[port] = name

    def rename(self, tensor: str, base: str) -> str:
        """Give the activation ``tensor`` a fresh name in every node and value info."""
        new = self._fresh(base)
        graph = self.model.graph
        for node in graph.node:
            for field in (node.input, node.output):
                for index, name in enumerate(field):
                    if name == tensor:
                        field[index] = new
        for value in graph.value_info:
            if value.name == tensor:
                value.name = new
        return new

    def _fresh(self, base: str) -> str:
        return self._names(base)


@dataclass(frozen=True)
class Reduction:
    """A per-batch reduction of ``tensor`` returned by a measuring model.

    ``kind``: ``"max_abs"``/``"min"``, the largest magnitude / the least value of each
    channel (``axis`` is the channel axis, every other axis is reduced);
    ``"sum_over_batch"``, the sum over the samples (axis 0) of every element, so that a
    running total divided by the sample count is the per-position mean.
    """

    tensor: str
    kind: str
    axis: int = 1
    rank: int = 4


def with_reductions(
    model: onnx.ModelProto, reductions: Sequence[Reduction]
) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of ``model`` whose only outputs are ``reductions`` (in that order)."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    builder = _Builder(graph, default_opset(model), "reduce")
    outputs = []
    for reduction in reductions:
        axes = [a for a in range(reduction.rank) if a != reduction.axis % reduction.rank]
        if reduction.kind == "max_abs":
            magnitude = builder.node("Abs", [reduction.tensor])
            outputs.append(builder.reduce("ReduceMax", magnitude, axes))
        elif reduction.kind == "min":
            outputs.append(builder.reduce("ReduceMin", reduction.tensor, axes))
        elif reduction.kind == "sum_over_batch":
            outputs.append(builder.reduce_sum(reduction.tensor, [0]))
        else:
            raise ValueError(f"unknown reduction kind {reduction.kind!r}")
    del graph.output[:]
    graph.output.extend(helper.make_empty_tensor_value_info(name) for name in outputs)
    return result, outputs


@dataclass(frozen=True)
class Comparison:
    """Names of the outputs of ``comparison_model``: per tensor, then for the first output.

    ``layer_sums[label] = (noise, signal)``: Σ(int8 − float)² and Σ float² of the tensor
    compared under that label. ``output_sums``: the same for the model's first output.
    ``means``: tensor -> its float values summed over the samples (``sum_over_batch``).
    """

    layer_sums: Mapping[str, tuple[str, str]]
    output_sums: tuple[str, str]
    means: Mapping[str, str]
    output_channels: tuple[str, str] | None = None  # Σ(int8 − float) per channel, shape

    def names(self) -> list[str]:
        names = [name for pair in self.layer_sums.values() for name in pair]
        channels = list(self.output_channels or ())
        return [*names, *self.output_sums, *self.means.values(), *channels]


def _at_opset_of(float_model: onnx.ModelProto, quantized: onnx.ModelProto) -> onnx.ModelProto:
    """``float_model`` at the opset of ``quantized``: a 16x8 model is written at opset 21
    (numerics §Q17), so its float model is upgraded (a copy) to be compared in one graph."""
    float_opset, quantized_opset = default_opset(float_model), default_opset(quantized)
    if float_opset == quantized_opset:
        return float_model
    if float_opset > quantized_opset:
        raise ModelError("the float and int8 models of a comparison must share their opset")
    upgraded = onnx.ModelProto()
    upgraded.CopyFrom(float_model)
    upgrade_opset(upgraded, quantized_opset)
    return upgraded


def comparison_model(
    float_model: onnx.ModelProto,
    quantized_model: onnx.ModelProto,
    tensors: Mapping[str, str],
    means: Sequence[str] = (),
    output_rank: int | None = None,
    shared: dict[str, onnx.TensorProto] | None = None,
) -> tuple[onnx.ModelProto, Comparison]:
    """The float and the int8 model in one graph, reading the same inputs.

    ``tensors`` maps labels to tensors compared: ``to_qdq`` keeps tensor names (a
    quantized tensor is the output of its DequantizeLinear), so the int8 model's ``t`` is
    what the float ``t`` became, and reading it keeps ONNX Runtime's int8 kernels.
    ``output_rank``: also sum the first output's difference per channel (axis 1).
    ``shared``: when given, the large weights of both models are not copied: the merged
    graph holds stubs, and ``shared`` gets their data (``make_session(weights=...)``).
    """
    float_model = _at_opset_of(float_model, quantized_model)
    model = helper.make_model(
        helper.make_graph([], "comparison", [], []),
        opset_imports=list(float_model.opset_import),
        ir_version=float_model.ir_version,
    )
    graph = model.graph
    # Nodes, inputs and initializers of both models, prefixed where they are copied: one
    # copy of the float weights, not three (a big model's weights dominate the memory).
    for source, prefix in ((float_model, _FLOAT_PREFIX), (quantized_model, _QUANT_PREFIX)):
        part = onnx.GraphProto()  # the nodes, and the initializers' names without data
        part.node.extend(source.graph.node)
        part.initializer.extend(onnx.TensorProto(name=t.name) for t in source.graph.initializer)
        onnx.compose.add_prefix_graph(part, prefix, rename_inputs=False, inplace=True)
        graph.node.extend(part.node)
        for tensor in source.graph.initializer:
            stub = None if shared is None else stub_of(tensor, prefix + tensor.name)
            if stub is not None:
                assert shared is not None  # stub_of ran
                shared[stub.name] = tensor
                graph.initializer.append(stub)
                continue
            graph.initializer.append(tensor)
            graph.initializer[-1].name = prefix + tensor.name
    graph.input.extend(float_model.graph.input)
    builder = _Builder(graph, default_opset(float_model), "compare")
    graph_inputs = {value.name for value in float_model.graph.input}

    def prefixed(prefix: str, tensor: str) -> str:
        return tensor if tensor in graph_inputs else prefix + tensor

    layer_sums = {
        label: builder.squared_sums(prefixed(_QUANT_PREFIX, t), prefixed(_FLOAT_PREFIX, t))
        for label, t in tensors.items()
    }
    first = float_model.graph.output[0].name
    output_sums = builder.squared_sums(_QUANT_PREFIX + first, _FLOAT_PREFIX + first)
    output_channels = None
    if output_rank is not None and output_rank >= 2:
        difference = builder.node("Sub", [_QUANT_PREFIX + first, _FLOAT_PREFIX + first])
        axes = [axis for axis in range(output_rank) if axis != 1]
        shape = builder.node("Shape", [_FLOAT_PREFIX + first])
        output_channels = (builder.reduce_sum(difference, axes), shape)
    sums = {t: builder.reduce_sum(prefixed(_FLOAT_PREFIX, t), [0]) for t in means}
    names = Comparison(
        layer_sums=layer_sums, output_sums=output_sums, means=sums, output_channels=output_channels
    )
    graph.output.extend(helper.make_empty_tensor_value_info(name) for name in names.names())
    _interleave(graph, len(float_model.graph.node), len(quantized_model.graph.node))
    return model, names


def _interleave(graph: onnx.GraphProto, float_nodes: int, quantized_nodes: int) -> None:
    """Order the merged graph's nodes so that both models advance side by side (by depth,
    in proportion) and each measuring node comes right after the nodes it reads.

    ONNX Runtime runs the nodes in this order and frees a tensor after its last reader:
    with one model's nodes after the other's, every compared tensor of the first would be
    held, for a whole batch, until the second caught up (a big CNN's activations). Same
    nodes, same kernels: the same sums.
    """
    nodes = list(graph.node)
    halves = (range(float_nodes), range(float_nodes, float_nodes + quantized_nodes))
    keys: dict[str, float] = {}  # tensor -> the position of its producer
    order: list[tuple[float, int, int]] = []
    for half in halves:
        depth: dict[str, int] = {}
        depths = []
        for index in half:
            node = nodes[index]
            level = 1 + max((depth.get(name, 0) for name in _read_by(node)), default=0)
            depth.update((name, level) for name in node.output)
            depths.append(level)
        deepest = max(depths, default=1)
        for index, level in zip(half, depths, strict=True):
            keys.update((name, level / deepest) for name in nodes[index].output)
            order.append((level / deepest, 0, index))
    for index in range(float_nodes + quantized_nodes, len(nodes)):
        node = nodes[index]
        key = max((keys.get(name, 0.0) for name in _read_by(node)), default=0.0)
        keys.update((name, key) for name in node.output)
        order.append((key, 1, index))
    graph.ClearField("node")
    graph.node.extend(nodes[index] for _, _, index in sorted(order))


def _read_by(node: onnx.NodeProto) -> list[str]:
    """The names ``node`` reads, those its subgraphs read from outside included."""
    names = list(node.input)
    for attribute in node.attribute:
        for subgraph in [attribute.g, *attribute.graphs]:
            for inner in subgraph.node:
                names.extend(_read_by(inner))
    return names


class _Builder:
    """Appends nodes with fresh names to a graph; reductions written for its opset."""

    def __init__(self, graph: onnx.GraphProto, opset: int, tag: str) -> None:
        self.graph, self.opset, self.tag = graph, opset, tag
        self.count = 0

    def name(self, kind: str) -> str:
        self.count += 1
        return f"__eightbit_{self.tag}_{kind}_{self.count}"

    def node(self, op_type: str, inputs: list[str], **attributes: Any) -> str:
        output = self.name(op_type.lower())
        self.graph.node.append(
            helper.make_node(op_type, inputs, [output], name=self.name("node"), **attributes)
        )
        return output

    def reduce(
        self,
        op_type: str,
        tensor: str,
        axes: list[int] | None,
        axes_input_opset: int = _AXES_INPUT_OPSET,
    ) -> str:
        """``op_type`` over ``axes`` (all axes when None), without kept dimensions; the axes
        are an input from ``axes_input_opset`` on."""
        if axes is None:
            return self.node(op_type, [tensor], keepdims=0)
        if self.opset >= axes_input_opset:
            constant = self.name("axes")
            self.graph.initializer.append(
                numpy_helper.from_array(np.asarray(axes, np.int64), constant)
            )
            return self.node(op_type, [tensor, constant], keepdims=0)
        return self.node(op_type, [tensor], axes=axes, keepdims=0)

    def reduce_sum(self, tensor: str, axes: list[int]) -> str:
        return self.reduce("ReduceSum", tensor, axes, _SUM_AXES_INPUT_OPSET)

    def squared_sums(self, quantized: str, reference: str) -> tuple[str, str]:
        """(Σ(quantized − reference)², Σ reference²) over every element."""
        # ReduceSumSquare over all axes needs no axes input or attribute in any opset.
        difference = self.node("Sub", [quantized, reference])
        noise = self.reduce("ReduceSumSquare", difference, None)
        signal = self.reduce("ReduceSumSquare", reference, None)
        return noise, signal


def restore_nodes(
    model: onnx.ModelProto, original: onnx.ModelProto, nodes: Sequence[str]
) -> onnx.ModelProto:
    """A copy of ``model`` whose ``nodes`` read their constants as in ``original`` again.

    Steps changed weights and biases (learned rounding, bias correction) for int8; a node
    kept in float after all must compute with its own float constants. Node names are
    shared by both models (steps do not rename nodes).
    """
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    originals = {tensor.name: tensor for tensor in original.graph.initializer}
    source_nodes = {node.name: node for node in original.graph.node}
    current = {tensor.name: tensor for tensor in graph.initializer}
    wanted = set(nodes)
    for node in graph.node:
        if node.name not in wanted or node.name not in source_nodes:
            continue
        source = source_nodes[node.name]
        for port, name in enumerate(node.input):
            if name in current:  # a constant a step may have changed or added
                node.input[port] = source.input[port] if port < len(source.input) else ""
        while node.input and not node.input[-1]:
            del node.input[-1]
        for name in node.input:
            if name in originals:
                if name in current:
                    current[name].CopyFrom(originals[name])
                else:
                    graph.initializer.append(originals[name])
                    current[name] = graph.initializer[-1]
    used = {name for node in graph.node for name in node.input}
    used |= {value.name for value in graph.output}
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    if len(kept) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(kept)
    return result
