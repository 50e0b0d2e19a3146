"""A folder of images as model input: decode, resize, crop, normalize, lay out."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from eightbit.calibrate.config import ImageOptions
from eightbit.errors import DataError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)


def image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (sub-folders too, e.g. one per class), in sorted order."""
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    )
    if not files:
        suffixes = ", ".join(sorted(IMAGE_SUFFIXES))
        raise DataError(f"folder {str(folder)!r} holds no images ({suffixes})")
    return files


def image_size(
    shape: tuple[int | str | None, ...] | None, options: ImageOptions
) -> tuple[int, int]:
    """(height, width) of the model input: from ``options.size`` or the model's static dims."""
    if options.size is not None:
        return options.size
    if shape is not None and len(shape) == 4:
        height, width = (shape[2], shape[3]) if options.layout == "nchw" else (shape[1], shape[2])
        if isinstance(height, int) and isinstance(width, int):
            return height, width
    raise DataError(
        f"the model input has no fixed image size (shape {list(shape or [])}); "
        "give one with --image-size H[,W] (ImageOptions.size)"
    )


def load_image(path: Path, size: tuple[int, int], options: ImageOptions) -> npt.NDArray[np.float32]:
    """One image as float32 ``(C, H, W)`` or ``(H, W, C)`` per ``options``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            image = opened.convert("L" if options.channels == "gray" else "RGB")
    except (OSError, UnidentifiedImageError) as error:
        raise DataError(f"cannot read image {str(path)!r}: {error}") from None
    height, width = size
    if options.resize_short is not None:
        short = options.resize_short
        ratio = short / min(image.width, image.height)
        resized = (max(short, round(image.width * ratio)), max(short, round(image.height * ratio)))
        image = image.resize(resized, Image.Resampling.BILINEAR)
        if image.width < width or image.height < height:
            raise DataError(
                f"--resize-short {short} makes {str(path)!r} {image.width}x{image.height}, "
                f"smaller than the {width}x{height} crop; use a larger --resize-short"
            )
        left, top = (image.width - width) // 2, (image.height - height) // 2
        image = image.crop((left, top, left + width, top + height))
    elif (image.height, image.width) != (height, width):
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32).reshape(height, width, -1)
    if options.channels == "bgr":
        pixels = pixels[..., ::-1]
    mean = np.asarray(options.mean, dtype=np.float32)
    std = np.asarray(options.std, dtype=np.float32)
    normalized = (pixels * np.float32(options.scale) - mean) / std
    if options.layout == "nchw":
        normalized = normalized.transpose(2, 0, 1)
    return np.ascontiguousarray(normalized, dtype=np.float32)


def image_chunks(
    files: list[Path], size: tuple[int, int], options: ImageOptions, count: int
) -> Iterator[np.ndarray]:
    """Stacks of ``count`` preprocessed images (fewer at the end)."""
    for start in range(0, len(files), count):
        yield np.stack([load_image(path, size, options) for path in files[start : start + count]])
