"""A float ONNX model as a trainable ``torch.nn.Module`` (numerics §T.3).

``to_torch(model)`` returns an ``OnnxModule``: every floating-point initializer is an
``nn.Parameter`` (BatchNormalization's running mean and variance, and integer constants such
as shapes, are buffers), and ``forward`` runs the graph's nodes in order through the torch
kernels of ``onnx_ops``. Its outputs equal ONNX Runtime's to float tolerance; gradients flow
to every parameter, so a model that arrived as ONNX can be fine-tuned, and ``weights_into``
writes the trained parameters back into the ONNX model. torch is imported by this module:
import it only when torch is installed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from eightbit.errors import ModelError
from eightbit.graph import load_model
from eightbit.pytorch.onnx_ops import KERNELS, OPSET, OUTPUTS, STATISTICS

__all__ = ["OnnxModule", "supported_op_types", "to_torch"]


def supported_op_types() -> tuple[str, ...]:
    """The ONNX op types the converter runs, sorted."""
    return tuple(sorted(KERNELS))


@dataclass(frozen=True)
class _Step:
    """One node as plain data: what ``forward`` runs."""

    op_type: str
    name: str
    attributes: dict[str, Any]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def to_torch(model: str | os.PathLike[str] | onnx.ModelProto) -> OnnxModule:
    """The float ONNX ``model`` (a path or a ModelProto) as an ``OnnxModule``."""
    return OnnxModule(load_model(model))


class OnnxModule(torch.nn.Module):
    """An ONNX graph as a module: ``forward(*inputs)`` in the graph's input order.

    ``input_names``/``output_names``: the graph's runtime inputs and outputs; keyword
    arguments named after inputs work too. One output is returned as a tensor, several as
    a tuple.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        super().__init__()
        graph = model.graph
        _refuse_unsupported(graph.node)
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        constants = {t.name for t in graph.initializer}
        self.input_names = [v.name for v in graph.input if v.name not in constants]
        self.output_names = [v.name for v in graph.output]
        self.weights = torch.nn.ParameterDict()
        self._keys: dict[str, str] = {}
        statistics = _statistics(graph.node)
        taken: set[str] = set()
        for tensor in graph.initializer:
            key = _key(tensor.name, taken)
            self._keys[tensor.name] = key
            value = torch.from_numpy(np.array(numpy_helper.to_array(tensor)))
            if value.dtype.is_floating_point and tensor.name not in statistics:
                self.weights[key] = torch.nn.Parameter(value)
            else:
                self.register_buffer(f"constant_{key}", value)
        self._steps = [_step(node, self.opset) for node in graph.node]
        # Called on every named value (inputs, initializers, node outputs) as it is made:
        # fine-tuning puts its fake quantization there (numerics §T.5). None: the graph as is.
        self.tensor_hook: Callable[[str, torch.Tensor], torch.Tensor] | None = None

    def weight_names(self) -> list[str]:
        """The initializers held as parameters (trainable), by their ONNX names."""
        return [name for name, key in self._keys.items() if key in self.weights]

    def parameter_of(self, onnx_name: str) -> torch.Tensor:
        """The parameter (or buffer) that holds initializer ``onnx_name``."""
        key = self._keys[onnx_name]
        if key in self.weights:
            return self.weights[key]
        return getattr(self, f"constant_{key}")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        values = self._bound(args, kwargs)
        for step in self._steps:
            inputs = [values[name] if name else None for name in step.inputs]
            while inputs and inputs[-1] is None:
                inputs.pop()  # trailing absent optionals: the kernel's defaults
            out = self._run(step, inputs)
            outs = out if isinstance(out, tuple) else (out,)
            for name, value in zip(step.outputs, outs, strict=False):
                if name:
                    values[name] = self._hooked(name, value)
        results = tuple(values[name] for name in self.output_names)
        return results[0] if len(results) == 1 else results

    def _bound(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if len(args) > len(self.input_names):
            raise TypeError(f"expected at most {len(self.input_names)} inputs, got {len(args)}")
        values: dict[str, Any] = {name: self.parameter_of(name) for name in self._keys}
        values.update(zip(self.input_names, args, strict=False))
        values.update(kwargs)
        missing = [name for name in self.input_names if name not in values]
        if missing:
            raise TypeError(f"missing inputs {missing}; the model's inputs are {self.input_names}")
        for name in self.input_names:
            if not isinstance(values[name], torch.Tensor):
                values[name] = torch.as_tensor(np.asarray(values[name]))
        if self.tensor_hook is not None:
            values = {name: self._hooked(name, value) for name, value in values.items()}
        return values

    def _hooked(self, name: str, value: Any) -> Any:
        if self.tensor_hook is None or not isinstance(value, torch.Tensor):
            return value
        return self.tensor_hook(name, value)

    def _run(self, step: _Step, inputs: list[Any]) -> Any:
        try:
            return KERNELS[step.op_type](step.attributes, *inputs)
        except (RuntimeError, ValueError, IndexError, KeyError, TypeError) as error:
            raise ModelError(
                f"node {step.name!r} ({step.op_type}) failed in torch: {error}"
            ) from error

    def weights_into(self, model: onnx.ModelProto) -> onnx.ModelProto:
        """A copy of ``model`` (the one converted) with this module's current parameters."""
        out = onnx.ModelProto()
        out.CopyFrom(model)
        for tensor in out.graph.initializer:
            if tensor.name in self._keys and self._keys[tensor.name] in self.weights:
                array = self.weights[self._keys[tensor.name]].detach().cpu().numpy()
                tensor.CopyFrom(numpy_helper.from_array(array.astype(array.dtype), tensor.name))
        return out


def _refuse_unsupported(nodes: Iterable[onnx.NodeProto]) -> None:
    unknown = sorted(
        {
            f"{node.op_type}" if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            for node in nodes
            if node.domain not in ("", "ai.onnx") or node.op_type not in KERNELS
        }
    )
    if unknown:
        raise ModelError(
            f"the model has ops the torch converter does not run: {unknown}; it runs "
            f"{list(supported_op_types())}"
        )


def _statistics(nodes: Iterable[onnx.NodeProto]) -> set[str]:
    return {
        node.input[i]
        for node in nodes
        for i in STATISTICS.get(node.op_type, ())
        if i < len(node.input)
    }


def _step(node: onnx.NodeProto, opset: int) -> _Step:
    attributes = {a.name: _attribute(a) for a in node.attribute}
    # What some kernels need beyond the attributes (Softmax's opset, Split's output count).
    attributes[OPSET], attributes[OUTPUTS] = opset, len(node.output)
    return _Step(node.op_type, node.name, attributes, tuple(node.input), tuple(node.output))


def _attribute(attribute: onnx.AttributeProto) -> Any:
    value = helper.get_attribute_value(attribute)
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


def _key(name: str, taken: set[str]) -> str:
    """A parameter name torch accepts (no dots, not one of a module's own attributes such as
    ``half`` or ``train``), unique among those handed out."""
    base = re.sub(r"\W", "_", name) or "weight"
    key, suffix = base, 0
    while key in taken or hasattr(torch.nn.ParameterDict, key):
        suffix += 1
        key = f"{base}_{suffix}"
    taken.add(key)
    return key
