"""A YOLOv8n-style detector in plain torch (ultralytics needs torchvision, which cannot be
installed here): the same backbone (C2f, SPPF), neck and decoupled head with DFL box decoding,
and the same single output that concatenates box coordinates (pixels, 0-320) with sigmoid
class scores (0-1): (N, 84, 2100).

Weights are seeded random; BatchNorm statistics are then recomputed on the bench's photo
crops, so that activations have the ranges a trained network's have, and the class bias is set
so that about 3 % of anchors score above 0.25 on them (trained YOLOv8 heads are as sparse).

Unlike a trained detector, such a random network amplifies any small change of its input
layer after layer, and its 80 classes differ little at a detection (median top-2 logit gap
0.45): white noise 50 dB under the input, in float, already leaves 0.83 class agreement on
float detections, 40 dB 0.54, 30 dB 0.24 (`yolov8n_style.onnx`, 48 crops; the split-head
variant, seed 3: 0.86 / 0.58 / 0.29). Quantization noise enters at every layer, so no int8 model
of it reaches the 0.95 goal; the class agreement here ranks tools, it does not show
whether a trained YOLOv8n keeps its detections.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from benchmarks import images
from benchmarks.zoo.export import export
from benchmarks.zoo.spec import ZOO_DIR

if TYPE_CHECKING:
    import torch

SIZE, CLASSES, BINS = 320, 80, 16
STRIDES = (8, 16, 32)
DETECTION_SHARE = 0.03  # anchors above the score threshold after the bias is set
THRESHOLD = 0.25


def _build(seed: int = 8, width: float = 1.0, split_head: bool = False) -> torch.nn.Module:
    """``width`` scales the backbone and neck channels; ``split_head``: YOLOv8's own head
    (per scale, box-DFL logits and class logits joined by one Concat; the scales joined;
    Split back into box and class parts), else one Concat of boxes and one of classes."""
    import torch
    from torch import nn

    def w(c: int) -> int:
        return max(8, round(c * width / 8) * 8)

    class Conv(nn.Sequential):
        def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1) -> None:
            super().__init__(
                nn.Conv2d(c1, c2, k, s, k // 2, bias=False), nn.BatchNorm2d(c2), nn.SiLU()
            )

    class Bottleneck(nn.Module):
        def __init__(self, c: int, shortcut: bool) -> None:
            super().__init__()
            self.cv1, self.cv2, self.add = Conv(c, c, 3), Conv(c, c, 3), shortcut

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = self.cv2(self.cv1(x))
            return x + y if self.add else y

    class C2f(nn.Module):
        def __init__(self, c1: int, c2: int, n: int, shortcut: bool) -> None:
            super().__init__()
            self.c = c2 // 2
            self.cv1, self.cv2 = Conv(c1, 2 * self.c), Conv((2 + n) * self.c, c2)
            self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = list(self.cv1(x).chunk(2, 1))
            y += [m(y[-1]) for m in self.m]
            return self.cv2(torch.cat(y, 1))

    class SPPF(nn.Module):
        def __init__(self, c1: int, c2: int) -> None:
            super().__init__()
            self.cv1, self.cv2 = Conv(c1, c1 // 2), Conv(c1 * 2, c2)
            self.pool = nn.MaxPool2d(5, 1, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = [self.cv1(x)]
            y += [self.pool(y[-1]) for _ in range(3)]
            return self.cv2(torch.cat(y, 1))

    class YOLOv8n(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            a, b, c, d = w(16), w(32), w(64), w(128)
            e = 2 * d
            self.stem = nn.Sequential(Conv(3, a, 3, 2), Conv(a, b, 3, 2), C2f(b, b, 1, True))
            self.p3 = nn.Sequential(Conv(b, c, 3, 2), C2f(c, c, 2, True))
            self.p4 = nn.Sequential(Conv(c, d, 3, 2), C2f(d, d, 2, True))
            self.p5 = nn.Sequential(Conv(d, e, 3, 2), C2f(e, e, 1, True), SPPF(e, e))
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.h1, self.h2 = C2f(e + d, d, 1, False), C2f(d + c, c, 1, False)
            self.d1, self.h3 = Conv(c, c, 3, 2), C2f(c + d, d, 1, False)
            self.d2, self.h4 = Conv(d, d, 3, 2), C2f(d + e, e, 1, False)
            self.split_head = split_head
            self.box = nn.ModuleList(
                nn.Sequential(Conv(f, 64, 3), Conv(64, 64, 3), nn.Conv2d(64, 4 * BINS, 1))
                for f in (c, d, e)
            )
            self.cls = nn.ModuleList(
                nn.Sequential(Conv(f, 80, 3), Conv(80, 80, 3), nn.Conv2d(80, CLASSES, 1))
                for f in (c, d, e)
            )
            self.dfl = nn.Conv2d(BINS, 1, 1, bias=False).requires_grad_(False)
            self.dfl.weight.data[:] = torch.arange(BINS, dtype=torch.float32).view(1, BINS, 1, 1)
            anchors, strides = [], []
            for s in STRIDES:
                n = SIZE // s
                ys, xs = torch.meshgrid(torch.arange(n) + 0.5, torch.arange(n) + 0.5, indexing="ij")
                anchors.append(torch.stack((xs, ys)).reshape(2, -1))
                strides.append(torch.full((1, n * n), float(s)))
            self.register_buffer("anchors", torch.cat(anchors, 1))
            self.register_buffer("strides", torch.cat(strides, 1))

        def levels(self, x: torch.Tensor) -> list[torch.Tensor]:
            p3 = self.p3(self.stem(x))
            p4 = self.p4(p3)
            p5 = self.p5(p4)
            h1 = self.h1(torch.cat((self.up(p5), p4), 1))
            n3 = self.h2(torch.cat((self.up(h1), p3), 1))
            n4 = self.h3(torch.cat((self.d1(n3), h1), 1))
            n5 = self.h4(torch.cat((self.d2(n4), p5), 1))
            return [n3, n4, n5]

        def class_logits(self, x: torch.Tensor) -> torch.Tensor:
            outs = [head(f).flatten(2) for head, f in zip(self.cls, self.levels(x), strict=True)]
            return torch.cat(outs, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            feats = self.levels(x)
            if self.split_head:  # ultralytics' Detect: cat per scale, cat scales, split
                joined = [
                    torch.cat((bh(f), ch(f)), 1)
                    for bh, ch, f in zip(self.box, self.cls, feats, strict=True)
                ]
                flat = torch.cat([j.view(j.shape[0], 4 * BINS + CLASSES, -1) for j in joined], 2)
                box, cls = flat.split((4 * BINS, CLASSES), 1)
            else:
                box = torch.cat([h(f).flatten(2) for h, f in zip(self.box, feats, strict=True)], 2)
                cls = torch.cat([h(f).flatten(2) for h, f in zip(self.cls, feats, strict=True)], 2)
            b, _, a = box.shape
            dist = self.dfl(box.view(b, 4, BINS, a).transpose(2, 1).softmax(1)).view(b, 4, a)
            lt, rb = dist.chunk(2, 1)
            top_left, bottom_right = self.anchors - lt, self.anchors + rb
            xywh = torch.cat(((top_left + bottom_right) / 2, bottom_right - top_left), 1)
            return torch.cat((xywh * self.strides, cls.sigmoid()), 1)

    torch.manual_seed(seed)
    return YOLOv8n()


def _calibrate_statistics(model: torch.nn.Module, x: torch.Tensor) -> None:
    """BatchNorm statistics of the crops (cumulative averages), then the class bias."""
    import torch

    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None
    model.train()
    with torch.no_grad():
        for batch in x.split(16):
            model(batch)
        model.eval()
        best = torch.cat([model.class_logits(b).amax(1).flatten() for b in x.split(16)])
        target = math.log(THRESHOLD / (1 - THRESHOLD))
        shift = target - float(torch.quantile(best, 1 - DETECTION_SHARE))
        for head in model.cls:
            head[-1].bias += shift


def _crops(count: int, evaluation: bool) -> np.ndarray:
    """The bench's crops back in [0, 1] RGB, resized to 320 (YOLO's input)."""
    import torch

    source = images.evaluation_set() if evaluation else images.calibration_set()
    x = np.asarray(source[:count]) * images.STD[:, None, None] + images.MEAN[:, None, None]
    t = torch.nn.functional.interpolate(torch.from_numpy(x), size=SIZE, mode="bilinear")
    return t.clamp(0, 1).numpy().astype(np.float32)


def data(calibration: int = 64, evaluation: int = 160) -> tuple[np.ndarray, np.ndarray]:
    return _crops(calibration, False), _crops(evaluation, True)


def model() -> Path:
    """The first zoo detector: separate box and class concatenations, He noise (chaotic)."""
    return variant("yolov8n_style")


def model_split() -> Path:
    """A second detector: YOLOv8's own head (Concat per scale, Split), another seed."""
    return variant("yolov8n_split", seed=3, split_head=True)


def variant(name: str, seed: int = 8, width: float = 1.0, split_head: bool = False) -> Path:
    """A detector built once into _work/zoo/NAME.onnx (see ``_build`` for the options)."""
    path = ZOO_DIR / f"{name}.onnx"
    if not path.exists():
        import torch

        net = _build(seed, width, split_head)
        _calibrate_statistics(net, torch.from_numpy(_crops(64, False)))
        export(net, torch.zeros(1, 3, SIZE, SIZE), path)
    return path
