"""Dynamic mode (docs/numerics.md §D): ``plan_dynamic`` decides, ``to_dynamic`` writes.

Each matrix product with a constant 2-D weight becomes ONNX Runtime's run-time form:
``DynamicQuantizeLinear`` of its input (uint8, scale and zero point from the input's own
range, §D.1), ``MatMulInteger`` with the int8 per-column weight (§D.2), then the int32 sums
scaled back to float (``Cast``, ``Mul`` by ``s_x · s_w``) and the bias added in float: the
pattern ONNX Runtime fuses into one ``DynamicQuantizeMatMul`` kernel; or, with
``row_scales`` and unless the config lists the product in ``tensor_scales`` (§D.9), the
input quantized with one symmetric scale per row computed in the graph (§D.4). Embedding
tables are stored as int8 rows with one scale per row (``export.embedding``, §D.3).
Everything else computes in float: there is no calibrated activation to keep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from eightbit.errors import ConfigError
from eightbit.export.embedding import table_nodes
from eightbit.graph import FreshNames, Graph, graph_names
from eightbit.ops.embedding import DynamicWeight, TableLookup, dynamic_weight, table_lookup
from eightbit.plan import NodeDecision, QuantPlan
from eightbit.quant import QuantConfig, QuantParams, quantize_values, weight_params

FLOAT_REASON = "dynamic mode: computed in float (no int8 kernel reads it)"
EXCLUDED_REASON = "excluded by the configuration ('exclude')"
NOT_SELECTED_REASON = "op type not selected by the configuration ('op_types')"


def plan_dynamic(graph: Graph, config: QuantConfig) -> QuantPlan:
    """The dynamic plan of ``graph``: int8 weights of its matrix products and embedding
    tables (per output column, resp. per row), every other node float with its reason."""
    if config.mode != "dynamic":
        raise ConfigError(f"plan_dynamic needs QuantConfig(mode='dynamic') (got {config.mode!r})")
    names = {node.name for node in graph.nodes}
    unknown = [name for name in config.exclude if name not in names]
    if unknown:
        raise ConfigError(f"'exclude' names no node of the model: {unknown}")
    tensors: dict[str, QuantParams] = {}
    decisions = []
    for node in graph.nodes:
        product, table = dynamic_weight(node, graph), table_lookup(node, graph)
        reason = None
        if product is None and table is None:
            reason = FLOAT_REASON
        elif node.name in config.exclude:
            reason = EXCLUDED_REASON
        elif config.op_types is not None and node.op_type not in config.op_types:
            reason = NOT_SELECTED_REASON
        elif product is not None:
            axis = (0 if product.transposed else 1) if config.per_channel else None
            values = graph.initializers[product.weight]
            tensors[product.weight] = weight_params(values, axis, config, name=product.weight)
        elif table is not None:
            values = graph.initializers[table.table]
            tensors[table.table] = weight_params(values, 0, config, name=table.table)
        decisions.append(NodeDecision(node.name, node.op_type, reason is None, reason))
    if not tensors:
        raise ConfigError(
            "dynamic mode found nothing to quantize: no MatMul/Gemm with a constant 2-D weight "
            "and no Gather from a constant table; use mode 'static' for this model"
        )
    return QuantPlan(config=config, tensors=tensors, nodes=tuple(decisions))


def to_dynamic(model: onnx.ModelProto, plan: QuantPlan) -> onnx.ModelProto:
    """A copy of ``model`` (normalized) with the plan's int8 nodes in the run-time form.

    The tensor names of ``model`` keep their meaning (each rewritten node's outputs keep
    their names), so graph inputs and outputs are unchanged; ``model`` is not modified.
    The intermediate tensors' recorded shapes are dropped (§D.8): with them ONNX Runtime
    fuses each residual Add and LayerNorm into its SkipLayerNormalization kernel, which is
    several times slower on CPU than the two nodes it replaces.
    Products that read the same input (attention's query, key and value) share its
    quantization.
    """
    graph = Graph(model)
    result = onnx.ModelProto()
    result.CopyFrom(model)
    writer = _Writer(graph, plan, FreshNames(graph_names(result.graph)))
    quantized = {d.name for d in plan.quantized_nodes()}
    body: list[onnx.NodeProto] = []
    for proto, node in zip(result.graph.node, graph.nodes, strict=True):
        product, table = dynamic_weight(node, graph), table_lookup(node, graph)
        if node.name not in quantized or (product is None and table is None):
            body.append(proto)
        elif product is not None:
            body.extend(writer.product(product, node.outputs[0]))
        elif table is not None:
            body.extend(writer.table(table, node.outputs[0]))
    result.graph.ClearField("node")
    result.graph.node.extend(body)
    read = {name for proto in body for name in proto.input}
    kept = [t for t in result.graph.initializer if t.name not in writer.replaced or t.name in read]
    result.graph.ClearField("initializer")
    result.graph.initializer.extend([*kept, *writer.constants])
    result.graph.ClearField("value_info")
    return result


# The int8 weights are stored as int8 with this zero point (eq. D.2), as static mode stores
# them: ONNX Runtime then runs its u8 x s8 kernels, exact with VNNI and about twice as fast
# there as the u8 x u8 ones that a uint8 weight (offset by 128) forces; without VNNI the
# session option of §1.9 turns them into u8 x u8 (its s8-to-u8 weight rewrite covers
# MatMulInteger and its fused forms), as for static models.
WEIGHT_ZERO_POINT = 0
# Row codes are symmetric around this zero point: uint8 [1, 255] (eq. D.4).
ROW_ZERO_POINT = 128
ROW_LEVELS = 127
# A row of zeros is divided by this instead of 0 (its codes are all 128 either way).
ROW_TINY = 1e-30


@dataclass(frozen=True)
class _Quantized:
    """An input quantized at run time: its codes, their zero point, and the scale the int32
    sums are multiplied by before the column scales (per row, or per tensor)."""

    codes: str
    zero_point: str
    scale: str


class _Writer:
    """The nodes and constants of one dynamic model; an input is quantized once."""

    def __init__(self, graph: Graph, plan: QuantPlan, names: FreshNames) -> None:
        self.graph, self.plan, self.names = graph, plan, names
        self.constants: list[TensorProto] = []
        self.replaced: set[str] = set()
        # (input, per row?) -> its quantization, written once for all its readers
        self.inputs: dict[tuple[str, bool], _Quantized] = {}

    def constant(self, base: str, value: np.ndarray) -> str:
        name = self.names(base)
        self.constants.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op_type: str, inputs: list[str], base: str, **attrs: Any) -> str:
        """One node with one fresh output, appended to ``self.pending``; its output name."""
        output = self.names(f"{base}_{op_type.lower()}")
        self.pending.append(
            helper.make_node(
                op_type, inputs, [output], name=self.names(f"{base}_{op_type}"), **attrs
            )
        )
        return output

    def table(self, table: TableLookup, output: str) -> list[onnx.NodeProto]:
        params = self.plan.tensors[table.table]
        values = self.graph.initializers[table.table]
        nodes, constants = table_nodes(table, values, params, self.names, output)
        self.constants.extend(constants)
        self.replaced.add(table.table)
        return nodes

    def product(self, product: DynamicWeight, output: str) -> list[onnx.NodeProto]:
        """``MatMulInteger`` of the quantized input and the stored weight, the int32 sums
        times the column scales and the input's scale (eq. D.2), then the bias."""
        self.pending: list[onnx.NodeProto] = []
        config = self.plan.config
        rows = config.row_scales and product.node not in config.tensor_scales
        quantized = self.inputs.get((product.data, rows))
        if quantized is None:
            quantize = self._rows if rows else self._tensor
            quantized = self.inputs[(product.data, rows)] = quantize(product.data)
        weight, zero, column_scale = self._weight(product, rows)
        base = product.node
        sums = self.node(
            "MatMulInteger", [quantized.codes, weight, quantized.zero_point, zero], base
        )
        widened = self.node("Cast", [sums], base, to=TensorProto.FLOAT)
        columns = self.constant(f"{base}_column_scale", column_scale)
        scaled = output if product.bias is None else self.names(f"{base}_product")
        if rows:
            # Column scales first, then the row's: ONNX Runtime would fuse Cast ->
            # Mul(Mul(row scale, column scales)) into MatMulIntegerToFloat, but its fused
            # kernel gave wrong sums for per-row scales in whole models (ORT 1.32: MiniLM at
            # 2.9 dB), and it leaves this order unfused.
            first, second = self.node("Mul", [widened, columns], base), quantized.scale
        else:
            # ONNX Runtime's own pattern: fused with DynamicQuantizeLinear and the bias into
            # one DynamicQuantizeMatMul kernel.
            first, second = widened, self.node("Mul", [quantized.scale, columns], base)
        self.pending.append(
            helper.make_node("Mul", [first, second], [scaled], name=self.names(f"{base}_rescale"))
        )
        if product.bias is not None:
            self.pending.append(
                helper.make_node(
                    "Add", [scaled, product.bias], [output], name=self.names(f"{base}_bias")
                )
            )
        return self.pending

    def _weight(self, product: DynamicWeight, rows: bool) -> tuple[str, str, np.ndarray]:
        """The stored weight [K, N] and its zero points (names), and the column scales,
        divided by the input's levels when the input has per-row scales (the row's scale is
        its magnitude, eq. D.4)."""
        params = self.plan.tensors[product.weight]
        integers = quantize_values(self.graph.initializers[product.weight], params)
        if product.transposed:
            integers = integers.T  # MatMulInteger reads [K, N]
        columns = integers.shape[1]
        scale = np.broadcast_to(params.scale, (columns,)).astype(np.float32)
        if rows:
            scale = (scale / np.float32(ROW_LEVELS)).astype(np.float32)
        stored = integers.astype(np.int8)  # symmetric: zero point WEIGHT_ZERO_POINT
        self.replaced.add(product.weight)
        weight = self.constant(f"{product.weight}_quantized", np.ascontiguousarray(stored))
        zero = self.constant(
            f"{product.weight}_zero_point", np.full(columns, WEIGHT_ZERO_POINT, np.int8)
        )
        return weight, zero, scale

    def _tensor(self, data: str) -> _Quantized:
        """``DynamicQuantizeLinear``: one scale and zero point for the tensor (eq. D.1)."""
        codes, scale, zero = (self.names(f"{data}_{part}") for part in ("q", "scale", "zero"))
        self.pending.append(
            helper.make_node(
                "DynamicQuantizeLinear", [data], [codes, scale, zero],
                name=self.names(f"{data}_DynamicQuantizeLinear"),
            )
        )  # fmt: skip
        return _Quantized(codes, zero, scale)

    def _rows(self, data: str) -> _Quantized:
        """One symmetric scale per row (per token), in the graph (eq. D.4):
        ``m_r = max(max_k |x_rk|, tiny)``, ``q = clamp(round(x / m_r / (1/127)) + 128)``."""
        magnitude = self.node("Abs", [data], data)
        largest = self.node("ReduceMax", [magnitude], data, axes=[-1], keepdims=1)
        tiny = self.constant(f"{data}_tiny", np.asarray(ROW_TINY, np.float32))
        safe = self.node("Max", [largest, tiny], data)
        ratio = self.node("Div", [data, safe], data)
        step = self.constant(f"{data}_step", np.asarray(1 / ROW_LEVELS, np.float32))
        zero = self.constant(f"{data}_zero_point", np.asarray(ROW_ZERO_POINT, np.uint8))
        codes = self.node("QuantizeLinear", [ratio, step, zero], data)
        return _Quantized(codes, zero, safe)
