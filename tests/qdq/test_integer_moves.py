"""SpaceToDepth in the QDQ export: it moves stored integers, and nothing changes numerically."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import eightbit
from eightbit.engine import run as run_engine
from eightbit.graph import Graph
from eightbit.graph.session import EXACT_INT8_ENTRY
from eightbit.qdq import collapse, expand
from eightbit.quant import QuantConfig
from tests.graph.helpers import stem_model

SIZE = (48, 48)


def _quantize(model: onnx.ModelProto, stem: bool, scheme: str = "affine"):
    rng = np.random.default_rng(3)
    data = rng.standard_normal((24, 3, *SIZE)).astype(np.float32)
    config = QuantConfig(scheme=scheme, space_to_depth_stem=stem)  # type: ignore[arg-type]
    return eightbit.quantize(model, data, config, check_samples=0, improve="fast")


def _ort(model: onnx.ModelProto, x: np.ndarray, optimized_path: str | None = None) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry(*EXACT_INT8_ENTRY)
    if optimized_path:
        options.optimized_model_filepath = optimized_path
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return np.asarray(session.run(None, {"x": x})[0])


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    return np.random.default_rng(4).standard_normal((4, 3, *SIZE)).astype(np.float32)


@pytest.mark.parametrize("scheme", ["affine", "pow2"])
@pytest.mark.parametrize(("kernel", "pad"), [(7, 3), (3, 1)])  # ResNet's stem, MobileNetV2's
def test_stem_rewrite_gives_the_same_int8_outputs(scheme, kernel, pad, inputs):
    model = stem_model(kernel=kernel, pads=(pad,) * 4, size=SIZE)
    plain, moved = _quantize(model, False, scheme), _quantize(model, True, scheme)
    assert [s.name for s in moved.plan.steps][:1] == ["space_to_depth_stem"]
    np.testing.assert_array_equal(_ort(moved.model, inputs), _ort(plain.model, inputs))


def test_space_to_depth_reads_the_stored_integers_and_the_stem_runs_on_int8(tmp_path, inputs):
    qdq = _quantize(stem_model(size=SIZE), True).model
    graph = Graph(qdq)
    (move,) = [n for n in graph.nodes if n.op_type == "SpaceToDepth"]
    assert graph.producer(move.inputs[0]).op_type == "QuantizeLinear"
    assert {n.op_type for n in graph.consumers(move.outputs[0])} == {"DequantizeLinear"}
    onnx.checker.check_model(qdq, full_check=True)
    optimized = tmp_path / "optimized.onnx"
    _ort(qdq, inputs, str(optimized))
    kernels = [n.op_type for n in onnx.load(str(optimized)).graph.node]
    assert kernels.count("QLinearConv") == 1, kernels
    assert "Conv" not in kernels and "DequantizeLinear" in kernels  # only the output's DQ


def test_expand_restores_the_standard_placement_with_the_same_function(inputs):
    qdq = _quantize(stem_model(size=SIZE), True).model
    standard = expand(qdq)
    graph = Graph(standard)
    (move,) = [n for n in graph.nodes if n.op_type == "SpaceToDepth"]
    assert graph.producer(move.inputs[0]).op_type == "DequantizeLinear"
    assert [n.op_type for n in graph.consumers(move.outputs[0])] == ["QuantizeLinear"]
    np.testing.assert_array_equal(_ort(standard, inputs), _ort(qdq, inputs))
    collapsed = onnx.ModelProto()
    collapsed.CopyFrom(standard)
    collapse(collapsed.graph)
    assert [n.op_type for n in collapsed.graph.node].count("QuantizeLinear") == [
        n.op_type for n in qdq.graph.node
    ].count("QuantizeLinear")


@pytest.mark.parametrize(("kernel", "pad"), [(7, 3), (3, 1)])
def test_the_integer_engine_runs_the_rewritten_stem_as_onnx_runtime_does(kernel, pad, inputs):
    result = _quantize(stem_model(kernel=kernel, pads=(pad,) * 4, size=SIZE), True)
    expected = _ort(result.model, inputs)
    got = run_engine(result, inputs, strict_integer=True)
    np.testing.assert_array_equal(next(iter(got.values())), expected)


def test_an_int16_tensor_is_not_moved_as_integers(inputs):
    """ONNX Runtime has no SpaceToDepth on int16: a stem whose input is promoted to int16
    keeps DQ → SpaceToDepth → Q and loads (the fallback's int16 promotion on MobileNetV2
    failed to load before)."""
    model = stem_model(size=SIZE)
    data = np.random.default_rng(3).standard_normal((24, 3, *SIZE)).astype(np.float32)
    config = QuantConfig(space_to_depth_stem=True, int16=("x",))
    qdq = eightbit.quantize(model, data, config, check_samples=0, improve="fast").model
    graph = Graph(qdq)
    (move,) = [n for n in graph.nodes if n.op_type == "SpaceToDepth"]
    assert graph.producer(move.inputs[0]).op_type == "DequantizeLinear"
    assert _ort(qdq, inputs).shape[0] == len(inputs)
