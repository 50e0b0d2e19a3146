"""Targets that run somewhere else: OpenVINO's CPU plugin, a microcontroller (docs/targets.md)."""

from __future__ import annotations

import collections
import importlib.util

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import eightbit.pipeline
from eightbit.codegen import generate_c
from eightbit.errors import ConfigError
from eightbit.graph import Graph, normalize
from eightbit.improve.presets import preset
from eightbit.pipeline import quantize
from eightbit.plan import activation_tensors_to_calibrate, make_plan
from eightbit.quant import QuantConfig
from tests.fixtures import joins
from tests.fixtures.targets import residual_net


@pytest.fixture(scope="module")
def samples() -> np.ndarray:
    return np.random.default_rng(2).standard_normal((96, 3, 12, 12)).astype(np.float32)


def with_softmax() -> onnx.ModelProto:
    """The residual network with a Softmax on its logits (no int8 kernel in eightbit)."""
    model = residual_net()
    graph = model.graph
    graph.output[0].name = "probabilities"
    graph.node.append(helper.make_node("Softmax", ["logits"], ["probabilities"], "softmax"))
    return model


# -- mcu: no float nodes ------------------------------------------------------------------


def test_mcu_refuses_a_model_with_a_node_it_cannot_run_in_int8(samples):
    data = {"x": samples}
    ort = quantize(with_softmax(), data, QuantConfig(), improve="fast")
    assert [d.name for d in ort.plan.fallbacks()] == ["softmax"]  # float is fine for ORT
    with pytest.raises(ConfigError) as raised:
        quantize(with_softmax(), data, QuantConfig.for_target("mcu"), improve="fast")
    message = str(raised.value)
    assert "target 'mcu' cannot run 1 float node(s): softmax (" in message
    assert "no float kernels" in message


def test_mcu_meets_a_budget_by_int16_promotion_never_by_float(samples):
    """No float kernels: the budget promotes tensors to int16 instead (§R.11)."""
    improve = preset("fast", min_sqnr=40.0)
    result = quantize(
        residual_net(), {"x": samples}, QuantConfig.for_target("mcu"), improve=improve
    )
    assert result.plan.fallbacks() == () and result.plan.config.int16
    names = [s.name for s in result.plan.steps]
    # The weights are reconstructed on the promoted plan (§R.11): promotion comes first.
    assert names[-2:] == ["int16_promotion", "reconstruct"]


def test_mcu_keeps_wide_joins_in_int8():
    """The join rule (§Q13) keeps this Concat float for ORT; on mcu it stays int8."""
    graph = Graph(normalize(joins.large_small_concat()))
    names = activation_tensors_to_calibrate(graph, QuantConfig())
    ranges = {name: (0.0, 300.0) if name in ("boxes", "out") else (0.0, 1.0) for name in names}
    ort = make_plan(graph, ranges, QuantConfig(), separate_joins=True)
    assert not ort.decision("head_concat").quantized
    mcu = make_plan(graph, ranges, QuantConfig.for_target("mcu"), separate_joins=True)
    assert mcu.fallbacks() == ()


def test_mcu_safety_net_promotes_instead_of_returning_nodes_to_float(samples, monkeypatch):
    def always_missed(check: object) -> dict[str, str]:
        return {"logits": "output 'logits': forced by the test"}

    monkeypatch.setattr(eightbit.pipeline, "missed_floor", always_missed)
    config = QuantConfig.for_target("mcu")
    result = quantize(residual_net(), {"x": samples}, config, check_samples=32)
    assert result.plan.fallbacks() == ()
    net = [step for step in result.plan.steps if step.name == "safety_net"]
    assert len(net) == 1
    assert "engaged: output 'logits': forced by the test" in net[0].notes[0]
    assert "no float kernels: only int16 promotion, no node back to float" in net[0].notes[0]


@pytest.mark.parametrize("scheme", ["affine", "pow2"])
def test_the_c_generator_accepts_the_mcu_model(samples, scheme):
    config = QuantConfig.for_target("mcu", scheme=scheme)
    result = quantize(residual_net(), {"x": samples}, config, improve="fast")
    generated = generate_c(result, "net")
    assert generated is not None


# -- openvino: int8 execution in the CPU plugin's runtime graph ----------------------------

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None


def runtime_precisions(model: onnx.ModelProto, tmp_path) -> collections.Counter[tuple[str, str]]:
    """(layer type, runtime precision) of every op OpenVINO's CPU plugin compiled."""
    import openvino as ov

    path = tmp_path / "model.onnx"
    onnx.save(model, path)
    core = ov.Core()
    # f32 unless Q/DQ says int8: on a CPU with bf16 units OpenVINO's own default is bf16.
    compiled = core.compile_model(
        core.read_model(str(path)), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        counts[(info["layerType"].astype(str), info["runtimePrecision"].astype(str))] += 1
    return counts


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed (pip install openvino)")
def test_openvino_runs_conv_and_matmul_in_int8(samples, tmp_path):
    result = quantize(residual_net(), {"x": samples}, QuantConfig.for_target("openvino"))
    counts = runtime_precisions(result.model, tmp_path)
    layers = {key: n for key, n in counts.items() if key[0] in ("Convolution", "FullyConnected")}
    assert sum(layers.values()) >= 5, counts
    assert {precision for _, precision in layers} <= {"u8", "i8"}, counts


@pytest.mark.skipif(not HAS_OPENVINO, reason="openvino is not installed (pip install openvino)")
def test_openvino_runs_the_float_model_in_float(tmp_path):
    """The check above can fail: without Q/DQ the same layers run in f32."""
    counts = runtime_precisions(residual_net(), tmp_path)
    layers = {key for key in counts if key[0] in ("Convolution", "FullyConnected")}
    assert layers and {precision for _, precision in layers} == {"f32"}, counts


def test_softmax_fixture_is_a_valid_model():
    onnx.checker.check_model(with_softmax(), full_check=True)
    assert with_softmax().graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
