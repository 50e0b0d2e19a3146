"""``DataSource``: samples of any origin as batches of model inputs, checked as they pass.

Sources (sources.py) yield chunks ``{input name: array}`` of any number of samples; a
``DataSource`` checks each chunk against the model's inputs (``conform``), rejects or
skips samples with NaN/inf, stops at a sample limit, and regroups what remains into the
batch size the model takes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, TypeAlias

import numpy as np

from eightbit.errors import DataError, ModelError

if TYPE_CHECKING:
    from eightbit.graph import TensorInfo

Batch = dict[str, np.ndarray]
# What calibration and validation accept as data (sources.py reads each kind).
Item: TypeAlias = "Mapping[str, np.ndarray] | np.ndarray"
DataLike: TypeAlias = "str | os.PathLike[str] | Item | Iterable[Item]"
# Opens a source afresh and yields its samples in chunks of any size.
Chunks = Callable[[], Iterator[Batch]]


def shape_text(shape: Sequence[object]) -> str:
    return "[" + ", ".join("?" if dim is None else str(dim) for dim in shape) + "]"


def _fixed_batch_sizes(inputs: Sequence[TensorInfo]) -> set[int]:
    return {
        info.shape[0]
        for info in inputs
        if info.shape and isinstance(info.shape[0], int) and info.shape[0] > 0
    }


def feed_batch_size(inputs: Sequence[TensorInfo], batch_size: int) -> int:
    """Samples per run: the model's fixed batch dimension if it has one, else ``batch_size``."""
    fixed = _fixed_batch_sizes(inputs)
    if len(fixed) > 1:
        raise ModelError(
            f"the model's inputs have different fixed batch sizes {sorted(fixed)}; "
            "export it with one batch dimension shared by all inputs"
        )
    return fixed.pop() if fixed else batch_size


class DataSource:
    """Batches of model inputs, re-readable, with counts of what was used and skipped.

    ``samples`` is the number of samples the source will offer (None when a Python
    iterable does not say); after an iteration, ``used`` samples went into batches,
    ``skipped`` were left out for NaN/inf and ``dropped`` did not fill a fixed-size batch.
    """

    def __init__(
        self,
        chunks: Chunks,
        inputs: Sequence[TensorInfo],
        *,
        label: str,
        batch_size: int,
        samples: int | None,
        skip_nonfinite: bool,
        limit: int | None,
        offset: int = 0,
    ) -> None:
        self._chunks = chunks
        self.inputs = tuple(inputs)
        self.label = label
        self.batch_size = feed_batch_size(inputs, batch_size)
        # A fixed batch dimension cannot take a short last batch: leftovers are dropped.
        self._fixed_batch = bool(_fixed_batch_sizes(inputs))
        self._skip_nonfinite = skip_nonfinite
        self._limit = limit
        # Index of the first sample in the whole data (a shard's start), for messages.
        self.offset = offset
        self.samples = samples if limit is None or samples is None else min(samples, limit)
        self.used = self.skipped = self.dropped = 0
        self.varied = False  # after an iteration: did any sample differ from the first?

    def __len__(self) -> int:
        """Number of batches, when the number of samples is known."""
        if self.samples is None:
            raise TypeError(f"the number of samples in {self.label} is not known in advance")
        if self._fixed_batch:
            return self.samples // self.batch_size
        return -(-self.samples // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        self.used = self.skipped = self.dropped = 0
        self.varied = False
        first: Batch = {}
        for batch in self._batches(self._finite(self._conformed())):
            if not first:
                first = {name: array[:1].copy() for name, array in batch.items()}
            if not self.varied:
                self.varied = any(
                    not np.array_equal(array, np.broadcast_to(first[name], array.shape))
                    for name, array in batch.items()
                )
            self.used += rows_of(batch)
            yield batch

    def _conformed(self) -> Iterator[Batch]:
        first = self.offset
        for chunk in self._chunks():
            yield {
                info.name: conform(chunk[info.name], info, self.label, first)
                for info in self.inputs
            }
            first += rows_of(chunk)

    def _finite(self, chunks: Iterator[Batch]) -> Iterator[Batch]:
        """Reject (or skip) samples with NaN/inf; stop at ``limit`` good samples."""
        first, kept = self.offset, 0
        for chunk in chunks:
            count = rows_of(chunk)
            good = np.ones(count, dtype=bool)
            for array in chunk.values():
                if array.dtype.kind == "f" and count:
                    good &= np.isfinite(array.reshape(count, -1)).all(axis=1)
            if not good.all():
                if not self._skip_nonfinite:
                    bad = first + int(np.argmin(good))
                    name = next(
                        name
                        for name, array in chunk.items()
                        if array.dtype.kind == "f" and not np.isfinite(array[bad - first]).all()
                    )
                    raise DataError(
                        f"sample {bad} (counting from 0) of input {name!r} in {self.label} "
                        "contains NaN or infinity; remove such samples from the data (only "
                        "calibration can skip them: eightbit calibrate --skip-nonfinite, "
                        "skip_nonfinite=True)"
                    )
                self.skipped += count - int(good.sum())
                chunk = {name: array[good] for name, array in chunk.items()}
            first += count
            if self._limit is not None and kept + rows_of(chunk) >= self._limit:
                yield {name: array[: self._limit - kept] for name, array in chunk.items()}
                return
            kept += rows_of(chunk)
            yield chunk

    def _batches(self, chunks: Iterator[Batch]) -> Iterator[Batch]:
        """Regroup chunks of any size into batches of ``batch_size`` samples."""
        size = self.batch_size
        pending: list[Batch] = []
        count = 0
        for chunk in chunks:
            rows = rows_of(chunk)
            if rows == 0:
                continue
            if not pending and rows == size:  # the common case: no copy
                yield chunk
                continue
            pending.append(chunk)
            count += rows
            while count >= size:
                joined = _concatenate(pending)
                yield {name: array[:size] for name, array in joined.items()}
                rest = {name: array[size:] for name, array in joined.items()}
                count -= size
                pending = [rest] if count else []
        if count and self._fixed_batch:
            self.dropped = count
        elif count:
            yield _concatenate(pending)


def require_variation(source: DataSource) -> None:
    """Refuse calibration samples that are all the same (checked after an iteration).

    Ranges observed on one repeated input describe that input only: every other input
    would clip, and a quick check on the same samples would still look perfect.
    """
    if source.used >= 2 and not source.varied:
        raise DataError(
            f"all {source.used} calibration samples in {source.label} are identical, so the "
            "ranges would describe that one input only; calibrate on varied, representative "
            "samples (a few hundred real inputs)"
        )


def rows_of(batch: Batch) -> int:
    return len(next(iter(batch.values()))) if batch else 0


def _concatenate(chunks: list[Batch]) -> Batch:
    if len(chunks) == 1:
        return chunks[0]
    return {name: np.concatenate([chunk[name] for chunk in chunks]) for name in chunks[0]}


def conform(array: np.ndarray, info: TensorInfo, label: str, first: int = 0) -> np.ndarray:
    """``array`` (first axis: samples) checked against input ``info`` and cast to its dtype.

    ``first`` is the index of the array's first sample in the data, for messages.
    """
    expected = info.dtype
    given = f"{label} gives {array.dtype} samples of shape {shape_text(array.shape[1:])}"
    if info.shape is not None:
        mismatch = array.ndim != len(info.shape) or any(
            isinstance(dim, int) and dim != size
            for dim, size in zip(info.shape[1:], array.shape[1:], strict=False)
        )
        if mismatch:
            raise DataError(
                f"input {info.name!r} expects {expected} samples of shape "
                f"{shape_text(info.shape[1:])}, stacked along a first axis; {given}; "
                "reshape or resize the data to match"
            )
    if array.dtype == expected:
        return array
    if not np.can_cast(array.dtype, expected, casting="same_kind"):
        kind = "float" if expected.kind == "f" else "integer"
        raise DataError(
            f"input {info.name!r} expects {expected} values; {given}, which do not convert "
            f"to {expected} without losing their meaning; save {kind} arrays for this input"
        )
    if expected.kind in "iu" and array.size:
        limits = np.iinfo(expected)
        low, high = array.min(), array.max()
        if low < limits.min or high > limits.max:
            raise DataError(
                f"input {info.name!r} expects {expected} values; {given} with values in "
                f"[{low}, {high}] (samples {first} on), outside the range of {expected}"
            )
    if expected.kind == "f" and array.dtype.kind == "f" and array.size:
        return _narrowed_floats(array, info, label, first)
    return array.astype(expected)


def _narrowed_floats(array: np.ndarray, info: TensorInfo, label: str, first: int) -> np.ndarray:
    """Floats cast to a narrower float type; a finite value that would become inf is refused."""
    with np.errstate(over="ignore"):  # checked below, by sample, instead of a warning
        cast = array.astype(info.dtype)
    overflowed = np.isinf(cast) & np.isfinite(array)
    if overflowed.any():
        bad = first + int(np.flatnonzero(overflowed.reshape(len(array), -1).any(axis=1))[0])
        limit = float(np.finfo(info.dtype).max)
        raise DataError(
            f"sample {bad} (counting from 0) of input {info.name!r} in {label} holds values "
            f"beyond {info.dtype}'s range (±{limit:.4g}); scale the data as the model expects"
        )
    return cast
