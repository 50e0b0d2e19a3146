"""Test helper: a quantized model runs on ONNX Runtime's int8 kernels (docs/numerics.md §Q12)."""

from __future__ import annotations

from collections.abc import Collection

import onnx

from eightbit.analysis.ort_kernels import float_nodes_in_ort


def assert_int8_kernels_only(model: onnx.ModelProto, allowed: Collection[str] = ()) -> None:
    """Fail, naming them, when ONNX Runtime runs nodes of ``model`` in float, other than
    those of the ``allowed`` op types (a model's float tail, an op with no int8 kernel)."""
    found = [node for node in float_nodes_in_ort(model) if node.op_type not in allowed]
    assert not found, "ONNX Runtime runs these in float: " + "; ".join(map(str, found))
