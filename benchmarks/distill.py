"""The distillation loop the finetune section's baselines share (numerics §T.5's loss).

Kept free of eightbit and of the bench's other modules so that it also runs in the venvs of
other tools (AIMET's QAT runs under its own interpreter): only numpy and torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BATCH = 16
TEACHER_BATCH = 32
LEARNING_RATE = 1e-5  # Adam's, the same for every baseline
SEED = 0  # the order of the batches


def teacher_logits(module: Any, crops: np.ndarray) -> Any:
    """The float module's outputs on every crop (no gradient)."""
    import torch

    with torch.no_grad():
        return torch.cat(
            [
                module(torch.from_numpy(crops[i : i + TEACHER_BATCH].copy()))
                for i in range(0, len(crops), TEACHER_BATCH)
            ]
        )


def distill(student: Any, teacher: Any, crops: np.ndarray, steps: int) -> None:
    """``steps`` Adam steps on batches of ``BATCH`` crops drawn without replacement (seeded):
    the mean squared error to the teacher's logits over their mean square. The student is put
    in eval mode first: BatchNorm frozen (as eightbit's folded one) and dropout off."""
    import torch

    student.eval()
    optimizer = torch.optim.Adam(student.parameters(), lr=LEARNING_RATE)
    rng = np.random.default_rng(SEED)
    for _ in range(steps):
        chosen = torch.from_numpy(rng.choice(len(crops), BATCH, replace=False))
        output = student(torch.from_numpy(crops[chosen.numpy()].copy()))
        target = teacher[chosen]
        loss = torch.mean((output - target) ** 2) / torch.mean(target**2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
