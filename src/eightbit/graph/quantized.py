"""Whether a model is quantized already, so that ``quantize`` refuses it in one line instead
of quantizing a quantizer's output again (a few nodes more int8, nothing saved)."""

from __future__ import annotations

import os
from collections import Counter

import onnx

from eightbit.errors import ModelError
from eightbit.graph.files import load_model

# Nodes that compute on integers or quantize activations as the model runs: a model holding
# any is a quantizer's output. A DequantizeLinear of a constant alone is not: a float model
# may store its weights compressed that way.
_INTEGER_COMPUTE = frozenset(
    {
        "ConvInteger",
        "DynamicQuantizeLinear",
        "DynamicQuantizeMatMul",
        "MatMulInteger",
        "MatMulIntegerToFloat",
        "QAttention",
        "QGemm",
        "QLinearAdd",
        "QLinearAveragePool",
        "QLinearConcat",
        "QLinearConv",
        "QLinearGlobalAveragePool",
        "QLinearLeakyRelu",
        "QLinearMatMul",
        "QLinearMul",
        "QLinearSigmoid",
        "QLinearSoftmax",
    }
)


def quantized_nodes(model: onnx.ModelProto) -> Counter[str]:
    """Op type -> count of the nodes of ``model``'s graph that only a quantized model holds:
    integer kernels, and QuantizeLinear of a computed tensor."""
    graph = model.graph
    constants = {t.name for t in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    found: Counter[str] = Counter()
    for node in graph.node:
        activation = node.op_type == "QuantizeLinear" and node.input[0] not in constants
        if node.op_type in _INTEGER_COMPUTE or activation:
            found[node.op_type] += 1
    return found


def refuse_quantized(model: onnx.ModelProto, label: str) -> None:
    """A ModelError naming what makes ``model`` (called ``label``) a quantized one."""
    found = quantized_nodes(model)
    if not found:
        return
    listed = ", ".join(f"{count} {op}" for op, count in found.most_common(3))
    raise ModelError(
        f"{label} is quantized already ({listed}); eightbit quantizes float models: give it "
        "the float model this one was made from"
    )


def load_float_model(model: str | os.PathLike[str] | onnx.ModelProto) -> onnx.ModelProto:
    """``load_model(model)``, refused in one line when it is quantized already (its ranges,
    its plan, would fit no float model): what ``quantize`` and ``calibrate`` read."""
    loaded = load_model(model)
    label = "the model" if isinstance(model, onnx.ModelProto) else f"model file {str(model)!r}"
    refuse_quantized(loaded, label)
    return loaded
