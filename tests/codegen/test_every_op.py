"""Every op case of the export tests, under three quantization configurations, as C.

One sanitized executable holds all of them (compiled once for the module); each case must
give the engine's integers bit for bit on 50 random inputs and the edge cases.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from eightbit.codegen import GeneratedModel, generate
from eightbit.codegen.c import identifier
from eightbit.engine import build_program
from eightbit.quant import QuantConfig
from tests.codegen.helpers import assert_bit_exact, compile_models, require_gcc
from tests.export.helpers import quantize
from tests.export.op_cases import CASES

CONFIGS = {
    "affine": QuantConfig(scheme="affine"),
    "int8": QuantConfig(scheme="affine", activations="int8"),
    "pow2": QuantConfig(scheme="pow2"),
}
Compiled = tuple[Path, dict[tuple[str, str], GeneratedModel]]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Compiled:
    require_gcc()
    taken: set[str] = set()
    models = {}
    for case in sorted(CASES):
        for config_name, config in CONFIGS.items():
            model, feeds = CASES[case]()
            quantized = quantize(model, feeds, config)
            program = build_program(quantized.qdq, quantized.plan)
            name = identifier(f"{case}_{config_name}", taken)
            models[(case, config_name)] = generate(program, name, f"{case} ({config_name})")
    binary = compile_models(list(models.values()), tmp_path_factory.mktemp("every_op"))
    return binary, models


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("case", sorted(CASES))
def test_op_is_bit_exact_with_the_engine(compiled: Compiled, case: str, config: str) -> None:
    binary, models = compiled
    assert assert_bit_exact(binary, models[(case, config)], count=50, seed=7) == 54
