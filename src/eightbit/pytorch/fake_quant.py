"""Fake quantization with straight-through gradients and learned scales (numerics §T.4).

``fake_quantize`` computes ``DQ(Q(x))`` on a grid (T.2) in torch, with the
straight-through estimator for ``x`` (T.3) and LSQ's gradient for the scale (T.4).
``LearnedScale`` holds a trainable scale; with ``pow2`` it learns an exponent and every
scale it gives is an exact power of two. These are the pieces the fine-tuning step builds
on; torch is imported by this module.
"""

from __future__ import annotations

import math

import torch

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
    zero = torch.as_tensor(zero_point, dtype=x.dtype).detach()
    stored = torch.clamp(round_ste(x / scale) + zero, q_min, q_max)
    return scale * (stored - zero)


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
