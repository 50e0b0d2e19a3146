"""16x8 models as C (docs/numerics.md §E.13, §G.8): the op cases with int16 activations
and the residual network of the target tests with 16-bit tensors, compiled once with the
sanitizers; each must give the engine's integers bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from eightbit.codegen import GeneratedModel, generate
from eightbit.codegen.c import identifier
from eightbit.engine import build_program
from eightbit.pipeline import quantize as quantize_pipeline
from eightbit.quant import QuantConfig
from tests.codegen.helpers import assert_bit_exact, compile_models, require_gcc
from tests.export.helpers import quantize
from tests.export.op_cases import CASES
from tests.fixtures.clamp16 import conv_clip
from tests.fixtures.targets import residual_net
from tests.fixtures.wide import wide_gemm

# Every op case with its inputs (and so every value-preserving output) int16; the weighted
# and rescaling ones write int8, so both directions of the boundary run.
OPS = tuple(sorted(CASES))
NETWORKS = {
    "boundaries": ("r0", "s", "r2"),  # int8 -> int16 -> int8 at Conv, Add, Relu
    "all16": ("x", "r0", "r1", "c2", "s", "r2", "r3", "p", "rm", "logits"),
}
Compiled = tuple[Path, dict[str, GeneratedModel]]


def _inner_names(model: onnx.ModelProto) -> tuple[str, ...]:
    """The model's inputs and every tensor but its outputs."""
    outputs = {o.name for o in model.graph.output}
    tensors = [i.name for i in model.graph.input] + [o for n in model.graph.node for o in n.output]
    return tuple(t for t in tensors if t not in outputs)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Compiled:
    require_gcc()
    taken: set[str] = set()
    models: dict[str, GeneratedModel] = {}
    for case in OPS:
        model, feeds = CASES[case]()
        quantized = quantize(model, feeds, QuantConfig(int16=_inner_names(model)))
        program = build_program(quantized.qdq, quantized.plan)
        name = identifier(f"{case}_int16", taken)
        models[case] = generate(program, name, f"{case} (int16 inside)")
    model, feeds = wide_gemm()
    quantized = quantize(model, feeds, QuantConfig(int16=("x",)))
    models["wide_gemm"] = generate(
        build_program(quantized.qdq, quantized.plan), identifier("wide_gemm", taken), "wide"
    )
    model, feeds = conv_clip(tail=True)  # the Clip folded into the Conv's bounds (§E.14)
    quantized = quantize(model, feeds, QuantConfig(int16=("r",)))
    models["conv_clip"] = generate(
        build_program(quantized.qdq, quantized.plan), identifier("conv_clip", taken), "clamp"
    )
    samples = np.random.default_rng(3).standard_normal((64, 3, 12, 12)).astype(np.float32)
    for network, names in NETWORKS.items():
        config = QuantConfig(int16=names)
        result = quantize_pipeline(residual_net(), {"x": samples}, config, improve="fast")
        program = build_program(result.model, result.plan)
        models[network] = generate(program, identifier(network, taken), network)
    binary = compile_models(list(models.values()), tmp_path_factory.mktemp("int16"))
    return binary, models


@pytest.mark.parametrize("case", [*OPS, *NETWORKS, "wide_gemm", "conv_clip"])
def test_16x8_c_is_bit_exact_with_the_engine(compiled: Compiled, case: str) -> None:
    binary, models = compiled
    assert assert_bit_exact(binary, models[case], count=30, seed=11) >= 30


def test_16x8_layers_use_the_wide_requantization(compiled: Compiled) -> None:
    _, models = compiled
    source = models["all16"].files[f"{models['all16'].name}.c"]
    assert "eb_requantize_wide(" in source and "int16_t" in source


def test_a_folded_clamp_is_the_layer_bounds_in_c(compiled: Compiled) -> None:
    _, models = compiled
    source = models["conv_clip"].files[f"{models['conv_clip'].name}.c"]
    assert "Clamp" not in source and "-32767, 5461" in source  # Q(-6), Q(1): §E.14
