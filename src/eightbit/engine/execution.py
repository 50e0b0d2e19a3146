"""Eval: running a ``Program`` on inputs, and ``run`` for a quantized model.

``prepare`` turns a quantized model (a path to its int8 ``.onnx`` with the plan beside it
as ``<stem>.plan.json``, or any object with ``.model`` and ``.plan``) into a ``Program``
once; ``execute`` runs a program; ``run`` does both, and can dump every integer tensor
for comparison against a device.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from eightbit.engine.build import build_program
from eightbit.engine.dump import write_dump
from eightbit.engine.program import Program
from eightbit.errors import ConfigError, DataError, ModelError
from eightbit.graph import load_model
from eightbit.plan import PlannedModel, QuantPlan, plan_path_for

Observer = Callable[[str, np.ndarray], None]


# What ``eightbit.quantize`` returns: the QDQ model and its plan.
QuantizedLike = PlannedModel


Quantized = str | os.PathLike[str] | QuantizedLike | Program


def prepare(
    quantized: Quantized, *, plan: str | os.PathLike[str] | QuantPlan | None = None
) -> Program:
    """The integer program of a quantized model (a Program is returned as it is).

    For a model file, ``plan`` overrides where its plan is read from (default:
    ``<stem>.plan.json`` beside it).
    """
    if isinstance(quantized, Program):
        return quantized
    if isinstance(quantized, str | os.PathLike):
        path = Path(quantized)
        if isinstance(plan, QuantPlan):
            return build_program(load_model(path), plan)
        plan_file = plan_path_for(path) if plan is None else Path(plan)
        if not plan_file.is_file():
            raise ConfigError(
                f"no plan for {str(path)!r}: expected {str(plan_file)!r}, which eightbit "
                "writes beside a quantized model; save the model with its plan, or name it "
                "with --plan"
            )
        return build_program(load_model(path), QuantPlan.load(plan_file))
    model, plan = getattr(quantized, "model", None), getattr(quantized, "plan", None)
    if not isinstance(model, onnx.ModelProto) or not isinstance(plan, QuantPlan):
        raise ConfigError(
            "expected a quantized model: a path to its .onnx file, or an object with .model "
            f"(ModelProto) and .plan (QuantPlan) (got {type(quantized).__name__})"
        )
    return build_program(model, plan)


def execute(
    program: Program,
    inputs: Mapping[str, np.ndarray],
    *,
    reference: bool = False,
    observe: Observer | None = None,
) -> dict[str, np.ndarray]:
    """Run ``program`` on float ``inputs``; outputs by name.

    ``reference`` runs the naive kernels (the definition) instead of the fast ones.
    ``observe(name, integers)`` is called for every integer tensor as it is computed.
    """
    values: dict[str, Any] = dict(program.constants)
    for name in program.inputs:
        if name not in inputs:
            raise DataError(
                f"input {name!r} is missing; the model takes {list(program.inputs)} "
                f"(got {sorted(inputs)})"
            )
        values[name] = np.asarray(inputs[name])
    for step in program.steps:
        args: list[Any] = [values[name] if name else None for name in step.inputs]
        results = step.run_reference(*args) if reference else step.run(*args)
        for name, value in zip(step.outputs, results, strict=True):
            values[name] = value
            if observe is not None and name in program.formats:
                observe(name, value)
    return {name: values[name] for name in program.outputs}


def _named_inputs(program: Program, inputs: Mapping[str, Any] | np.ndarray) -> dict[str, Any]:
    if isinstance(inputs, Mapping):
        return dict(inputs)
    if len(program.inputs) != 1:
        raise DataError(
            f"the model takes {len(program.inputs)} inputs {list(program.inputs)}; "
            "pass a dict name -> array"
        )
    return {program.inputs[0]: inputs}


def run(
    quantized: Quantized,
    inputs: Mapping[str, Any] | np.ndarray,
    *,
    dump: str | os.PathLike[str] | None = None,
    strict_integer: bool = False,
    reference: bool = False,
    plan: str | os.PathLike[str] | QuantPlan | None = None,
) -> dict[str, np.ndarray]:
    """Run a quantized model on the integer engine; float outputs by name.

    ``inputs`` is a dict name -> array, or one array for a one-input model. ``dump``
    names a folder that receives every integer tensor (``<tensor>.npy``) and
    ``formats.json``. ``strict_integer`` refuses a model with float fallback nodes.
    ``reference`` runs the naive kernels; ``plan`` is as for ``prepare``.
    """
    program = prepare(quantized, plan=plan)
    if strict_integer:
        require_integer_only(program)
    captured: dict[str, np.ndarray] = {}
    observe = captured.__setitem__ if dump is not None else None
    outputs = execute(program, _named_inputs(program, inputs), reference=reference, observe=observe)
    if dump is not None:
        write_dump(dump, program, captured)
    return outputs


def require_integer_only(program: Program) -> None:
    """ModelError listing the float nodes, when there are any (``--strict-integer``)."""
    if program.float_nodes:
        listed = "; ".join(f"{n.name} ({n.op_type}): {n.reason}" for n in program.float_nodes)
        raise ModelError(
            f"the model keeps {len(program.float_nodes)} node(s) in float, refused by "
            f"strict integer mode: {listed}"
        )
