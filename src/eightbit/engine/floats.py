"""The only steps that compute in float: the model boundary and float fallback nodes.

``QuantizeStep`` stores a float input (or a fallback node's output) as integers and
``DequantizeStep`` turns integers back into floats for the outputs and for fallback nodes,
both exactly as ONNX QuantizeLinear/DequantizeLinear. ``FloatNodeStep`` runs one node the
plan kept in float with ``onnx.reference`` (numpy), so the engine needs no other runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import onnx
from onnx.reference import ReferenceEvaluator

from eightbit.engine.program import Step
from eightbit.errors import DataError
from eightbit.quant import QuantParams, dequantize_values, quantize_values


@dataclass(frozen=True, eq=False)
class QuantizeStep(Step):
    params: QuantParams

    integer = False
    kind = "Quantize"

    def run(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        values = np.asarray(args[0])
        if values.dtype.kind != "f":
            raise DataError(
                f"{self.inputs[0]!r} must hold floats to be quantized (got {values.dtype})"
            )
        return (quantize_values(values, self.params),)


@dataclass(frozen=True, eq=False)
class DequantizeStep(Step):
    params: QuantParams

    integer = False
    kind = "Dequantize"

    def run(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        return (dequantize_values(args[0], self.params),)


@dataclass(frozen=True, eq=False)
class FloatNodeStep(Step):
    """One ONNX node run in float; ``proto`` is its serialized NodeProto."""

    proto: bytes
    opsets: tuple[tuple[str, int], ...]
    reason: str

    integer = False
    kind = "Float"

    @cached_property
    def _evaluator(self) -> Any:
        node = onnx.NodeProto()
        node.ParseFromString(self.proto)
        return ReferenceEvaluator(node, opsets=dict(self.opsets))

    def run(self, *args: np.ndarray) -> tuple[np.ndarray, ...]:
        feeds = {name: value for name, value in zip(self.inputs, args, strict=True) if name}
        results = self._evaluator.run(None, feeds)
        return tuple(np.asarray(result) for result in results)
