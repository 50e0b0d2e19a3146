"""Fake quantization with straight-through gradients and learned scales (numerics §T.4).

``fake_quantize`` computes ``DQ(Q(x))`` on a grid (T.2) in torch, with the
straight-through estimator for ``x`` (T.3) and LSQ's gradient for the scale (T.4).
``LearnedScale`` holds a trainable scale; with ``pow2`` it learns an exponent and every
scale it gives is an exact power of two. These are the pieces the fine-tuning step builds
on; torch is imported by this module.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from eightbit.pytorch.fake_quant_kernels import per_tensor_backward, per_tensor_forward

__all__ = ["LearnedScale", "fake_quantize", "grad_scale", "lsq_factor", "round_ste"]


def round_ste(values: torch.Tensor) -> torch.Tensor:
    """``round`` (half to even) forward, the identity backward."""
    return values + (torch.round(values) - values).detach()


def grad_scale(values: torch.Tensor, factor: float) -> torch.Tensor:
    """``values`` unchanged forward; their gradient multiplied by ``factor`` backward."""
    scaled = values * factor
    return (values - scaled).detach() + scaled


def fake_quantize(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor | int,
    q_min: int,
    q_max: int,
) -> torch.Tensor:
    """(T.2) with the gradients (T.3) for ``x`` and (T.4) for ``scale``.

    ``scale`` and ``zero_point`` broadcast against ``x`` (per tensor, or shaped along a
    channel axis); the zero point is an integer and gets no gradient.
    """
    zero = float(zero_point) if isinstance(zero_point, int) else zero_point.detach()
    return _FakeQuantize.apply(x, scale, zero, q_min, q_max)


class _FakeQuantize(torch.autograd.Function):
    """(T.2) forward, (T.3)/(T.4) backward, in a few passes over ``x``.

    Written out rather than left to autograd: fine-tuning calls it on every activation of
    the network, and autograd's version of the same formula keeps several intermediate
    tensors and runs about twice as many passes (numerics §T.5, the speed of a step).
    Only ``x`` and ``scale`` are kept; the backward pass recomputes ``x/s``.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        scale: torch.Tensor,
        zero: float | torch.Tensor,
        q_min: int,
        q_max: int,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, scale)
        ctx.grid = (zero, q_min, q_max)
        if _per_tensor(scale, zero):
            return per_tensor_forward(x, scale, _grid(x, zero, q_min, q_max))
        stored = torch.round(x / scale).add_(zero).clamp_(q_min, q_max)
        return stored.sub_(zero).mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        x, scale = ctx.saved_tensors
        zero, q_min, q_max = ctx.grid
        if _per_tensor(scale, zero) and ctx.needs_input_grad[1]:
            fused = per_tensor_backward(x, scale, _grid(x, zero, q_min, q_max), grad)
            return fused[0], fused[1], None, None, None
        ratio = x / scale
        shifted = torch.round(ratio).add_(zero)
        inside = (shifted >= q_min) & (shifted <= q_max)
        grad_x: torch.Tensor | None = grad * inside if ctx.needs_input_grad[0] else None
        grad_scale: torch.Tensor | None = None
        if ctx.needs_input_grad[1]:
            # (T.4): (q − z) − x/s inside the range, q_min − z or q_max − z outside.
            per_value = shifted.clamp_(q_min, q_max).sub_(zero).sub_(ratio.mul_(inside))
            grad_scale = _sum_to(per_value.mul_(grad), scale.shape)
        return grad_x, grad_scale, None, None, None


def _per_tensor(scale: torch.Tensor, zero: float | torch.Tensor) -> bool:
    return scale.numel() == 1 and (isinstance(zero, float) or zero.numel() == 1)


def _grid(x: torch.Tensor, zero: float | torch.Tensor, q_min: int, q_max: int) -> torch.Tensor:
    return torch.tensor([float(zero), q_min, q_max], dtype=x.dtype)


def _sum_to(values: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """``values`` summed over the axes a tensor of ``shape`` was broadcast along."""
    if values.shape == shape:
        return values
    lead = values.dim() - len(shape)
    axes = list(range(lead)) + [
        lead + i for i, size in enumerate(shape) if size == 1 and values.shape[lead + i] != 1
    ]
    return values.sum(dim=axes, keepdim=True).reshape(shape)


class LearnedScale(torch.nn.Module):
    """A trainable scale (any shape); with ``pow2`` always an exact power of two."""

    minimum = 1e-12  # an affine scale never reaches zero: x / s must stay finite

    def __init__(self, initial: torch.Tensor, *, pow2: bool = False) -> None:
        super().__init__()
        initial = torch.as_tensor(initial, dtype=torch.float32)
        if bool((initial <= 0).any()):
            raise ValueError("scales must be positive")
        self.pow2 = pow2
        start = torch.log2(initial) if pow2 else initial.clone()
        self.raw = torch.nn.Parameter(start)

    def forward(self) -> torch.Tensor:
        if self.pow2:
            return torch.exp2(round_ste(self.raw))
        return torch.clamp(torch.abs(self.raw), min=self.minimum)

    def exponent(self) -> torch.Tensor:
        """The stored exponent of a power-of-two scale (``round(t)``)."""
        if not self.pow2:
            raise ValueError("an affine scale has no exponent")
        return torch.round(self.raw.detach()).to(torch.int64)


def lsq_factor(count: int, q_max: int) -> float:
    """LSQ's gradient factor ``1/√(N·q_max)`` for a scale shared by ``count`` values."""
    return 1.0 / math.sqrt(count * q_max)
