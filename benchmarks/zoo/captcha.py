"""A trained YOLOX detector: ddddocr 1.6.1's ``common_det.onnx`` (MIT), which finds the
characters of click CAPTCHAs, on rendered CAPTCHA-like images.

The file is a YOLOX-s-style network (opset 11, one class, input [1, 3, 416, 416] BGR 0-255):
per level a Concat of the box regression Conv (raw offsets and log sizes), the Sigmoid
objectness and the Sigmoid class score, levels reshaped and joined into (1, 3549, 6), boxes
not decoded. The copy in _work differs from the shipped file in the batch dimension only
(``batch`` instead of 1, the three Reshapes' leading 1 replaced by 0, "copy that dimension"),
so that the bench's batched runs and every tool's calibration can feed several samples.

Data: characters in Pillow's own font (``ImageFont.load_default(size)``), scattered and
rotated over a background that is either a flat colour with speckle or a crop of the bench's
photos (click CAPTCHAs draw on photos), with noise lines and arcs, letterboxed into 416x416
with ddddocr's grey 114 padding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from benchmarks import images
from benchmarks.zoo.spec import ZOO_DIR, package_file

PACKAGE = "ddddocr"
SIZE = 416
PAD = 114  # ddddocr's letterbox grey
CHARACTERS = "ABCDEFGHJKLMNPQRSTUVWXYZabdefghmnqrt23456789"
PHOTOS = ("coffee", "chelsea", "china", "flower", "rocket", "astronaut")


def model() -> Path:
    """The shipped file with a dynamic batch dimension (see the module docstring)."""
    target = ZOO_DIR / "ddddocr_common_det.onnx"
    if target.exists():
        return target
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(package_file(PACKAGE, "common_det.onnx")))
    for value in (*proto.graph.input, *proto.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    reshapes = {node.input[1] for node in proto.graph.node if node.op_type == "Reshape"}
    for tensor in proto.graph.initializer:
        if tensor.name in reshapes and numpy_helper.to_array(tensor).tolist() == [1, 6, -1]:
            tensor.CopyFrom(numpy_helper.from_array(np.array([0, 6, -1]), tensor.name))
    ZOO_DIR.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    onnx.save(proto, str(tmp))
    tmp.replace(target)
    return target


def _background(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    if rng.random() < 0.5:
        colour = rng.integers(120, 256, 3)
        speckle = rng.normal(0, 12, (height, width, 3))
        pixels = np.clip(colour + speckle, 0, 255).astype(np.uint8)
        return Image.fromarray(pixels)
    photo = images._load_photo(str(rng.choice(PHOTOS)))
    h, w = photo.shape[:2]
    scale = max(width / w, height / h) * rng.uniform(1.0, 1.6)
    image = Image.fromarray(photo).resize((int(w * scale) + 1, int(h * scale) + 1))
    left = int(rng.integers(0, image.size[0] - width + 1))
    top = int(rng.integers(0, image.size[1] - height + 1))
    return image.crop((left, top, left + width, top + height))


def _character(rng: np.random.Generator) -> Image.Image:
    """One character on a transparent tile, rotated by up to 35 degrees."""
    size = int(rng.integers(28, 56))
    font = ImageFont.load_default(size=size)
    tile = Image.new("RGBA", (size * 2, size * 2), (0, 0, 0, 0))
    colour = (*(int(v) for v in rng.integers(0, 256, 3)), 255)
    ImageDraw.Draw(tile).text(
        (size, size),
        str(rng.choice(list(CHARACTERS))),
        fill=colour,
        font=font,
        anchor="mm",
        stroke_width=int(rng.integers(0, 3)),
        stroke_fill=(255, 255, 255, 255),
    )
    return tile.rotate(float(rng.uniform(-35, 35)), resample=Image.Resampling.BILINEAR)


def render(rng: np.random.Generator) -> Image.Image:
    width, height = int(rng.integers(300, SIZE + 1)), int(rng.integers(150, SIZE + 1))
    image = _background(width, height, rng).convert("RGB")
    for _ in range(int(rng.integers(3, 7))):
        tile = _character(rng)
        x = int(rng.integers(-tile.size[0] // 4, width - 3 * tile.size[0] // 4))
        y = int(rng.integers(-tile.size[1] // 4, height - 3 * tile.size[1] // 4))
        image.paste(tile, (x, y), tile)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(2, 6))):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        points = [(int(rng.integers(0, width)), int(rng.integers(0, height))) for _ in range(2)]
        draw.line(points, fill=colour, width=int(rng.integers(1, 4)))
    return image


def _letterbox(image: Image.Image) -> np.ndarray:
    """ddddocr's preproc: scale to fit 416, grey 114 padding at the right and bottom, BGR
    0-255 float, CHW."""
    ratio = min(SIZE / image.size[0], SIZE / image.size[1])
    size = (int(image.size[0] * ratio), int(image.size[1] * ratio))
    canvas = Image.new("RGB", (SIZE, SIZE), (PAD, PAD, PAD))
    canvas.paste(image.resize(size, Image.Resampling.BILINEAR), (0, 0))
    return np.asarray(canvas, dtype=np.float32)[:, :, ::-1].transpose(2, 0, 1).copy()


def data(calibration: int = 48, evaluation: int = 120) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(37)
    samples = np.stack([_letterbox(render(rng)) for _ in range(calibration + evaluation)])
    return samples[:calibration], samples[calibration:]
