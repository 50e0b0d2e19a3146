"""``eightbit run`` through click's runner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from eightbit.cli import main
from eightbit.cli.run import run as run_command
from eightbit.engine import run
from eightbit.graph import save_model
from eightbit.plan import QuantPlan, plan_path_for
from eightbit.quant import QuantConfig
from tests.export.helpers import quantize
from tests.fixtures.models import conv_bn_relu, random_inputs

if "run" not in main.commands:  # until cli/__init__.py registers it
    main.add_command(run_command)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, ["run", *args])


Saved = tuple[Path, Path, dict[str, np.ndarray]]  # model, data, feeds


def _save(folder: Path, config: QuantConfig, name: str = "net_int8") -> Saved:
    model = conv_bn_relu()
    feeds = random_inputs(model, n=20, seed=11)
    quantized = quantize(model, feeds, config)
    path = folder / f"{name}.onnx"
    save_model(quantized.qdq, path)
    quantized.plan.save(plan_path_for(path))
    data = folder / "data.npz"
    np.savez(data, input=feeds["input"])
    return path, data, feeds


@pytest.fixture(params=["affine", "pow2"])
def saved(request: pytest.FixtureRequest, tmp_path: Path) -> Saved:
    return _save(tmp_path, QuantConfig(scheme=request.param))


def test_run_writes_the_engine_outputs(saved: Saved, tmp_path: Path) -> None:
    model, data, feeds = saved
    out = tmp_path / "out.npz"
    result = invoke(str(model), "--data", str(data), "-o", str(out), "--batch-size", "7")
    assert result.exit_code == 0, result.output
    assert "integer only" in result.stdout
    with np.load(out) as written:
        np.testing.assert_array_equal(written["logits"], run(model, feeds)["logits"])


def test_onnxruntime_engine_is_within_one_lsb(saved: Saved, tmp_path: Path) -> None:
    model, data, _ = saved
    engine, ort = tmp_path / "engine.npz", tmp_path / "ort.npz"
    assert invoke(str(model), "--data", str(data), "-o", str(engine)).exit_code == 0
    result = invoke(str(model), "--data", str(data), "-o", str(ort), "--engine", "onnxruntime")
    assert result.exit_code == 0, result.output
    lsb = float(QuantPlan.load(plan_path_for(model)).tensors["logits"].scale)
    with np.load(engine) as ours, np.load(ort) as theirs:
        assert np.max(np.abs(ours["logits"] - theirs["logits"])) <= lsb * (1 + 1e-5)


def test_dump_dir_and_json_summary(saved: Saved, tmp_path: Path) -> None:
    model, data, _ = saved
    dump = tmp_path / "dump"
    out = tmp_path / "out.npz"
    args = ["--data", str(data), "-o", str(out), "--dump-dir", str(dump), "--json"]
    result = invoke(str(model), *args, "--samples", "5")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["samples"] == 5 and summary["float_nodes"] == []
    assert summary["outputs"] == {"logits": [5, 3]}
    formats = json.loads((dump / "formats.json").read_text())["tensors"]
    stored = np.load(dump / formats["input"]["file"])
    assert stored.shape == (5, 3, 8, 8)
    pow2 = formats["input"]["fraction_length"] is not None
    assert pow2 == (formats["input"]["dtype"] == "int8" and formats["input"]["zero_point"] == 0)


def test_strict_integer_refuses_float_nodes(tmp_path: Path) -> None:
    model, data, _ = _save(tmp_path, QuantConfig(exclude=("fc",)))
    listed = invoke(str(model), "--data", str(data), "-o", str(tmp_path / "listed.npz"))
    assert listed.exit_code == 0, listed.output
    assert "fc" in listed.stdout and "exclude" in listed.stdout
    refused_out = tmp_path / "refused.npz"
    refused = invoke(str(model), "--data", str(data), "-o", str(refused_out), "--strict-integer")
    assert refused.exit_code == 2
    assert "fc (Gemm)" in refused.output
    assert not refused_out.exists()


def test_bad_usage_exits_2(saved: Saved, tmp_path: Path) -> None:
    model, data, _ = saved
    same = invoke(str(model), "--data", str(data), "-o", str(data))
    assert same.exit_code == 2 and "input file" in same.output
    no_dump = invoke(
        str(model),
        "--data",
        str(data),
        "-o",
        str(tmp_path / "o.npz"),
        "--engine",
        "onnxruntime",
        "--dump-dir",
        str(tmp_path / "d"),
    )
    assert no_dump.exit_code == 2 and "--engine integer" in no_dump.output
    plan_path_for(model).unlink()
    missing = invoke(str(model), "--data", str(data), "-o", str(tmp_path / "o.npz"))
    assert missing.exit_code == 2 and "net_int8.plan.json" in missing.output
