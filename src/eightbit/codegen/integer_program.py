"""What the generated C sees of a program: its integer ports, its integer steps, static shapes.

The engine's ``Program`` begins with ``QuantizeStep``s (float input -> integers) and ends
with ``DequantizeStep``s (integers -> float output). The C API takes and returns the
integers on the inner side of those boundary steps, so ``analyze`` splits them off: what
remains must be integer steps only, or generation is refused with the list of float nodes.

Shapes are static in C. They are found by running the program once on zeros with the
model's declared input shapes (a symbolic dimension, such as the batch, becomes 1): the
engine itself says how large every tensor is, no shape rule is written twice.
``run_integers`` runs the integer steps on stored integers, the oracle the generated code
must equal bit for bit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from eightbit.codegen.c import identifier
from eightbit.engine import Program, Step, execute
from eightbit.engine.dynamic import DYNAMIC_PREFIX, HELPER_REASON
from eightbit.engine.floats import DequantizeStep, QuantizeStep
from eightbit.errors import ModelError
from eightbit.quant import QuantParams


@dataclass(frozen=True)
class Port:
    """One input or output of the C API: the integers of model tensor ``model_name``."""

    model_name: str  # the float tensor of the ONNX model ("image", "logits")
    tensor: str  # the program's integer tensor behind it
    c_name: str  # a C identifier for it
    shape: tuple[int, ...]
    params: QuantParams

    @property
    def dtype(self) -> str:
        return self.params.dtype

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass(frozen=True, eq=False)
class Interface:
    """The integer part of a program, with its ports and every tensor's shape and type."""

    program: Program
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    steps: tuple[Step, ...]  # the integer steps, in execution order
    shapes: Mapping[str, tuple[int, ...]]  # integer tensors and integer constants
    dtypes: Mapping[str, str]

    def __post_init__(self) -> None:
        object.__setattr__(self, "shapes", MappingProxyType(dict(self.shapes)))
        object.__setattr__(self, "dtypes", MappingProxyType(dict(self.dtypes)))

    def constant(self, name: str) -> np.ndarray | None:
        """The value of a program constant (weights aside: those live in the steps)."""
        value = self.program.constants.get(name)
        return None if value is None else np.asarray(value)


def _float_advice(program: Program) -> str:
    """What to do about float nodes: the advice depends on why each was kept in float."""
    chosen = [
        n for n in program.float_nodes if "('exclude')" in n.reason or "('op_types')" in n.reason
    ]
    if len(chosen) == len(program.float_nodes):
        return "Quantize again without excluding them (--exclude, --op-types)"
    advice = (
        "Generated C has integer kernels only: replace those ops in the float model, or run "
        "the model with `eightbit run` or ONNX Runtime instead"
    )
    if chosen:
        advice += "; quantize the nodes kept by choice without --exclude/--op-types"
    return advice


# A dynamic-mode model's refusal names this many of its float nodes, then counts the rest.
NAMED_DYNAMIC_FLOATS = 12


def _refuse_dynamic(program: Program) -> None:
    """One line for a dynamic-mode model (numerics §D): its activations are quantized at
    run time from float ranges, around float islands, which generated C cannot run."""
    dynamic = [n for n in program.float_nodes if n.reason.startswith(DYNAMIC_PREFIX)]
    if not dynamic:
        return
    # The model's own float nodes (the islands) first, then the rescaling around products.
    dynamic.sort(key=lambda node: node.reason == HELPER_REASON)
    named = ", ".join(f"{n.name} ({n.op_type})" for n in dynamic[:NAMED_DYNAMIC_FLOATS])
    more = len(dynamic) - NAMED_DYNAMIC_FLOATS
    raise ModelError(
        f"the model was quantized in dynamic mode and computes {len(dynamic)} node(s) in "
        f"float, which generated C cannot run: {named}"
        + (f" and {more} more" if more > 0 else "")
        + "; quantize with --mode static to generate C"
    )


def analyze(program: Program) -> Interface:
    """Split the boundary steps off ``program`` and trace its shapes; refuse float nodes."""
    _refuse_dynamic(program)
    if program.float_nodes:
        listed = "; ".join(f"{n.name} ({n.op_type}): {n.reason}" for n in program.float_nodes)
        raise ModelError(
            f"the model keeps {len(program.float_nodes)} node(s) in float, which generated C "
            f"cannot run: {listed}. {_float_advice(program)}"
        )
    taken: set[str] = set()
    quantized_inputs: dict[str, QuantizeStep] = {}
    dequantized_outputs: dict[str, DequantizeStep] = {}
    steps: list[Step] = []
    for step in program.steps:
        if isinstance(step, QuantizeStep) and step.inputs[0] in program.inputs:
            if step.inputs[0] in quantized_inputs:
                raise ModelError(
                    f"input {step.inputs[0]!r} is quantized twice; the C API takes one "
                    "integer tensor per input"
                )
            quantized_inputs[step.inputs[0]] = step
        elif isinstance(step, DequantizeStep) and step.outputs[0] in program.outputs:
            dequantized_outputs[step.outputs[0]] = step
        elif not step.integer:
            raise ModelError(
                f"step {step.node!r} ({step.kind}) computes in float inside the network; "
                "generated C is integer-only"
            )
        else:
            steps.append(step)
    shapes, dtypes = _trace(program)
    inputs = tuple(
        _port(name, quantized_inputs.get(name), shapes, taken, "input") for name in program.inputs
    )
    outputs = tuple(
        _port(name, dequantized_outputs.get(name), shapes, taken, "output")
        for name in program.outputs
    )
    return Interface(program, inputs, outputs, tuple(steps), shapes, dtypes)


def _port(
    name: str,
    step: QuantizeStep | DequantizeStep | None,
    shapes: Mapping[str, tuple[int, ...]],
    taken: set[str],
    role: str,
) -> Port:
    if step is None:
        raise ModelError(
            f"{role} {name!r} is not quantized at the model boundary; generated C takes and "
            "returns quantized tensors only"
        )
    tensor = step.outputs[0] if role == "input" else step.inputs[0]
    if step.params.per_channel:
        raise ModelError(
            f"{role} {name!r} is quantized per channel; the C API needs one scale and zero "
            "point per input and output"
        )
    return Port(name, tensor, identifier(name, taken, role), shapes[tensor], step.params)


def _static_shape(declared: tuple[int | str | None, ...] | None, name: str) -> tuple[int, ...]:
    if declared is None:
        raise ModelError(f"input {name!r} has no declared shape; generated C needs static shapes")
    return tuple(d if isinstance(d, int) and d >= 0 else 1 for d in declared)


def _trace(program: Program) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    """Shape and type of every integer tensor and integer constant, from one engine run."""
    feeds = {}
    for info in program.input_infos:
        if info.dtype.kind != "f":
            raise ModelError(
                f"input {info.name!r} holds {info.dtype}; generated C takes float inputs "
                "quantized at the boundary"
            )
        feeds[info.name] = np.zeros(_static_shape(info.shape, info.name), dtype=info.dtype)
    shapes: dict[str, tuple[int, ...]] = {}
    dtypes: dict[str, str] = {}

    def observe(name: str, values: np.ndarray) -> None:
        shapes[name] = tuple(int(d) for d in values.shape)
        dtypes[name] = values.dtype.name

    execute(program, feeds, observe=observe)
    for name, values in program.constants.items():
        if np.asarray(values).dtype.kind in "iu":
            shapes[name] = tuple(int(d) for d in np.shape(values))
            dtypes[name] = np.asarray(values).dtype.name
    return shapes, dtypes


def run_integers(interface: Interface, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The engine's integer outputs (by port C name) for integer inputs (by port C name)."""
    values: dict[str, Any] = dict(interface.program.constants)
    for port in interface.inputs:
        given = np.asarray(inputs[port.c_name])
        values[port.tensor] = given.astype(port.params.numpy_dtype).reshape(port.shape)
    for step in interface.steps:
        args: list[Any] = [values[name] if name else None for name in step.inputs]
        for name, value in zip(step.outputs, step.run(*args), strict=True):
            values[name] = value
    results = {}
    for port in interface.outputs:
        value = values[port.tensor]
        assert value is not None
        results[port.c_name] = np.asarray(value)
    return results
