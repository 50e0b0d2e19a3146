"""The training loop of fine-tuning (numerics §T.5): distillation (T.5) with Adam, the
held-back SQNR measured every few steps, the best state kept, early stop. torch is
imported here: import this module only when torch is installed."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from eightbit.analysis.metrics import sqnr_from_sums
from eightbit.improve.finetune_features import FloatFeatures, feature_loss
from eightbit.improve.finetune_net import FakeQuantNet

__all__ = ["Schedule", "Trained", "distillation_loss", "held_back_sqnr", "train"]


@dataclass(frozen=True)
class Schedule:
    """How long and how fast to train (``FinetuneOptions`` without the torch-free parts)."""

    steps: int
    batch: int
    weight_lr: float
    scale_lr: float
    exponent_lr: float
    eval_every: int
    patience: int
    seed: int
    warmup: float = 0.1  # the fraction of the steps the rates rise over
    feature_weight: float = 0.0  # λ of (T.7); 0: the outputs alone (T.5)


@dataclass(frozen=True)
class Trained:
    """What training did: steps run, the held-back SQNR at the start and of the best state."""

    steps: int
    start_db: float
    best_db: float
    best_step: int
    stopped_early: bool


Arrays = Sequence[np.ndarray]  # one array per model input (or output), samples first


def train(
    net: FakeQuantNet,
    inputs: Arrays,
    targets: Arrays,
    held_back: np.ndarray,
    schedule: Schedule,
    advance: Callable[[str], None],
    features: FloatFeatures | None = None,
) -> Trained:
    """Train ``net`` on the samples not in ``held_back`` and leave it in its best state.

    ``targets``: the float model's outputs on every sample; ``held_back``: indices of the
    samples the SQNR is measured on (never trained on). ``advance(text)`` is called once
    per step with the loss and the latest held-back SQNR. ``features``: the float values
    of the intermediate tensors, distilled with weight ``schedule.feature_weight`` (T.7).
    """
    rng = np.random.default_rng(schedule.seed)
    taught = np.setdiff1d(np.arange(len(inputs[0])), held_back)
    optimizer = torch.optim.Adam(_groups(net, schedule))
    # A short warm-up (Adam's first steps are its largest), then a cosine decay to zero.
    warmup = max(1, int(schedule.steps * schedule.warmup + 1e-9))
    rate = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: _rate(i, warmup, schedule.steps))
    start_db = best_db = held_back_sqnr(net, inputs, targets, held_back, schedule.batch)
    best_state, best_step, since_best, latest_db = _snapshot(net), 0, 0, best_db
    order: list[int] = []
    step = 0
    for step in range(1, schedule.steps + 1):
        if len(order) < schedule.batch:  # whole passes over the samples, each shuffled
            order += rng.permutation(taught).tolist()
        chosen, order = np.array(order[: schedule.batch]), order[schedule.batch :]
        loss = _loss(net, _rows(inputs, chosen), _rows(targets, chosen), schedule, features)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        rate.step()
        if step % schedule.eval_every == 0 or step == schedule.steps:
            latest_db = held_back_sqnr(net, inputs, targets, held_back, schedule.batch)
            if latest_db > best_db:
                best_db, best_state, best_step, since_best = latest_db, _snapshot(net), step, 0
            else:
                since_best += 1
        advance(
            f"loss {float(loss.detach()):.4g}  held-back {latest_db:.2f} dB (best {best_db:.2f})"
        )
        if since_best >= schedule.patience:
            break
    net.load_state_dict(best_state)
    return Trained(step, start_db, best_db, best_step, step < schedule.steps)


def _loss(
    net: FakeQuantNet,
    rows: list[torch.Tensor],
    targets: list[torch.Tensor],
    schedule: Schedule,
    features: FloatFeatures | None,
) -> torch.Tensor:
    """(T.5), plus λ times (T.7) when ``features`` are given and λ > 0."""
    if features is None or schedule.feature_weight <= 0:
        return distillation_loss(_outputs(net, rows), targets)
    net.captured, net.captured_names = {}, features.names
    try:
        loss = distillation_loss(_outputs(net, rows), targets)
        student = net.captured
    finally:
        net.captured = None
    return loss + schedule.feature_weight * feature_loss(student, features(*rows))


def distillation_loss(
    outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]
) -> torch.Tensor:
    """(T.5): Σ over outputs of mean((y − t)²)/mean(t²), the inverse output SQNR."""
    terms = [
        torch.mean((y - t) ** 2) / torch.clamp(torch.mean(t**2), min=1e-12)
        for y, t in zip(outputs, targets, strict=True)
    ]
    return torch.stack(terms).sum()


def held_back_sqnr(
    net: FakeQuantNet, inputs: Arrays, targets: Arrays, held_back: np.ndarray, batch: int
) -> float:
    """The first output's SQNR (dB) of ``net`` against ``targets`` on the ``held_back`` samples."""
    signal = noise = 0.0
    with torch.no_grad():
        for start in range(0, len(held_back), batch):
            chosen = held_back[start : start + batch]
            output = _outputs(net, _rows(inputs, chosen))[0].double()
            target = _rows(targets, chosen)[0].double()
            signal += float(torch.sum(target**2))
            noise += float(torch.sum((output - target) ** 2))
    return sqnr_from_sums(signal, noise)


def _groups(net: FakeQuantNet, schedule: Schedule) -> list[dict[str, object]]:
    """Adam's parameter groups: the weights, then each trainable scale with its own step
    (relative to its start for an affine scale; in exponent units for a power of two)."""
    groups = _weight_groups(net, schedule.weight_lr)
    for learned in net.learned_scales():
        raw = learned.raw
        if not raw.requires_grad:
            continue
        lr = (
            schedule.exponent_lr
            if learned.pow2
            else schedule.scale_lr * float(raw.detach().abs().max())
        )
        groups.append({"params": [raw], "lr": lr})
    return groups


def _weight_groups(net: FakeQuantNet, rate: float) -> list[dict[str, object]]:
    """One group per trainable weight or bias, its step ``rate`` times its grid step: the
    mean over channels of max|W_c|/127 (for a bias, max|b|/127). Adam's step is about the
    same for every value, so an absolute step would move the depthwise layers' small
    weights by whole grid steps while it barely moves the large ones (§T.5)."""
    groups: list[dict[str, object]] = []
    for name in net.net.weight_names():
        weights = net.net.parameter_of(name)
        if not weights.requires_grad or weights.numel() == 0:
            continue
        magnitude = weights.detach().abs()
        axis = net.weight_axes.get(name)
        if axis is not None and magnitude.dim() > 1:
            magnitude = magnitude.movedim(axis, 0).reshape(magnitude.shape[axis], -1).amax(1)
        step = float(magnitude.max() if axis is None else magnitude.mean()) / 127
        groups.append({"params": [weights], "lr": rate * max(step, 1e-12)})
    return groups


def _rate(step: int, warmup: int, steps: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


def _outputs(net: FakeQuantNet, inputs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    result = net(*inputs)
    return result if isinstance(result, tuple) else (result,)


def _rows(arrays: Arrays, chosen: np.ndarray) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(array[chosen])) for array in arrays]


def _snapshot(net: FakeQuantNet) -> dict[str, torch.Tensor]:
    return copy.deepcopy(net.state_dict())
