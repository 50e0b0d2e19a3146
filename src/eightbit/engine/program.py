"""The integer program: what Prepare builds once and Eval runs many times.

A ``Program`` is a list of ``Step`` values in execution order, the constants they read, the
format of every integer tensor, and the float nodes it had to keep. Steps are frozen
dataclasses holding integer arrays and integer parameters (multipliers, shifts, zero points,
clamps, tables): everything a code generator needs, nothing computed at run time from a
float scale. Only the boundary steps (quantize an input, dequantize an output) and float
fallback nodes touch floats, and they say so (``Step.integer`` is False).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np

from eightbit.graph import TensorInfo
from eightbit.quant import QuantParams


@dataclass(frozen=True, eq=False)
class Step:
    """One operation of the program: reads ``inputs``, writes ``outputs`` (tensor names).

    ``node`` names the ONNX node the step comes from. ``run`` is the fast kernel,
    ``run_reference`` the naive one that defines it (the same function when a step only
    moves integers).
    """

    node: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    integer: ClassVar[bool] = True
    kind: ClassVar[str] = "step"

    def run(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        raise NotImplementedError

    def run_reference(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        return self.run(*args)


_WORD_LENGTHS = {"int8": 8, "uint8": 8, "int16": 16}


@dataclass(frozen=True)
class TensorFormat:
    """How the integers of one tensor stand for real numbers: ``r = scale · (q − zero_point)``.

    ``tensor`` is the model's name for the real tensor. ``fraction_length`` is set when
    every scale is ``2^−f`` and the zero point 0 (power-of-two mode): the stored integers
    are then fixed-point numbers of word length 8 (16 for int16) and fraction length f
    (MATLAB ``fi``).
    """

    tensor: str
    params: QuantParams

    @property
    def fraction_length(self) -> np.ndarray | None:
        return self.params.fraction_lengths

    def to_dict(self) -> dict[str, Any]:
        lengths = self.fraction_length
        result: dict[str, Any] = {"tensor": self.tensor, **self.params.to_dict()}
        result["word_length"] = _WORD_LENGTHS.get(self.params.dtype, 32)
        result["signed"] = self.params.dtype != "uint8"
        result["fraction_length"] = None if lengths is None else lengths.tolist()
        return result


@dataclass(frozen=True)
class FloatNode:
    """A node the plan keeps in float, and why."""

    name: str
    op_type: str
    reason: str


@dataclass(frozen=True, eq=False)
class Program:
    """Steps in execution order; ``inputs``/``outputs`` are the model's float tensors."""

    steps: tuple[Step, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    constants: Mapping[str, np.ndarray] = field(default_factory=dict)
    formats: Mapping[str, TensorFormat] = field(default_factory=dict)
    float_nodes: tuple[FloatNode, ...] = ()
    input_infos: tuple[TensorInfo, ...] = ()  # types and shapes of ``inputs``, for data readers

    def __post_init__(self) -> None:
        object.__setattr__(self, "constants", MappingProxyType(dict(self.constants)))
        object.__setattr__(self, "formats", MappingProxyType(dict(self.formats)))

    @property
    def integer_only(self) -> bool:
        """True when no node computes in float (the boundary steps aside)."""
        return not self.float_nodes

    def integer_tensors(self) -> list[str]:
        """Names of the integer tensors the steps write, in execution order."""
        return [name for step in self.steps for name in step.outputs if name in self.formats]
