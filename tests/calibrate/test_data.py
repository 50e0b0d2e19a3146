"""Data sources: files read a batch at a time, batching rules, and every bad-input error."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eightbit.calibrate import open_data
from eightbit.calibrate.arrays import open_npy
from eightbit.errors import ConfigError, DataError, ModelError
from eightbit.graph import TensorInfo

F32 = np.dtype(np.float32)
X = TensorInfo("x", F32, ("batch", 3, 4))
Y = TensorInfo("y", F32, ("batch", 2))
IDS = TensorInfo("ids", np.dtype(np.int32), ("batch", 5))
FIXED = TensorInfo("x", F32, (1, 3, 4))


def samples(count: int, *shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, *shape)).astype(np.float32)


def collect(source: object) -> list[dict[str, np.ndarray]]:
    return [dict(batch) for batch in source]  # type: ignore[attr-defined]


def test_npz_is_batched_by_batch_size_and_keeps_every_sample(tmp_path: Path) -> None:
    x, y = samples(37, 3, 4), samples(37, 2, seed=1)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    source = open_data(tmp_path / "d.npz", [X, Y], batch_size=16)
    batches = collect(source)
    assert [len(b["x"]) for b in batches] == [16, 16, 5]
    assert np.array_equal(np.concatenate([b["x"] for b in batches]), x)
    assert np.array_equal(np.concatenate([b["y"] for b in batches]), y)
    assert (source.samples, len(source), source.used) == (37, 3, 37)


def test_compressed_npz_and_a_single_unnamed_array_work(tmp_path: Path) -> None:
    x = samples(5, 3, 4)
    np.savez_compressed(tmp_path / "d.npz", x)  # stored as 'arr_0'
    batches = collect(open_data(tmp_path / "d.npz", [X], batch_size=2))
    assert np.array_equal(np.concatenate([b["x"] for b in batches]), x)


def test_npy_feeds_a_single_input_and_fortran_order_is_read(tmp_path: Path) -> None:
    x = np.asfortranarray(samples(6, 3, 4))
    np.save(tmp_path / "d.npy", x)
    batches = collect(open_data(tmp_path / "d.npy", [X], batch_size=4))
    assert [len(b["x"]) for b in batches] == [4, 2]
    assert np.array_equal(np.concatenate([b["x"] for b in batches]), x)


def test_files_are_read_a_batch_at_a_time(tmp_path: Path) -> None:
    np.save(tmp_path / "d.npy", samples(1000, 3, 4))
    stream = open_npy(tmp_path / "d.npy")
    try:
        start = stream._stream.tell()
        assert stream.read(8).shape == (8, 3, 4)
        assert stream._stream.tell() - start == 8 * 3 * 4 * 4
    finally:
        stream.close()


def test_a_fixed_batch_dimension_feeds_that_many_samples(tmp_path: Path) -> None:
    source = open_data(samples(3, 3, 4), [FIXED], batch_size=16)
    assert [len(b["x"]) for b in collect(source)] == [1, 1, 1]
    four = TensorInfo("x", F32, (4, 3, 4))
    source = open_data(samples(10, 3, 4), [four], batch_size=16)
    assert [len(b["x"]) for b in collect(source)] == [4, 4]
    assert (source.used, source.dropped, len(source)) == (8, 2, 2)


def test_inputs_with_different_fixed_batches_are_a_model_error() -> None:
    other = TensorInfo("y", F32, (2, 2))
    with pytest.raises(ModelError, match=r"different fixed batch sizes \[1, 2\]"):
        open_data({"x": samples(2, 3, 4), "y": samples(2, 2)}, [FIXED, other], batch_size=4)


def test_dtypes_convert_when_meaning_is_kept() -> None:
    x = samples(4, 3, 4).astype(np.float64)
    ids = np.arange(20, dtype=np.int64).reshape(4, 5)
    (batch,) = collect(open_data({"x": x, "ids": ids}, [X, IDS], batch_size=8))
    assert batch["x"].dtype == np.float32 and batch["ids"].dtype == np.int32
    assert np.array_equal(batch["ids"], ids)


def test_float_data_for_an_integer_input_is_refused() -> None:
    with pytest.raises(DataError, match="input 'ids' expects int32 values; the data gives float32"):
        open_data(
            {"x": samples(2, 3, 4), "ids": samples(2, 5)}, [X, IDS], batch_size=2
        ).__iter__().__next__()


def test_integers_outside_the_input_type_are_refused() -> None:
    ids = np.full((2, 5), 2**40, dtype=np.int64)
    source = open_data({"x": samples(2, 3, 4), "ids": ids}, [X, IDS], batch_size=2)
    with pytest.raises(DataError, match=r"outside the range of int32"):
        collect(source)


def test_a_shape_mismatch_names_input_expected_and_given(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=samples(4, 3, 5))
    with pytest.raises(DataError) as error:
        open_data(tmp_path / "d.npz", [X], batch_size=2)
    message = str(error.value)
    assert "input 'x' expects float32 samples of shape [3, 4]" in message
    assert "gives float32 samples of shape [3, 5]" in message
    assert "d.npz" in message


def test_a_missing_batch_axis_is_a_shape_error() -> None:
    with pytest.raises(DataError, match=r"expects float32 samples of shape \[3, 4\]"):
        open_data(samples(3, 4)[0], [X], batch_size=2)


def test_array_names_must_match_the_inputs(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=samples(2, 3, 4), z=samples(2, 2))
    with pytest.raises(
        DataError, match=r"has arrays \['x', 'z'\] but the model's inputs are \['x', 'y'\]"
    ):
        open_data(tmp_path / "d.npz", [X, Y], batch_size=2)
    with pytest.raises(DataError, match="single array but the model has 2 inputs"):
        open_data(samples(2, 3, 4), [X, Y], batch_size=2)


def test_arrays_must_have_the_same_number_of_samples(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=samples(3, 3, 4), y=samples(2, 2))
    with pytest.raises(DataError, match="different numbers of samples"):
        open_data(tmp_path / "d.npz", [X, Y], batch_size=2)


def test_a_nonfinite_sample_is_named() -> None:
    x = samples(10, 3, 4)
    x[7, 1, 2] = np.nan
    source = open_data(x, [X], batch_size=4)
    with pytest.raises(
        DataError, match=r"sample 7 \(counting from 0\) of input 'x' .*--skip-nonfinite"
    ):
        collect(source)


def test_skipping_nonfinite_samples_counts_them() -> None:
    x = samples(10, 3, 4)
    x[[2, 7]] = np.inf
    source = open_data(x, [X], batch_size=4, skip_nonfinite=True)
    batches = collect(source)
    assert [len(b["x"]) for b in batches] == [4, 4]
    assert np.array_equal(np.concatenate([b["x"] for b in batches]), np.delete(x, [2, 7], axis=0))
    assert (source.skipped, source.used) == (2, 8)


def test_limit_counts_samples_that_are_used() -> None:
    x = samples(10, 3, 4)
    x[1] = np.nan
    source = open_data(x, [X], batch_size=3, skip_nonfinite=True, limit=5)
    batches = collect(source)
    assert [len(b["x"]) for b in batches] == [3, 2]
    assert np.array_equal(np.concatenate([b["x"] for b in batches]), np.delete(x, 1, axis=0)[:5])


def test_an_iterable_of_single_samples_is_batched() -> None:
    items = list(samples(5, 3, 4))  # each item one sample of shape (3, 4)
    source = open_data(items, [X], batch_size=2)
    assert source.samples == 5
    assert [len(b["x"]) for b in collect(source)] == [2, 2, 1]


def test_a_generator_of_batches_and_dicts_is_rebatched() -> None:
    def generate() -> Iterator[dict[str, np.ndarray]]:
        for count in (3, 1, 4):
            yield {"x": samples(count, 3, 4, seed=count), "y": samples(count, 2)}

    source = open_data(generate(), [X, Y], batch_size=5)
    assert source.samples is None
    with pytest.raises(TypeError, match="not known in advance"):
        len(source)
    batches = collect(source)
    assert [len(b["x"]) for b in batches] == [5, 3]


def test_items_that_are_not_arrays_are_refused() -> None:
    with pytest.raises(DataError, match="item 1 of the data is a str"):
        items: list[Any] = [samples(1, 3, 4), "oops"]
        collect(open_data(iter(items), [X], batch_size=2))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.npz", None, "does not exist"),
        ("data.csv", b"1,2", "is not an .npz, an .npy or a folder of images"),
        ("broken.npz", b"not a zip", "cannot read .* as an .npz archive"),
        ("broken.npy", b"\x93NUMPY garbage", "is not a valid .npy array"),
    ],
)
def test_unreadable_files_are_one_clear_error(
    tmp_path: Path, name: str, content: bytes | None, message: str
) -> None:
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=message):
        open_data(tmp_path / name, [X], batch_size=2)


def test_object_and_truncated_arrays_are_refused(tmp_path: Path) -> None:
    np.save(tmp_path / "o.npy", np.array([[1], "a"], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="holds Python objects"):
        open_data(tmp_path / "o.npy", [X], batch_size=2)
    np.save(tmp_path / "t.npy", samples(4, 3, 4))
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[:-10])
    with pytest.raises(DataError, match="is truncated"):
        collect(open_data(tmp_path / "t.npy", [X], batch_size=2))


def test_image_options_need_a_folder(tmp_path: Path) -> None:
    from eightbit.calibrate import ImageOptions

    np.save(tmp_path / "d.npy", samples(2, 3, 4))
    with pytest.raises(ConfigError, match="image options apply to a folder of images"):
        open_data(tmp_path / "d.npy", [X], batch_size=2, image=ImageOptions())


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="'batch_size' must be >= 1"):
        open_data(samples(2, 3, 4), [X], batch_size=0)
    with pytest.raises(DataError, match="must be a path, an array"):
        open_data(42, [X], batch_size=2)  # type: ignore[arg-type]
