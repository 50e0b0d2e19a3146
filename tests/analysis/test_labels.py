"""Labels: .npy class ids, class sub-folders of images, and the wrong number of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eightbit.analysis import RunOptions, load_labels, validate
from eightbit.errors import DataError
from tests.analysis.helpers import classifier, images, quantize


def save_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path)


def test_npy_and_arrays(tmp_path: Path) -> None:
    np.save(tmp_path / "labels.npy", np.array([[3], [1], [2]], dtype=np.int32))
    assert load_labels(tmp_path / "labels.npy").tolist() == [3, 1, 2]
    assert load_labels([0, 1]).dtype == np.int64
    with pytest.raises(DataError, match="1-D array of integer class ids"):
        load_labels(np.zeros((2, 3)))
    with pytest.raises(DataError, match="do not exist"):
        load_labels(tmp_path / "missing.npy")
    (tmp_path / "labels.txt").write_text("1 2 3")
    with pytest.raises(DataError, match=r"not an \.npy file"):
        load_labels(tmp_path / "labels.txt")


def test_class_folders_in_data_order(tmp_path: Path) -> None:
    for name in ("cat/b.png", "cat/a.png", "dog/x.png", "ant/z.png"):
        save_image(tmp_path / "named" / name)
    # sorted paths: ant/z, cat/a, cat/b, dog/x; classes numbered ant 0, cat 1, dog 2
    assert load_labels(tmp_path / "named").tolist() == [0, 1, 1, 2]
    for name in ("7/a.png", "10/b.png", "3/c.png"):
        save_image(tmp_path / "numbered" / name)
    # integer folder names are the class ids; sorted paths: 10/b, 3/c, 7/a
    assert load_labels(tmp_path / "numbered").tolist() == [10, 3, 7]


def test_image_outside_a_class_folder(tmp_path: Path) -> None:
    save_image(tmp_path / "cat" / "a.png")
    save_image(tmp_path / "loose.png")
    with pytest.raises(DataError, match="not inside a class sub-folder"):
        load_labels(tmp_path)


def test_wrong_number_of_labels_is_refused_before_running() -> None:
    quantized = quantize(classifier(), images(32))
    data = {"input": images(12)}
    with pytest.raises(DataError, match="11 labels for 12 samples"):
        validate(quantized.float_model, quantized.qdq, data, labels=np.zeros(11, np.int64))
    # With a sample limit, labels for the samples used are enough.
    result = validate(
        quantized.float_model,
        quantized.qdq,
        data,
        labels=np.zeros(11, np.int64),
        layers=False,
        options=RunOptions(samples=5),
    )
    assert result.samples == 5 and result.outputs[0].float_accuracy is not None
