"""Reading a QDQ model: which tensors are quantized, with which parameters (§A.2).

Any QDQ ONNX model works, not only eightbit's: an activation is a QuantizeLinear ->
DequantizeLinear pair, a weight a DequantizeLinear of an integer initializer. Parameters
are read from those nodes by ``eightbit.qdq.read_params`` (§Q10.1), as the engine reads
them, so no plan file is needed. Each quantized tensor is matched to
its counterpart in the float model by name: eightbit keeps the name on the
DequantizeLinear output, ONNX Runtime's quantizer on the QuantizeLinear input.
"""

from __future__ import annotations

from dataclasses import dataclass

from eightbit.errors import ConfigError, ModelError
from eightbit.graph import Graph, Node
from eightbit.qdq import (
    QDQ_OPS,
    UnreadableParams,
    dequantizes_constant,
    is_dequantize,
    quantize_before,
    read_params,
)
from eightbit.quant import QuantParams


@dataclass(frozen=True)
class QuantizedActivation:
    """An activation stored in 8 bits: a QuantizeLinear -> DequantizeLinear pair.

    ``name`` is the tensor in the float model, ``int8_name`` the DequantizeLinear output in
    the int8 model, ``source`` the QuantizeLinear input. ``producer`` is the int8 model's
    node computing ``source`` (None for a graph input).
    """

    name: str
    int8_name: str
    source: str
    params: QuantParams
    producer: str | None
    op_type: str | None
    quantize_node: str
    dequantize_node: str


@dataclass(frozen=True)
class QuantizedWeight:
    """A constant stored as integers and read through a DequantizeLinear.

    ``readers`` are the (node, input position) pairs of the int8 model reading the
    dequantized values, ``op_type`` the first reader's; ``float_name`` is the float model's
    initializer that the node of the same name reads at the same position (None when there
    is none).
    """

    name: str
    dequantized: str
    params: QuantParams
    readers: tuple[tuple[str, int], ...]
    float_name: str | None
    op_type: str | None = None


@dataclass(frozen=True)
class QdqModel:
    """The quantized tensors of an int8 model, in topological order.

    ``unmatched`` lists int8 tensors with no float counterpart; ``unsupported`` the
    QuantizeLinear/DequantizeLinear nodes that are not plain 8/32-bit QDQ, with why.
    """

    activations: tuple[QuantizedActivation, ...]
    weights: tuple[QuantizedWeight, ...]
    compute_nodes: tuple[Node, ...]
    unmatched: tuple[str, ...]
    unsupported: tuple[tuple[str, str], ...]

    def activation(self, name: str) -> QuantizedActivation:
        for activation in self.activations:
            if activation.name == name:
                return activation
        known = ", ".join(repr(a.name) for a in self.activations[:5])
        raise ConfigError(f"no quantized activation named {name!r} (some are: {known})")

    @property
    def eight_bit_weights(self) -> tuple[QuantizedWeight, ...]:
        """Weights with an 8-bit window (int32 biases left out)."""
        return tuple(w for w in self.weights if w.params.dtype != "int32")


def node_label(node: Node, index: int) -> str:
    """A node's name, or ``op_type#index`` for an unnamed node."""
    return node.name or f"{node.op_type}#{index}"


def read_qdq(int8: Graph, float_graph: Graph) -> QdqModel:
    """The quantized tensors of ``int8`` matched to the tensors of ``float_graph``."""
    float_names = {info.name for info in float_graph.inputs}
    float_names.update(name for node in float_graph.nodes for name in node.outputs if name)
    labels = {id(node): node_label(node, i) for i, node in enumerate(int8.nodes)}
    activations: dict[str, QuantizedActivation] = {}
    weights: list[QuantizedWeight] = []
    unmatched: list[str] = []
    unsupported: list[tuple[str, str]] = []
    for node in int8.nodes:
        if not is_dequantize(node):
            continue
        label = labels[id(node)]
        stored = node.inputs[0]
        if dequantizes_constant(int8, node):
            params = _params(int8, node, label, unsupported)
            if params is not None:
                weights.append(_weight(int8, float_graph, node, stored, params, labels))
            continue
        quantize = quantize_before(int8, node)
        if quantize is None:
            unsupported.append((label, "reads a tensor that no QuantizeLinear produces"))
            continue
        source = quantize.inputs[0]
        if source in int8.initializers:
            unsupported.append((label, "quantizes a constant inside the graph"))
            continue
        params = _params(int8, quantize, labels[id(quantize)], unsupported)
        if params is None:
            continue
        output = node.outputs[0]
        name = output if output in float_names else source if source in float_names else None
        if name is None:
            unmatched.append(output)
            continue
        if name in activations:
            continue  # a second DequantizeLinear of the same tensor (one per reader)
        producer = int8.producer(source)
        activations[name] = QuantizedActivation(
            name=name,
            int8_name=output,
            source=source,
            params=params,
            producer=None if producer is None else labels[id(producer)],
            op_type=None if producer is None else producer.op_type,
            quantize_node=labels[id(quantize)],
            dequantize_node=label,
        )
    compute = tuple(node for node in int8.nodes if node.op_type not in QDQ_OPS)
    return QdqModel(
        tuple(activations.values()), tuple(weights), compute, tuple(unmatched), tuple(unsupported)
    )


def _params(
    graph: Graph, node: Node, label: str, unsupported: list[tuple[str, str]]
) -> QuantParams | None:
    """The node's parameters (§Q10.1), or None with the reason recorded in ``unsupported``."""
    try:
        return read_params(node, graph.initializers)
    except UnreadableParams as error:
        unsupported.append((label, error.reason))
        return None


def _weight(
    int8: Graph,
    float_graph: Graph,
    node: Node,
    stored: str,
    params: QuantParams,
    labels: dict[int, str],
) -> QuantizedWeight:
    output = node.outputs[0]
    consumers = int8.consumers(output)
    readers = [
        (labels[id(reader)], port)
        for reader in consumers
        for port, name in enumerate(reader.inputs)
        if name == output
    ]
    return QuantizedWeight(
        name=stored,
        dequantized=output,
        params=params,
        readers=tuple(readers),
        float_name=_float_counterpart(float_graph, readers),
        op_type=consumers[0].op_type if consumers else None,
    )


def _float_counterpart(float_graph: Graph, readers: list[tuple[str, int]]) -> str | None:
    """The float initializer that the same-named float node reads at the same position."""
    for node_name, port in readers:
        try:
            node = float_graph.node(node_name)
        except ModelError:
            continue
        if port < len(node.inputs) and node.inputs[port] in float_graph.initializers:
            return node.inputs[port]
    return None
