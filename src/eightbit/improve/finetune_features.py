"""Intermediate-feature distillation for fine-tuning (numerics §T.7).

The logits alone give each weight a weak, noisy gradient through the whole network; the
value of every quantized activation against its float value gives each layer its own
(BRECQ, QDrop). ``FloatFeatures`` runs the starting prepared model in float (frozen) and
returns its values at the chosen tensors; ``feature_loss`` is (T.7)'s mean of their
normalized errors. torch is imported here: import this module only when torch is installed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import onnx
import torch

from eightbit.improve.finetune_net import channels_last
from eightbit.pytorch.convert import to_torch

__all__ = ["FloatFeatures", "feature_loss"]


class FloatFeatures:
    """``model`` in float, its weights frozen at their start: ``features(*inputs)`` is a
    dict of its values at ``names``, computed without gradients."""

    def __init__(self, model: onnx.ModelProto, names: Iterable[str]) -> None:
        self.names = frozenset(names)
        self.net = to_torch(model)
        for parameter in self.net.parameters():
            parameter.requires_grad_(False)
        self._captured: dict[str, torch.Tensor] = {}
        self.net.tensor_hook = self._capture

    def __call__(self, *inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        self._captured = {}
        with torch.no_grad():
            self.net(*(channels_last(x) for x in inputs))
        captured, self._captured = self._captured, {}
        return captured

    def _capture(self, name: str, value: torch.Tensor) -> torch.Tensor:
        if name in self.names:
            self._captured[name] = value
        return value


def feature_loss(
    student: Mapping[str, torch.Tensor], teacher: Mapping[str, torch.Tensor]
) -> torch.Tensor:
    """(T.7): the mean over the tensors both hold of mean((h − t)²)/mean(t²)."""
    shared: Sequence[str] = sorted(set(student) & set(teacher))
    if not shared:
        return torch.zeros(())
    terms = [
        torch.mean((student[name] - teacher[name]) ** 2)
        / torch.clamp(torch.mean(teacher[name] ** 2), min=1e-12)
        for name in shared
    ]
    return torch.stack(terms).mean()
