"""eightbit.codegen: C99 sources for microcontrollers, bit-exact with the integer engine.

``generate_c(quantized, name)`` prepares the engine's integer program of a quantized model
and writes it as C (docs/numerics.md): ``NAME.h`` (API, sizes, quantization of the
inputs and outputs), ``NAME.c`` (one function per layer, weights as ``const`` tables, one
static arena), ``NAME_io.c`` (float at the boundary only) and ``eightbit_runtime.h``.
"""

from __future__ import annotations

import os

from eightbit.codegen.arena import ArenaPlan, Buffer, lower_bound, plan_arena
from eightbit.codegen.emit import supported_kinds
from eightbit.codegen.integer_program import Interface, Port, analyze, run_integers
from eightbit.codegen.writer import RUNTIME_HEADER, GeneratedModel, check_name, generate
from eightbit.engine import prepare
from eightbit.engine.execution import Quantized
from eightbit.plan import QuantPlan


def generate_c(
    quantized: Quantized,
    name: str,
    *,
    plan: str | os.PathLike[str] | QuantPlan | None = None,
    source: str | None = None,
) -> GeneratedModel:
    """The C sources of a quantized model (a path with its plan beside it, a
    ``QuantizedModel``, or a prepared ``Program``); ``.write(folder)`` saves them."""
    program = prepare(quantized, plan=plan)
    described = source if source is not None else _describe(quantized)
    return generate(program, name, described)


def _describe(quantized: Quantized) -> str:
    if isinstance(quantized, str | os.PathLike):
        return os.path.basename(os.fspath(quantized))
    return "the model"


__all__ = [
    "RUNTIME_HEADER",
    "ArenaPlan",
    "Buffer",
    "GeneratedModel",
    "Interface",
    "Port",
    "analyze",
    "check_name",
    "generate",
    "generate_c",
    "lower_bound",
    "plan_arena",
    "run_integers",
    "supported_kinds",
]
