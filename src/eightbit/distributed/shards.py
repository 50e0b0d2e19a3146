"""Data cut into shards of consecutive samples, each opened where it is processed.

A shard is samples ``[start, stop)`` of the data. Boundaries fall on multiples of the batch
size, so every shard reads exactly the batches one process would read, and the per-batch
work (the histogram's sampled positions restart with each batch, §C.2) is the same.
Files are sent as their path and read by the worker from its start row (a seek, so memory
does not grow with the data); arrays held in this process are cut here and each shard is
put in Ray's object store once.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eightbit.calibrate import ImageOptions
from eightbit.calibrate.arrays import ArrayStream, iterate_rows, npz_keys, open_npy, open_npz_member
from eightbit.calibrate.data import Batch, DataLike, DataSource, feed_batch_size
from eightbit.calibrate.images import image_chunks, image_files, image_size
from eightbit.calibrate.sources import array_files, is_file_list, match_names, open_data
from eightbit.errors import ConfigError
from eightbit.graph import TensorInfo

# Shards per worker: enough that a slow or restarted worker does not hold up the end and
# that the progress bar moves, few enough that per-shard overhead stays small.
SHARDS_PER_WORKER = 4


@dataclass(frozen=True)
class Shard:
    """Samples ``[start, stop)`` of the data; ``data`` is a path, or the shard's own arrays
    (an object-store reference once sent) whose row 0 is sample ``start``."""

    index: int
    start: int
    stop: int
    data: Any

    @property
    def samples(self) -> int:
        return self.stop - self.start

    def describe(self, label: str) -> str:
        return f"{label} (shard {self.index}: samples {self.start}..{self.stop - 1})"


def boundaries(total: int, batch_size: int, workers: int, largest: int | None = None) -> list[int]:
    """Shard starts and the end: multiples of ``batch_size``, about ``SHARDS_PER_WORKER``
    shards per worker, each at most ``largest`` samples (rounded up to whole batches)."""
    batches = -(-total // batch_size)
    per_shard = max(-(-batches // (workers * SHARDS_PER_WORKER)), 1)
    if largest is not None:
        per_shard = min(per_shard, max(largest // batch_size, 1))
    edges = [min(first * batch_size, total) for first in range(0, batches, per_shard)]
    return [*edges, total]


def plan_shards(
    data: DataLike,
    inputs: Sequence[TensorInfo],
    *,
    batch_size: int,
    image: ImageOptions | None,
    start: int,
    count: int | None,
    workers: int,
    largest: int | None = None,
) -> tuple[list[Shard], str]:
    """The shards of samples ``[start, start + count)`` of ``data`` (None: to the end),
    and the data's label; the data is checked here as one process would check it."""
    source = open_data(data, inputs, batch_size=batch_size, image=image)
    if source.samples is None:
        raise ConfigError(
            "--ray needs data whose number of samples is known (a path, arrays, or a list); "
            "a Python iterator cannot be cut into shards: save it with numpy.savez"
        )
    stop = source.samples if count is None else min(start + count, source.samples)
    read_size = source.batch_size
    edges = [start + edge for edge in boundaries(stop - start, read_size, workers, largest)]
    spans = list(itertools.pairwise(edges))
    files = _data_files(data, image)
    if files is not None:
        return [Shard(i, a, b, files) for i, (a, b) in enumerate(spans)], source.label
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        return [Shard(i, a, b, path) for i, (a, b) in enumerate(spans)], source.label
    arrays = _in_memory(data, inputs)
    return [
        Shard(i, a, b, {name: rows[a:b] for name, rows in arrays.items()})
        for i, (a, b) in enumerate(spans)
    ], source.label


def open_shard(
    shard: Shard,
    inputs: Sequence[TensorInfo],
    *,
    batch_size: int,
    image: ImageOptions | None,
    label: str,
) -> DataSource:
    """The shard's samples as a ``DataSource``; messages count samples in the whole data."""
    read_size = feed_batch_size(inputs, batch_size)
    if isinstance(shard.data, tuple):
        chunks = _listed_chunks(shard.data, inputs, read_size, shard)
    elif isinstance(shard.data, str):
        chunks = _file_chunks(Path(shard.data), inputs, image, read_size, shard)
    else:
        arrays: Batch = dict(shard.data)
        chunks = lambda: iter([arrays])  # noqa: E731 (a re-readable source of one chunk)
    return DataSource(
        chunks,
        inputs,
        label=shard.describe(label),
        batch_size=batch_size,
        samples=shard.samples,
        skip_nonfinite=False,
        limit=None,
        offset=shard.start,
    )


def _file_chunks(
    path: Path,
    inputs: Sequence[TensorInfo],
    image: ImageOptions | None,
    read_size: int,
    shard: Shard,
) -> Any:
    if path.is_dir():
        info = inputs[0]
        options = image or ImageOptions()
        files = image_files(path)[shard.start : shard.stop]
        size = image_size(info.shape, options)
        return lambda: (
            {info.name: chunk} for chunk in image_chunks(files, size, options, read_size)
        )
    names = [info.name for info in inputs]

    def streams() -> dict[str, ArrayStream]:
        if path.suffix.lower() == ".npy":
            opened = {names[0]: open_npy(path)}
        else:
            key_of = match_names(npz_keys(path), names, repr(str(path)))
            opened = {name: open_npz_member(path, key) for name, key in key_of.items()}
        for stream in opened.values():
            stream.skip(shard.start)
        return opened

    return lambda: _rows(iterate_rows(streams(), read_size), shard.samples)


def _data_files(data: Any, image: ImageOptions | None) -> tuple[str, ...] | None:
    """The data files, in reading order, of a list of them or a folder of them; else None."""
    if is_file_list(data):
        return tuple(os.fspath(name) for name in data)
    if isinstance(data, (str, os.PathLike)) and image is None and Path(data).is_dir():
        return tuple(str(path) for path in array_files(Path(data))) or None
    return None


def _listed_chunks(
    files: tuple[str, ...], inputs: Sequence[TensorInfo], read_size: int, shard: Shard
) -> Any:
    """The shard's rows of data files read one after another: whole files before
    ``shard.start`` are passed over from their headers, the rest read in order."""

    def chunks() -> Iterator[Batch]:
        skip = shard.start
        for name in files:
            path = Path(name)
            rows = open_data(path, inputs, batch_size=read_size).samples or 0
            if skip >= rows:
                skip -= rows
                continue
            part = Shard(shard.index, skip, rows, name)
            yield from _file_chunks(path, inputs, None, read_size, part)()
            skip = 0

    return lambda: _rows(chunks(), shard.samples)


def _rows(chunks: Iterator[Batch], count: int) -> Iterator[Batch]:
    """The first ``count`` rows of ``chunks``."""
    left = count
    for chunk in chunks:
        if left <= 0:
            chunks.close()  # type: ignore[attr-defined]
            return
        rows = len(next(iter(chunk.values())))
        yield chunk if rows <= left else {name: array[:left] for name, array in chunk.items()}
        left -= rows
    return


def _in_memory(data: Any, inputs: Sequence[TensorInfo]) -> dict[str, np.ndarray]:
    """Arrays held in this process, one per input, samples along the first axis."""
    names = [info.name for info in inputs]
    if isinstance(data, np.ndarray):
        return {names[0]: data}
    if isinstance(data, Mapping):
        key_of = match_names([str(key) for key in data], names, "the data")
        lookup = {str(key): value for key, value in data.items()}
        return {name: np.asarray(lookup[key]) for name, key in key_of.items()}
    # A list of items (one sample or one batch each), checked and joined along the samples.
    batches = list(open_data(list(data), inputs, batch_size=1 << 30))
    return {name: np.concatenate([batch[name] for batch in batches]) for name in names}
