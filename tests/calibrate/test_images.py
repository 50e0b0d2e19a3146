"""Image folders: preprocessing equals the formula, and bad folders are clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eightbit.calibrate import ImageOptions, open_data
from eightbit.errors import DataError
from eightbit.graph import TensorInfo

F32 = np.dtype(np.float32)
NCHW = TensorInfo("image", F32, ("batch", 3, 8, 8))
NHWC = TensorInfo("image", F32, ("batch", 8, 8, 3))
GRAY = TensorInfo("image", F32, ("batch", 1, 8, 8))


def pixels(seed: int, height: int = 8, width: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def image_folder(tmp_path: Path, *images: np.ndarray) -> Path:
    folder = tmp_path / "images"
    (folder / "class_b").mkdir(parents=True)
    for index, array in enumerate(images):
        # Sorted order: the sub-folder's image comes after the top-level ones.
        place = folder / "class_b" if index == len(images) - 1 else folder
        Image.fromarray(array).save(place / f"{index:03d}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


def single_batch(folder: Path, info: TensorInfo, options: ImageOptions) -> np.ndarray:
    batches = list(open_data(folder, [info], batch_size=16, image=options))
    assert len(batches) == 1
    return batches[0][info.name]


def test_normalization_and_layout_follow_the_formula(tmp_path: Path) -> None:
    raw = [pixels(0), pixels(1)]
    folder = image_folder(tmp_path, *raw)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    options = ImageOptions(mean=mean, std=std)
    expected = (np.stack(raw).astype(np.float32) / 255 - np.array(mean, np.float32)) / np.array(
        std, np.float32
    )
    got = single_batch(folder, NCHW, options)
    np.testing.assert_allclose(got, expected.transpose(0, 3, 1, 2), rtol=1e-6, atol=1e-6)
    nhwc = single_batch(folder, NHWC, ImageOptions(mean=mean, std=std, layout="nhwc"))
    np.testing.assert_allclose(nhwc, expected, rtol=1e-6, atol=1e-6)


def test_bgr_reverses_channels_and_gray_has_one(tmp_path: Path) -> None:
    raw = pixels(2)
    folder = image_folder(tmp_path, raw)
    bgr = single_batch(folder, NCHW, ImageOptions(channels="bgr", scale=1.0))
    assert np.array_equal(bgr[0], raw[..., ::-1].transpose(2, 0, 1).astype(np.float32))
    gray = single_batch(folder, GRAY, ImageOptions(channels="gray", scale=1.0))
    luma = np.asarray(Image.fromarray(raw).convert("L"), dtype=np.float32)
    assert np.array_equal(gray[0, 0], luma)


def test_resize_short_side_then_center_crop(tmp_path: Path) -> None:
    raw = pixels(3, height=10, width=20)
    folder = image_folder(tmp_path, raw)
    got = single_batch(folder, NCHW, ImageOptions(resize_short=8, scale=1.0))
    resized = Image.fromarray(raw).resize((16, 8), Image.Resampling.BILINEAR)
    expected = np.asarray(resized, dtype=np.float32)[:, 4:12]
    assert np.array_equal(got[0], expected.transpose(2, 0, 1))


def test_size_comes_from_the_model_or_the_options(tmp_path: Path) -> None:
    folder = image_folder(tmp_path, pixels(4, height=12, width=6))
    assert single_batch(folder, NCHW, ImageOptions()).shape == (1, 3, 8, 8)
    dynamic = TensorInfo("image", F32, ("batch", 3, "h", "w"))
    with pytest.raises(DataError, match="give one with --image-size"):
        open_data(folder, [dynamic], batch_size=2)
    got = single_batch(folder, dynamic, ImageOptions(size=(5, 7)))
    assert got.shape == (1, 3, 5, 7)


def test_layout_mismatch_names_the_expected_shape(tmp_path: Path) -> None:
    folder = image_folder(tmp_path, pixels(5))
    with pytest.raises(
        DataError, match=r"expects float32 samples of shape \[8, 8, 3\].*layout 'nchw'"
    ):
        open_data(folder, [NHWC], batch_size=2, image=ImageOptions(size=(8, 8)))


def test_folders_without_readable_images_are_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no images"):
        open_data(empty, [NCHW], batch_size=2)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"cannot read image .*bad\.png"):
        list(open_data(broken, [NCHW], batch_size=2))


def test_a_crop_larger_than_the_resized_image_is_refused(tmp_path: Path) -> None:
    folder = image_folder(tmp_path, pixels(6))
    with pytest.raises(DataError, match="use a larger --resize-short"):
        list(open_data(folder, [NCHW], batch_size=2, image=ImageOptions(resize_short=4)))


def test_images_need_a_single_image_input(tmp_path: Path) -> None:
    folder = image_folder(tmp_path, pixels(7))
    other = TensorInfo("scale", F32, ("batch", 1))
    with pytest.raises(DataError, match="one 4-D image input"):
        open_data(folder, [NCHW, other], batch_size=2)
