"""Model variants for the what-if runs of the worst layers (§A.3).

``with_fake_quant``: the float model with one tensor quantized (AIMET-style sensitivity).
``without_quantization``: the int8 model with one tensor, and its producer's weights,
back in float (what a float fallback of that node would buy). Both return edited copies;
like ``eightbit.export`` they edit ONNX protos, which is why this module imports onnx.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper

from eightbit.analysis.qdq import QdqModel, QuantizedActivation
from eightbit.graph import FreshNames, Graph, graph_names
from eightbit.qdq import is_dequantize, is_quantize
from eightbit.quant import QuantParams


def with_fake_quant(model: onnx.ModelProto, tensor: str, params: QuantParams) -> onnx.ModelProto:
    """A copy of float ``model`` in which ``tensor`` goes through QuantizeLinear -> Dequantize.

    Every reader of ``tensor`` (graph outputs included) sees the dequantized values.
    """
    result = _copy(model)
    graph = result.graph
    fresh = FreshNames(graph_names(graph))
    scale, zero_point = fresh(f"{tensor}_scale"), fresh(f"{tensor}_zero_point")
    graph.initializer.extend(
        [
            numpy_helper.from_array(params.scale.astype(np.float32), scale),
            numpy_helper.from_array(params.zero_point.astype(params.numpy_dtype), zero_point),
        ]
    )
    stored = fresh(f"{tensor}_quantized")
    producer = next((node for node in graph.node if tensor in node.output), None)
    if producer is None:  # a graph input: its readers move to the dequantized copy
        source, dequantized = tensor, fresh(f"{tensor}_dequantized")
        _rename_uses(graph.node, tensor, dequantized)
        position = 0
    else:  # the producer writes a new name and the dequantized copy takes over ``tensor``
        source, dequantized = fresh(f"{tensor}_prequant"), tensor
        producer.output[list(producer.output).index(tensor)] = source
        position = list(graph.node).index(producer) + 1
    pair = [
        helper.make_node("QuantizeLinear", [source, scale, zero_point], [stored]),
        helper.make_node("DequantizeLinear", [stored, scale, zero_point], [dequantized]),
    ]
    for offset, node in enumerate(pair):
        node.name = fresh(f"{tensor}_what_if_{node.op_type}")
        if params.axis is not None:  # per channel: scale and zero point run along this axis
            node.attribute.append(helper.make_attribute("axis", params.axis))
        graph.node.insert(position + offset, node)
    return result


def without_quantization(
    int8_model: onnx.ModelProto, activation: QuantizedActivation, qdq: QdqModel, float_graph: Graph
) -> onnx.ModelProto:
    """A copy of ``int8_model`` where ``activation`` and its producer's weights stay float.

    Readers of the activation's DequantizeLinear outputs read the QuantizeLinear input
    instead; each weight the producer reads through a DequantizeLinear is replaced by the
    float model's initializer (matched by node name, §A.2). The producer's inputs keep
    their int8 formats, as they would in a real fallback.
    """
    result = _copy(int8_model)
    graph = result.graph
    fresh = FreshNames(graph_names(graph))
    source = activation.source
    value = _folded_activation(graph, activation, float_graph, fresh) or source
    quantized = {
        node.output[0] for node in graph.node if is_quantize(node) and node.input[0] == source
    }
    dequantized = [
        node for node in graph.node if is_dequantize(node) and node.input[0] in quantized
    ]
    outputs = {value.name for value in graph.output}
    for node in dequantized:
        graph.node.remove(node)
        name = node.output[0]
        if name in outputs:  # a graph output keeps its name
            identity = helper.make_node("Identity", [value], [name], name=fresh(f"{name}_float"))
            _insert_after_producer(graph, value, identity)
        else:
            _rename_uses(graph.node, name, value)
    readers = {name for node in graph.node for name in node.input}
    for node in [n for n in graph.node if is_quantize(n)]:
        if node.output[0] in quantized and node.output[0] not in readers:
            graph.node.remove(node)
    producer = next((node for node in graph.node if source in node.output), None)
    if producer is not None:
        _restore_float_weights(graph, producer, qdq, float_graph, fresh)
    return result


def _folded_activation(
    graph: onnx.GraphProto, activation: QuantizedActivation, float_graph: Graph, fresh: FreshNames
) -> str | None:
    """Put back the activation (Relu, Clip) that was folded into the quantization, if any.

    eightbit drops a Relu/Clip whose clamp the QuantizeLinear does by itself (§Q.5): the
    pair then reads the producer's output and writes the activation's. Without the pair
    the clamp must run again, as the float model's node. Returns its output name.
    """
    float_node = float_graph.producer(activation.name)
    if activation.name == activation.source or float_node is None:
        return None
    if float_node.inputs[:1] != (activation.source,):
        return None
    names = [activation.source]
    for name in float_node.inputs[1:]:
        if name and name in float_graph.initializers:
            copy = numpy_helper.from_array(np.asarray(float_graph.initializers[name]), fresh(name))
            graph.initializer.append(copy)
            names.append(copy.name)
        else:
            names.append(name)
    output = fresh(f"{activation.name}_float")
    restored = helper.make_node(
        float_node.op_type,
        names,
        [output],
        name=fresh(f"{float_node.name}_float"),
        domain=float_node.domain,
    )
    restored.attribute.extend(
        float_graph.model.graph.node[_index(float_graph, float_node.name)].attribute
    )
    _insert_after_producer(graph, activation.source, restored)
    return output


def _insert_after_producer(graph: onnx.GraphProto, tensor: str, node: onnx.NodeProto) -> None:
    """Insert ``node`` right after the node computing ``tensor`` (first for graph inputs)."""
    position = next((i + 1 for i, n in enumerate(graph.node) if tensor in n.output), 0)
    graph.node.insert(position, node)


def _index(graph: Graph, name: str) -> int:
    return next(i for i, node in enumerate(graph.model.graph.node) if node.name == name)


def _restore_float_weights(
    graph: onnx.GraphProto,
    producer: onnx.NodeProto,
    qdq: QdqModel,
    float_graph: Graph,
    fresh: FreshNames,
) -> None:
    float_initializers = {tensor.name: tensor for tensor in float_graph.model.graph.initializer}
    float_weights = {w.dequantized: w.float_name for w in qdq.weights if w.float_name is not None}
    for port, name in enumerate(producer.input):
        float_name = float_weights.get(name)
        if float_name is None:
            continue
        copy = onnx.TensorProto()
        copy.CopyFrom(float_initializers[float_name])
        copy.name = fresh(f"{float_name}_float")
        graph.initializer.append(copy)
        producer.input[port] = copy.name


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    result = onnx.ModelProto()
    result.CopyFrom(model)
    return result


def _rename_uses(nodes: Iterable[onnx.NodeProto], old: str, new: str) -> None:
    """Make every node that reads ``old`` (inside subgraphs too) read ``new``."""
    for node in nodes:
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new
        for subgraph in _subgraphs(node):
            _rename_uses(subgraph.node, old, new)


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attribute in node.attribute:
        if attribute.type == onnx.AttributeProto.GRAPH:
            yield attribute.g
        yield from attribute.graphs
