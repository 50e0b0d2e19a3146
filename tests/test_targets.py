"""Targets (docs/targets.md): the profiles, the refusals, and TensorRT's placement rules."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, numpy_helper

from eightbit.cli import main
from eightbit.engine import prepare
from eightbit.errors import ConfigError
from eightbit.graph.session import make_session
from eightbit.pipeline import quantize
from eightbit.quant import PROFILES, TARGETS, QuantConfig, activation_params
from tests.fixtures.targets import residual_net

SAMPLES = 400


@pytest.fixture(scope="module")
def samples() -> np.ndarray:
    return np.random.default_rng(1).standard_normal((SAMPLES, 3, 12, 12)).astype(np.float32)


@pytest.fixture(scope="module")
def quantized(samples: np.ndarray) -> dict[str, onnx.ModelProto]:
    data = {"x": samples}
    return {
        target: quantize(residual_net(), data, QuantConfig.for_target(target), improve="fast").model
        for target in ("ort", "tensorrt")
    }


# -- profiles and refusals -------------------------------------------------------------------


def test_the_ort_target_is_the_default_configuration():
    assert QuantConfig.for_target("ort") == QuantConfig()
    assert QuantConfig().target == "ort"


@pytest.mark.parametrize(
    ("target", "scheme", "activations", "symmetric", "stem"),
    [
        ("ort", "affine", "uint8", False, True),
        ("tensorrt", "affine", "int8", True, False),
        ("openvino", "affine", "uint8", False, False),
        ("mcu", "affine", "int8", False, False),
        ("fpga", "pow2", "int8", True, False),
    ],
)
def test_each_target_sets_its_formats(target, scheme, activations, symmetric, stem):
    config = QuantConfig.for_target(target)
    assert (config.target, config.scheme, config.activation_type) == (target, scheme, activations)
    assert config.symmetric_activations is symmetric
    assert config.space_to_depth_stem is stem
    assert config.per_channel


def test_every_restriction_names_its_source():
    assert set(PROFILES) == set(TARGETS)
    for target in PROFILES.values():
        for rule in target.rules.values():
            assert rule.says and rule.source


@pytest.mark.parametrize(
    ("target", "settings", "words"),
    [
        ("tensorrt", {"activations": "uint8"}, ["uint8 activations", "zero point 0", "TensorRT"]),
        ("tensorrt", {"scheme": "pow2"}, ["scheme 'pow2'", "TensorRT"]),
        ("fpga", {"scheme": "affine"}, ["scheme 'affine'", "power of two"]),
        ("openvino", {"scheme": "pow2"}, ["scheme 'pow2'", "OpenVINO"]),
        ("mcu", {"activations": "uint8"}, ["uint8 activations", "TensorFlow Lite"]),
        ("mcu", {"exclude": ["conv0"]}, ["exclude ['conv0']", "no float kernels"]),
        ("mcu", {"op_types": ["Conv"]}, ["op-type selection", "no float kernels"]),
    ],
)
def test_a_setting_the_target_cannot_run_is_refused_naming_the_rule(target, settings, words):
    with pytest.raises(ConfigError) as raised:
        QuantConfig.for_target(target, **settings)
    message = str(raised.value)
    assert f"target {target!r} cannot run" in message
    for word in words:
        assert word in message


def test_an_unknown_target_lists_the_targets():
    with pytest.raises(ConfigError, match=r"'target' must be one of \['ort', 'tensorrt'"):
        QuantConfig.for_target("tpu")


def test_the_plan_records_the_target():
    config = QuantConfig.for_target("tensorrt")
    assert QuantConfig.from_dict(config.to_dict()) == config
    # A plan written before targets existed has no "target": it was made for ONNX Runtime.
    old = {key: value for key, value in QuantConfig().to_dict().items() if key != "target"}
    assert QuantConfig.from_dict(old).target == "ort"


def test_cli_refuses_uint8_activations_for_tensorrt_in_one_line(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(residual_net(), model)
    np.save(tmp_path / "x.npy", np.zeros((4, 3, 12, 12), np.float32))
    args = ["quantize", str(model), "-d", str(tmp_path / "x.npy"), "-o", str(tmp_path / "q.onnx")]
    result = CliRunner().invoke(main, [*args, "--target", "tensorrt", "--activations", "uint8"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: target 'tensorrt' cannot run uint8")
    assert not (tmp_path / "q.onnx").exists()


def test_cli_prints_the_target(tmp_path, samples):
    model = tmp_path / "m.onnx"
    onnx.save(residual_net(), model)
    np.save(tmp_path / "x.npy", samples[:64])
    args = ["quantize", str(model), "-d", str(tmp_path / "x.npy"), "-o", str(tmp_path / "q.onnx")]
    result = CliRunner().invoke(main, [*args, "--target", "fpga", "--preset", "fast", "--json"])
    assert result.exit_code == 0, result.output
    assert '"target": "fpga"' in result.output and '"scheme": "pow2"' in result.output


# -- symmetric activations (numerics §Q16) ---------------------------------------------------


@pytest.mark.parametrize(("lo", "hi"), [(-0.5, 2.0), (-3.0, 1.0), (0.0, 0.7), (0.0, 0.0)])
def test_symmetric_activation_params_follow_eq_q15(lo, hi):
    params = activation_params(lo, hi, QuantConfig.for_target("tensorrt"))
    magnitude = max(abs(lo), abs(hi)) or 1.0
    assert params.dtype == "int8" and int(params.zero_point) == 0
    assert float(params.scale) == float(np.float32(Fraction(magnitude) / 127))


# -- TensorRT's placement rules, checked on the exported graph --------------------------------


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in model.graph.node for output in node.output}


def _is_dequantized(model: onnx.ModelProto, tensor: str) -> bool:
    producer = _producers(model).get(tensor)
    return producer is not None and producer.op_type == "DequantizeLinear"


def test_tensorrt_activations_are_int8_with_zero_point_0_per_tensor(quantized):
    model = quantized["tensorrt"]
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    activation_qs = [
        node
        for node in model.graph.node
        if node.op_type == "QuantizeLinear" and node.input[0] not in initializers
    ]
    assert len(activation_qs) >= 8
    for node in activation_qs:
        scale, zero_point = initializers[node.input[1]], initializers[node.input[2]]
        assert zero_point.dtype == np.int8, node.name
        assert scale.shape == () and zero_point.shape == (), node.name
        assert int(zero_point) == 0, node.name


def test_tensorrt_weighted_ops_read_dq_inputs_and_a_float_bias(quantized):
    model = quantized["tensorrt"]
    initializers = {t.name: t for t in model.graph.initializer}
    weighted = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]
    assert len(weighted) == 6
    for node in weighted:
        assert _is_dequantized(model, node.input[0]), f"{node.name}: data input without DQ"
        assert _is_dequantized(model, node.input[1]), f"{node.name}: weight without DQ"
        weight_dq = _producers(model)[node.input[1]]
        stored = initializers[weight_dq.input[0]]
        assert stored.data_type == TensorProto.INT8
        assert not numpy_helper.to_array(initializers[weight_dq.input[2]]).any()  # zp 0
        if len(node.input) > 2:  # the bias: a float initializer, no Q/DQ
            assert node.input[2] in initializers, f"{node.name}: bias is not the float constant"
            assert initializers[node.input[2]].data_type == TensorProto.FLOAT


def test_tensorrt_residual_add_reads_two_dq_inputs(quantized):
    model = quantized["tensorrt"]
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    assert len(adds) == 1
    assert all(_is_dequantized(model, name) for name in adds[0].input)


def test_tensorrt_relu_reads_its_layer_float_output(quantized):
    """No Q/DQ between a layer and its Relu: TensorRT fuses the pair (docs/targets.md)."""
    model = quantized["tensorrt"]
    producers = _producers(model)
    for node in model.graph.node:
        if node.op_type == "Relu":
            assert producers[node.input[0]].op_type in ("Conv", "MatMul", "Add"), node.name


def test_the_ort_target_keeps_quantized_biases(quantized):
    model = quantized["ort"]
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    assert _is_dequantized(model, conv.input[2])


def _top1_agreement(reference: np.ndarray, other: np.ndarray) -> float:
    return float(np.mean(reference.argmax(axis=1) == other.argmax(axis=1)))


def test_onnxruntime_runs_the_tensorrt_form_as_well_as_the_ort_form(quantized, samples):
    float_logits = make_session(residual_net()).run(None, {"x": samples})[0]
    agreement = {
        target: _top1_agreement(float_logits, make_session(model).run(None, {"x": samples})[0])
        for target, model in quantized.items()
    }
    assert agreement["ort"] > 0.8
    assert abs(agreement["tensorrt"] - agreement["ort"]) <= 0.02, agreement


def test_the_engine_refuses_the_tensorrt_form_naming_the_target(samples):
    config = QuantConfig.for_target("tensorrt")
    result = quantize(residual_net(), {"x": samples[:64]}, config, improve="fast")
    with pytest.raises(ConfigError, match="target 'tensorrt' keeps them float"):
        prepare(result)
