"""§Q18: a tensor read only by functions flat outside a window (HardSigmoid, HardSwish,
as ops or written as elementary ops) gets a range within that window.

The planted models put a wide Conv output (±60) before a squeeze-excitation gate
(HardSigmoid, flat outside ±2.5) and before a HardSwish written as Paddle2ONNX writes it
(``x·clip(x + 3, 0, 6)/6``, flat below −3).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import eightbit
from eightbit.analysis import load_pair
from eightbit.analysis.side_by_side import own_sqnrs
from eightbit.calibrate import open_data
from eightbit.graph import Graph, normalize
from eightbit.ops.saturating_readers import HARD_SWISH_FLOOR, reader_windows
from tests.ops.helpers import fast_int8_sqnr

CHANNELS, SIZE = 4, 16


def gated_model(*, hard_swish: bool = False, also_output: bool = False) -> onnx.ModelProto:
    """``y = x · HardSigmoid(Conv(x))``, or ``y = HardSwish(Conv(x))`` written as
    elementary ops; ``also_output``: the Conv output is a graph output too."""
    rng = np.random.default_rng(0)
    node = helper.make_node
    weight = (rng.standard_normal((CHANNELS, CHANNELS, 1, 1)) * 20.0).astype(np.float32)
    # HardSwish's input mostly negative (as after a BN), so most of its range is below −3.
    bias = np.full(CHANNELS, -20.0 if hard_swish else 0.0, np.float32)
    initializers = [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")]
    nodes = [node("Conv", ["x", "w", "b"], ["wide"], name="conv")]
    if hard_swish:
        scalars = {"three": 3.0, "zero": 0.0, "six": 6.0}
        initializers += [
            numpy_helper.from_array(np.array(v, np.float32), k) for k, v in scalars.items()
        ]
        nodes += [
            node("Add", ["wide", "three"], ["shifted"], name="add3"),
            node("Clip", ["shifted", "zero", "six"], ["clipped"], name="clip"),
            node("Mul", ["wide", "clipped"], ["product"], name="mul"),
            node("Div", ["product", "six"], ["y"], name="div6"),
        ]
    else:
        nodes += [
            node("HardSigmoid", ["wide"], ["gate"], name="gate", alpha=0.2, beta=0.5),
            node("Mul", ["x", "gate"], ["y"], name="scale"),
        ]
    shape = ["n", CHANNELS, SIZE, SIZE]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)]
    if also_output:
        outputs.append(helper.make_tensor_value_info("wide", TensorProto.FLOAT, shape))
    graph = helper.make_graph(
        nodes,
        "gated",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        outputs,
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return model


def _data(count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((count, CHANNELS, SIZE, SIZE)).astype(np.float32)


def test_the_gate_input_gets_the_hard_sigmoid_window() -> None:
    windows = reader_windows(Graph(normalize(gated_model())))
    assert windows == {"wide": (-0.5 / np.float32(0.2), 0.5 / np.float32(0.2))}


def test_a_hard_swish_written_as_ops_bounds_its_input_below() -> None:
    windows = reader_windows(Graph(normalize(gated_model(hard_swish=True))))
    assert windows["wide"] == (HARD_SWISH_FLOOR, np.inf)


def test_a_tensor_read_elsewhere_keeps_its_range() -> None:
    assert "wide" not in reader_windows(Graph(normalize(gated_model(also_output=True))))


def test_the_gate_is_read_on_a_finer_grid() -> None:
    sqnr = fast_int8_sqnr(gated_model(), _data(32, 1), _data(16, 2))
    # 32.1 dB; with the Conv output on its whole calibrated range: 28.6 dB (measured)
    assert sqnr > 30.5, sqnr


def test_the_hard_swish_input_is_read_on_a_finer_grid() -> None:
    sqnr = fast_int8_sqnr(gated_model(hard_swish=True), _data(32, 1), _data(16, 2))
    # 37.5 dB; with the Conv output on its whole calibrated range: 35.3 dB (measured)
    assert sqnr > 36.4, sqnr


def test_the_ranking_reads_a_saturated_tensor_within_its_window() -> None:
    # The fallback and promotion rank by own SQNR: the saturation the window allows is no
    # error, or the net spends its steps on tensors whose readers see no difference.
    model = gated_model()
    result = eightbit.quantize(model, _data(32, 1), improve="fast", check_samples=0)
    pair = load_pair(model, result.model)
    own = own_sqnrs(pair, open_data({"x": _data(16, 2)}, pair.float_graph.inputs, batch_size=16))
    assert own["wide"] > 30.0, own
