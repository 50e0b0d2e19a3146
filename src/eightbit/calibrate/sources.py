"""Where calibration data comes from: .npz/.npy files, image folders, Python objects.

``open_data`` resolves a source, checks what it can against the model's inputs before
anything runs (names, dtypes, static dims, from file headers without reading the data)
and returns a ``DataSource`` (data.py). Files are read a batch at a time, so memory does
not grow with the size of the data set.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeGuard

import numpy as np

from eightbit.calibrate.arrays import (
    ArrayStream,
    iterate_rows,
    npz_keys,
    open_npy,
    open_npz_member,
)
from eightbit.calibrate.config import ImageOptions, check_int
from eightbit.calibrate.data import (
    Batch,
    Chunks,
    DataLike,
    DataSource,
    conform,
    feed_batch_size,
    rows_of,
    shape_text,
)
from eightbit.calibrate.images import image_chunks, image_files, image_size
from eightbit.errors import ConfigError, DataError, ModelError

if TYPE_CHECKING:
    from eightbit.graph import TensorInfo

_ARRAY_SUFFIXES = (".npz", ".npy")


def open_data(
    source: DataLike,
    inputs: Sequence[TensorInfo],
    *,
    batch_size: int,
    image: ImageOptions | None = None,
    skip_nonfinite: bool = False,
    limit: int | None = None,
) -> DataSource:
    """Batches of ``source`` for a model with runtime ``inputs``; raises ``DataError`` early.

    ``source`` is a path (an ``.npz`` whose keys are input names — one array of any name
    for a one-input model — an ``.npy`` for a one-input model, a folder of images
    preprocessed per ``image``, or a folder of ``.npz``/``.npy`` files read in name order),
    a list of ``.npz``/``.npy`` paths (their samples one after another), an array or a
    dict of arrays (first axis: samples), or an iterable of such items, where an item whose
    rank is one less than the input's is one sample and any other item a batch.
    """
    check_int("batch_size", batch_size, 1)
    if limit is not None:
        check_int("limit", limit, 1)
    if not inputs:
        raise ModelError("the model has no runtime inputs; there is nothing to calibrate with")
    read_size = feed_batch_size(inputs, batch_size)
    samples: int | None
    if isinstance(source, (str, os.PathLike)):
        chunks, label, samples = _path_source(Path(source), inputs, image, read_size)
    elif is_file_list(source):
        if image is not None:
            raise ConfigError("image options apply to a folder of images, not to data files")
        chunks, label, samples = _file_list_source(
            [Path(name) for name in source], inputs, read_size
        )
    elif image is not None:
        raise ConfigError("image options apply to a folder of images, not to arrays")
    elif isinstance(source, (np.ndarray, Mapping)):
        arrays = _named(source, inputs, "the data")
        label, samples = "the data", _common_rows(arrays, "the data")
        for info in inputs:  # fail now, before a model session is built
            conform(arrays[info.name][:0], info, label)
        chunks = functools.partial(iter, [arrays])
    elif isinstance(source, Iterable):
        items = source
        label = "the data"
        samples = (
            sum(_item_rows(item, inputs) for item in items) if isinstance(items, Sequence) else None
        )
        chunks = functools.partial(_item_chunks, items, inputs)
    else:
        raise DataError(
            "calibration data must be a path, an array, a dict of arrays or an iterable of "
            f"them (got {type(source).__name__})"
        )
    return DataSource(
        chunks,
        inputs,
        label=label,
        batch_size=batch_size,
        samples=samples,
        skip_nonfinite=skip_nonfinite,
        limit=limit,
    )


def is_file_list(source: object) -> TypeGuard[Sequence[str | os.PathLike[str]]]:
    """A list or tuple of paths: data files whose samples follow one another."""
    return (
        isinstance(source, (list, tuple))
        and bool(source)
        and all(isinstance(item, (str, os.PathLike)) for item in source)
    )


def array_files(folder: Path) -> list[Path]:
    """The ``.npz``/``.npy`` files directly in ``folder``, in name order (empty: none)."""
    found = (path for path in folder.iterdir() if path.suffix.lower() in _ARRAY_SUFFIXES)
    return sorted(path for path in found if path.is_file())


def _path_source(
    path: Path, inputs: Sequence[TensorInfo], image: ImageOptions | None, read_size: int
) -> tuple[Chunks, str, int]:
    if path.is_dir():
        files = array_files(path) if image is None else []
        if files:
            return _file_list_source(files, inputs, read_size, f"data files in {str(path)!r}")
        return _image_source(path, inputs, image or ImageOptions(), read_size)
    if not path.exists():
        raise DataError(f"data path {str(path)!r} does not exist")
    if image is not None:
        raise ConfigError(f"image options apply to a folder of images, but {str(path)!r} is a file")
    label = repr(str(path))
    suffix = path.suffix.lower()
    names = [info.name for info in inputs]
    if suffix == ".npz":
        key_of = match_names(npz_keys(path), names, label)
        return _stream_source(
            lambda: {name: open_npz_member(path, key) for name, key in key_of.items()},
            inputs,
            label,
            read_size,
        )
    if suffix == ".npy":
        _require_one_input(names, label)
        return _stream_source(lambda: {names[0]: open_npy(path)}, inputs, label, read_size)
    raise DataError(
        f"data {label} is not an .npz, an .npy or a folder of images; save the samples "
        "with numpy.savez (one array per input, first axis samples)"
    )


def _file_list_source(
    paths: Sequence[Path], inputs: Sequence[TensorInfo], read_size: int, label: str = ""
) -> tuple[Chunks, str, int]:
    """Each file's header checked now; their samples read one file after another."""
    for path in paths:
        if path.is_dir():
            raise DataError(
                f"data file {str(path)!r} is a folder; a list of data files names .npz or "
                ".npy files"
            )
    sources = [_path_source(path, inputs, None, read_size) for path in paths]
    label = label or f"{len(paths)} data files ({str(paths[0])!r}, ...)"
    samples = sum(count for _, _, count in sources)

    def chunks() -> Iterator[Batch]:
        for read, _, _ in sources:
            yield from read()

    return chunks, label, samples


def match_names(keys: Sequence[str], names: Sequence[str], label: str) -> dict[str, str]:
    """Which stored key feeds each input: equal names, or the only array for the only input."""
    if len(keys) == 1 and len(names) == 1:
        return {names[0]: keys[0]}
    missing = [name for name in names if name not in keys]
    extra = [key for key in keys if key not in names]
    if missing or extra:
        raise DataError(
            f"{label} has arrays {list(keys)} but the model's inputs are {list(names)}; "
            "give one array per input, named after it"
        )
    return {name: name for name in names}


def _named(
    item: np.ndarray | Mapping[str, np.ndarray], inputs: Sequence[TensorInfo], label: str
) -> Batch:
    """An array or a dict of arrays, keyed by the model's input names."""
    names = [info.name for info in inputs]
    if isinstance(item, Mapping):
        key_of = match_names([str(key) for key in item], names, label)
        lookup = {str(key): value for key, value in item.items()}
        return {name: np.asarray(lookup[key]) for name, key in key_of.items()}
    _require_one_input(names, label)
    return {names[0]: np.asarray(item)}


def _require_one_input(names: Sequence[str], label: str) -> None:
    if len(names) != 1:
        raise DataError(
            f"{label} is a single array but the model has {len(names)} inputs {list(names)}; "
            "give a dict (or an .npz) with one array per input"
        )


def _common_rows(arrays: Mapping[str, np.ndarray], label: str) -> int:
    if any(array.ndim == 0 for array in arrays.values()):
        raise DataError(f"{label} holds a scalar; data needs a first axis of samples")
    counts = {name: array.shape[0] for name, array in arrays.items()}
    if len(set(counts.values())) > 1:
        raise DataError(
            f"the arrays of {label} have different numbers of samples {counts}; "
            "every input needs one entry per sample"
        )
    return next(iter(counts.values()))


def _as_batch(array: np.ndarray, info: TensorInfo) -> np.ndarray:
    """An item one rank short of the input is a single sample: give it a batch axis."""
    if info.shape is not None and array.ndim == len(info.shape) - 1:
        return array[np.newaxis]
    return array


def _item_batch(
    item: np.ndarray | Mapping[str, np.ndarray], inputs: Sequence[TensorInfo], index: int
) -> Batch:
    label = f"item {index} of the data"
    arrays = _named(item, inputs, label)
    batch = {info.name: _as_batch(arrays[info.name], info) for info in inputs}
    _common_rows(batch, label)
    return batch


def _item_rows(item: np.ndarray | Mapping[str, np.ndarray], inputs: Sequence[TensorInfo]) -> int:
    return rows_of(_item_batch(item, inputs, 0))


def _item_chunks(
    items: Iterable[np.ndarray | Mapping[str, np.ndarray]], inputs: Sequence[TensorInfo]
) -> Iterator[Batch]:
    for index, item in enumerate(items):
        if not isinstance(item, (np.ndarray, Mapping)):
            raise DataError(
                f"item {index} of the data is a {type(item).__name__}; give arrays or dicts "
                "of arrays (input name -> array)"
            )
        yield _item_batch(item, inputs, index)


def _stream_source(
    open_streams: Callable[[], dict[str, ArrayStream]],
    inputs: Sequence[TensorInfo],
    label: str,
    read_size: int,
) -> tuple[Chunks, str, int]:
    """Check the stored headers now; read rows later, ``read_size`` at a time."""
    streams = open_streams()
    try:
        for info in inputs:
            stream = streams[info.name]
            conform(np.empty((0, *stream.shape[1:]), stream.dtype), info, label)
        rows = {name: stream.rows for name, stream in streams.items()}
    finally:
        for stream in streams.values():
            stream.close()
    if len(set(rows.values())) > 1:
        raise DataError(
            f"the arrays of {label} have different numbers of samples {rows}; "
            "every input needs one entry per sample"
        )
    return (lambda: iterate_rows(open_streams(), read_size)), label, next(iter(rows.values()))


def _image_source(
    folder: Path, inputs: Sequence[TensorInfo], options: ImageOptions, read_size: int
) -> tuple[Chunks, str, int]:
    label = f"images in {str(folder)!r}"
    if len(inputs) != 1 or inputs[0].shape is None or len(inputs[0].shape) != 4:
        described = [f"{info.name} {shape_text(info.shape or [])}" for info in inputs]
        raise DataError(
            f"a folder of images feeds a model with one 4-D image input; this model's inputs "
            f"are {described}; save the inputs as an .npz instead"
        )
    info = inputs[0]
    size = image_size(info.shape, options)
    files = image_files(folder)
    channels = options.channel_count
    one = (channels, *size) if options.layout == "nchw" else (*size, channels)
    conform(
        np.empty((0, *one), np.float32),
        info,
        f"{label} (layout {options.layout!r}, channels {options.channels!r})",
    )
    return (
        lambda: ({info.name: chunk} for chunk in image_chunks(files, size, options, read_size)),
        label,
        len(files),
    )
