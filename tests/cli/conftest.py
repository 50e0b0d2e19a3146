"""One workspace of inputs for the bad-input suites: the demo model, quantized once per session."""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from eightbit.cli import main
from eightbit.graph import save_model
from tests.fixtures import models

DEMO_MODEL = Path(__file__).resolve().parents[2] / "examples" / "mnist" / "mnist_cnn.onnx"
SAMPLES = 24


@dataclass(frozen=True)
class Workspace:
    """Input files every bad-input case may read (and must leave as they were)."""

    folder: Path

    def __truediv__(self, name: str) -> Path:
        return self.folder / name

    def digests(self) -> dict[str, str]:
        """sha256 of every file under the workspace, by relative path (folders included)."""
        return {
            str(path.relative_to(self.folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            if path.is_file()
            else "folder"
            for path in sorted(self.folder.rglob("*"))
        }


def _quantize(model: Path, data: Path, output: Path, *extra: str) -> None:
    args = ["quantize", str(model), "-d", str(data), "-o", str(output), "--preset", "fast"]
    result = CliRunner().invoke(main, [*args, "--json", *extra])
    assert result.exit_code == 0, result.output


@pytest.fixture(scope="session")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    ws = Workspace(tmp_path_factory.mktemp("inputs"))
    shutil.copy(DEMO_MODEL, ws / "mnist_cnn.onnx")
    images = np.random.default_rng(0).random((SAMPLES, 1, 28, 28), dtype=np.float32)
    np.savez(ws / "test.npz", image=images)
    (ws / "data").mkdir()
    np.save(ws / "data" / "image.npy", images)
    np.save(ws / "labels.npy", np.arange(SAMPLES) % 10)
    np.save(ws / "labels_99.npy", np.full(SAMPLES, 99))
    np.save(ws / "labels_minus1.npy", np.full(SAMPLES, -1))
    np.save(ws / "constant.npy", np.repeat(images[:1], SAMPLES, axis=0))
    np.save(ws / "huge.npy", images.astype(np.float64) * 1e300)
    with_nan = images.copy()
    with_nan[3, 0, 0, 0] = np.nan
    np.save(ws / "nan.npy", with_nan)
    np.save(ws / "empty.npy", images[:0])
    np.save(ws / "scalar.npy", np.array(16000))  # a sample rate, as for a model's scalar input
    np.save(ws / "wrong_shape.npy", images[:, :, :20, :20])
    np.savez(ws / "wrong_name.npz", pixels=images)
    (ws / "corrupt_images" / "0").mkdir(parents=True)
    (ws / "corrupt_images" / "0" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (ws / "empty.onnx").write_bytes(b"")
    demo = DEMO_MODEL.read_bytes()
    (ws / "truncated.onnx").write_bytes(demo[: len(demo) // 2])
    (ws / "random.onnx").write_bytes(np.random.default_rng(1).bytes(4096))
    (ws / "binary.plan.json").write_bytes(np.random.default_rng(2).bytes(300))
    _quantize(ws / "mnist_cnn.onnx", ws / "test.npz", ws / "q.onnx")
    # Another model's plan, and a model with a node kept in float (Softmax).
    other = models.opset12_model()
    save_model(other, ws / "other.onnx")
    np.savez(ws / "other.npz", **models.random_inputs(other, n=SAMPLES, seed=1))
    _quantize(ws / "other.onnx", ws / "other.npz", ws / "other_q.onnx")
    (ws / "p.json").write_bytes((ws / "q.plan.json").read_bytes())
    _calibrate_ranges_with_a_huge_max(ws)
    (ws / "link.plan.json").symlink_to(ws / "q.plan.json")
    return ws


def _calibrate_ranges_with_a_huge_max(ws: Workspace) -> None:
    import json

    args = ["calibrate", str(ws / "mnist_cnn.onnx"), "-d", str(ws / "test.npz")]
    result = CliRunner().invoke(main, [*args, "-o", str(ws / "r.json"), "--method", "minmax"])
    assert result.exit_code == 0, result.output
    document = json.loads((ws / "r.json").read_text())
    name = sorted(document["tensors"])[0]
    document["tensors"][name].update(max=1e300, observed_max=1e300)
    (ws / "huge_ranges.json").write_text(json.dumps(document))
    (ws / "r.json").unlink()
