"""Ranges: JSON + histogram sidecar round trip, reselection, merging, file errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eightbit.calibrate import Histogram, Ranges, TensorRange, select_range
from eightbit.errors import ConfigError, DataError

VALUES = {
    "/stem/conv/Conv_output_0": np.random.default_rng(0).standard_normal(20_000) * 3,
    "relu:0": np.maximum(np.random.default_rng(1).standard_normal(20_000), 0),
    "weird name ü": np.append(np.random.default_rng(2).laplace(size=20_000), 80.0),
}


def histograms() -> dict[str, Histogram]:
    result = {}
    for name, values in VALUES.items():
        histogram = Histogram(2048)
        histogram.update(values.astype(np.float32))
        result[name] = histogram
    return result


def ranges_by(method: str, hists: dict[str, Histogram] | None = None, **options: Any) -> Ranges:
    hists = histograms() if hists is None else hists
    tensors = {}
    for name, histogram in hists.items():
        low, high = select_range(histogram, method, **options)
        tensors[name] = TensorRange(low, high, histogram.min, histogram.max)
    settings = {"percentile": 99.99, "bits": 8, "bins": 2048, **options}
    return Ranges(method, tensors, 40, skipped=2, histograms=hists, options=settings)


def test_save_and_load_round_trip_exactly(tmp_path: Path) -> None:
    original = ranges_by("entropy")
    path = tmp_path / "ranges.json"
    original.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ranges.hist.npz", "ranges.json"]
    loaded = Ranges.load(path)
    assert dict(loaded) == dict(original)  # every float exactly
    assert (loaded.method, loaded.samples, loaded.skipped) == ("entropy", 40, 2)
    assert dict(loaded.options) == dict(original.options)
    for name in VALUES:
        assert loaded.histogram(name) == original.histogram(name)
    document = json.loads(path.read_text())
    assert document["histograms"] == "ranges.hist.npz"
    assert set(document["tensors"]["relu:0"]) == {"min", "max", "observed_min", "observed_max"}


def test_the_sidecar_holds_plain_arrays_only(tmp_path: Path) -> None:
    ranges_by("percentile").save(tmp_path / "r.json")
    with np.load(tmp_path / "r.hist.npz", allow_pickle=False) as archive:
        assert set(archive.files) == {
            "names", "bins", "exponents", "offsets", "minimums", "maximums", "lengths", "counts"
        }  # fmt: skip
        assert all(archive[key].dtype != object for key in archive.files)


def test_minmax_ranges_save_without_histograms(tmp_path: Path) -> None:
    tensors = {"x": TensorRange(-1.0, 2.0, -1.0, 2.0)}
    Ranges("minmax", tensors, 3).save(tmp_path / "m.json")
    assert not (tmp_path / "m.hist.npz").exists()
    loaded = Ranges.load(tmp_path / "m.json")
    assert loaded["x"] == tensors["x"] and loaded.histogram("x") is None


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy", "mse"])
def test_reselect_equals_selecting_directly(method: str, tmp_path: Path) -> None:
    ranges_by("percentile").save(tmp_path / "r.json")
    reselected = Ranges.load(tmp_path / "r.json").reselect(method, percentile=99.9, bits=6)
    # The settings each method reads; the others must not leak into the comparison.
    used: dict[str, dict[str, Any]] = {"minmax": {}, "percentile": {"percentile": 99.9}}
    options: dict[str, Any] = used.get(method, {"bits": 6})
    direct = ranges_by(method, **options)
    assert dict(reselected) == dict(direct)
    assert reselected.method == method


def test_reselect_needs_histograms() -> None:
    ranges = Ranges("minmax", {"x": TensorRange(-1.0, 2.0, -1.0, 2.0)}, 3)
    assert ranges.reselect("minmax")["x"] == ranges["x"]
    with pytest.raises(ConfigError, match="needs histograms"):
        ranges.reselect("entropy")


def test_merge_equals_one_calibration_over_all_values() -> None:
    first, second = histograms(), {}
    for name, values in VALUES.items():
        histogram = Histogram(2048)
        histogram.update((values[::2] * 1.5 - 0.5).astype(np.float32))
        second[name] = histogram
    together = {name: first[name].merge(second[name]) for name in VALUES}
    merged = ranges_by("mse", first).merge(ranges_by("mse", second))
    assert dict(merged) == dict(ranges_by("mse", together))
    assert merged.samples == 80 and merged.skipped == 4


def test_minmax_ranges_merge_by_their_extremes() -> None:
    a = Ranges("minmax", {"x": TensorRange(-1.0, 2.0, -1.0, 2.0)}, 3)
    b = Ranges("minmax", {"x": TensorRange(-3.0, 1.0, -3.0, 1.0)}, 4)
    merged = a.merge(b)
    assert merged["x"] == TensorRange(-3.0, 2.0, -3.0, 2.0) and merged.samples == 7
    averaged = Ranges("minmax", a.tensors, 3, options={"moving_average": 0.1})
    with pytest.raises(ConfigError, match="moving averages"):
        averaged.merge(b)
    with pytest.raises(ConfigError, match="different tensors"):
        a.merge(Ranges("minmax", {"y": TensorRange(0.0, 1.0, 0.0, 1.0)}, 1))


def test_lookup_of_a_missing_tensor_suggests_names() -> None:
    with pytest.raises(KeyError, match="did you mean 'relu:0'"):
        ranges_by("minmax")["relu0"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "cannot read ranges file"),
        ('{"format": "other"}', "is not an eightbit ranges file"),
        ('{"format": "eightbit.ranges", "version": 99}', "has version 99"),
        ('{"format": "eightbit.ranges", "version": 1, "tensors": {}}', "is malformed"),
        (
            '{"format": "eightbit.ranges", "version": 1, "method": "minmax", "samples": 1, '
            '"tensors": {"x": {"min": 2.0, "max": 1.0, '
            '"observed_min": 0.0, "observed_max": 3.0}}}',
            "must have min <= max",
        ),
    ],
)
def test_bad_files_are_one_clear_error(content: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        Ranges.load(path)


def test_a_missing_file_is_named() -> None:
    with pytest.raises(DataError, match=r"'nowhere\.json' does not exist"):
        Ranges.load("nowhere.json")


def test_a_missing_sidecar_leaves_ranges_without_histograms(tmp_path: Path) -> None:
    ranges_by("percentile").save(tmp_path / "r.json")
    (tmp_path / "r.hist.npz").unlink()
    loaded = Ranges.load(tmp_path / "r.json")
    assert loaded.histogram("relu:0") is None
    with pytest.raises(ConfigError, match="sidecar is missing"):
        loaded.reselect("entropy")


def test_a_corrupt_sidecar_is_one_clear_error(tmp_path: Path) -> None:
    ranges_by("percentile").save(tmp_path / "r.json")
    (tmp_path / "r.hist.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read histograms"):
        Ranges.load(tmp_path / "r.json")


def test_a_failed_save_leaves_no_partial_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        ranges_by("percentile").save(tmp_path / "missing" / "r.json")
    assert list(tmp_path.iterdir()) == []


def test_tensor_range_requires_ordered_finite_floats() -> None:
    with pytest.raises(DataError, match="min <= max"):
        TensorRange(1.0, 0.0, 0.0, 1.0)
    with pytest.raises(DataError, match="four finite floats"):
        TensorRange(float("nan"), 0.0, 0.0, 1.0)
