"""Prepare: a QDQ model and its plan become an integer ``Program`` (once per model).

The QDQ model is read as eightbit's exporter writes it (docs/numerics.md §Q10):
``DequantizeLinear`` of an int8 initializer is a quantized constant; ``Q → DQ`` after a
producer stores its output as integers; a quantized node reads DQ outputs and writes into
one Q per output. The plan says which nodes are quantized and why the others are not.

Each quantized node becomes the integer step of its family (``kernels.PREPARE``), writing
straight into the integers of its Q: the Q is absorbed, no float is formed. A float node
reads dequantized values (a ``DequantizeStep`` is added the first time a float is needed)
and its float outputs are quantized where a Q reads them. Graph inputs are quantized and
graph outputs dequantized at the boundary.
"""

from __future__ import annotations

import numpy as np
import onnx

from eightbit.engine.clamp_fold import fold_wide_clamps
from eightbit.engine.dynamic import build_dynamic_program
from eightbit.engine.floats import DequantizeStep, FloatNodeStep, QuantizeStep
from eightbit.engine.kernels import PREPARE
from eightbit.engine.kernels.activation import LookupStep, build_table
from eightbit.engine.operands import (
    IntegerConstant,
    IntegerInput,
    NodeToPrepare,
    Operand,
    PlainInput,
)
from eightbit.engine.program import FloatNode, Program, Step, TensorFormat
from eightbit.errors import ConfigError, ModelError
from eightbit.graph import Graph, Node
from eightbit.plan import NodeDecision, QuantPlan
from eightbit.qdq import (
    WIDE_READ_TYPES,
    UnreadableParams,
    expand,
    is_dequantize,
    is_quantize,
    read_params,
)
from eightbit.quant import QuantParams, dequantize_values

Shape = tuple[int | str | None, ...]


def build_program(model: onnx.ModelProto, plan: QuantPlan) -> Program:
    """The integer program of a QDQ ``model`` exported from ``plan`` (or of a dynamic-mode
    model, ``engine.dynamic``)."""
    if plan.config.mode == "dynamic":
        return build_dynamic_program(model, plan)
    if plan.config.profile.float_bias:
        raise ConfigError(
            f"the integer engine runs integer biases; target {plan.config.target!r} keeps "
            "them float for its runtime's fusions (docs/targets.md): quantize with another "
            "--target (ort, mcu, fpga) to run the model here or generate C"
        )
    # An int16 layer's Relu/Clip runs as the layer's bounds (§E.14): one tensor stored.
    return fold_wide_clamps(_Builder(Graph(expand(model)), plan).build())


class _Builder:
    def __init__(self, graph: Graph, plan: QuantPlan) -> None:
        self.graph = graph
        self.plan = plan
        self.decisions: dict[str, NodeDecision] = {d.name: d for d in plan.nodes}
        self.steps: list[Step] = []
        self.constants: dict[str, np.ndarray] = {}
        self.formats: dict[str, TensorFormat] = {}
        self.float_nodes: list[FloatNode] = []
        self.floats: set[str] = {info.name for info in graph.inputs}  # float values at hand
        self.dequantized: dict[str, IntegerInput] = {}  # DQ output -> integers it reads
        self.quantized_constants: dict[str, IntegerConstant] = {}  # DQ output -> constant
        self.absorbed: set[str] = set()  # Q nodes written by the integer step before them
        self.unnamed: set[str] = set()  # integers known so far by their producer's raw output
        self.shapes: dict[str, Shape | None] = {}  # integer tensor -> its float tensor's shape

    def build(self) -> Program:
        for node in self.graph.nodes:
            if is_dequantize(node):
                self._record_dequantize(node)
            elif is_quantize(node):
                if node.name not in self.absorbed:
                    self._quantize(node)
            elif self._decision(node).quantized:
                self._integer_step(node)
            else:
                self._float_step(node)
        outputs = tuple(info.name for info in self.graph.outputs)
        for name in outputs:
            self._need_float(name)
        used = {name for step in self.steps for name in step.inputs}
        return Program(
            steps=tuple(self.steps),
            inputs=tuple(info.name for info in self.graph.inputs),
            outputs=outputs,
            constants={k: v for k, v in self.constants.items() if k in used},
            formats=self.formats,
            float_nodes=tuple(self.float_nodes),
            input_infos=tuple(self.graph.inputs),
        )

    # --- Q and DQ -------------------------------------------------------------------------

    def _params(self, node: Node, input_type: np.dtype | None) -> QuantParams:
        """The node's parameters (§Q10.1); ``input_type``: the type of a DQ's integers."""
        try:
            # int16 too: the s16 kernels run 16x8 tensors (numerics §E.13).
            return read_params(node, self.graph.initializers, input_type, types=WIDE_READ_TYPES)
        except UnreadableParams as error:
            raise ModelError(
                f"{node.op_type} {node.name!r}: {error.reason}; the engine prepares constant "
                "int8/uint8/int16/int32 scales and zero points, per tensor or per axis, once"
            ) from None

    def _record_dequantize(self, node: Node) -> None:
        source, target = node.inputs[0], node.outputs[0]
        if source in self.graph.initializers:
            values = np.asarray(self.graph.initializers[source])
            params = self._params(node, None)
            self.quantized_constants[target] = IntegerConstant(source, values, params)
            return
        if source not in self.formats:
            raise ModelError(f"DequantizeLinear {node.name!r} reads {source!r}, not a Q output")
        params = self._params(node, np.dtype(self.formats[source].params.dtype))
        if _uniform_per_axis_of(params, self.formats[source].params):
            # The export feeds a float Conv/Gemm through a per-channel DequantizeLinear with
            # its tensor's one scale repeated (so ONNX Runtime keeps that node float): the
            # same numbers, so the same format.
            params = self.formats[source].params
        if params != self.formats[source].params:
            raise ModelError(
                f"DequantizeLinear {node.name!r} reads {source!r} with other parameters than "
                "its QuantizeLinear; the engine needs one format per tensor"
            )
        self.dequantized[target] = IntegerInput(source, params)
        self.shapes.setdefault(target, self.shapes.get(source))
        self._check_against_plan(target, params)
        if source in self.unnamed:  # the DQ output carries the model's name for the tensor
            self.formats[source] = TensorFormat(target, params)
            self.unnamed.discard(source)

    def _quantize(self, node: Node) -> None:
        """A Q of a float value (input, float node output), or of a DQ: a requantization."""
        source, target = node.inputs[0], node.outputs[0]
        params = self._params(node, None)
        integers = self.dequantized.get(source)
        if integers is not None and not (integers.params.per_channel or params.per_channel):
            # Q(DQ(q)) has 256 possible inputs: a table keeps it integer (§E.7).
            table = build_table(lambda real: real, integers.params, params)
            step: Step = LookupStep(
                node.name, (integers.name,), (target,), table, integers.params.qmin
            )
        else:
            self._need_float(source)
            step = QuantizeStep(node.name, (source,), (target,), params)
        self.steps.append(step)
        self.formats[target] = TensorFormat(source, params)
        self.shapes[target] = self._shape(source)

    def _check_against_plan(self, tensor: str, params: QuantParams) -> None:
        planned = self.plan.tensors.get(tensor)
        same = planned is None or (
            planned.dtype == params.dtype
            and np.array_equal(planned.scale, params.scale)
            and np.array_equal(planned.zero_point, params.zero_point)
        )
        if not same:
            raise ModelError(
                f"tensor {tensor!r} is quantized with {params} in the model but {planned} in "
                "the plan; the plan beside the model must be the one it was exported from"
            )

    # --- nodes ----------------------------------------------------------------------------

    def _shape(self, name: str) -> Shape | None:
        """The declared shape of a tensor, or of the float tensor its integers stand for."""
        info = self.graph.info(name) if name else None
        if info is not None and info.shape is not None:
            return info.shape
        return self.shapes.get(name)

    def _decision(self, node: Node) -> NodeDecision:
        decision = self.decisions.get(node.name)
        if decision is None:
            raise ModelError(
                f"node {node.name!r} ({node.op_type}) is not in the plan; the plan beside the "
                "model must be the one it was exported from"
            )
        return decision

    def _operand(self, name: str) -> Operand:
        if not name:
            return None
        if name in self.dequantized:
            return self.dequantized[name]
        if name in self.quantized_constants:
            constant = self.quantized_constants[name]
            self.constants[constant.name] = constant.values
            return constant
        if name in self.graph.initializers:
            self.constants[name] = np.asarray(self.graph.initializers[name])
            return PlainInput(name, self.constants[name])
        return PlainInput(name, None)

    def _integer_step(self, node: Node) -> None:
        prepare = PREPARE.get(node.op_type)
        if prepare is None:
            raise ModelError(
                f"the plan quantizes {node.name!r} ({node.op_type}), which the integer engine "
                f"has no kernel for; it runs {', '.join(sorted(PREPARE))}"
            )
        outputs = tuple(self._integer_output(node, name) for name in node.outputs)
        prepared = NodeToPrepare(
            node=node,
            inputs=tuple(self._operand(name) for name in node.inputs),
            outputs=outputs,
            opset=self.graph.opset,
            input_shapes=tuple(self._shape(name) for name in node.inputs),
        )
        step = prepare(prepared)
        for name in step.inputs:
            if name and name not in self.formats and name not in self.constants:
                self._need_float(name)  # a run-time shape or index from a float node
        self.steps.append(step)

    def _integer_output(self, node: Node, name: str) -> IntegerInput:
        """The integers a quantized node writes for output ``name``: its Q's output."""
        readers = self.graph.consumers(name) if name else []
        graph_outputs = {info.name for info in self.graph.outputs}
        if not readers and name not in graph_outputs:
            placeholder = name or f"{node.name}_unused_output"
            unused = QuantParams(np.asarray(1.0), np.asarray(0), "int8")
            return IntegerInput(placeholder, unused)
        quantize = readers[0] if len(readers) == 1 else None
        if quantize is None or not is_quantize(quantize) or name in graph_outputs:
            raise ModelError(
                f"output {name!r} of quantized node {node.name!r} must be read by exactly one "
                "QuantizeLinear (the QDQ form eightbit exports)"
            )
        self.absorbed.add(quantize.name)
        params = self._params(quantize, None)
        target = quantize.outputs[0]
        self.formats[target] = TensorFormat(name, params)
        self.unnamed.add(target)
        self.shapes[target] = self._shape(name)
        return IntegerInput(target, params)

    def _float_step(self, node: Node) -> None:
        for name in node.inputs:
            if name:
                self._need_float(name)
        proto = next(p for p in self.graph.model.graph.node if p.name == node.name)
        opsets = tuple((o.domain, int(o.version)) for o in self.graph.model.opset_import)
        reason = self._decision(node).reason or "kept in float by the plan"
        self.steps.append(
            FloatNodeStep(
                node.name,
                tuple(node.inputs),
                tuple(node.outputs),
                proto.SerializeToString(),
                opsets,
                reason,
            )
        )
        self.float_nodes.append(FloatNode(node.name, node.op_type, reason))
        self.floats.update(name for name in node.outputs if name)

    def _need_float(self, name: str) -> None:
        """Make the float value ``name`` available to the steps that follow."""
        if name in self.floats or name in self.constants:
            return
        if name in self.dequantized:
            source = self.dequantized[name]
            self.steps.append(
                DequantizeStep(f"{name}_dequantize", (source.name,), (name,), source.params)
            )
        elif name in self.quantized_constants:
            constant = self.quantized_constants[name]
            self.constants[name] = dequantize_values(constant.values, constant.params)
            return
        elif name in self.graph.initializers:
            self.constants[name] = np.asarray(self.graph.initializers[name])
            return
        else:
            raise ModelError(f"tensor {name!r} is read before it is computed")
        self.floats.add(name)


def _uniform_per_axis_of(params: QuantParams, per_tensor: QuantParams) -> bool:
    """True when per-axis ``params`` repeat the one scale and zero point of ``per_tensor``."""
    return (
        params.axis is not None
        and per_tensor.axis is None
        and params.dtype == per_tensor.dtype
        and bool(np.all(params.scale == per_tensor.scale))
        and bool(np.all(params.zero_point == per_tensor.zero_point))
    )
