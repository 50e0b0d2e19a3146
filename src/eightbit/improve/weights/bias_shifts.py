"""Bias correction's weight shifts ``ΔW · E[x]`` from data (docs/numerics.md §I.3.1).

``delta``: ΔW, the weight as the int8 model stores it minus the float one; ``empirical_shifts``:
each layer run on its mean input with weights ΔW (layers in groups of about
``SHIFT_SESSION_BYTES`` of ΔW, one ONNX Runtime session each), or, for a Gemm whose ΔW
alone passes it, ``x̄ · ΔW`` summed here a slice of rows at a time (issue 20).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np
import onnx
from onnx import helper

from eightbit.graph import Graph, Node
from eightbit.graph.session import session_with_arrays
from eightbit.ops import Contraction, OpSpec, lookup
from eightbit.plan import QuantPlan
from eightbit.quant import dequantize_values, quantize_values
from eightbit.quant.values import ROW_CHUNK_ELEMENTS, by_rows


def weight_delta(
    graph: Graph, reference: Graph, plan: QuantPlan, node: Node, dtype: type = np.float64
) -> np.ndarray:
    """ΔW = (the weight as the int8 model stores it) − (the reference float weight), in
    ``dtype`` (the difference itself is taken in float64, a slice of rows at a time).

    A big layer's weight (VGG-16's first Gemm: 411 MB) is held twice at most: the float
    weight is read once when the reference is the model itself, and a float32 ΔW is
    written over the stored weight (issue 20).
    """
    port = layer_spec(node).weight_port
    assert port is not None
    weight = node.inputs[port]
    params = plan.tensors[weight]
    original = graph.initializers[weight]
    stored = dequantize_values(quantize_values(original, params), params)
    if reference.model is not graph.model:  # after learned rounding: the weights before it
        original = np.asarray(reference.initializers[weight])

    def difference(stored: np.ndarray, original: np.ndarray) -> np.ndarray:
        wide = stored.astype(np.float64) - np.asarray(original, np.float64)
        return wide.astype(dtype, copy=False)

    if stored.dtype != dtype or stored.ndim == 0:
        return by_rows(difference, stored, dtype, original)
    step = max(1, ROW_CHUNK_ELEMENTS // max(1, stored.size // stored.shape[0]))
    for start in range(0, stored.shape[0], step):  # row by row: each is read, then written
        stop = start + step
        stored[start:stop] = difference(stored[start:stop], original[start:stop])
    return stored


# The ΔW of the layers whose shifts one ONNX Runtime session computes, at most (a layer
# larger than this gets a session of its own): every ΔW is a float copy of a weight.
SHIFT_SESSION_BYTES = 64 * 2**20


def empirical_shifts(
    graph: Graph,
    reference: Graph,
    plan: QuantPlan,
    layers: Sequence[str],
    means: Mapping[str, np.ndarray],
    threads: int | None,
) -> dict[str, np.ndarray]:
    """(I.3.1) Each layer run on its mean input with weights ΔW, averaged over positions;
    the layers in groups of about ``SHIFT_SESSION_BYTES`` of ΔW, one session each."""
    shifts: dict[str, np.ndarray] = {}
    apart = [name for name in layers if _by_rows(graph, reference, name)]
    for name in apart:
        shifts[name] = _matrix_shift_by_rows(graph, plan, graph.node(name), means)
    rest = [name for name in layers if name not in apart]
    for group in _groups(graph, rest) if rest else []:
        shifts.update(_group_shifts(graph, reference, plan, group, means, threads))
    return {name: shifts[name] for name in layers}


# Weight elements per slice in ``_matrix_shift_by_rows``: its float32 and float64
# temporaries (about 30 bytes an element) stay near 64 MB beside the float weight.
SHIFT_ROW_ELEMENTS = 1 << 21


def _by_rows(graph: Graph, reference: Graph, name: str) -> bool:
    """(I.3.1) Whether ``name``'s shift is summed here a slice of rows at a time: a matrix
    product with a bias (Gemm) whose 2-D ΔW alone passes ``SHIFT_SESSION_BYTES``, measured
    against its own weights (the whole float32 ΔW, the float weight and ONNX Runtime's
    copy of ΔW are not all held)."""
    node = graph.node(name)
    spec = layer_spec(node)
    if reference.model is not graph.model or spec.contraction is not Contraction.MATRIX:
        return False
    if spec.weight_port is None or spec.weight_layout is None:
        return False
    info = graph.info(node.inputs[spec.weight_port])
    shape = () if info is None or info.shape is None else info.shape
    if len(shape) != 2 or spec.weight_layout(node.attrs, shape) is None:  # type: ignore[arg-type]
        return False
    return 4 * math.prod(shape) > SHIFT_SESSION_BYTES  # type: ignore[arg-type]


def _matrix_shift_by_rows(
    graph: Graph, plan: QuantPlan, node: Node, means: Mapping[str, np.ndarray]
) -> np.ndarray:
    """(I.3.1) A Gemm's ``ΔW · x̄`` in float64, ΔW made a slice of rows at a time from the
    float weight (read once) and its rounding: ``x̄ ΔW`` (B is [K, N]) or ``ΔW x̄`` (its
    layout's output axis first: transB)."""
    spec = layer_spec(node)
    assert spec.weight_port is not None and spec.weight_layout is not None  # _by_rows
    weight = node.inputs[spec.weight_port]
    params = plan.tensors[weight]
    original = graph.initializers[weight]
    mean = np.asarray(means[node.inputs[0]], np.float64).reshape(-1)
    layout = spec.weight_layout(node.attrs, tuple(original.shape))
    assert layout is not None  # _by_rows
    transposed = layout.out_axis == 0
    shift = np.zeros(original.shape[0] if transposed else original.shape[1], np.float64)
    step = max(1, SHIFT_ROW_ELEMENTS // max(1, original.shape[1]))
    for start in range(0, original.shape[0], step):
        rows = slice(start, start + step)
        sliced = params
        if params.axis == 0:  # per output channel, along the rows
            sliced = replace(params, scale=params.scale[rows], zero_point=params.zero_point[rows])
        stored = dequantize_values(quantize_values(original[rows], sliced), sliced)
        delta = stored.astype(np.float64) - original[rows]
        if transposed:
            shift[rows] = delta @ mean
        else:
            shift += mean[rows] @ delta
    return shift


def _groups(graph: Graph, layers: Sequence[str]) -> list[list[tuple[int, str]]]:
    """``layers`` numbered in order and cut where a group's weights pass the bound."""
    dims = {tensor.name: tensor.dims for tensor in graph.model.graph.initializer}
    groups: list[list[tuple[int, str]]] = [[]]
    size = 0
    for index, name in enumerate(layers):
        node = graph.node(name)
        port = layer_spec(node).weight_port
        assert port is not None
        weight_bytes = 4 * math.prod(dims[node.inputs[port]])  # ΔW is float32
        if groups[-1] and size + weight_bytes > SHIFT_SESSION_BYTES:
            groups.append([])
            size = 0
        groups[-1].append((index, name))
        size += weight_bytes
    return groups


def _group_shifts(
    graph: Graph,
    reference: Graph,
    plan: QuantPlan,
    group: Sequence[tuple[int, str]],
    means: Mapping[str, np.ndarray],
    threads: int | None,
) -> dict[str, np.ndarray]:
    nodes, inputs, feeds = [], [], {}
    deltas: dict[str, np.ndarray] = {}
    for index, name in group:
        node = graph.node(name)
        delta = f"delta_{index}"
        deltas[delta] = weight_delta(graph, reference, plan, node, np.float32)
        feed = f"mean_{index}"
        mean = np.asarray(means[node.inputs[0]], np.float32)[None]
        feeds[feed] = mean
        inputs.append(helper.make_tensor_value_info(feed, onnx.TensorProto.FLOAT, list(mean.shape)))
        shifted = helper.make_node(
            node.op_type, [feed, delta], [f"shift_{index}"], name=f"shift_{index}"
        )
        shifted.attribute.extend(helper.make_attribute(k, v) for k, v in node.attrs.items())
        nodes.append(shifted)
    outputs = [f"shift_{index}" for index, _ in group]
    graph_proto = helper.make_graph(
        nodes, "shifts", inputs, [helper.make_empty_tensor_value_info(o) for o in outputs]
    )
    model = helper.make_model(
        graph_proto, opset_imports=list(graph.model.opset_import), ir_version=graph.model.ir_version
    )
    # The ΔW reach ONNX Runtime as the arrays themselves: no protobuf or file copy of a big
    # layer's weights (issue 20). No graph optimization: a Conv whose input and weight are
    # plain floats is all we run.
    session = session_with_arrays(model, deltas, threads=threads, optimization="none")
    del deltas
    results = session.run(outputs, feeds)
    del session
    shifts = {}
    for (_, name), value in zip(group, results, strict=True):
        array = np.asarray(value, np.float64)
        shifts[name] = array.mean(axis=tuple(a for a in range(array.ndim) if a != 1))
    return shifts


def layer_spec(node: Node) -> OpSpec:
    """The spec of a layer ``corrected_layers`` chose."""
    spec = lookup(node.op_type, node.domain)
    assert spec is not None and spec.is_layer, f"{node.name!r} is not a quantized layer"
    return spec
