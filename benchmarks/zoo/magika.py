"""Magika's byte-level file-type classifier (standard_v3_2, from magika 0.6.1), on generated
files of many types.

The held-out set uses the current magika's model; v3_2 is the same architecture (one-hot
MatMul embedding, LayerNorm and GELU written as elementary ops, Conv1D) in another file.
Features as magika computes them for files over 2 KiB: the first 1,024 bytes after leading
whitespace and the last 1,024 before trailing whitespace, padded with token 256.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.zoo.spec import ZOO_DIR, package_file

PACKAGE = "magika"
MODEL = "models/standard_v3_2/model.onnx"
HALF, BLOCK, PAD = 1024, 4096, 256
WORDS = [
    "the",
    "data",
    "model",
    "value",
    "file",
    "table",
    "row",
    "user",
    "name",
    "time",
    "list",
    "error",
    "result",
    "config",
]


def model() -> Path:
    target = ZOO_DIR / "magika_v3_2.onnx"
    if not target.exists():
        ZOO_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package_file(PACKAGE, MODEL), target)
    return target


def features(content: bytes) -> np.ndarray:
    """(2048,) int32: beginning and end of the content, whitespace-stripped, padded."""
    begin = content[:BLOCK].lstrip()[:HALF]
    end = content[-BLOCK:].rstrip()[-HALF:]
    row = np.full(2 * HALF, PAD, dtype=np.int32)
    row[: len(begin)] = np.frombuffer(begin, dtype=np.uint8)
    row[2 * HALF - len(end) :] = np.frombuffer(end, dtype=np.uint8)
    return row


def _words(rng: np.random.Generator, n: int) -> list[str]:
    return [str(w) for w in rng.choice(WORDS, n)]


def _text(rng: np.random.Generator) -> bytes:
    lines = [" ".join(_words(rng, int(rng.integers(4, 14)))).capitalize() + "." for _ in range(60)]
    return "\n".join(lines).encode()


def _json(rng: np.random.Generator) -> bytes:
    records = [{w: int(rng.integers(1000)) for w in _words(rng, 5)} for _ in range(40)]
    return json.dumps(records, indent=2).encode()


def _csv(rng: np.random.Generator) -> bytes:
    rows = [",".join(_words(rng, 5))]
    rows += [",".join(f"{v:.3f}" for v in rng.normal(size=5)) for _ in range(120)]
    return "\n".join(rows).encode()


def _html(rng: np.random.Generator) -> bytes:
    body = "".join(f'<p class="{w}">{" ".join(_words(rng, 8))}</p>\n' for w in _words(rng, 40))
    return (
        f"<!DOCTYPE html>\n<html><head><title>t</title></head><body>\n{body}</body></html>".encode()
    )


def _python(rng: np.random.Generator) -> bytes:
    functions = [
        f'def {a}_{b}(x, y=None):\n    """Return the {a}."""\n    if y is None:\n'
        f"        return x\n    return [v + {int(rng.integers(9))} for v in x]\n\n"
        for a, b in zip(_words(rng, 30), _words(rng, 30), strict=True)
    ]
    return ("import os\nimport sys\n\n\n" + "".join(functions)).encode()


def _c(rng: np.random.Generator) -> bytes:
    functions = [
        f"static int {a}_{b}(const int *x, size_t n) {{\n    int s = 0;\n"
        f"    for (size_t i = 0; i < n; i++) {{ s += x[i] * {int(rng.integers(9))}; }}\n"
        "    return s;\n}\n\n"
        for a, b in zip(_words(rng, 30), _words(rng, 30), strict=True)
    ]
    return ("#include <stdio.h>\n#include <stdlib.h>\n\n" + "".join(functions)).encode()


def _xml(rng: np.random.Generator) -> bytes:
    items = "".join(
        f'  <{w} id="{i}">{" ".join(_words(rng, 4))}</{w}>\n' for i, w in enumerate(_words(rng, 60))
    )
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<root>\n{items}</root>\n'.encode()


def _image(rng: np.random.Generator, fmt: str) -> bytes:
    pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    pixels = np.cumsum(pixels, axis=1).astype(np.uint8)  # smooth-ish, compressible
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format=fmt)
    return out.getvalue()


def _zip(rng: np.random.Generator) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for i in range(4):
            # A fixed timestamp: writestr(name, ...) would stamp the current time.
            entry = zipfile.ZipInfo(f"{_words(rng, 1)[0]}_{i}.txt", date_time=(2024, 1, 1, 0, 0, 0))
            archive.writestr(entry, _text(rng), zipfile.ZIP_DEFLATED)
    return out.getvalue()


def _pdf(rng: np.random.Generator) -> bytes:
    stream = zlib.compress(b"BT /F1 12 Tf 72 712 Td (" + _text(rng)[:400] + b") Tj ET")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    body = b"%PDF-1.4\n"
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(body))
        body += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    xref += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    return (
        body
        + xref
        + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n"
        % (
            len(objects) + 1,
            len(body),
        )
    )


def _gzip(rng: np.random.Generator) -> bytes:
    return gzip.compress(_csv(rng), mtime=0)


def _wav(rng: np.random.Generator) -> bytes:
    samples = (np.sin(np.arange(8000) * rng.uniform(0.01, 0.2)) * 20000).astype("<i2").tobytes()
    header = b"RIFF" + struct.pack("<I", 36 + len(samples)) + b"WAVEfmt "
    header += struct.pack("<IHHIIHH", 16, 1, 1, 8000, 16000, 2, 16) + b"data"
    return header + struct.pack("<I", len(samples)) + samples


GENERATORS: dict[str, Callable[[np.random.Generator], bytes]] = {
    "txt": _text,
    "json": _json,
    "csv": _csv,
    "html": _html,
    "python": _python,
    "c": _c,
    "xml": _xml,
    "png": lambda rng: _image(rng, "PNG"),
    "jpeg": lambda rng: _image(rng, "JPEG"),
    "bmp": lambda rng: _image(rng, "BMP"),
    "zip": _zip,
    "pdf": _pdf,
    "gzip": _gzip,
    "wav": _wav,
}


def data(calibration: int = 112, evaluation: int = 336) -> tuple[np.ndarray, np.ndarray]:
    """Files of every generated type in turn (seeded), as magika's int32 features."""
    rng = np.random.default_rng(7)
    kinds = list(GENERATORS.values())
    rows = [features(kinds[i % len(kinds)](rng)) for i in range(calibration + evaluation)]
    x = np.stack(rows)
    return x[:calibration], x[calibration:]
