"""Models with functions written as elementary ops, the way exporters write them.

Each builder returns the nodes of one function from tensor ``x`` to tensor ``y``; ``wrap``
puts it between two MatMuls (what quantization sees in a transformer block or a CNN head).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper

from tests.export.helpers import make_model

FEATURES = 32  # benchmarks/patterns.py sets a larger width
Arrays = dict[str, np.ndarray]
Builder = Callable[[], tuple[list[onnx.NodeProto], Arrays]]


def _n(op: str, inputs: list[str], output: str, **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, inputs, [output], name=f"{op}_{output}", **attrs)


def _f(value: float) -> np.ndarray:
    return np.array(value, np.float32)


def layer_norm_torch() -> tuple[list[onnx.NodeProto], Arrays]:
    """PyTorch < 1.13 without LayerNormalization: mean, x - mean, Pow 2, mean, + eps, Sqrt, Div."""
    rng = np.random.default_rng(5)
    nodes = [
        _n("ReduceMean", ["x"], "mean", axes=[-1]),
        _n("Sub", ["x", "mean"], "centred"),
        _n("Pow", ["centred", "two"], "squared"),
        _n("ReduceMean", ["squared"], "var", axes=[-1]),
        _n("Add", ["var", "eps"], "var_eps"),
        _n("Sqrt", ["var_eps"], "std"),
        _n("Div", ["centred", "std"], "normed"),
        _n("Mul", ["normed", "gamma"], "scaled"),
        _n("Add", ["scaled", "beta"], "y"),
    ]
    arrays = {
        "two": _f(2.0),
        "eps": _f(1e-5),
        "gamma": (1 + 0.3 * rng.standard_normal(FEATURES)).astype(np.float32),
        "beta": (0.2 * rng.standard_normal(FEATURES)).astype(np.float32),
    }
    return nodes, arrays


def layer_norm_keras() -> tuple[list[onnx.NodeProto], Arrays]:
    """tf2onnx's Keras LayerNormalization: x·(gamma·rsqrt) + (beta − mean·gamma·rsqrt)."""
    rng = np.random.default_rng(6)
    nodes = [
        _n("ReduceMean", ["x"], "mean", axes=[2]),
        _n("Sub", ["x", "mean"], "diff"),
        _n("Mul", ["diff", "diff"], "sqdiff"),
        _n("ReduceMean", ["sqdiff"], "var", axes=[2]),
        _n("Add", ["var", "eps"], "var_eps"),
        _n("Sqrt", ["var_eps"], "std"),
        _n("Reciprocal", ["std"], "rstd"),
        _n("Mul", ["rstd", "gamma"], "g"),
        _n("Mul", ["x", "g"], "xg"),
        _n("Mul", ["mean", "g"], "mg"),
        _n("Sub", ["beta", "mg"], "shift"),
        _n("Add", ["xg", "shift"], "y"),
    ]
    arrays = {
        "eps": _f(1e-3),
        "gamma": (1 + 0.3 * rng.standard_normal(FEATURES)).astype(np.float32),
        "beta": (0.2 * rng.standard_normal(FEATURES)).astype(np.float32),
    }
    return nodes, arrays


def gelu_erf() -> tuple[list[onnx.NodeProto], Arrays]:
    """BERT's GELU as PyTorch and tf2onnx write it: Div sqrt 2, Erf, Add 1, Mul x, Mul 0.5."""
    nodes = [
        _n("Div", ["x", "sqrt2"], "scaled"),
        _n("Erf", ["scaled"], "erf"),
        _n("Add", ["erf", "one"], "erf1"),
        _n("Mul", ["x", "erf1"], "xerf"),
        _n("Mul", ["xerf", "half"], "y"),
    ]
    return nodes, {"sqrt2": _f(math.sqrt(2)), "one": _f(1.0), "half": _f(0.5)}


def gelu_erf_keras() -> tuple[list[onnx.NodeProto], Arrays]:
    """Keras's order: 0.5·x first, Mul by 1/sqrt 2."""
    nodes = [
        _n("Mul", ["half", "x"], "hx"),
        _n("Mul", ["x", "inv_sqrt2"], "scaled"),
        _n("Erf", ["scaled"], "erf"),
        _n("Add", ["one", "erf"], "erf1"),
        _n("Mul", ["hx", "erf1"], "y"),
    ]
    return nodes, {"inv_sqrt2": _f(1 / math.sqrt(2)), "one": _f(1.0), "half": _f(0.5)}


def gelu_tanh_pow() -> tuple[list[onnx.NodeProto], Arrays]:
    """GPT-2's GELU: 0.5·x·(1 + tanh(sqrt(2/pi)·(x + 0.044715·x^3))), with Pow 3."""
    nodes = [
        _n("Pow", ["x", "three"], "cube"),
        _n("Mul", ["cube", "coef"], "cube_c"),
        _n("Add", ["x", "cube_c"], "inner"),
        _n("Mul", ["inner", "k"], "arg"),
        _n("Tanh", ["arg"], "th"),
        _n("Add", ["th", "one"], "th1"),
        _n("Mul", ["x", "half"], "hx"),
        _n("Mul", ["hx", "th1"], "y"),
    ]
    arrays = {
        "three": _f(3.0),
        "coef": _f(0.044715),
        "k": _f(math.sqrt(2 / math.pi)),
        "one": _f(1.0),
        "half": _f(0.5),
    }
    return nodes, arrays


def gelu_tanh_cube() -> tuple[list[onnx.NodeProto], Arrays]:
    """The same with x·x·x (tf2onnx of tf.nn.gelu(approximate=True))."""
    nodes = [
        _n("Mul", ["x", "x"], "sq"),
        _n("Mul", ["sq", "x"], "cube"),
        _n("Mul", ["coef", "cube"], "cube_c"),
        _n("Add", ["cube_c", "x"], "inner"),
        _n("Mul", ["k", "inner"], "arg"),
        _n("Tanh", ["arg"], "th"),
        _n("Add", ["one", "th"], "th1"),
        _n("Mul", ["half", "th1"], "hth"),
        _n("Mul", ["x", "hth"], "y"),
    ]
    arrays = {
        "coef": _f(0.044715),
        "k": _f(math.sqrt(2 / math.pi)),
        "one": _f(1.0),
        "half": _f(0.5),
    }
    return nodes, arrays


def softmax() -> tuple[list[onnx.NodeProto], Arrays]:
    """Softmax over the last axis: ReduceMax, Sub, Exp, ReduceSum, Div."""
    nodes = [
        _n("ReduceMax", ["x"], "max", axes=[-1]),
        _n("Sub", ["x", "max"], "shifted"),
        _n("Exp", ["shifted"], "e"),
        _n("ReduceSum", ["e", "axes"], "total"),
        _n("Div", ["e", "total"], "y"),
    ]
    return nodes, {"axes": np.array([-1], np.int64)}


def silu() -> tuple[list[onnx.NodeProto], Arrays]:
    """SiLU / Swish: x·sigmoid(x)."""
    return [_n("Sigmoid", ["x"], "s"), _n("Mul", ["x", "s"], "y")], {}


def hard_swish() -> tuple[list[onnx.NodeProto], Arrays]:
    """MobileNetV3's hard swish: x·relu6(x + 3)/6."""
    nodes = [
        _n("Add", ["x", "three"], "x3"),
        _n("Clip", ["x3", "zero", "six"], "r6"),
        _n("Mul", ["x", "r6"], "xr"),
        _n("Div", ["xr", "six"], "y"),
    ]
    return nodes, {"three": _f(3.0), "zero": _f(0.0), "six": _f(6.0)}


def hard_sigmoid_keras() -> tuple[list[onnx.NodeProto], Arrays]:
    """Keras's hard_sigmoid: clip(0.2·x + 0.5, 0, 1)."""
    nodes = [
        _n("Mul", ["x", "slope"], "sx"),
        _n("Add", ["sx", "half"], "sx5"),
        _n("Clip", ["sx5", "zero", "one"], "y"),
    ]
    return nodes, {"slope": _f(0.2), "half": _f(0.5), "zero": _f(0.0), "one": _f(1.0)}


BUILDERS: dict[str, tuple[Builder, str]] = {
    "layer_norm_torch": (layer_norm_torch, "LayerNorm"),
    "layer_norm_keras": (layer_norm_keras, "LayerNorm"),
    "gelu_erf": (gelu_erf, "GELU"),
    "gelu_erf_keras": (gelu_erf_keras, "GELU"),
    "gelu_tanh_pow": (gelu_tanh_pow, "GELU-tanh"),
    "gelu_tanh_cube": (gelu_tanh_cube, "GELU-tanh"),
    "softmax": (softmax, "Softmax"),
    "silu": (silu, "SiLU"),
    "hard_swish": (hard_swish, "HardSwish"),
    "hard_sigmoid_keras": (hard_sigmoid_keras, "HardSigmoid"),
}


def wrap(builder: Builder, opset: int = 13, tokens: int = 16, seed: int = 0) -> onnx.ModelProto:
    """input [1, tokens, F] -> MatMul -> the function -> MatMul -> output."""
    rng = np.random.default_rng(seed)
    nodes, arrays = builder()
    arrays = {
        **arrays,
        "w_in": (rng.standard_normal((FEATURES, FEATURES)) / math.sqrt(FEATURES)).astype(
            np.float32
        ),
        "w_out": (rng.standard_normal((FEATURES, FEATURES)) / math.sqrt(FEATURES)).astype(
            np.float32
        ),
    }
    nodes = [
        helper.make_node("MatMul", ["inp", "w_in"], ["x"], name="matmul_in"),
        *nodes,
        helper.make_node("MatMul", ["y", "w_out"], ["out"], name="matmul_out"),
    ]
    if opset >= 18:  # Reduce ops take their axes as an input from opset 18 on
        nodes = [_axes_as_input(node, arrays) for node in nodes]
    shape = [1, tokens, FEATURES]
    return make_model(nodes, [("inp", shape)], [("out", shape)], arrays, opset)


def _axes_as_input(node: onnx.NodeProto, arrays: Arrays) -> onnx.NodeProto:
    axes = [a for a in node.attribute if a.name == "axes"]
    if not node.op_type.startswith("Reduce") or not axes:
        return node
    name = f"{node.name}_axes"
    arrays[name] = np.array(list(axes[0].ints), np.int64)
    kept = {a.name: helper.get_attribute_value(a) for a in node.attribute if a.name != "axes"}
    return helper.make_node(
        node.op_type, [*node.input, name], list(node.output), name=node.name, **kept
    )
