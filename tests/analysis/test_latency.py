"""``LatencyRatio`` (docs/numerics.md §A.7): the timed model's median over the float one's;
``slower_finding``: the warning when int8 is the slower."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from eightbit.analysis.latency import SLOWER_THAN_FLOAT, Latency, LatencyRatio, slower_finding
from eightbit.errors import ConfigError

WIDTH = 256


def _chain(matmuls: int) -> onnx.ModelProto:
    """x [8, 256] -> ``matmuls`` MatMuls by 256x256 weights (0: one Relu) -> y."""
    rng = np.random.default_rng(0)
    weights, nodes, source = [], [], "x"
    for i in range(matmuls):
        value = (rng.standard_normal((WIDTH, WIDTH)) / 16).astype(np.float32)
        weights.append(numpy_helper.from_array(value, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [source, f"w{i}"], [f"h{i}"]))
        source = f"h{i}"
    nodes.append(helper.make_node("Relu", [source], ["y"]))
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, WIDTH])],
        weights,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_model_with_far_more_work_than_the_float_one_has_a_ratio_above_one() -> None:
    feed = {"x": np.ones((8, WIDTH), np.float32)}
    light, heavy = _chain(0), _chain(24)
    # 24 MatMuls against one Relu: far more than timing noise on a shared machine.
    assert LatencyRatio(light, feed, runs=5, warmup=1)(heavy) > 3
    assert LatencyRatio(heavy, feed, runs=5, warmup=1)(light) < 1 / 3
    ratio = LatencyRatio(light, feed, runs=3, warmup=1)(light)
    assert math.isfinite(ratio) and ratio > 0


@pytest.mark.parametrize(("runs", "warmup"), [(0, 1), (3, -1)])
def test_runs_are_checked_when_the_ratio_is_made(runs: int, warmup: int) -> None:
    with pytest.raises(ConfigError, match="'runs' must be >= 1 and 'warmup' >= 0"):
        LatencyRatio(_chain(0), {"x": np.ones((8, WIDTH), np.float32)}, runs=runs, warmup=warmup)


@pytest.mark.parametrize(
    ("int8_ms", "warned"),
    [(0.079, True), (SLOWER_THAN_FLOAT + 0.01, True), (SLOWER_THAN_FLOAT, False), (0.5, False)],
)
def test_int8_slower_than_float_is_a_warning(int8_ms: float, warned: bool) -> None:
    float_ms = 0.055 if int8_ms == 0.079 else 1.0
    finding = slower_finding(Latency(float_ms=float_ms, int8_ms=int8_ms, runs=20))
    assert (finding is not None) == warned
    if finding is not None:
        assert finding.level == "warning" and finding.output == ""
        ratio = f"{int8_ms / float_ms:.2f}x"
        assert ratio in finding.message and finding.line().startswith("WARNING: int8 runs slower")
