"""One small model per supported op (``CASES``), shared by the QDQ, engine and C tests.

Each case is a small model in which the op under test (named "op") is quantized:
value-preserving ops get a quantized Conv or Mul before them, since they are only quantized
next to quantized nodes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper

from tests.export.helpers import (
    make_model,
    normal,
)

X = (1, 4, 6, 6)
Case = tuple[onnx.ModelProto, dict[str, np.ndarray]]


def _after_conv(
    op: str, inputs: list[str], outputs: int = 1, constants: dict | None = None, **attrs: object
) -> Case:
    """x -> 1x1 Conv -> op: the Conv is quantized, so the value-preserving op is too."""
    names = [f"y{i}" for i in range(outputs)]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
        helper.make_node(op, ["c", *inputs], names, name="op", **attrs),
    ]
    initializers = {"w": normal(4, 4, 1, 1, seed=1), **(constants or {})}
    model = make_model(nodes, [("x", X)], [(n, None) for n in names], initializers)
    return model, {"x": normal(*X, seed=2)}


def _alone(
    op: str, shapes: list[tuple[int, ...]], constants: dict | None = None, opset: int = 13, **attrs
) -> Case:
    names = [f"x{i}" for i in range(len(shapes))]
    const_names = list((constants or {}).keys())
    node = helper.make_node(op, [*names, *const_names], ["y"], name="op", **attrs)
    inputs = list(zip(names, shapes, strict=True))
    model = make_model([node], inputs, [("y", None)], constants, opset)
    return model, {name: normal(*shape, seed=i + 3) for i, (name, shape) in enumerate(inputs)}


def _weighted(
    op: str, x: tuple[int, ...], w: tuple[int, ...], bias: int | None = None, **attrs
) -> Case:
    constants = {"w": normal(*w, seed=5, scale=0.3)}
    if bias is not None:
        constants["b"] = normal(bias, seed=6, scale=0.1)
    return _alone(op, [x], constants, **attrs)


def _after_mul(op: str, inputs: list[str], constants: dict | None = None) -> Case:
    """x * 1.5 -> op: Mul does not absorb activations, so Relu and Clip stay standalone."""
    nodes = [
        helper.make_node("Mul", ["x", "k"], ["m"], name="mul"),
        helper.make_node(op, ["m", *inputs], ["y"], name="op"),
    ]
    initializers = {"k": np.float32(1.5), **(constants or {})}
    return make_model(nodes, [("x", X)], [("y", None)], initializers), {"x": normal(*X, seed=2)}


def _i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


CASES: dict[str, Callable[[], Case]] = {
    "Conv": lambda: _weighted("Conv", X, (6, 4, 3, 3), 6, pads=[1, 1, 1, 1]),
    "Conv grouped": lambda: _weighted("Conv", X, (6, 2, 3, 3), 6, group=2),
    "Conv depthwise": lambda: _weighted("Conv", X, (4, 1, 3, 3), 4, group=4, pads=[1] * 4),
    "ConvTranspose": lambda: _weighted("ConvTranspose", X, (4, 3, 3, 3), 3, strides=[2, 2]),
    "ConvTranspose grouped": lambda: _weighted("ConvTranspose", X, (4, 1, 2, 2), 2, group=2),
    "Gemm transB": lambda: _weighted("Gemm", (3, 16), (8, 16), 8, transB=1),
    "Gemm": lambda: _weighted("Gemm", (3, 16), (16, 8), 8),
    "MatMul": lambda: _weighted("MatMul", (2, 3, 16), (16, 8)),
    "MatMul batched weight": lambda: _weighted("MatMul", (2, 3, 16), (2, 16, 8)),
    "MatMul activations": lambda: _alone("MatMul", [(1, 2, 3, 4), (1, 2, 4, 5)]),
    "Add": lambda: _alone("Add", [X, X]),
    "Add constant": lambda: _alone("Add", [X], {"k": normal(1, 4, 1, 1, seed=9)}),
    "Mul": lambda: _alone("Mul", [X, X]),
    "Concat": lambda: _alone("Concat", [X, (1, 2, 6, 6)], axis=1),
    "MaxPool": lambda: _after_conv("MaxPool", [], kernel_shape=[2, 2], strides=[2, 2]),
    "AveragePool": lambda: _alone("AveragePool", [X], kernel_shape=[3, 3], pads=[1] * 4),
    "GlobalAveragePool": lambda: _alone("GlobalAveragePool", [X]),
    "Relu": lambda: _after_mul("Relu", []),
    "Clip": lambda: _after_mul("Clip", ["lo", "hi"], {"lo": np.float32(0), "hi": np.float32(1)}),
    "LeakyRelu": lambda: _alone("LeakyRelu", [X], alpha=0.1),
    "Sigmoid": lambda: _alone("Sigmoid", [X]),
    "HardSigmoid": lambda: _alone("HardSigmoid", [X]),
    "HardSwish": lambda: _alone("HardSwish", [X], opset=14),
    "Resize nearest": lambda: _after_conv(
        "Resize", ["", "s"], constants={"s": np.array([1, 1, 2, 2], np.float32)}, mode="nearest"
    ),
    "Resize linear": lambda: _after_conv(
        "Resize", ["", "s"], constants={"s": np.array([1, 1, 2, 2], np.float32)}, mode="linear"
    ),
    "Reshape": lambda: _after_conv("Reshape", ["shape"], constants={"shape": _i64(1, -1)}),
    "Flatten": lambda: _after_conv("Flatten", []),
    "Transpose": lambda: _after_conv("Transpose", [], perm=[0, 2, 3, 1]),
    "Squeeze": lambda: _after_conv("Squeeze", ["axes"], constants={"axes": _i64(0)}),
    "Unsqueeze": lambda: _after_conv("Unsqueeze", ["axes"], constants={"axes": _i64(1)}),
    "Split": lambda: _after_conv("Split", [], outputs=2, axis=1),
    "Slice": lambda: _after_conv(
        "Slice", ["b", "e", "a"], constants={"b": _i64(1), "e": _i64(3), "a": _i64(1)}
    ),
    "Pad": lambda: _after_conv("Pad", ["pads"], constants={"pads": _i64(0, 0, 1, 1, 0, 0, 1, 1)}),
    "SpaceToDepth": lambda: _after_conv("SpaceToDepth", [], blocksize=2),
    "DepthToSpace DCR": lambda: _after_conv("DepthToSpace", [], blocksize=2),
    "DepthToSpace CRD": lambda: _after_conv("DepthToSpace", [], blocksize=2, mode="CRD"),
}
VALUE_PRESERVING = {"MaxPool", "Relu", "Clip", "Reshape", "Flatten", "Transpose", "Squeeze"}
VALUE_PRESERVING |= {"Unsqueeze", "Split", "Slice", "Pad", "Resize nearest", "Resize linear"}
VALUE_PRESERVING |= {"SpaceToDepth", "DepthToSpace DCR", "DepthToSpace CRD"}
