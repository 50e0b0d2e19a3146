"""``eightbit calibrate``: files written, table and JSON output, one-line errors with exit 2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from eightbit.calibrate import Ranges
from eightbit.cli import _Group
from eightbit.cli.calibrate import calibrate
from tests.fixtures import models


@pytest.fixture
def cli() -> _Group:
    """The command under the real group, which turns EightbitError into exit 2."""
    group = _Group()
    group.add_command(calibrate)
    return group


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    model = models.conv_bn_relu()
    onnx.save(model, tmp_path / "model.onnx")
    feeds: dict[str, Any] = models.random_inputs(model, n=24, seed=1)
    np.savez(tmp_path / "data.npz", **feeds)
    return tmp_path / "model.onnx", tmp_path / "data.npz"


def invoke(cli: _Group, *args: object) -> Result:
    return CliRunner().invoke(cli, ["calibrate", *map(str, args)])


def test_writes_ranges_and_prints_the_widest(cli: _Group, files: tuple[Path, Path]) -> None:
    model, data = files
    output = model.parent / "ranges.json"
    result = invoke(cli, model, "--data", data, "-o", output, "--method", "entropy", "--top", "3")
    assert result.exit_code == 0, result.output
    ranges = Ranges.load(output)
    assert ranges.method == "entropy" and ranges.samples == 24
    assert (model.parent / "ranges.hist.npz").exists()
    text = result.output
    widest = [name for name, _ in ranges.widest(3)]
    assert all(name in text for name in widest)
    # the 4 tensors eightbit quantize reads, of the model's 6 float activations
    assert "calibrated 4 tensors on 24 samples" in text and "samples/s" in text


def test_json_prints_one_object(cli: _Group, files: tuple[Path, Path]) -> None:
    model, data = files
    output = model.parent / "r.json"
    result = invoke(
        cli,
        model,
        "--data",
        data,
        "-o",
        output,
        "--json",
        "--samples",
        "10",
        "--method",
        "mse",
        "--all-tensors",
    )
    assert result.exit_code == 0
    summary = json.loads(result.stdout)
    assert summary["samples"] == 10 and summary["method"] == "mse"
    assert summary["histograms"] == str(model.parent / "r.hist.npz")
    assert len(summary["widest"]) == 6 == summary["tensors"]
    saved = Ranges.load(output)
    first = summary["widest"][0]
    assert saved[first["name"]].max == first["max"]


def test_image_folders_take_preprocessing_options(cli: _Group, tmp_path: Path) -> None:
    onnx.save(models.conv_bn_relu(), tmp_path / "model.onnx")
    images = tmp_path / "images"
    images.mkdir()
    for seed in range(3):
        pixels = np.random.default_rng(seed).integers(0, 256, (12, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{seed}.png")
    result = invoke(
        cli,
        tmp_path / "model.onnx",
        "--data",
        images,
        "-o",
        tmp_path / "r.json",
        "--resize-short",
        "8",
        "--mean",
        "0.5,0.5,0.5",
        "--std",
        "0.25",
        "--method",
        "minmax",
    )
    assert result.exit_code == 0, result.output
    ranges = Ranges.load(tmp_path / "r.json")
    assert ranges.samples == 3
    assert ranges["input"].min >= -2.0 and ranges["input"].max <= 2.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "minmx"], "error: 'method' must be one of ['minmax', 'percentile'"),
        (["--percentile", "20"], "error: 'percentile' must be a number in (50, 100]"),
        (["--batch-size", "0"], "error: 'batch_size' must be >= 1 (got 0)"),
        (["--mean", "a,b"], "error: --mean must be comma-separated numbers"),
        (["--layout", "nhwc"], "error: image options apply to a folder of images"),
    ],
)
def test_bad_options_exit_2_with_one_line(
    cli: _Group, files: tuple[Path, Path], extra: list[str], message: str
) -> None:
    model, data = files
    result = invoke(cli, model, "--data", data, "-o", model.parent / "r.json", *extra)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines


def test_bad_files_exit_2_with_one_line(cli: _Group, files: tuple[Path, Path]) -> None:
    model, data = files
    folder = model.parent
    cases = [
        ([folder / "none.onnx", "--data", data], "does not exist"),
        ([model, "--data", folder / "none.npz"], "does not exist"),
        ([model, "--data", data, "-o", model], "is the input file"),
    ]
    for arguments, message in cases:
        if "-o" not in arguments:
            arguments = [*arguments, "-o", folder / "r.json"]
        result = invoke(cli, *arguments)
        assert result.exit_code == 2
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], lines


def test_data_that_does_not_fit_the_model_names_the_input(
    cli: _Group, files: tuple[Path, Path]
) -> None:
    model, _ = files
    wrong = model.parent / "wrong.npy"
    np.save(wrong, np.zeros((4, 3, 5, 5), np.float32))
    result = invoke(cli, model, "--data", wrong, "-o", model.parent / "r.json")
    assert result.exit_code == 2
    assert "input 'input' expects float32 samples of shape [3, 8, 8]" in result.output
    assert not (model.parent / "r.json").exists()
