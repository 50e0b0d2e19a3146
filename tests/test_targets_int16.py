"""16-bit activations with 8-bit weights, "16x8" (docs/numerics.md §Q17)."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from eightbit.cli import main
from eightbit.engine import prepare
from eightbit.errors import ConfigError
from eightbit.fixed import best_precision_fraction_length
from eightbit.graph import normalize
from eightbit.graph.session import make_session
from eightbit.improve.measure import compare
from eightbit.pipeline import quantize
from eightbit.quant import QuantConfig, int16_params
from tests.fixtures.targets import residual_net

# The residual network's activations (tests/test_targets.py), every one 16-bit.
ALL_ACTIVATIONS = ("x", "r0", "r1", "c2", "s", "r2", "r3", "p", "rm", "logits")


@pytest.fixture(scope="module")
def samples() -> np.ndarray:
    return np.random.default_rng(3).standard_normal((160, 3, 12, 12)).astype(np.float32)


def _sqnr_db(reference: np.ndarray, other: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - other) ** 2))
    if noise == 0.0:
        return float("inf")
    return 10 * np.log10(float(np.sum(reference.astype(np.float64) ** 2)) / noise)


@pytest.mark.parametrize(("lo", "hi"), [(-0.5, 2.0), (-3.0, 1.0), (0.0, 0.7), (0.0, 0.0)])
def test_int16_params_follow_eq_q16(lo, hi):
    params = int16_params(lo, hi, QuantConfig())
    magnitude = max(abs(lo), abs(hi)) or 1.0
    assert params.dtype == "int16" and int(params.zero_point) == 0
    assert (params.qmin, params.qmax) == (-32768, 32767)
    assert float(params.scale) == float(np.float32(Fraction(magnitude) / 32767))


def test_int16_params_under_pow2_use_the_16_bit_best_precision():
    params = int16_params(-0.3, 5.0, QuantConfig(scheme="pow2"))
    length = best_precision_fraction_length([-0.3, 5.0], 16, signed=True)
    assert length == 12  # 5.0 < 8 = 2^15 · 2^-12
    assert float(params.scale) == 2.0**-length and params.dtype == "int16"


def test_the_config_keeps_its_old_json_unless_int16_is_asked_for():
    assert "int16" not in QuantConfig().to_dict()
    config = QuantConfig(int16=("r0",))
    assert config.to_dict()["int16"] == ["r0"]
    assert QuantConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize("target", ["tensorrt", "openvino"])
def test_targets_without_16_bit_activations_refuse_them(target):
    with pytest.raises(
        ConfigError, match=rf"target '{target}' cannot run int16 activations \(r0\)"
    ):
        QuantConfig.for_target(target, int16=("r0",))


def test_mcu_and_fpga_take_16_bit_activations():
    assert QuantConfig.for_target("mcu", int16=("r0",)).int16 == ("r0",)
    assert QuantConfig.for_target("fpga", int16=("r0",)).int16 == ("r0",)


def test_a_name_that_is_not_a_quantized_activation_is_refused(samples):
    with pytest.raises(ConfigError, match=r"'int16' names \['w0'\], which the plan does not"):
        quantize(residual_net(), {"x": samples}, QuantConfig(int16=("w0",)), improve="fast")


def test_the_named_tensor_and_its_folded_layer_are_int16(samples):
    result = quantize(residual_net(), {"x": samples}, QuantConfig(int16=("r0",)), improve="fast")
    wide = sorted(name for name, params in result.plan.tensors.items() if params.dtype == "int16")
    assert wide == ["c0", "r0"]  # conv0 writes straight into relu0's 16-bit grid (§Q5)
    assert result.plan.tensors["w0"].dtype == "int8"


def test_export_moves_to_opset_21_only_for_int16(samples):
    data = {"x": samples}
    plain = quantize(residual_net(), data, QuantConfig(), improve="fast").model
    wide = quantize(residual_net(), data, QuantConfig(int16=("r0",)), improve="fast").model
    assert [o.version for o in plain.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert [o.version for o in wide.opset_import if o.domain in ("", "ai.onnx")] == [21]
    onnx.checker.check_model(wide, full_check=True)
    zero_points = {
        t.name: numpy_helper.to_array(t) for t in wide.graph.initializer if "zero_point" in t.name
    }
    int16 = [name for name, value in zero_points.items() if value.dtype == np.int16]
    assert int16 and all(not zero_points[name].any() for name in int16)


def test_onnxruntime_and_the_onnx_reference_agree_on_the_int16_model(samples):
    config = QuantConfig(int16=("r0", "s", "r2"))
    model = quantize(residual_net(), {"x": samples}, config, improve="fast").model
    feed = {"x": samples[:8]}
    runtime = make_session(model).run(None, feed)[0]
    reference = ReferenceEvaluator(model).run(None, feed)[0]
    assert _sqnr_db(reference, runtime) > 60.0


def test_16_bit_activations_beat_8_bit_ones(samples):
    data, feed = {"x": samples}, {"x": samples}
    expected = make_session(residual_net()).run(None, feed)[0]
    sqnr = {}
    for name, config in (("int8", QuantConfig()), ("int16", QuantConfig(int16=ALL_ACTIVATIONS))):
        model = quantize(residual_net(), data, config, improve="fast").model
        sqnr[name] = _sqnr_db(expected, make_session(model).run(None, feed)[0])
    assert sqnr["int16"] > sqnr["int8"] + 0.5, sqnr


def test_the_engine_runs_int16_tensors_as_int16(samples):
    result = quantize(residual_net(), {"x": samples}, QuantConfig(int16=("r0",)), improve="fast")
    program = prepare(result)
    assert program.integer_only
    assert {name for name, f in program.formats.items() if f.params.dtype == "int16"}


def test_cli_int16_flag(tmp_path, samples):
    model = tmp_path / "m.onnx"
    onnx.save(residual_net(), model)
    np.save(tmp_path / "x.npy", samples[:64])
    args = ["quantize", str(model), "-d", str(tmp_path / "x.npy"), "-o", str(tmp_path / "q.onnx")]
    report = tmp_path / "report.html"
    flags = ["--int16", "r0", "--preset", "fast", "--json", "--report", str(report)]
    result = CliRunner().invoke(main, [*args, *flags])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["int16"] == ["r0"]
    assert report.is_file()  # the opset-21 model is compared with its opset-17 float model


def test_a_16x8_model_is_compared_with_its_float_model(samples):
    """The opset-21 int16 model and its opset-17 float model in one comparison graph."""
    result = quantize(residual_net(), {"x": samples}, QuantConfig(int16=("r0",)), improve="fast")
    compared = compare(normalize(residual_net()), result.model, [{"x": samples[:16]}])
    assert compared.output_db > 20.0
