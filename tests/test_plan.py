"""QuantPlan: node decisions, what calibration must observe, JSON round trip, bad input."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper

from eightbit.errors import ConfigError, DataError
from eightbit.graph import Graph, normalize
from eightbit.plan import (
    PLAN_VERSION,
    NodeDecision,
    QuantPlan,
    activation_tensors_to_calibrate,
    make_plan,
)
from eightbit.quant import QUANT_TYPES, QuantConfig, QuantParams
from tests.export.helpers import make_model, min_max_ranges, normal
from tests.fixtures import models as fixtures


def _graph(model) -> Graph:
    return Graph(normalize(model))


def _plan(model, config: QuantConfig | None = None) -> QuantPlan:
    config = config or QuantConfig()
    normalized = normalize(model)
    graph = Graph(normalized)
    names = activation_tensors_to_calibrate(graph, config)
    feeds = fixtures.random_inputs(normalized, 8, seed=0)
    return make_plan(graph, min_max_ranges(normalized, names, feeds), config)


# --- decisions -------------------------------------------------------------------------


def test_calibration_observes_exactly_the_tensors_the_plan_reads() -> None:
    graph = _graph(fixtures.conv_bn_relu())
    # The Conv output bn_out is replaced by the folded Relu's; Flatten keeps its input's.
    assert activation_tensors_to_calibrate(graph, QuantConfig()) == [
        "input",
        "relu_out",
        "pool_out",
        "logits",
    ]


def test_plan_records_folds_fallbacks_and_parameters() -> None:
    plan = _plan(fixtures.opset11_model())
    assert plan.decision("conv").fused_activation == "relu"
    assert plan.decision("relu").fused_into == "conv"
    assert [(d.name, d.reason) for d in plan.fallbacks()] == [
        ("softmax", "Softmax has no int8 implementation in eightbit")
    ]
    assert "c" not in plan.tensors  # the folded Conv writes straight into the Relu's pair
    assert plan.tensors["r"].zero_point == 0  # uint8, range [0, hi]: the clamp is saturation
    assert plan.tensors["p"] == plan.tensors["r"]  # MaxPool keeps its input's parameters
    assert plan.tensors["conv.weight"].axis == 0
    assert plan.tensors["conv.bias"].dtype == "int32"
    bias_scale = plan.tensors["input"].scale * plan.tensors["conv.weight"].scale
    np.testing.assert_array_equal(plan.tensors["conv.bias"].scale, bias_scale)


def test_pow2_keeps_the_relu_and_shares_its_range() -> None:
    """Symmetric int8: Q(0) = 0 is not qmin, so saturation cannot do the clamp (eq. Q.9)."""
    plan = _plan(fixtures.conv_bn_relu(), QuantConfig(scheme="pow2"))
    assert plan.decision("conv").fused_activation is None
    assert plan.decision("relu").quantized and plan.decision("relu").fused_into is None
    assert plan.tensors["bn_out"] == plan.tensors["relu_out"]  # BN folded into the Conv


def test_exclude_and_op_types_keep_nodes_in_float() -> None:
    plan = _plan(fixtures.conv_bn_relu(), QuantConfig(exclude=("fc",)))
    assert plan.decision("fc").reason == "excluded by the configuration ('exclude')"
    assert "fc.weight" not in plan.tensors
    plan = _plan(fixtures.conv_bn_relu(), QuantConfig(op_types=("Conv", "Relu")))
    assert {d.name for d in plan.quantized_nodes()} == {"conv", "relu"}
    assert "not selected ('op_types')" in (plan.decision("pool").reason or "")


def test_a_clamp_after_a_float_node_stays_float_and_its_readers_get_its_own_range() -> None:
    """Excluded Conv -> Relu -> pool: quantized, the Relu would share the Conv's signed range."""
    plan = _plan(fixtures.conv_bn_relu(), QuantConfig(exclude=("conv",)))
    assert not plan.decision("relu").quantized
    assert "float node" in (plan.decision("relu").reason or "")
    assert "bn_out" not in plan.tensors  # the pre-activation stays float
    relu_out = plan.tensors["relu_out"]  # the pool's input: calibrated after the clamp
    assert relu_out.dtype == "uint8" and relu_out.zero_point == 0
    # After a quantized producer the clamp is folded, as before.
    assert _plan(fixtures.conv_bn_relu()).decision("relu").fused_into == "conv"


def test_layout_ops_are_quantized_only_next_to_quantized_nodes() -> None:
    """input -> Transpose -> Conv: quantized (feeds Conv); Conv -> Softmax -> Reshape: float."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], name="transpose", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["t", "w"], ["c"], name="conv"),
        helper.make_node("Softmax", ["c"], ["s"], name="softmax", axis=1),
        helper.make_node("Reshape", ["s", "shape"], ["y"], name="reshape"),
    ]
    weights = {"w": normal(2, 3, 1, 1), "shape": np.array([1, -1], np.int64)}
    plan = _plan(make_model(nodes, [("x", (1, 4, 4, 3))], [("y", (1, 32))], weights))
    assert plan.decision("transpose").quantized
    assert plan.tensors["t"] == plan.tensors["x"]
    assert not plan.decision("reshape").quantized
    assert "float" in (plan.decision("reshape").reason or "")


def test_a_weight_shared_by_two_nodes_is_quantized_for_the_first_only() -> None:
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["a"], name="first"),
        helper.make_node("Conv", ["a", "w"], ["y"], name="second"),
    ]
    weights = {"w": normal(2, 2, 1, 1)}
    plan = _plan(make_model(nodes, [("x", (1, 2, 3, 3))], [("y", (1, 2, 3, 3))], weights))
    assert plan.decision("first").quantized
    assert "already quantized for node 'first'" in (plan.decision("second").reason or "")


def test_a_wide_bias_is_recorded() -> None:
    weights = normal(2, 3, 1, 1)
    weights[0] *= 1e-9
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv")]
    initializers = {"w": weights, "b": np.array([5.0, 0.1], np.float32)}
    plan = _plan(make_model(nodes, [("x", (1, 3, 2, 2))], [("y", (1, 2, 2, 2))], initializers))
    assert plan.decision("conv").reason == "weight scale widened on channel(s) [0] so the bias fits"
    bias = plan.tensors["b"]
    assert 5.0 / float(bias.scale[0]) <= 2**30


def test_ranges_from_calibrate_are_accepted() -> None:
    from eightbit.calibrate import CalibrationConfig, calibrate

    model = normalize(fixtures.conv_bn_relu())
    graph = Graph(model)
    names = activation_tensors_to_calibrate(graph, QuantConfig())
    feeds = fixtures.random_inputs(model, 8, seed=0)
    minmax = CalibrationConfig(method="minmax")
    ranges = calibrate(model, [feeds], minmax, tensors=names, normalized=True)
    pairs = min_max_ranges(model, names, feeds)
    assert make_plan(graph, ranges, QuantConfig()) == make_plan(graph, pairs, QuantConfig())


# --- bad input -------------------------------------------------------------------------


def test_unknown_node_in_exclude_suggests_close_names() -> None:
    graph = _graph(fixtures.conv_bn_relu())
    with pytest.raises(ConfigError, match=r"'exclude' names 'conv1'.*did you mean 'conv'"):
        activation_tensors_to_calibrate(graph, QuantConfig(exclude=("conv1",)))


def test_a_model_without_quantizable_ops_lists_what_is_supported() -> None:
    nodes = [helper.make_node("Softmax", ["x"], ["y"], name="softmax")]
    graph = _graph(make_model(nodes, [("x", (1, 4))], [("y", (1, 4))]))
    with pytest.raises(ConfigError, match=r"its op types: Softmax\).*quantizes Add, .*Conv"):
        make_plan(graph, {}, QuantConfig())


def test_excluding_everything_is_the_same_error() -> None:
    graph = _graph(fixtures.opset11_model())
    every = tuple(node.name for node in graph.nodes)
    with pytest.raises(ConfigError, match="excluded by 'exclude'"):
        activation_tensors_to_calibrate(graph, QuantConfig(exclude=every))


def test_a_missing_range_names_the_tensor() -> None:
    graph = _graph(fixtures.conv_bn_relu())
    with pytest.raises(DataError, match="no calibrated range for tensor 'input'"):
        make_plan(graph, {}, QuantConfig())


# --- JSON ------------------------------------------------------------------------------

_scales = st.floats(2.0**-32, 1e6, allow_nan=False, width=32)


@st.composite
def quant_params(draw: st.DrawFn) -> QuantParams:
    dtype = draw(st.sampled_from(QUANT_TYPES))
    narrow = dtype == "int8" and draw(st.booleans())
    limits = {"int8": (-127 if narrow else -128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}
    low, high = limits.get(dtype, (-(2**31), 2**31 - 1))
    channels = draw(st.none() | st.integers(1, 4))
    size = 1 if channels is None else channels
    scale = np.array(draw(st.lists(_scales, min_size=size, max_size=size)), np.float32)
    zero_point = np.array(draw(st.lists(st.integers(low, high), min_size=size, max_size=size)))
    if channels is None:
        return QuantParams(scale[0], zero_point[0], dtype, None, narrow)
    return QuantParams(scale, zero_point, dtype, draw(st.integers(0, 3)), narrow)


_names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
_decisions = st.builds(
    NodeDecision,
    name=_names,
    op_type=st.sampled_from(["Conv", "Relu", "Softmax"]),
    quantized=st.booleans(),
    reason=st.none() | _names,
    fused_activation=st.none() | _names,
    fused_into=st.none() | _names,
)
_configs = st.builds(
    QuantConfig,
    scheme=st.just("affine"),
    activations=st.sampled_from(["uint8", "int8"]),
    per_channel=st.booleans(),
    exclude=st.lists(_names, max_size=3).map(tuple),
    op_types=st.none() | st.just(("Conv", "Gemm")),
)


@settings(max_examples=60, deadline=None)
@given(
    config=_configs,
    tensors=st.dictionaries(_names, quant_params(), max_size=5),
    nodes=st.lists(_decisions, max_size=4, unique_by=lambda d: d.name),
)
def test_plan_json_round_trips_exactly(
    config: QuantConfig, tensors: dict[str, QuantParams], nodes: list[NodeDecision]
) -> None:
    plan = QuantPlan(config=config, tensors=tensors, nodes=tuple(nodes))
    text = json.dumps(plan.to_dict())
    again = QuantPlan.from_dict(json.loads(text))
    assert again == plan
    for name, params in plan.tensors.items():
        assert again.tensors[name].scale.tobytes() == params.scale.tobytes()


def test_save_and_load(tmp_path: Path) -> None:
    plan = _plan(fixtures.conv_bn_relu())
    path = tmp_path / "plan.json"
    plan.save(path)
    assert QuantPlan.load(path) == plan
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]  # no temporary file left
    assert json.loads(path.read_text())["version"] == PLAN_VERSION


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{", "not valid JSON"),
        ('{"format": "other"}', "not an eightbit plan"),
        ('{"format": "eightbit-plan", "version": 99}', "'version' must be 1"),
        (
            '{"format": "eightbit-plan", "version": 1, "config": {"schema": "affine"}}',
            r"unknown field\(s\) \['schema'\]",
        ),
        (
            '{"format": "eightbit-plan", "version": 1, "nodes": [{"name": "a", "op_type": "Relu",'
            ' "quantized": "yes"}]}',
            r"a plan node's 'quantized' must be a bool \(got 'yes'\)",
        ),
        (
            '{"format": "eightbit-plan", "version": 1, "tensors": {"t": {"dtype": "int4", '
            '"scale": 1.0, "zero_point": 0}}}',
            r"'dtype' must be one of \['int8', 'uint8', 'int32', 'int16'\] \(got 'int4'\)",
        ),
    ],
)
def test_load_refuses_bad_files(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "plan.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        QuantPlan.load(path)


@dataclass(frozen=True)
class _Range:
    min: float
    max: float


def test_range_objects_with_min_and_max_are_accepted() -> None:
    graph = _graph(fixtures.conv_bn_relu())
    names = activation_tensors_to_calibrate(graph, QuantConfig())
    pairs = {name: (-1.0, 2.0) for name in names}
    objects = {name: _Range(-1.0, 2.0) for name in names}
    assert make_plan(graph, pairs, QuantConfig()) == make_plan(graph, objects, QuantConfig())
