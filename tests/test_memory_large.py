"""A model over protobuf's 2 GiB limit quantized end to end by the CLI (issue 20).

Marked ``large``: it writes a 2.3 GB model and takes minutes, so it runs only when asked for
with ``-m large`` (``make bench`` does); ``pytest`` alone skips it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from benchmarks.big_models import LAYER_MB, write_gemm_stack

from eightbit.analysis.metrics import sqnr_db
from eightbit.graph.files import PROTOBUF_LIMIT

ROOT = Path(__file__).resolve().parent.parent
LAYERS = 9  # 9 x 256 MB: past the 2 GiB a single .onnx file can hold
MB = 2**20
# A regression bound on the peak RSS of --preset fast, in units of the float model's file,
# above today's peak (benchmarks/RESULTS.md, section memory): the float model, its QDQ copy
# while it is written, and ONNX Runtime's copy (with Gemm weights pre-packed). Issue 20's
# goal, 1.5x + 1 GB, is not met yet.
PEAK_PER_FILE = 4.5

pytestmark = [pytest.mark.slow, pytest.mark.large]


@pytest.fixture(autouse=True)
def _only_when_selected(request: pytest.FixtureRequest) -> None:
    if "large" not in (request.config.option.markexpr or ""):
        pytest.skip("writes a 2.3 GB model: run with -m large (make bench does)")


def _run(command: list[str], log: Path) -> tuple[int, float, str]:
    """Exit code, peak RSS (MB) and the end of stderr of ``command``."""
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    with log.open("wb") as errors:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss / 1024, log.read_text()[-2000:]


def test_a_model_over_2_gib_quantizes_end_to_end(tmp_path: Path) -> None:
    model = tmp_path / "big.onnx"
    write_gemm_stack(model, LAYERS, seed=0, external=True)
    data_file = model.with_name("big.onnx.data")
    assert data_file.stat().st_size > PROTOBUF_LIMIT
    rng = np.random.default_rng(0)
    samples = rng.standard_normal((40, 8192)).astype(np.float32)
    np.save(tmp_path / "x.npy", samples)
    output = tmp_path / "big_int8.onnx"
    command = [sys.executable, "-m", "eightbit", "quantize", str(model), "--data",
               str(tmp_path / "x.npy"), "-o", str(output), "--preset", "fast"]  # fmt: skip
    code, peak_mb, err = _run(command, tmp_path / "stderr.txt")
    assert code == 0, err
    assert output.exists()
    options = ort.SessionOptions()
    options.add_session_config_entry("session.x64quantprecision", "1")
    feeds = {"input": samples[:8]}
    expected = ort.InferenceSession(str(model), options).run(None, feeds)[0]
    got = ort.InferenceSession(str(output), options).run(None, feeds)[0]
    assert sqnr_db(expected, got) > 20.0
    size_mb = (model.stat().st_size + data_file.stat().st_size) / MB
    assert peak_mb <= PEAK_PER_FILE * size_mb + 1024, f"peak {peak_mb:.0f} MB"
    assert LAYERS * LAYER_MB > PROTOBUF_LIMIT / MB
