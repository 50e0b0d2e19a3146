"""The fused per-tensor kernels of fake quantization (numerics §T.5, the speed of a step):
channels-last tensors keep their layout and values, the compiled kernels give the numpy
formula's values bit for bit, and the fine-tuning rates follow each tensor's grid step."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from eightbit.pytorch import fake_quant_kernels  # noqa: E402 (needs torch)
from eightbit.pytorch.fake_quant import fake_quantize  # noqa: E402
from tests.fixtures.threads import one_torch_thread  # noqa: E402, F401 (autouse)

Q_MIN, Q_MAX, ZERO = 0, 255, 37


def _expected(x: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(T.2), (T.3) and (T.4) summed, in numpy (float32 as the kernels)."""
    s = np.float32(scale)
    ratio = x / s
    shifted = np.rint(ratio) + np.float32(ZERO)  # half to even, as QuantizeLinear
    inside = (shifted >= Q_MIN) & (shifted <= Q_MAX)
    values = (np.clip(shifted, Q_MIN, Q_MAX) - np.float32(ZERO)) * s
    per_value = np.clip(shifted, Q_MIN, Q_MAX) - ZERO - np.where(inside, ratio, 0)
    return values, inside.astype(np.float32), float(per_value.astype(np.float64).sum())


def _run(x: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    x = x.detach().requires_grad_(True)
    s = torch.tensor(scale, requires_grad=True)
    out = fake_quantize(x, s, ZERO, Q_MIN, Q_MAX)
    out.sum().backward()
    assert x.grad is not None and s.grad is not None
    return out.detach(), x.grad, float(s.grad)


def test_a_channels_last_tensor_keeps_its_layout_values_and_gradients() -> None:
    x = torch.randn(2, 5, 3, 4) * 8
    plain, plain_grad, plain_scale = _run(x, 0.05)
    last = x.contiguous(memory_format=torch.channels_last)
    out, grad, scale_grad = _run(last, 0.05)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert grad.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, plain) and torch.equal(grad, plain_grad)
    assert scale_grad == pytest.approx(plain_scale, rel=1e-5)


@pytest.mark.slow  # compiles two kernels once (tens of seconds on a shared machine)
def test_the_compiled_kernels_give_the_formula_bit_for_bit() -> None:
    count = fake_quant_kernels.COMPILE_FROM
    x = torch.randn(4, 8, 16, count // 512) * 6 + 1  # past both ends of the grid too
    x = x.contiguous(memory_format=torch.channels_last)
    out, grad, scale_grad = _run(x, 0.0371)
    assert not fake_quant_kernels._BROKEN  # the compiled kernels ran
    values, inside, per_value_sum = _expected(x.numpy(), 0.0371)
    np.testing.assert_array_equal(out.numpy(), values)
    np.testing.assert_array_equal(grad.numpy(), inside)
    assert 0 < inside.mean() < 1
    assert scale_grad == pytest.approx(per_value_sum, rel=1e-4)


def test_weight_rates_are_steps_in_grid_units() -> None:
    from eightbit.improve.finetune_net import FakeQuantNet
    from eightbit.improve.finetune_train import _weight_groups
    from tests.fixtures.finetune import post_training

    start = post_training()
    net = FakeQuantNet(start.prepared_model, start.plan, start.ranges)  # type: ignore[arg-type]
    groups = _weight_groups(net, 0.1)
    assert len(groups) == len(net.net.weight_names()) > 2
    for group in groups:
        (weights,) = group["params"]  # type: ignore[misc]
        name = next(n for n in net.net.weight_names() if net.net.parameter_of(n) is weights)
        values = np.abs(weights.detach().numpy())
        axis = net.weight_axes.get(name)
        if axis is None:
            step = values.max() / 127
        else:
            step = np.moveaxis(values, axis, 0).reshape(values.shape[axis], -1).max(1).mean() / 127
        assert group["lr"] == pytest.approx(0.1 * step, rel=1e-6), name


def test_the_compiled_kernels_see_detached_values(monkeypatch: pytest.MonkeyPatch) -> None:
    # Autograd is _FakeQuantize's: a requires_grad flag reaching torch.compile would make it
    # compile each kernel again per flag (training vs judging passes) until its limit.
    flags: list[list[bool]] = []

    def recording(kernel):  # type: ignore[no-untyped-def]
        return lambda *args: flags.append([a.requires_grad for a in args]) or kernel(*args)

    monkeypatch.setattr(fake_quant_kernels, "_compiled", recording)
    x = torch.randn(fake_quant_kernels.COMPILE_FROM, requires_grad=True)
    scale = torch.tensor(0.05, requires_grad=True)
    grid = torch.tensor([float(ZERO), Q_MIN, Q_MAX])
    fake_quant_kernels.per_tensor_forward(x, scale, grid)
    fake_quant_kernels.per_tensor_backward(x, scale, grid, torch.ones_like(x))
    assert flags == [[False, False, False], [False, False, False, False]]
