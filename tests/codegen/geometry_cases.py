"""Models that stress the index arithmetic of the generated C: 1-D and strided windows,
asymmetric and automatic padding, ceil mode, transposed operands, every padding mode,
reversed slices, other resize coordinate rules, broadcasting on both sides."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from tests.export.op_cases import X, _after_conv, _alone, _i64, _weighted

Case = tuple[onnx.ModelProto, dict[str, np.ndarray]]

GEOMETRY: dict[str, Callable[[], Case]] = {
    "Conv 1-D strided dilated": lambda: _weighted(
        "Conv", (1, 4, 20), (6, 4, 3), 6, strides=[2], dilations=[2], pads=[2, 1]
    ),
    "Conv asymmetric pads": lambda: _weighted(
        "Conv", X, (5, 4, 3, 3), 5, strides=[2, 2], pads=[0, 1, 2, 1]
    ),
    "Conv same upper": lambda: _weighted(
        "Conv", X, (4, 4, 2, 2), None, auto_pad="SAME_UPPER", strides=[2, 2]
    ),
    "ConvTranspose output padding": lambda: _weighted(
        "ConvTranspose",
        X,
        (4, 3, 3, 3),
        3,
        strides=[2, 2],
        output_padding=[1, 1],
        pads=[1, 1, 0, 0],
    ),
    "ConvTranspose 1-D": lambda: _weighted("ConvTranspose", (1, 4, 5), (4, 2, 3), 2, strides=[3]),
    "MaxPool ceil pads": lambda: _after_conv(
        "MaxPool", [], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1
    ),
    "AveragePool include pad ceil": lambda: _alone(
        "AveragePool",
        [X],
        kernel_shape=[3, 3],
        strides=[2, 2],
        pads=[1, 1, 1, 1],
        ceil_mode=1,
        count_include_pad=1,
    ),
    "AveragePool 1-D": lambda: _alone("AveragePool", [(1, 4, 9)], kernel_shape=[4], strides=[2]),
    "MatMul vector": lambda: _weighted("MatMul", (16,), (16, 5)),
    "Pad reflect": lambda: _after_conv(
        "Pad", ["pads"], constants={"pads": _i64(0, 0, 2, 1, 0, 0, 1, 2)}, mode="reflect"
    ),
    "Pad edge cropped": lambda: _after_conv(
        "Pad", ["pads"], constants={"pads": _i64(0, 0, -1, 2, 0, 0, 1, -2)}, mode="edge"
    ),
    "Pad constant cropped": lambda: _after_conv(
        "Pad", ["pads"], constants={"pads": _i64(0, 0, -1, 2, 0, 0, 1, -2)}
    ),
    "Slice reversed": lambda: _after_conv(
        "Slice",
        ["b", "e", "a", "s"],
        constants={"b": _i64(-1, 4), "e": _i64(-100, 0), "a": _i64(3, 2), "s": _i64(-2, -1)},
    ),
    "Resize nearest asymmetric": lambda: _after_conv(
        "Resize",
        ["", "s"],
        constants={"s": np.array([1, 1, 1.5, 0.5], np.float32)},
        mode="nearest",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    ),
    "Resize linear align corners": lambda: _after_conv(
        "Resize",
        ["", "", "sizes"],
        constants={"sizes": _i64(1, 4, 9, 4)},
        mode="linear",
        coordinate_transformation_mode="align_corners",
    ),
    "Concat last axis": lambda: _alone("Concat", [X, (1, 4, 6, 3)], axis=-1),
    "Mul broadcast": lambda: _alone("Mul", [X, (1, 4, 1, 6)]),
    "Add broadcast both": lambda: _alone("Add", [(1, 4, 1, 6), (1, 1, 6, 1)]),
}
