"""VGG-16 (138 M parameters, ~528 MB of float weights) in plain torch, and its calibration images.

The seed's own example of a network too big for a small device, built here without
torchvision: configuration "D" of Simonyan & Zisserman (13 3x3 convolutions in five blocks,
max pooling between them, three fully connected layers 25088 -> 4096 -> 4096 -> 1000),
random weights from a fixed seed (He-scaled, so activations keep their size through the 16
layers), exported at opset 17 with a dynamic batch axis and cached under ``benchmarks/_work``.
Only memory and time are measured on it; trained weights would not change either.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.models import IMAGE_SIZE, WORK_DIR, export_onnx

VGG16_PATH = WORK_DIR / "vgg16.onnx"
VGG16_DATA = WORK_DIR / "vgg16_calibration.npy"
# Configuration D: output channels of each 3x3 convolution, "M" a 2x2 max pooling.
VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                512, 512, 512, "M")  # fmt: skip
VGG16_PARAMETERS = 138_357_544


def build_vgg16(seed: int = 0, num_classes: int = 1000) -> object:
    """The torch module of VGG-16 with seeded He-normal weights and small random biases."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG16_LAYERS:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        assert isinstance(item, int)
        layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=True)]
        channels = item
    classifier = [
        nn.Flatten(1),
        nn.Linear(512 * 7 * 7, 4096), nn.ReLU(inplace=True),
        nn.Linear(4096, 4096), nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes),
    ]  # fmt: skip
    model = nn.Sequential(*layers, *classifier)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.uniform_(module.bias, -0.05, 0.05)
    return model.eval()


def vgg16(path: Path = VGG16_PATH, *, rebuild: bool = False) -> Path:
    """The VGG-16 ONNX model (random seeded weights), exported once and cached."""
    if rebuild or not path.exists():
        export_onnx(build_vgg16(), path)  # type: ignore[arg-type]
    return path


def calibration_images(count: int, path: Path = VGG16_DATA, seed: int = 0) -> Path:
    """``count`` smooth random 224x224 RGB images (float32, NCHW), normalized as ImageNet's,
    saved once as an .npy file. Smooth so the convolutions see structure, not white noise."""
    if path.exists() and np.load(path, mmap_mode="r").shape[0] >= count:
        return path
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((count, 3, IMAGE_SIZE // 16, IMAGE_SIZE // 16)).astype(np.float32)
    images = coarse.repeat(16, axis=2).repeat(16, axis=3)
    images += 0.25 * rng.standard_normal(images.shape).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npy")
    np.save(tmp, images)
    tmp.replace(path)
    return path


if __name__ == "__main__":
    print(vgg16(), calibration_images(80))
