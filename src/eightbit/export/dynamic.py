"""Dynamic mode (docs/numerics.md §D): ``plan_dynamic`` decides, ``to_dynamic`` writes.

Each matrix product with a constant 2-D weight becomes ONNX Runtime's run-time form:
``DynamicQuantizeLinear`` of its input (uint8, scale and zero point from the input's own
range, §D.1), ``MatMulInteger`` with the int8 per-column weight (§D.2), then the int32 sums
scaled back to float (``Cast``, ``Mul`` by ``s_x · s_w``) and the bias added in float: the
pattern ONNX Runtime fuses into one ``DynamicQuantizeMatMul`` kernel. Embedding tables are
stored as int8 rows with one scale per row (``export.embedding``, §D.3). Everything else
computes in float: there is no calibrated activation to keep.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from eightbit.errors import ConfigError
from eightbit.export.embedding import table_nodes
from eightbit.graph import FreshNames, Graph, graph_names
from eightbit.ops.embedding import DynamicWeight, dynamic_weight, table_lookup
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
    their names), so graph outputs and value infos are unchanged; ``model`` is not modified.
    """
    graph = Graph(model)
    result = onnx.ModelProto()
    result.CopyFrom(model)
    names = FreshNames(graph_names(result.graph))
    quantized = {d.name for d in plan.quantized_nodes()}
    body: list[onnx.NodeProto] = []
    added: list[TensorProto] = []
    replaced: set[str] = set()
    for proto, node in zip(result.graph.node, graph.nodes, strict=True):
        product, table = dynamic_weight(node, graph), table_lookup(node, graph)
        if node.name not in quantized or (product is None and table is None):
            body.append(proto)
        elif product is not None:
            nodes, constants = _product(product, graph, plan, names, node.outputs[0])
            body.extend(nodes)
            added.extend(constants)
            replaced.add(product.weight)
        elif table is not None:
            params = plan.tensors[table.table]
            values = graph.initializers[table.table]
            nodes, constants = table_nodes(table, values, params, names, node.outputs[0])
            body.extend(nodes)
            added.extend(constants)
            replaced.add(table.table)
    result.graph.ClearField("node")
    result.graph.node.extend(body)
    read = {name for proto in body for name in proto.input}
    kept = [t for t in result.graph.initializer if t.name not in replaced or t.name in read]
    result.graph.ClearField("initializer")
    result.graph.initializer.extend([*kept, *added])
    return result


# The int8 weights are stored offset by this, as uint8 with zero point 128 (eq. D.2): the
# same products, and ONNX Runtime's u8 x u8 kernels sum them exactly on every x86 CPU,
# where its u8 x s8 kernels saturate pairs of products to 16 bits without VNNI (§1.9) unless
# the session asks for exact sums.
WEIGHT_OFFSET = 128
# Row codes are symmetric around this zero point: uint8 [1, 255] (eq. D.4).
ROW_ZERO_POINT = 128


def _weight(
    product: DynamicWeight, graph: Graph, plan: QuantPlan, names: FreshNames
) -> tuple[tuple[str, str, str], list[TensorProto]]:
    """The names of the stored weight [K, N], its zero points and its column scales [N],
    and the constants that hold them."""
    params = plan.tensors[product.weight]
    integers = quantize_values(graph.initializers[product.weight], params)
    if product.transposed:
        integers = integers.T  # MatMulInteger reads [K, N]
    columns = integers.shape[1]
    scale = np.broadcast_to(params.scale, (columns,)) if params.axis is not None else params.scale
    stored = (integers.astype(np.int16) + WEIGHT_OFFSET).astype(np.uint8)
    weight, zero, column_scale = (
        names(f"{product.weight}_quantized"),
        names(f"{product.weight}_zero_point"),
        names(f"{product.weight}_scale"),
    )
    constants = [
        numpy_helper.from_array(np.ascontiguousarray(stored), weight),
        numpy_helper.from_array(np.full(np.shape(scale), WEIGHT_OFFSET, np.uint8), zero),
        numpy_helper.from_array(np.asarray(scale, np.float32), column_scale),
    ]
    return (weight, zero, column_scale), constants


def _product(
    product: DynamicWeight,
    graph: Graph,
    plan: QuantPlan,
    names: FreshNames,
    output: str,
) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    """The int8 product writing ``output``: per-row or per-tensor input scales."""
    (weight, zero, column_scale), constants = _weight(product, graph, plan, names)
    base = product.node
    scaled = output if product.bias is None else names(f"{base}_product")
    if plan.config.row_scales:
        nodes, more = _rows(product.data, (weight, zero, column_scale), base, names, scaled)
    else:
        nodes, more = _tensor(product.data, (weight, zero, column_scale), base, names, scaled)
    if product.bias is not None:
        nodes.append(
            helper.make_node("Add", [scaled, product.bias], [output], name=names(f"{base}_bias"))
        )
    return nodes, [*constants, *more]


def _tensor(
    data: str, stored: tuple[str, str, str], base: str, names: FreshNames, output: str
) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    """``DynamicQuantizeLinear`` -> ``MatMulInteger`` -> ``Cast`` -> ``Mul`` (eq. D.1, D.2)."""
    weight, zero, column_scale = stored
    x_q, x_scale, x_zero = (names(f"{base}_input_{part}") for part in ("q", "scale", "zero"))
    sums, sums_float, both = (names(f"{base}_{part}") for part in ("int32", "sums", "scale"))
    make = helper.make_node
    nodes = [
        make("DynamicQuantizeLinear", [data], [x_q, x_scale, x_zero],
             name=names(f"{base}_quantize")),
        make("MatMulInteger", [x_q, weight, x_zero, zero], [sums], name=names(f"{base}_integer")),
        make("Cast", [sums], [sums_float], to=TensorProto.FLOAT, name=names(f"{base}_cast")),
        make("Mul", [x_scale, column_scale], [both], name=names(f"{base}_scales")),
        make("Mul", [sums_float, both], [output], name=names(f"{base}_rescale")),
    ]  # fmt: skip
    return nodes, []


def _rows(
    data: str, stored: tuple[str, str, str], base: str, names: FreshNames, output: str
) -> tuple[list[onnx.NodeProto], list[TensorProto]]:
    """One symmetric scale per row of the input (per token), computed in the graph (eq. D.4):
    ``s_r = max(max_k |x_rk| / 127, tiny)``, ``q = round(x / s_r) + 128``."""
    weight, zero, column_scale = stored
    n = {part: names(f"{base}_{part}") for part in (
        "abs", "absmax", "row_scale", "safe_scale", "ratio", "rounded", "shifted", "q",
        "int32", "sums", "rows_scaled", "input_zero", "inv127", "tiny", "offset",
    )}  # fmt: skip
    constants = [
        numpy_helper.from_array(np.asarray(ROW_ZERO_POINT, np.uint8), n["input_zero"]),
        numpy_helper.from_array(np.asarray(1 / 127, np.float32), n["inv127"]),
        numpy_helper.from_array(np.asarray(ROW_TINY, np.float32), n["tiny"]),
        numpy_helper.from_array(np.asarray(ROW_ZERO_POINT, np.float32), n["offset"]),
    ]
    make = helper.make_node
    nodes = [
        make("Abs", [data], [n["abs"]], name=names(f"{base}_abs")),
        make("ReduceMax", [n["abs"]], [n["absmax"]], axes=[-1], keepdims=1,
             name=names(f"{base}_absmax")),
        make("Mul", [n["absmax"], n["inv127"]], [n["row_scale"]], name=names(f"{base}_scale")),
        make("Max", [n["row_scale"], n["tiny"]], [n["safe_scale"]], name=names(f"{base}_safe")),
        make("Div", [data, n["safe_scale"]], [n["ratio"]], name=names(f"{base}_div")),
        make("Round", [n["ratio"]], [n["rounded"]], name=names(f"{base}_round")),
        make("Add", [n["rounded"], n["offset"]], [n["shifted"]], name=names(f"{base}_offset")),
        make("Cast", [n["shifted"]], [n["q"]], to=TensorProto.UINT8, name=names(f"{base}_q")),
        make("MatMulInteger", [n["q"], weight, n["input_zero"], zero], [n["int32"]],
             name=names(f"{base}_integer")),
        make("Cast", [n["int32"]], [n["sums"]], to=TensorProto.FLOAT, name=names(f"{base}_cast")),
        make("Mul", [n["sums"], n["safe_scale"]], [n["rows_scaled"]], name=names(f"{base}_rows")),
        make("Mul", [n["rows_scaled"], column_scale], [output], name=names(f"{base}_rescale")),
    ]  # fmt: skip
    return nodes, constants


# A row of zeros gets this scale instead of 0 (its codes are all 128 either way).
ROW_TINY = 1e-30
