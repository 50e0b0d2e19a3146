"""The end-to-end gate of the rewriting steps (numerics §I.13): kept only if int8 gains."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from eightbit.calibrate import CalibrationConfig
from eightbit.graph import normalize
from eightbit.improve.presets import preset
from eightbit.pipeline.gate import keep_if_better
from eightbit.pipeline.state import Settings, State
from eightbit.quant import QuantConfig
from eightbit.steps import StepReport

WIDTH, HIDDEN = 8, 16


def _two_products(outlier: float) -> onnx.ModelProto:
    """``(x·W1)·W2`` with hidden channel 3 multiplied by ``outlier`` and W2's row 3 divided
    by it: the same function, but one huge channel in the int8 hidden tensor."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (WIDTH, HIDDEN)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (HIDDEN, WIDTH)).astype(np.float32)
    w1[:, 3] *= outlier
    w2[3, :] /= outlier
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w1"], ["hidden"], name="first"),
            helper.make_node("MatMul", ["hidden", "w2"], ["y"], name="second"),
        ],
        "two",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", WIDTH])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    return normalize(model)


def _state(prepared: onnx.ModelProto) -> State:
    settings = Settings(QuantConfig(), preset("default"), CalibrationConfig())
    samples = {"x": np.random.default_rng(1).normal(0, 1, (64, WIDTH)).astype(np.float32)}
    return State(settings, None, prepared, None, samples, 64, 0, False, prepared=prepared)


def _report() -> StepReport:
    return StepReport("smooth_quant", 0.0, None, None, notes=("1 tensor smoothed",))


def test_a_rewrite_that_costs_int8_accuracy_is_reverted() -> None:
    good, bad = _two_products(1.0), _two_products(1000.0)
    state = keep_if_better(_state(good), bad, _report())
    assert state.prepared is good
    report = state.reports[-1]
    assert report.notes[-1].startswith("reverted")
    assert report.before_db is not None and report.after_db == report.before_db


def test_a_rewrite_that_gains_is_kept() -> None:
    good, bad = _two_products(1.0), _two_products(1000.0)
    state = keep_if_better(_state(bad), good, _report())
    assert state.prepared is good
    report = state.reports[-1]
    assert report.notes[-1].startswith("kept")
    assert report.before_db is not None and report.after_db is not None
    assert report.after_db > report.before_db + 10


def test_no_rewrite_is_not_measured() -> None:
    good = _two_products(1.0)
    state = keep_if_better(_state(good), good, None)
    assert state.prepared is good and not state.reports
