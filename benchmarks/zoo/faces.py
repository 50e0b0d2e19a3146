"""A trained YOLOv8n detector: NudeNet 3.4.2's ``320n.onnx``, on photos of people.

The file is an Ultralytics YOLOv8n export (opset 17, dynamic input, trained at 320, 18
classes of which FACE_FEMALE and FACE_MALE are the ones ordinary photos show): one output
(N, 22, anchors) that concatenates decoded xywh boxes in pixels (0-320) with sigmoid class
scores (0-1), the head of issue 13's held-out YOLOv8n. NudeNet is AGPL-3.0: the bench reads
the installed file at run time and copies it only into _work (never committed, never shipped).

Data: crops, mirror images, scales and colour jitter of the photos of people that ship inside
installed wheels (scikit-image's ``astronaut`` and ``camera``, matplotlib's ``grace_hopper``),
letterboxed into 320x320 the way NudeNet feeds its model (RGB / 255, black padding at the
right and bottom).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from benchmarks import images
from benchmarks.zoo.spec import ZOO_DIR, package_file

PACKAGE = "nudenet"
SIZE = 320
PHOTOS = ("astronaut", "camera", "grace_hopper")
THRESHOLD = 0.25  # Ultralytics' default confidence, as for the other detectors


def model() -> Path:
    target = ZOO_DIR / "nudenet_320n.onnx"
    if not target.exists():
        ZOO_DIR.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(package_file(PACKAGE, "320n.onnx"), tmp)
        tmp.replace(target)
    return target


def _photo(name: str) -> Image.Image:
    if name == "camera":  # the cameraman is greyscale
        import skimage.data

        return Image.fromarray(np.asarray(skimage.data.camera())).convert("RGB")
    return Image.fromarray(images._load_photo(name))


def _sample(photo: Image.Image, rng: np.random.Generator) -> np.ndarray:
    """One crop (60-100 % of the short side), maybe mirrored, colour-jittered, scaled so that
    its long side is 55-100 % of 320, placed at the top left of a black 320x320 canvas."""
    w, h = photo.size
    side = int(min(w, h) * rng.uniform(0.6, 1.0))
    cw, ch = int(side * rng.uniform(0.8, 1.25)), side
    cw = min(cw, w)
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    crop = photo.crop((left, top, left + cw, top + ch))
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        crop = enhance(crop).enhance(float(rng.uniform(0.7, 1.3)))
    scale = SIZE * rng.uniform(0.55, 1.0) / max(crop.size)
    crop = crop.resize(
        (max(1, round(crop.size[0] * scale)), max(1, round(crop.size[1] * scale))),
        Image.Resampling.BILINEAR,
    )
    canvas = Image.new("RGB", (SIZE, SIZE))
    canvas.paste(crop, (0, 0))
    return np.asarray(canvas, dtype=np.float32).transpose(2, 0, 1) / 255.0


def data(calibration: int = 64, evaluation: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """Calibration and evaluation samples from independent seeds, photos taken in turn."""
    photos = [_photo(name) for name in PHOTOS]
    sets = []
    for seed, count in ((23, calibration), (29, evaluation)):
        rng = np.random.default_rng(seed)
        sets.append(np.stack([_sample(photos[k % len(photos)], rng) for k in range(count)]))
    return sets[0], sets[1]
