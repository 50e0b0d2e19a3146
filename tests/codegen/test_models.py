"""Whole models as C: bit-exact with the engine, integer-only network code, the API.

The test models of the fixtures and the MNIST demo CNN, each under the quantization
configurations that change the generated arithmetic (uint8 and int8 affine activations,
power-of-two scales, per-tensor weights), are compiled once with sanitizers.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest

from eightbit.codegen import RUNTIME_HEADER, GeneratedModel, generate
from eightbit.codegen.c import identifier
from eightbit.engine import Program, build_program
from eightbit.engine.floats import DequantizeStep, QuantizeStep
from eightbit.quant import QuantConfig, dequantize_values, quantize_values
from tests.codegen.helpers import (
    assert_bit_exact,
    compile_models,
    require_gcc,
    run_boundary,
)
from tests.export.helpers import quantize
from tests.fixtures.models import conv_bn_relu, random_inputs, two_inputs

MNIST = Path(__file__).resolve().parents[2] / "examples" / "mnist" / "mnist_cnn.onnx"
Case = tuple[onnx.ModelProto, dict[str, np.ndarray]]


def _mnist() -> Case:
    model = onnx.load(MNIST)
    feeds = random_inputs(model, n=16, seed=5)
    return model, {name: np.clip(v, 0, 1) for name, v in feeds.items()}


def _torch_small_cnn() -> Case:
    torch = pytest.importorskip("torch")
    from tests.fixtures.models import torch_export, torch_small_cnn

    model = torch_export(torch_small_cnn(), torch.zeros(1, 3, 8, 8))
    return model, random_inputs(model, n=16, seed=4)


def _fixture(build: Callable[[], onnx.ModelProto], seed: int) -> Callable[[], Case]:
    def make() -> Case:
        model = build()
        return model, random_inputs(model, n=16, seed=seed)

    return make


AFFINE, INT8, POW2 = QuantConfig(), QuantConfig(activations="int8"), QuantConfig(scheme="pow2")
PER_TENSOR = QuantConfig(per_channel=False)
CASES: dict[str, tuple[Callable[[], Case], QuantConfig]] = {
    "mnist_affine": (_mnist, AFFINE),
    "mnist_int8": (_mnist, INT8),
    "mnist_pow2": (_mnist, POW2),
    "conv_bn_relu_affine": (_fixture(conv_bn_relu, 3), AFFINE),
    "conv_bn_relu_pow2": (_fixture(conv_bn_relu, 3), POW2),
    "conv_bn_relu_per_tensor": (_fixture(conv_bn_relu, 3), PER_TENSOR),
    "torch_small_cnn_affine": (_torch_small_cnn, AFFINE),
    "torch_small_cnn_pow2": (_torch_small_cnn, POW2),
    "two_inputs_affine": (_fixture(two_inputs, 8), AFFINE),
    "two_inputs_pow2": (_fixture(two_inputs, 8), POW2),
}
Compiled = tuple[Path, dict[str, GeneratedModel]]


def _twice_and_input(program: Program) -> Program:
    """``program`` returning its output twice and its quantized input as a third output:
    outputs that are not written by a layer of their own are copied at the end of run."""
    last = program.steps[-1]
    first = program.steps[0]
    assert isinstance(last, DequantizeStep) and isinstance(first, QuantizeStep)
    again = DequantizeStep("again", last.inputs, ("again",), last.params)
    echo = DequantizeStep("echo", first.outputs, ("echo",), first.params)
    return dataclasses.replace(
        program,
        steps=(*program.steps, again, echo),
        outputs=(*program.outputs, "again", "echo"),
    )


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Compiled:
    require_gcc()
    models = {}
    for name, (make, config) in CASES.items():
        model, feeds = make()
        quantized = quantize(model, feeds, config)
        program = build_program(quantized.qdq, quantized.plan)
        models[name] = generate(program, name, name)
        if name == "conv_bn_relu_affine":
            models["copied_outputs"] = generate(_twice_and_input(program), "copied_outputs")
    return compile_models(list(models.values()), tmp_path_factory.mktemp("models")), models


@pytest.mark.parametrize("name", [*sorted(CASES), "copied_outputs"])
def test_model_is_bit_exact_with_the_engine(compiled: Compiled, name: str) -> None:
    binary, models = compiled
    assert assert_bit_exact(binary, models[name], count=50, seed=1) == 54


def test_network_code_has_no_float(compiled: Compiled) -> None:
    _, models = compiled
    word = re.compile("float|double")  # as `grep -E` would search: comments included
    for name, model in models.items():
        assert not word.search(model.files[f"{name}.c"]), name
        assert word.search(model.files[f"{name}_io.c"]), "the boundary helpers convert floats"
    assert not word.search(next(iter(models.values())).files[RUNTIME_HEADER])


@pytest.mark.parametrize("name", ["mnist_affine", "mnist_int8", "mnist_pow2"])
def test_boundary_helpers_match_the_engine(compiled: Compiled, name: str) -> None:
    binary, models = compiled
    model = models[name]
    x, y = model.interface.inputs[0], model.interface.outputs[0]
    rng = np.random.default_rng(2)
    scale = np.float32(x.params.scale)
    ties = (rng.integers(-300, 300, size=x.size) + np.float32(0.5)) * scale  # exact x.5 quotients
    reals = np.stack(
        [
            rng.normal(0.5, 0.6, size=x.shape).astype(np.float32),
            ties.astype(np.float32).reshape(x.shape),
            rng.normal(0, 1e6, size=x.shape).astype(np.float32),
        ]
    )
    quantized = run_boundary(binary, model, "quantize", reals)
    np.testing.assert_array_equal(quantized, quantize_values(reals, x.params))
    codes = np.resize(np.arange(y.params.qmin, y.params.qmax + 1), (3, y.size))
    stored = codes.astype(y.params.numpy_dtype).reshape(3, *y.shape)
    dequantized = run_boundary(binary, model, "dequantize", stored)
    expected = dequantize_values(stored, y.params)
    np.testing.assert_array_equal(dequantized.view(np.uint32), expected.view(np.uint32))


def test_quantize_helper_refuses_nan(compiled: Compiled) -> None:
    binary, models = compiled
    model = models["mnist_affine"]
    reals = np.zeros((1, *model.interface.inputs[0].shape), dtype=np.float32)
    reals.reshape(-1)[3] = np.nan
    result = subprocess.run(
        [str(binary), model.name, "quantize"], input=reals.tobytes(), capture_output=True
    )
    assert result.returncode == 20  # the helper returned a non-zero status


@pytest.mark.parametrize(
    ("name", "c_type"), [("mnist_affine", "uint8_t"), ("mnist_pow2", "int8_t")]
)
def test_header_states_the_api(compiled: Compiled, name: str, c_type: str) -> None:
    _, models = compiled
    model = models[name]
    header = model.files[f"{name}.h"]
    macro = name.upper()
    assert f"int {name}_run(const {c_type} *input, {c_type} *output);" in header
    assert f"#define {macro}_ARENA_BYTES {model.arena.size}\n" in header
    assert f"#define {macro}_INPUT_SIZE 784\n" in header
    x = model.interface.inputs[0]
    found = re.search(rf"#define {macro}_INPUT_SCALE (\S+)f ", header)
    assert found is not None
    assert np.float32(float.fromhex(found.group(1))) == np.float32(x.params.scale)
    assert f"#define {macro}_INPUT_ZERO_POINT {int(x.params.zero_point)}\n" in header
    assert f"int {name}_quantize_input(const float *x, {c_type} *q);" in header


def test_several_inputs_take_a_struct_of_pointers(compiled: Compiled) -> None:
    _, models = compiled
    header = models["two_inputs_affine"].files["two_inputs_affine.h"]
    assert "const uint8_t *a;" in header and "const uint8_t *b;" in header
    assert (
        "int two_inputs_affine_run(const two_inputs_affine_inputs *inputs, "
        "const two_inputs_affine_outputs *outputs);" in header
    )


def test_each_layer_is_a_function_named_after_its_node(compiled: Compiled) -> None:
    _, models = compiled
    model = models["mnist_affine"]
    source = model.files["mnist_affine.c"]
    taken: set[str] = set()
    for step in model.interface.steps:
        function = identifier(step.node, taken)
        assert f"'{step.node}'" in source
        if step.node not in {s for s in model.aliases}:
            assert re.search(rf"^static (void|int) {function}\(", source, re.M) or (
                f"{step.kind} '{step.node}': output shares its input's bytes" in source
            )
    assert "static void features_features_0_features_0_0_Conv(const uint8_t *x, uint8_t *y)" in (
        source
    )
    assert "requantize: q = clamp(" in source  # the comment states the parameters


def test_arena_reuses_dead_tensors(compiled: Compiled) -> None:
    _, models = compiled
    model = models["mnist_affine"]
    interface = model.interface
    ports = {p.tensor for p in interface.inputs + interface.outputs}
    written = {name for step in interface.steps for name in step.outputs} - ports
    total = sum(int(np.prod(interface.shapes[name])) for name in written)
    assert model.arena.lower_bound <= model.arena.size < total
    assert model.arena.size <= 1.25 * model.arena.lower_bound
    # The Flatten before the classifier moves nothing: its output is its input's bytes.
    assert model.aliases
    assert "Layout '/Flatten': output shares its input's bytes" in model.files["mnist_affine.c"]
