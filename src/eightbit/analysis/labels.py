"""Class labels for accuracy: an ``.npy`` of class ids, or the class folders of images (§A.1)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

from eightbit.calibrate.images import image_files
from eightbit.errors import DataError

LabelsLike = str | os.PathLike[str] | npt.ArrayLike


def load_labels(source: LabelsLike) -> np.ndarray:
    """Class ids as a 1-D int64 array.

    ``source`` is an array, an ``.npy`` file, or a folder of images in class sub-folders,
    read in the order a folder data source reads them (sorted paths). Sub-folders named
    by integers are those class ids; otherwise the sorted names are numbered 0, 1, ...
    """
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return folder_labels(path)
        if not path.is_file():
            raise DataError(f"labels {str(path)!r} do not exist; give an .npy file or a folder")
        if path.suffix.lower() != ".npy":
            raise DataError(
                f"labels {str(path)!r} are not an .npy file; save the class ids with numpy.save"
            )
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise DataError(f"cannot read labels {str(path)!r}: {error}") from None
        return _class_ids(array, repr(str(path)))
    return _class_ids(np.asarray(source), "the labels")


def folder_labels(folder: Path) -> np.ndarray:
    files = image_files(folder)
    classes = [path.relative_to(folder).parts for path in files]
    loose = [str(files[i]) for i, parts in enumerate(classes) if len(parts) < 2]
    if loose:
        raise DataError(
            f"image {loose[0]!r} is not inside a class sub-folder of {str(folder)!r}; "
            "put each image in a folder named after its class"
        )
    names = [parts[0] for parts in classes]
    distinct = sorted(set(names))
    if all(_is_int(name) for name in distinct):
        ids = {name: int(name) for name in distinct}
    else:
        ids = {name: index for index, name in enumerate(distinct)}
    return np.array([ids[name] for name in names], dtype=np.int64)


def check_label_count(labels: np.ndarray, samples: int, *, at_least: bool = False) -> None:
    """One label per sample (or at least as many when only the first samples are used)."""
    short = labels.shape[0] < samples
    if short or (not at_least and labels.shape[0] != samples):
        raise DataError(
            f"{labels.shape[0]} labels for {samples} samples; give one label per sample, "
            "in the order of the data"
        )


def check_label_classes(labels: np.ndarray, classes: int, output: str) -> None:
    """Every label a class of ``output`` (0 to classes - 1): others could never be right."""
    if labels.size == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= classes:
        raise DataError(
            f"labels run from {low} to {high}, but output {output!r} has {classes} classes "
            f"(ids 0 to {classes - 1}); give the class ids of the samples, in the order "
            "of the data"
        )


def _class_ids(array: np.ndarray, label: str) -> np.ndarray:
    flat = array.reshape(-1) if array.ndim == 2 and 1 in array.shape else array
    if flat.ndim != 1 or flat.dtype.kind not in "iu":
        raise DataError(
            f"{label} must be a 1-D array of integer class ids "
            f"(got {flat.dtype} values of shape {array.shape})"
        )
    return flat.astype(np.int64)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True
