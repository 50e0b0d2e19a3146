"""What generated C refuses, and how it says so."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from eightbit.codegen import check_name, generate, supported_kinds
from eightbit.engine import Program, Step, build_program
from eightbit.errors import ConfigError, ModelError
from eightbit.quant import QuantConfig
from tests.export.helpers import quantize
from tests.fixtures.models import conv_bn_relu, random_inputs


def _program(config: QuantConfig) -> Program:
    model = conv_bn_relu()
    quantized = quantize(model, random_inputs(model, n=8, seed=1), config)
    return build_program(quantized.qdq, quantized.plan)


def test_a_float_fallback_node_is_refused_by_name() -> None:
    program = _program(QuantConfig(exclude=("fc",)))
    assert program.float_nodes
    with pytest.raises(ModelError, match=r"in float.*fc \(Gemm\)"):
        generate(program, "net")


@dataclasses.dataclass(frozen=True, eq=False)
class _Unknown(Step):
    kind = "Unknown"

    def run(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        return (args[0].reshape(len(args[0]), -1),)  # what the Flatten it replaces does


def test_a_step_without_an_emitter_lists_what_is_supported() -> None:
    program = _program(QuantConfig())
    steps = list(program.steps)
    index = next(i for i, s in enumerate(steps) if s.kind == "Layout")
    steps[index] = _Unknown(steps[index].node, steps[index].inputs[:1], steps[index].outputs)
    changed = dataclasses.replace(program, steps=tuple(steps))
    with pytest.raises(ModelError, match="no C emitter") as raised:
        generate(changed, "net")
    for kind in ("Conv", "MatMul", "Add", "Lookup", "Layout"):
        assert kind in supported_kinds() and kind in str(raised.value)


@pytest.mark.parametrize("name", ["9lives", "has-dash", "eb_model", "naïve", ""])
def test_model_names_must_be_c_identifiers(name: str) -> None:
    with pytest.raises(ConfigError, match="C identifier"):
        check_name(name)
    assert check_name("mnist_int8") == "mnist_int8"
