"""Fake quantization (numerics §T.4): the grid, STE and LSQ gradients, pow2 scales."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from eightbit.pytorch.fake_quant import (  # noqa: E402 (needs torch)
    LearnedScale,
    fake_quantize,
    grad_scale,
    lsq_factor,
)

Q_MIN, Q_MAX, ZERO = 0, 255, 100


def _points() -> tuple[torch.Tensor, torch.Tensor]:
    """Values inside the range, below it and above it, none on a rounding boundary."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-40.0, 50.0, 400)
    scale = 0.125
    fraction = (x / scale) % 1.0
    x = x[np.abs(fraction - 0.5) > 0.05]  # keep away from the half-way ties
    return torch.tensor(x, dtype=torch.float64), torch.tensor(scale, dtype=torch.float64)


def test_forward_is_quantize_then_dequantize() -> None:
    x, scale = _points()
    expected = scale.item() * (
        np.clip(np.rint(x.numpy() / scale.item()) + ZERO, Q_MIN, Q_MAX) - ZERO
    )  # np.rint: half to even, as QuantizeLinear
    got = fake_quantize(x, scale, ZERO, Q_MIN, Q_MAX)
    np.testing.assert_array_equal(got.numpy(), expected)
    ties = torch.tensor([0.5, 1.5, 2.5, -0.5]) * 0.5
    assert fake_quantize(ties, torch.tensor(0.5), 0, -128, 127).tolist() == [0, 1.0, 1.0, 0]


def _surrogate(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """(T.2) with round(v) replaced by v + offset (offset = round(v0) - v0 held fixed)."""
    return scale * (torch.clamp(x / scale + offset + ZERO, Q_MIN, Q_MAX) - ZERO)


def test_gradients_equal_finite_differences_of_the_straight_through_surrogate() -> None:
    x, scale = _points()
    x.requires_grad_(True)
    scale = scale.clone().requires_grad_(True)
    fake_quantize(x, scale, ZERO, Q_MIN, Q_MAX).sum().backward()
    assert x.grad is not None and scale.grad is not None
    offset = (torch.round(x / scale) - x / scale).detach()
    step = 1e-6
    with torch.no_grad():
        dx = (_surrogate(x + step, scale, offset) - _surrogate(x - step, scale, offset)) / (
            2 * step
        )
        ds = (_surrogate(x, scale + step, offset) - _surrogate(x, scale - step, offset)).sum() / (
            2 * step
        )
    np.testing.assert_allclose(x.grad.numpy(), dx.numpy(), atol=1e-6)
    np.testing.assert_allclose(scale.grad.item(), ds.item(), rtol=1e-6)
    # (T.3) and (T.4) written out: inside, below and above the range.
    v = (x / scale).detach()
    inside = (torch.round(v) + ZERO >= Q_MIN) & (torch.round(v) + ZERO <= Q_MAX)
    assert inside.any() and (~inside).any()
    np.testing.assert_array_equal(x.grad.numpy(), inside.double().numpy())
    per_value = torch.where(
        inside, torch.round(v) - v, torch.where(v + ZERO < Q_MIN, Q_MIN - ZERO, Q_MAX - ZERO)
    )
    np.testing.assert_allclose(scale.grad.item(), per_value.sum().item(), rtol=1e-9)


def test_pow2_scales_stay_powers_of_two_while_they_learn() -> None:
    torch.manual_seed(0)
    weights = torch.randn(8, 16) * 3.0
    scale = LearnedScale(torch.full((8, 1), 2.0**-3), pow2=True)
    optimizer = torch.optim.Adam(scale.parameters(), lr=0.05)
    seen = set()
    for _ in range(60):
        optimizer.zero_grad()
        quantized = fake_quantize(weights, scale(), 0, -128, 127)
        loss = (quantized - weights).square().mean()
        loss.backward()
        optimizer.step()
        values = scale().detach()
        exponents = torch.log2(values)
        assert torch.equal(exponents, torch.round(exponents))  # exact powers of two
        assert torch.equal(values, torch.exp2(scale.exponent().double()).float())
        seen |= set(scale.exponent().flatten().tolist())
    assert seen != {-3}  # the exponents moved: the scale learned


def test_affine_scale_learns_and_stays_positive() -> None:
    torch.manual_seed(0)
    x = torch.randn(1000) * 2.0
    scale = LearnedScale(torch.tensor(0.001))
    optimizer = torch.optim.Adam(scale.parameters(), lr=0.01)
    first = None
    for _ in range(100):
        optimizer.zero_grad()
        loss = (fake_quantize(x, scale(), 0, -128, 127) - x).square().mean()
        first = loss.item() if first is None else first
        loss.backward()
        optimizer.step()
        assert scale().item() > 0
    assert loss.item() < first / 10
    with torch.no_grad():  # an optimizer step past zero still gives a valid scale
        scale.raw.fill_(-0.5)
    assert scale().item() == 0.5
    with torch.no_grad():
        scale.raw.fill_(0.0)
    assert scale().item() == pytest.approx(LearnedScale.minimum)


def test_grad_scale_keeps_the_value_and_scales_the_gradient() -> None:
    value = torch.tensor([1.5, -2.0], requires_grad=True)
    out = grad_scale(value, 0.25)
    assert torch.equal(out.detach(), value.detach())
    out.sum().backward()
    assert value.grad is not None
    assert value.grad.tolist() == [0.25, 0.25]
    assert lsq_factor(100, 127) == pytest.approx(1 / (100 * 127) ** 0.5)


def test_scales_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        LearnedScale(torch.tensor([0.5, 0.0]))
