"""(T.2)-(T.4) on a per-tensor grid as two fused kernels (numerics §T.5, the speed of a step).

Fine-tuning fake-quantizes every activation of the network in both passes; written as
torch operations, that is about six passes over each activation forward and a dozen
backward, more time than the convolutions. ``torch.compile`` fuses each formula into one
loop over the values. The compiled kernels compute the same float32 operations in the
same order as the eager ones (the tests compare them bit for bit); when compilation fails
(no C++ compiler, an unsupported platform) the eager ones run instead, with the same
results. Small tensors (weights, tests' tiny models) always run eagerly: compiling costs
tens of seconds once, and only large activations repay it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch

__all__ = ["COMPILE_FROM", "per_tensor_backward", "per_tensor_forward"]

# Values from which a tensor runs the compiled kernels (a 56x56x24 activation of one image
# has 75,264): below, eager torch is as fast and needs no compilation.
COMPILE_FROM = 1 << 16


def _forward(x: torch.Tensor, scale: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(T.2): ``grid`` is ``[z, q_min, q_max]``."""
    zero, q_min, q_max = grid[0], grid[1], grid[2]
    return (torch.clamp(torch.round(x / scale) + zero, q_min, q_max) - zero) * scale


def _backward(
    x: torch.Tensor, scale: torch.Tensor, grid: torch.Tensor, grad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(T.3) for ``x`` and (T.4) summed for the scale."""
    zero, q_min, q_max = grid[0], grid[1], grid[2]
    ratio = x / scale
    shifted = torch.round(ratio) + zero
    inside = (shifted >= q_min) & (shifted <= q_max)
    grad_x = torch.where(inside, grad, torch.zeros_like(grad))
    per_value = (
        torch.clamp(shifted, q_min, q_max)
        - zero
        - torch.where(inside, ratio, torch.zeros_like(ratio))
    )
    return grad_x, torch.sum(grad * per_value)


@functools.cache
def _compiled(kernel: Callable[..., Any]) -> Callable[..., Any] | None:
    try:
        return torch.compile(kernel, dynamic=True)
    except Exception:  # torch.compile unavailable here: the eager kernel serves
        return None


_BROKEN: set[str] = set()  # kernels whose compiled form failed once: eager from then on


def _run(kernel: Callable[..., Any], *args: torch.Tensor) -> Any:
    x = args[0]
    if x.numel() < COMPILE_FROM or kernel.__name__ in _BROKEN:
        return kernel(*args)
    compiled = _compiled(kernel)
    if compiled is not None:
        try:
            # Detached: autograd is _FakeQuantize's, and a requires_grad flag that differs
            # between calls (training vs judging passes) would make torch compile again.
            return compiled(*(a.detach() for a in args))
        except Exception:  # no C++ compiler, say: same numbers from the eager kernel
            _BROKEN.add(kernel.__name__)
    return kernel(*args)


def per_tensor_forward(x: torch.Tensor, scale: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(T.2) with one scale (a 0-d tensor) and ``grid = [z, q_min, q_max]`` in x's dtype."""
    flat, restore = _flat(x)
    return restore(_run(_forward, flat, scale, grid))


def per_tensor_backward(
    x: torch.Tensor, scale: torch.Tensor, grid: torch.Tensor, grad: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The gradients of (T.2) for ``x`` (T.3) and for the scale, summed (T.4)."""
    flat, restore = _flat(x)
    grad = grad.contiguous(memory_format=_LAST) if _channels_last(x) else grad.contiguous()
    grad_x, grad_scale = _run(_backward, flat, scale, grid, _flat(grad)[0])
    return restore(grad_x), grad_scale.reshape(scale.shape)


def _flat(x: torch.Tensor) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """``x``'s values in memory order as one axis (one compiled kernel serves every rank
    and shape), and how to give a result of that form ``x``'s shape and layout back."""
    if _channels_last(x):
        n, c, h, w = x.shape  # channels last (§T.5): kept, so convolutions stay fast
        return x.permute(0, 2, 3, 1).reshape(-1), lambda y: y.view(n, h, w, c).permute(0, 3, 1, 2)
    shape = x.shape
    return x.reshape(-1), lambda y: y.view(shape)


def _channels_last(x: torch.Tensor) -> bool:
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=_LAST)


_LAST = torch.channels_last
