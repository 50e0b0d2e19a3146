"""``to_qdq``: a plan written as a standard QDQ ONNX model (docs/numerics.md §Q10).

Placement follows ONNX Runtime's QDQ format, so its CPU provider turns each quantized
Conv, Gemm and MatMul into an int8 kernel: one QuantizeLinear -> DequantizeLinear pair per
quantized activation, right after its producer (or the graph input) and shared by every
reader; weights stored as int8 initializers (per-axis scales) and biases as int32
initializers, each read through a DequantizeLinear; folded activations removed. A target
whose runtime adds the bias in float (TensorRT, ``QuantTarget.float_bias``) keeps the bias
a float initializer with no Q/DQ (docs/targets.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import onnx
from onnx import helper, numpy_helper

from eightbit._memo import ConstantsMemo
from eightbit.errors import ModelError
from eightbit.graph import FreshNames, graph_names
from eightbit.graph._proto import copy_except, tensor_byte_size
from eightbit.graph.normalize import upgrade_opset
from eightbit.ops import lookup
from eightbit.plan import NodeDecision, QuantPlan
from eightbit.qdq import integer_moves
from eightbit.quant import QuantParams, quantize_values

# Per-axis DequantizeLinear arrived in opset 13; int16 QuantizeLinear/DequantizeLinear in 21.
MIN_QDQ_OPSET = 13
INT16_QDQ_OPSET = 21
# Planned weights at least this big are not copied into the QDQ model before they are
# quantized (``_copy_without_weights``); smaller ones are not worth the bookkeeping.
STUB_MIN_BYTES = 1024


# What a ``QuantizedConstants`` holds at most by default (float bytes and integers): a
# ResNet-18's weights in both forms; of a big model, only the first weights met (its
# memory is the scarcer resource, issue 20).
CACHE_MAX_BYTES = 64 << 20


class QuantizedConstants(ConstantsMemo[onnx.TensorProto]):
    """The integer initializers ``to_qdq`` wrote, each with the float bytes and parameters
    it was quantized from, for the next export to copy instead of computing again.

    A fallback rebuilds the model once per candidate (§R.10) and most of its weights are
    quantized with the same parameters every time; the integers are a function of the
    values and the parameters (eq. Q.1), so a copy is the same bytes. A copy is taken only
    when the float bytes are equal (``ConstantsMemo``). At most ``max_bytes`` are kept (the
    first ones met); a tensor whose data is not in the model (external data) is quantized
    each time.
    """

    def __init__(self, max_bytes: int = CACHE_MAX_BYTES) -> None:
        super().__init__(max_bytes)

    def written(
        self, source: onnx.TensorProto, params: QuantParams, write: Callable[[], onnx.TensorProto]
    ) -> onnx.TensorProto:
        """``write()`` (the integer initializer of ``source`` quantized with ``params``),
        or what it returned for the same values and parameters (the caller copies it)."""
        if not source.HasField("raw_data") or source.data_location == onnx.TensorProto.EXTERNAL:
            return write()
        values = source.raw_data
        return self.cached(
            _constant_key(source, params), values, write, lambda t: len(values) + len(t.raw_data)
        )


def _constant_key(source: onnx.TensorProto, params: QuantParams) -> tuple[object, ...]:
    """The parameters and what of ``source`` is not its bytes."""
    scale, zero_point = params.scale, params.zero_point
    return (
        source.name, source.data_type, tuple(source.dims), params.dtype, params.axis,
        params.narrow_range, scale.shape, scale.tobytes(), zero_point.tobytes(),
    )  # fmt: skip


def to_qdq(
    model: onnx.ModelProto, plan: QuantPlan, *, cache: QuantizedConstants | None = None
) -> onnx.ModelProto:
    """A QDQ copy of ``model`` (normalized, opset >= 13) quantized as ``plan`` says.

    The tensor names of ``model`` keep their meaning: each quantized activation ``t`` is
    the DequantizeLinear output named ``t`` (its producer now writes ``t_prequant``), so
    graph outputs and value infos are unchanged. ``model`` itself is not modified.
    ``cache``: integer weights of earlier exports to copy (a fallback's rebuilds); the
    model is the same bytes with or without it.
    """
    opset = _default_opset(model)
    if opset < MIN_QDQ_OPSET:
        raise ModelError(
            f"QDQ export needs opset >= {MIN_QDQ_OPSET} for per-channel scales (got {opset}); "
            f"normalize the model first"
        )
    if opset < INT16_QDQ_OPSET and any(p.dtype == "int16" for p in plan.tensors.values()):
        result = onnx.ModelProto()
        result.CopyFrom(model)
        upgrade_opset(result, INT16_QDQ_OPSET)  # 16x8 (§Q17); other models keep their opset
        _QdqWriter(result.graph, plan, cache=cache).write()
        return result
    result, weights = _copy_without_weights(model, plan)
    _QdqWriter(result.graph, plan, weights, cache).write()
    return result


def _copy_without_weights(
    model: onnx.ModelProto, plan: QuantPlan
) -> tuple[onnx.ModelProto, dict[str, onnx.TensorProto]]:
    """A copy of ``model`` whose planned weights are stubs (name, type and shape, no data),
    and ``model``'s weights they stand for: a weight stored as integers is read from
    ``model`` instead of being copied first and dropped after (a big model's float weights
    would be held twice). ``_QdqWriter`` fills in a stub that is still read as a float."""
    result = onnx.ModelProto()
    copy_except(model, result, skipped="graph")
    copy_except(model.graph, result.graph, skipped="initializer")
    weights = {}
    for tensor in model.graph.initializer:
        if tensor.name in plan.tensors and tensor_byte_size(tensor) >= STUB_MIN_BYTES:
            weights[tensor.name] = tensor
            result.graph.initializer.add(
                name=tensor.name, data_type=tensor.data_type, dims=tensor.dims
            )
        else:
            result.graph.initializer.append(tensor)
    return result, weights


class _QdqWriter:
    """Rewrites one GraphProto in place; used once per export."""

    def __init__(
        self,
        graph: onnx.GraphProto,
        plan: QuantPlan,
        weights: dict[str, onnx.TensorProto] | None = None,
        cache: QuantizedConstants | None = None,
    ) -> None:
        self.graph = graph
        self.cache = cache
        self.plan = plan
        self.decisions = _decisions_for(graph, plan)
        self.initializers = {tensor.name: tensor for tensor in graph.initializer}
        # Stubbed initializer -> the source model's tensor holding its data (read only).
        self.weights = weights or {}
        self.names = FreshNames(graph_names(graph))
        self.params_names: dict[str, tuple[str, str]] = {}
        self.dequantized_constants: dict[str, str] = {}
        # DequantizeLinear output -> (its integer input, parameters), for _keep_float
        self.dequantized_activations: dict[str, tuple[str, QuantParams]] = {}
        self.head: list[onnx.NodeProto] = []  # DQ of constants and Q/DQ of inputs go first

    def write(self) -> None:
        nodes = list(self.graph.node)
        by_name = {node.name: node for node in nodes}
        input_renames = self._quantize_graph_inputs()
        body: list[onnx.NodeProto] = []
        for node in nodes:
            decision = self.decisions[node.name]
            if decision.fused_into is not None:
                continue  # folded into its producer: the producer writes into its Q/DQ
            for port, name in enumerate(node.input):
                if name in input_renames:
                    node.input[port] = input_renames[name]
                elif (
                    decision.quantized
                    and name in self.initializers
                    and name in self.plan.tensors
                    and not self._float_bias(node, port)
                ):
                    node.input[port] = self._dequantized_constant(name)
            if not decision.quantized:
                body.extend(self._keep_float(node))
            body.append(node)
            if decision.fused_activation is not None:
                folded = by_name[decision.fused_activation].output[0]
                body.extend(self._pair(node.output[0], folded, self.plan.tensors[folded]))
            for port, name in enumerate(node.output):
                if name and name in self.plan.tensors and name not in self.initializers:
                    node.output[port] = self.names(f"{name}_prequant")
                    body.extend(self._pair(node.output[port], name, self.plan.tensors[name]))
        self.graph.ClearField("node")
        self.graph.node.extend([*self.head, *body])
        integer_moves.collapse(self.graph, self.plan.tensors)
        self._drop_unused_float_constants()

    def _float_bias(self, node: onnx.NodeProto, port: int) -> bool:
        """Whether ``port`` of ``node`` is a bias its target adds in float."""
        if not self.plan.config.profile.float_bias:
            return False
        spec = lookup(node.op_type, node.domain)
        return spec is not None and spec.bias_port == port

    def _quantize_graph_inputs(self) -> dict[str, str]:
        renames = {}
        for value in self.graph.input:
            name = value.name
            if name in self.plan.tensors and name not in self.initializers:
                renames[name] = self.names(f"{name}_dequantized")
                self.head.extend(self._pair(name, renames[name], self.plan.tensors[name]))
        return renames

    def _pair(self, source: str, target: str, params: QuantParams) -> list[onnx.NodeProto]:
        """QuantizeLinear(source) -> DequantizeLinear -> target."""
        scale, zero_point = self._params_initializers(target, params)
        stored = self.names(f"{target}_quantized")
        quantize = _qdq_node(
            "QuantizeLinear",
            [source, scale, zero_point],
            stored,
            self.names(f"{target}_QuantizeLinear"),
            params.axis,
        )
        dequantize = _qdq_node(
            "DequantizeLinear",
            [stored, scale, zero_point],
            target,
            self.names(f"{target}_DequantizeLinear"),
            params.axis,
        )
        self.dequantized_activations[target] = (stored, params)
        return [quantize, dequantize]

    def _keep_float(self, node: onnx.NodeProto) -> list[onnx.NodeProto]:
        """Stop ONNX Runtime from quantizing a float Conv/ConvTranspose/Gemm behind our back.

        ONNX Runtime's WeightBiasQuantization (>= 1.20, on by default) turns a float Conv,
        ConvTranspose or Gemm whose input comes from a per-tensor DequantizeLinear into an
        int8 node with one weight scale for the whole tensor: a node the plan keeps in float
        (--exclude, fallback) would silently run in int8, and worse than ours. It leaves the
        node alone when that DequantizeLinear is per-axis, so such a node reads its input
        through its own DequantizeLinear with the same scale repeated per channel (axis 1):
        the same real values, exactly.
        """
        spec = lookup(node.op_type, node.domain)
        if spec is None or not spec.runtime_quantizes_float or spec.weight_port is None:
            return []
        if len(node.input) <= spec.weight_port or not node.input[0]:
            return []
        source = self.dequantized_activations.get(node.input[0])
        weight = self.initializers.get(node.input[spec.weight_port])
        if source is None or weight is None:
            return []
        stored, params = source
        channels = _input_channels(node, tuple(weight.dims))
        if params.axis is not None or channels is None:
            return []
        output = self.names(f"{node.name}_float_input")
        scale, zero_point = self.names(f"{output}_scale"), self.names(f"{output}_zero_point")
        self.graph.initializer.extend(
            [
                numpy_helper.from_array(
                    np.full(channels, params.scale.reshape(()), np.float32), scale
                ),
                numpy_helper.from_array(
                    np.full(channels, params.zero_point.reshape(()), params.numpy_dtype),
                    zero_point,
                ),
            ]
        )
        node.input[0] = output
        return [
            _qdq_node(
                "DequantizeLinear",
                [stored, scale, zero_point],
                output,
                self.names(f"{output}_DequantizeLinear"),
                1,
            )
        ]

    def _dequantized_constant(self, name: str) -> str:
        """The DequantizeLinear output reading the integer form of initializer ``name``."""
        if name in self.dequantized_constants:
            return self.dequantized_constants[name]
        params = self.plan.tensors[name]
        source = self.weights.get(name, self.initializers[name])

        def write() -> onnx.TensorProto:
            return numpy_helper.from_array(quantize_values(numpy_helper.to_array(source), params))

        stored = self.names(f"{name}_quantized")
        integers = self.graph.initializer.add()
        cache = self.cache
        integers.CopyFrom(write() if cache is None else cache.written(source, params, write))
        integers.name = stored
        scale, zero_point = self._params_initializers(name, params)
        output = self.names(f"{name}_dequantized")
        self.head.append(
            _qdq_node(
                "DequantizeLinear",
                [stored, scale, zero_point],
                output,
                self.names(f"{name}_DequantizeLinear"),
                params.axis,
            )
        )
        self.dequantized_constants[name] = output
        return output

    def _params_initializers(self, tensor: str, params: QuantParams) -> tuple[str, str]:
        if tensor not in self.params_names:
            scale = self.names(f"{tensor}_scale")
            zero_point = self.names(f"{tensor}_zero_point")
            self.graph.initializer.extend(
                [
                    numpy_helper.from_array(params.scale.astype(np.float32), scale),
                    numpy_helper.from_array(
                        params.zero_point.astype(params.numpy_dtype), zero_point
                    ),
                ]
            )
            self.params_names[tensor] = (scale, zero_point)
        return self.params_names[tensor]

    def _drop_unused_float_constants(self) -> None:
        """Remove float weights now read only in integer form (the file keeps 1 byte/weight)."""
        used = set(_names_read(self.graph.node)) | {value.name for value in self.graph.output}
        replaced = set(self.dequantized_constants)
        kept = [t for t in self.graph.initializer if t.name not in replaced or t.name in used]
        if len(kept) != len(self.graph.initializer):
            self.graph.ClearField("initializer")
            self.graph.initializer.extend(kept)
        for tensor in self.graph.initializer:
            if tensor.name in self.weights:  # still read as a float: its data after all
                tensor.CopyFrom(self.weights[tensor.name])


def _qdq_node(
    op_type: str, inputs: list[str], output: str, name: str, axis: int | None
) -> onnx.NodeProto:
    node = helper.make_node(op_type, inputs, [output], name=name)
    if axis is not None:  # per-channel: scale and zero point run along this axis
        node.attribute.append(helper.make_attribute("axis", axis))
    return node


def _decisions_for(graph: onnx.GraphProto, plan: QuantPlan) -> dict[str, NodeDecision]:
    decisions = {decision.name: decision for decision in plan.nodes}
    names = [node.name for node in graph.node]
    missing = [name for name in names if name not in decisions]
    extra = sorted(set(decisions) - set(names))
    if missing or extra:
        raise ModelError(
            f"the plan does not match the model (nodes without a decision: {missing[:5]}, "
            f"decisions without a node: {extra[:5]}); make the plan from this normalized model"
        )
    return decisions


def _default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 0


def _names_read(nodes: Iterable[onnx.NodeProto]) -> Iterator[str]:
    """Every name read by ``nodes``, including from inside their subgraphs."""
    for node in nodes:
        yield from node.input
        for attribute in node.attribute:
            for subgraph in [attribute.g, *attribute.graphs]:
                yield from _names_read(subgraph.node)


def _input_channels(node: onnx.NodeProto, weight_shape: tuple[int, ...]) -> int | None:
    """Size of axis 1 of a layer's data input, from its weight (None: unknown)."""
    spec = lookup(node.op_type, node.domain)
    if spec is None or spec.weight_layout is None:
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    layout = spec.weight_layout(attrs, weight_shape)
    return None if layout is None else layout.input_channels(weight_shape)
