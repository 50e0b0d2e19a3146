"""PP-OCRv3 text detector and recognizer (rapidocr-onnxruntime 1.2.3), on rendered text.

The held-out set's OCR models are PP-OCRv4; v3 is the same family (DB detector, SVTR-LCNet
CTC recognizer) in other files. Text is rendered with the font Pillow ships
(``ImageFont.load_default(size)``), so nothing depends on the machine's fonts.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from benchmarks.zoo.spec import ZOO_DIR, package_file

PACKAGE = "rapidocr_onnxruntime"
LINE_HEIGHT, LINE_WIDTH = 48, 320  # the recognizer's input
PAGE = 320  # the detector's input side (a multiple of 32)
ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,:;-()/%$#"
WORDS = [
    "invoice",
    "total",
    "amount",
    "date",
    "order",
    "number",
    "customer",
    "address",
    "street",
    "city",
    "phone",
    "email",
    "shipping",
    "tax",
    "price",
    "quantity",
    "item",
    "description",
    "payment",
    "due",
    "balance",
    "account",
    "reference",
    "station",
    "platform",
    "departure",
    "arrival",
    "gate",
    "seat",
    "coach",
    "ticket",
    "valid",
    "until",
]


def copy_model(file: str, name: str) -> Path:
    target = ZOO_DIR / f"{name}.onnx"
    if not target.exists():
        ZOO_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package_file(PACKAGE, f"models/{file}"), target)
    return target


def detector() -> Path:
    return copy_model("ch_PP-OCRv3_det_infer.onnx", "ppocrv3_det")


def recognizer() -> Path:
    return copy_model("ch_PP-OCRv3_rec_infer.onnx", "ppocrv3_rec")


def _text(rng: np.random.Generator) -> str:
    """Words, numbers and codes mixed, as on receipts and tickets."""
    parts = []
    for _ in range(int(rng.integers(2, 5))):
        kind = rng.integers(3)
        if kind == 0:
            parts.append(
                str(rng.choice(WORDS)).capitalize()
                if rng.random() < 0.3
                else str(rng.choice(WORDS))
            )
        elif kind == 1:
            parts.append(f"{rng.uniform(0, 9999):.2f}")
        else:
            parts.append("".join(rng.choice(list(ALPHABET), int(rng.integers(3, 8)))))
    return " ".join(parts)


def _colours(rng: np.random.Generator) -> tuple[tuple[int, ...], tuple[int, ...]]:
    paper = tuple(int(v) for v in rng.integers(170, 256, 3))
    ink = tuple(int(v) for v in rng.integers(0, 90, 3))
    return paper, ink


def _normalize(images: list[np.ndarray]) -> np.ndarray:
    """PaddleOCR's preprocessing: RGB/255, minus 0.5, over 0.5, NCHW."""
    x = np.stack(images).astype(np.float32) / 255.0
    return ((x - 0.5) / 0.5).transpose(0, 3, 1, 2).copy()


def render_line(rng: np.random.Generator) -> np.ndarray:
    paper, ink = _colours(rng)
    image = Image.new("RGB", (LINE_WIDTH, LINE_HEIGHT), paper)
    font = ImageFont.load_default(size=int(rng.integers(22, 34)))
    text = _text(rng)
    draw = ImageDraw.Draw(image)
    while draw.textlength(text, font=font) > LINE_WIDTH - 8 and " " in text:
        text = text.rsplit(" ", 1)[0]
    draw.text((int(rng.integers(2, 8)), LINE_HEIGHT // 2), text, fill=ink, font=font, anchor="lm")
    return np.asarray(image)


def render_page(rng: np.random.Generator) -> np.ndarray:
    paper, ink = _colours(rng)
    image = Image.new("RGB", (PAGE, PAGE), paper)
    draw = ImageDraw.Draw(image)
    y = int(rng.integers(4, 20))
    while y < PAGE - 30:
        size = int(rng.integers(14, 30))
        font = ImageFont.load_default(size=size)
        draw.text((int(rng.integers(4, 60)), y), _text(rng), fill=ink, font=font)
        y += size + int(rng.integers(6, 30))
    return np.asarray(image)


def line_data(calibration: int = 64, evaluation: int = 160) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(13)
    lines = [render_line(rng) for _ in range(calibration + evaluation)]
    x = _normalize(lines)
    return x[:calibration], x[calibration:]


def page_data(calibration: int = 24, evaluation: int = 40) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(31)
    pages = [render_page(rng) for _ in range(calibration + evaluation)]
    x = _normalize(pages)
    return x[:calibration], x[calibration:]
