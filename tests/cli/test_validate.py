"""``eightbit validate`` through click's runner: tables, JSON, exit 0/1/2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from PIL import Image

from eightbit.analysis.latency import Latency
from eightbit.cli import _Group
from eightbit.cli.validate import validate_command
from eightbit.graph import save_model
from tests.analysis.helpers import Files, classifier, images, quantize, write_files


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return write_files(tmp_path_factory.mktemp("validate"))


def run(*args: str | Path) -> Result:
    group = _Group()  # the real group: EightbitError becomes one line and exit 2
    group.add_command(validate_command)
    return CliRunner().invoke(group, ["validate", *map(str, args)])


def test_tables_and_exit_0(files: Files) -> None:
    result = run(
        files.float_model, files.int8_model, "--data", files.data, "--labels", files.labels
    )
    assert result.exit_code == 0, result.output
    for text in ("outputs, float vs int8 (24 samples)", "worst layers", "what if", "parameters:"):
        assert text in result.stdout
    assert "thresholds" not in result.stdout


def test_json_with_thresholds_met(files: Files) -> None:
    result = run(
        files.float_model,
        files.int8_model,
        "--data",
        files.data,
        "--labels",
        files.labels,
        "--min-agreement",
        "0.5",
        "--min-sqnr",
        "10",
        "--json",
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["thresholds"] == {
        "min_agreement": 0.5,
        "min_sqnr": 10.0,
        "passed": True,
        "failures": [],
    }
    (output,) = payload["outputs"]
    assert output["name"] == "logits" and output["float_accuracy"] is not None
    assert payload["samples"] == 24 and payload["layers"]["worst"]


def test_threshold_not_met_exits_1(files: Files) -> None:
    result = run(files.float_model, files.int8_model, "--data", files.data, "--min-sqnr", "200")
    assert result.exit_code == 1, result.output
    assert "FAILED: output 'logits': SQNR" in result.stdout
    result = run(
        files.float_model, files.int8_model, "--data", files.data, "--no-layers", "--json",
        "--min-sqnr", "200",
    )  # fmt: skip
    assert result.exit_code == 1
    assert json.loads(result.stdout)["thresholds"]["passed"] is False


def test_bad_input_exits_2_with_one_line(files: Files, tmp_path: Path) -> None:
    np.save(tmp_path / "short.npy", np.zeros(5, dtype=np.int64))
    result = run(
        files.float_model,
        files.int8_model,
        "--data",
        files.data,
        "--labels",
        tmp_path / "short.npy",
    )
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: 5 labels for 24 samples; give one label per sample, in the order of the data"
    )
    other = tmp_path / "other_int8.onnx"
    save_model(quantize(classifier(seed=2, classes=4), images(16)).qdq, other)
    result = run(files.float_model, other, "--data", files.data)
    assert result.exit_code == 2 and result.stderr.startswith("error: output 'logits' is")
    result = run(files.float_model, files.int8_model, "--data", files.data, "--min-agreement", "99")
    assert result.exit_code == 2 and "0<=x<=1" in result.output


def test_image_folder_with_class_folders_as_labels(files: Files, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for index in range(6):
        folder = tmp_path / "images" / str(index % 3)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{index}.png")
    folder = tmp_path / "images"
    result = run(
        files.float_model, files.int8_model, "--data", folder, "--labels", folder,
        "--mean", "0.5", "--std", "0.25", "--no-layers", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    (output,) = json.loads(result.stdout)["outputs"]
    assert output["samples"] == 6 and output["float_accuracy"] is not None


@pytest.mark.parametrize("saturates", [True, False])
def test_a_cpu_whose_default_int8_kernels_saturate_gets_a_note(
    files: Files, monkeypatch: pytest.MonkeyPatch, saturates: bool
) -> None:
    monkeypatch.setattr("eightbit.graph.session.default_int8_kernels_saturate", lambda: saturates)
    args = (files.float_model, files.int8_model, "--data", files.data, "--no-layers")
    text, payload = run(*args), json.loads(run(*args, "--json").stdout)
    assert ("session.x64quantprecision=1" in text.stdout) == saturates
    assert (payload["runtime_note"] is not None) == saturates


def test_int8_slower_than_float_is_printed_as_a_warning(
    files: Files, monkeypatch: pytest.MonkeyPatch
) -> None:
    slower = Latency(float_ms=0.055, int8_ms=0.079, runs=2)
    module = sys.modules["eightbit.analysis.validate"]  # the package names its function so
    monkeypatch.setattr(module, "measure_latency", lambda *a, **k: slower)
    args = (files.float_model, files.int8_model, "--data", files.data, "--no-layers")
    result = run(*args, "--latency-runs", "2", "--min-sqnr", "0")
    assert result.exit_code == 0, result.output  # a warning fails no threshold
    assert "WARNING: int8 runs slower than float here: 1.44x" in result.stdout
    assert "ERROR" not in result.stdout
