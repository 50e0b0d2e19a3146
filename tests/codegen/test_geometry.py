"""Index arithmetic of the generated C: windows, padding modes, slices, resizes, broadcasting,
and the two paths eightbit's plans do not reach (a transposed Gemm input, a move that no
loop nest describes), each bit-exact with the engine under the sanitizers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from eightbit.codegen import GeneratedModel, generate
from eightbit.codegen.c import identifier
from eightbit.engine import Program, build_program
from eightbit.engine.kernels.gemm import MatMulStep
from eightbit.engine.kernels.layout import LayoutStep
from eightbit.quant import QuantConfig
from tests.codegen.geometry_cases import GEOMETRY
from tests.codegen.helpers import assert_bit_exact, compile_models, require_gcc
from tests.export.helpers import quantize
from tests.export.op_cases import CASES, _weighted

CONFIGS = {"affine": QuantConfig(), "pow2": QuantConfig(scheme="pow2")}
Compiled = tuple[Path, dict[str, GeneratedModel]]


@dataclasses.dataclass(frozen=True, eq=False)
class _Shuffled(LayoutStep):
    """A Flatten whose 144 outputs come in a seeded random order, as a 12 x 12 matrix."""

    def run(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        flat = super().run(*args)[0].reshape(-1)
        return (flat[np.random.default_rng(0).permutation(flat.size)].reshape(12, 12),)


def _program(case: tuple, config: QuantConfig) -> Program:
    model, feeds = case
    quantized = quantize(model, feeds, config)
    return build_program(quantized.qdq, quantized.plan)


def _transposed_gemm() -> Program:
    """A square Gemm whose step reads A transposed (the engine's transA path)."""
    program = _program(_weighted("Gemm", (16, 16), (16, 8), 8), QuantConfig())
    steps = tuple(
        dataclasses.replace(s, transpose_a=True) if isinstance(s, MatMulStep) else s
        for s in program.steps
    )
    return dataclasses.replace(program, steps=steps)


def _shuffled() -> Program:
    program = _program(CASES["Flatten"](), QuantConfig())
    steps = tuple(
        _Shuffled(**{f.name: getattr(s, f.name) for f in dataclasses.fields(s)})
        if isinstance(s, LayoutStep)
        else s
        for s in program.steps
    )
    return dataclasses.replace(program, steps=steps)


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Compiled:
    require_gcc()
    taken: set[str] = set()
    models = {}
    for case in sorted(GEOMETRY):
        for config_name, config in CONFIGS.items():
            name = identifier(f"{case}_{config_name}", taken)
            models[f"{case} {config_name}"] = generate(_program(GEOMETRY[case](), config), name)
    models["transposed gemm"] = generate(_transposed_gemm(), "transposed_gemm")
    models["shuffled"] = generate(_shuffled(), "shuffled")
    return compile_models(list(models.values()), tmp_path_factory.mktemp("geometry")), models


CASE_NAMES = [f"{case} {config}" for case in sorted(GEOMETRY) for config in sorted(CONFIGS)]


@pytest.mark.parametrize("name", [*CASE_NAMES, "transposed gemm", "shuffled"])
def test_bit_exact_with_the_engine(compiled: Compiled, name: str) -> None:
    binary, models = compiled
    assert assert_bit_exact(binary, models[name], count=50, seed=11) == 54


def test_moves_use_the_cheapest_loops(compiled: Compiled) -> None:
    _, models = compiled
    source = models["shuffled"].files["shuffled.c"]
    assert "gathered through a table of 144 offsets" in source
    reflect = models["Pad reflect affine"].files[f"{models['Pad reflect affine'].name}.c"]
    assert "input offset along axis" in reflect  # reflection: a table per axis, no gather
    assert "gathered" not in reflect
    transpose = models["Slice reversed affine"]
    assert "moved in 2 loop(s)" in transpose.files[f"{transpose.name}.c"]
