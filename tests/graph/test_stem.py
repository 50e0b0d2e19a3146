"""The space-to-depth stem rewrite: the same function, applied only where it pays."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx.reference import ReferenceEvaluator

from eightbit.graph import Graph
from eightbit.graph.stem import space_to_depth_stems, space_to_depth_weight
from tests.graph.helpers import stem_model


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    return np.asarray(ReferenceEvaluator(model).run(None, {"x": x})[0])


@settings(max_examples=25, deadline=None)
@given(
    channels=st.integers(1, 4),
    kernel=st.integers(3, 7),
    stride=st.integers(2, 3),
    pads=st.tuples(*[st.integers(0, 3)] * 4),
    blocks=st.tuples(st.integers(5, 9), st.integers(5, 9)),
)
def test_the_rewritten_stem_computes_the_same_function(channels, kernel, stride, pads, blocks):
    size = (blocks[0] * stride, blocks[1] * stride)
    model = stem_model(channels, kernel, stride, pads, size)
    rewritten, names = space_to_depth_stems(model)
    x = np.random.default_rng(1).standard_normal((1, channels, *size)).astype(np.float32)
    expected = _run(model, x)
    got = _run(rewritten, x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    if names:  # the rewrite applied: a stride-1 Conv reads a SpaceToDepth of the input
        onnx.checker.check_model(rewritten, full_check=True)
        conv = Graph(rewritten).node("stem")
        assert list(conv.attrs["strides"]) == [1, 1]
        assert Graph(rewritten).producer(conv.inputs[0]).op_type == "SpaceToDepth"


def test_resnet_stem_is_rewritten_with_a_4x4_kernel_on_12_channels():
    rewritten, names = space_to_depth_stems(stem_model())
    assert names == ["stem"]
    conv = Graph(rewritten).node("stem")
    assert Graph(rewritten).initializers["w"].shape == (8, 12, 4, 4)
    assert list(conv.attrs["pads"]) == [2, 2, 1, 1]


def test_mobilenet_stem_is_rewritten_with_a_2x2_kernel_on_12_channels():
    """3x3 stride 2, pads 1: delta 1, k' = 2, 1.78x the multiply-adds (9% faster in ORT)."""
    rewritten, names = space_to_depth_stems(stem_model(kernel=3, pads=(1, 1, 1, 1)))
    assert names == ["stem"]
    conv = Graph(rewritten).node("stem")
    assert Graph(rewritten).initializers["w"].shape == (8, 12, 2, 2)
    assert list(conv.attrs["pads"]) == [1, 1, 0, 0]


@pytest.mark.parametrize(
    ("why", "kwargs"),
    [
        ("too many input channels", {"channels": 8}),
        ("stride 1", {"stride": 1}),
        ("kernel not larger than the stride", {"kernel": 2, "pads": (0, 0, 0, 0)}),
        ("grouped", {"channels": 4, "group": 2}),
        ("size not a multiple of the stride", {"size": (31, 32)}),
        ("11x11 stride 4: 2.1x the multiply-adds", {"kernel": 11, "stride": 4, "pads": (2,) * 4}),
    ],
)
def test_convs_where_the_rewrite_does_not_apply_or_pay_are_left_alone(why, kwargs):
    model = stem_model(**kwargs)
    rewritten, names = space_to_depth_stems(model)
    assert names == [], why
    assert rewritten is model


def test_weight_layout_follows_onnx_space_to_depth_order():
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    stride, delta = 2, (1, 0)
    got = space_to_depth_weight(weight, stride, delta)
    assert got.shape == (2, 12, 3, 3)
    for p in range(stride):
        for q in range(stride):
            for c in range(3):
                for a in range(3):
                    for b in range(3):
                        u, v = stride * a + p - delta[0], stride * b + q - delta[1]
                        inside = 0 <= u < 5 and 0 <= v < 5
                        expected = weight[:, c, u, v] if inside else 0.0
                        np.testing.assert_array_equal(
                            got[:, (p * stride + q) * 3 + c, a, b], expected
                        )
