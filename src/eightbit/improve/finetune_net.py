"""The prepared float model on its plan's grids, as a trainable module (numerics §T.5).

``FakeQuantNet(model, plan, ranges)`` is ``to_torch(model)`` with fake quantization (T.2)
on every tensor the plan quantizes, where the QDQ writer puts its Q/DQ pairs: activations
(a learned scale each, LSQ, its zero point fixed), weights (per channel, the scale the
plan's own rule gives for the current weights) and int32 biases (``s_x·s_w``). Its outputs
are the exported QDQ model's, to float-sum order. torch is imported here: import this
module only when torch is installed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnx
import torch

from eightbit.calibrate import Ranges, TensorRange
from eightbit.graph import Graph
from eightbit.plan import QuantPlan
from eightbit.pytorch.convert import to_torch
from eightbit.pytorch.fake_quant import LearnedScale, fake_quantize, round_ste
from eightbit.quant import QuantConfig, weight_params

__all__ = ["FakeQuantNet"]

_INT32_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class _Activation:
    """A quantized activation: the key of its (possibly shared) scale, zero point, range."""

    scale_key: str
    zero_point: int
    q_min: int
    q_max: int


@dataclass(frozen=True)
class _Bias:
    """An int32 bias: the activation and the weight whose scales make its own (Q.6)."""

    source: str
    weight: str
    fixed_scale: np.ndarray


class FakeQuantNet(torch.nn.Module):
    """``model`` (the prepared float model of ``plan``) computing on the plan's grids.

    ``scales``: the learned activation scales, one per tensor with a calibrated range in
    ``ranges``; a tensor whose parameters the plan derived from another's (a Flatten after
    a pool) shares that one's scale. ``net.weights``: the trainable weights and biases.
    """

    def __init__(self, model: onnx.ModelProto, plan: QuantPlan, ranges: Ranges) -> None:
        super().__init__()
        self.model = model
        self.config: QuantConfig = plan.config
        self.net = to_torch(model)
        graph = Graph(model)
        constants = {t.name for t in model.graph.initializer}
        pow2 = plan.config.scheme == "pow2"
        self.scales = torch.nn.ModuleDict()
        self._scale_keys: dict[str, str] = {}
        self.activations: dict[str, _Activation] = {}
        self.weight_axes: dict[str, int | None] = {}
        self.biases: dict[str, _Bias] = {}
        producers = {out: node for node in graph.nodes for out in node.outputs}
        for name, params in plan.tensors.items():
            if name in constants:
                continue
            source = _scale_source(name, plan, ranges, producers)
            if source not in self._scale_keys:
                key = re.sub(r"\W", "_", source) + f"_{len(self._scale_keys)}"
                self._scale_keys[source] = key
                initial = torch.tensor(float(plan.tensors[source].scale))
                self.scales[key] = LearnedScale(initial, pow2=pow2)
                # A scale with no range of its own cannot go back into the plan: kept.
                self.scales[key].raw.requires_grad_(source in ranges)
            zero = int(np.asarray(params.zero_point).reshape(-1)[0])
            self.activations[name] = _Activation(
                self._scale_keys[source], zero, params.qmin, params.qmax
            )
        for node in graph.nodes:
            inputs = list(node.inputs)
            for index, name in enumerate(inputs):
                stored = plan.tensors.get(name)
                if name not in constants or stored is None:
                    continue
                if stored.dtype == "int32" and index >= 2:
                    self.biases[name] = _Bias(inputs[0], inputs[1], np.asarray(stored.scale))
                elif stored.dtype != "int32":
                    self.weight_axes[name] = stored.axis
        self._weight_scales: dict[str, torch.Tensor] = {}
        # Set to a dict to collect the on-grid values of ``captured_names`` (§T.7).
        self.captured: dict[str, torch.Tensor] | None = None
        self.captured_names: frozenset[str] = frozenset()
        self.net.tensor_hook = self._on_grid

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        self._weight_scales = {
            name: self._weight_scale(name, axis) for name, axis in self.weight_axes.items()
        }
        # Channels last: the convolutions' two passes run about twice as fast on a CPU,
        # with the same sums per output value (§T.5).
        return self.net(*(channels_last(x) for x in inputs))

    def feature_names(self) -> list[str]:
        """The quantized activations inside the network (not its inputs or outputs): the
        tensors whose float values feature distillation targets (§T.7)."""
        ends = set(self.net.input_names) | set(self.net.output_names)
        return [name for name in self.activations if name not in ends]

    def learned_scales(self) -> list[LearnedScale]:
        """The activation scales (each once, shared ones too)."""
        return [scale for scale in self.scales.values() if isinstance(scale, LearnedScale)]

    def scale_of(self, name: str) -> torch.Tensor:
        """The current scale of activation ``name``."""
        return self.scales[self.activations[name].scale_key]()

    def learned_ranges(self, ranges: Ranges) -> Ranges:
        """``ranges`` with each learned scale written back as ``[s(q_min−z), s(q_max−z)]``."""
        tensors = dict(ranges.tensors)
        for source in self._scale_keys:
            if source not in tensors:
                continue
            grid = self.activations[source]
            scale = float(self.scale_of(source).detach())
            old = tensors[source]
            tensors[source] = TensorRange(
                scale * (grid.q_min - grid.zero_point),
                scale * (grid.q_max - grid.zero_point),
                old.observed_min,
                old.observed_max,
            )
        return Ranges(
            ranges.method,
            tensors,
            ranges.samples,
            skipped=ranges.skipped,
            options=ranges.options,
        )

    def trained_model(self) -> onnx.ModelProto:
        """The prepared model with the trained weights and biases."""
        return self.net.weights_into(self.model)

    def _on_grid(self, name: str, value: torch.Tensor) -> torch.Tensor:
        if name in self.activations:
            grid = self.activations[name]
            scale = self.scales[grid.scale_key]()
            on_grid = fake_quantize(value, scale, grid.zero_point, grid.q_min, grid.q_max)
            if self.captured is not None and name in self.captured_names:
                self.captured[name] = on_grid
            return on_grid
        if name in self._weight_scales:
            return fake_quantize(value, self._weight_scales[name], 0, -127, 127)
        if name in self.biases:
            return self._bias_on_grid(name, value)
        return value

    def _weight_scale(self, name: str, axis: int | None) -> torch.Tensor:
        """The plan's rule (Q.5) on the current weights: the scale the export will use."""
        weights = self.net.parameter_of(name).detach()
        params = weight_params(weights.numpy(), axis, self.config, name=name)
        scale = torch.from_numpy(np.array(params.scale, np.float32))
        if axis is None:
            return scale
        shape = [1] * weights.dim()
        shape[axis] = -1
        return scale.reshape(shape)

    def _bias_on_grid(self, name: str, value: torch.Tensor) -> torch.Tensor:
        bias = self.biases[name]
        if bias.source in self.activations and bias.weight in self._weight_scales:
            weight_scale = self._weight_scales[bias.weight].reshape(-1)
            # float32(s_x · s_w) as the plan computes it; the bias grid is ~2^-16 of the
            # output's, so its scale needs no gradient.
            scale = (self.scale_of(bias.source).detach().double() * weight_scale.double()).float()
        else:
            scale = torch.from_numpy(bias.fixed_scale.astype(np.float32))
        stored = torch.clamp(round_ste(value / scale), -_INT32_LIMIT, _INT32_LIMIT)
        return stored * scale


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 4-D tensor in channels-last memory order (the convolutions' faster layout); any
    other value as it is."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        return x
    return x.contiguous(memory_format=torch.channels_last)


def _scale_source(
    name: str, plan: QuantPlan, ranges: Mapping[str, TensorRange], producers: Mapping[str, object]
) -> str:
    """The tensor whose calibrated range gives ``name``'s parameters: itself, or up the
    chain of first inputs while the parameters are the same (a Flatten after a pool)."""
    current = name
    while current not in ranges:
        node = producers.get(current)
        inputs = list(getattr(node, "inputs", ()))
        if not inputs or inputs[0] not in plan.tensors:
            return name
        if not _same_params(plan, inputs[0], name):
            return name
        current = inputs[0]
    return current


def _same_params(plan: QuantPlan, a: str, b: str) -> bool:
    pa, pb = plan.tensors[a], plan.tensors[b]
    return bool(
        np.array_equal(pa.scale, pb.scale)
        and np.array_equal(pa.zero_point, pb.zero_point)
        and pa.dtype == pb.dtype
    )
