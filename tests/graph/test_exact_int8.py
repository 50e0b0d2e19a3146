"""Every session eightbit opens sums u8 x s8 products exactly, whatever the x86 CPU."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from eightbit.graph import make_session


def _saturating_conv(channels: int = 8) -> tuple[object, np.ndarray]:
    """A QLinearConv whose pairs of products (255 x 127) overflow 16 bits."""
    inits = [
        numpy_helper.from_array(np.float32(1.0), "xs"),
        numpy_helper.from_array(np.uint8(0), "xz"),
        numpy_helper.from_array(np.full((1, channels, 1, 1), 127, np.int8), "w"),
        numpy_helper.from_array(np.float32(1.0), "ws"),
        numpy_helper.from_array(np.int8(0), "wz"),
        numpy_helper.from_array(np.float32(1000.0), "ys"),
        numpy_helper.from_array(np.uint8(0), "yz"),
    ]
    node = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"])
    graph = helper.make_graph(
        [node],
        "saturating",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, channels, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 1, 1, 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    return model, np.full((1, channels, 1, 1), 255, np.uint8)


def test_sessions_sum_unsigned_by_signed_products_exactly() -> None:
    # 8 x 255 x 127 / 1000 = 259.08 -> saturates at 255; a CPU that adds pairs in 16 bits
    # with saturation (x86 without VNNI, default session) gives 4 x 32767 / 1000 = 131.
    model, x = _saturating_conv()
    y = make_session(model, threads=1).run(None, {"x": x})[0]
    assert int(y.ravel()[0]) == 255
