"""``eightbit codegen`` through click's runner."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from eightbit.cli import main
from eightbit.cli.codegen import codegen_command, default_name
from eightbit.graph import save_model
from eightbit.plan import plan_path_for
from eightbit.quant import QuantConfig
from tests.export.helpers import quantize
from tests.fixtures.models import conv_bn_relu, random_inputs

if "codegen" not in main.commands:  # until cli/__init__.py registers it
    main.add_command(codegen_command)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, ["codegen", *args])


def _save(folder: Path, config: QuantConfig, stem: str = "net_int8") -> Path:
    model = conv_bn_relu()
    quantized = quantize(model, random_inputs(model, n=8, seed=2), config)
    path = folder / f"{stem}.onnx"
    save_model(quantized.qdq, path)
    quantized.plan.save(plan_path_for(path))
    return path


def test_codegen_writes_the_sources(tmp_path: Path) -> None:
    model = _save(tmp_path, QuantConfig())
    out = tmp_path / "c"
    result = invoke(str(model), "-o", str(out), "--name", "net")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["eightbit_runtime.h", "net.c", "net.h", "net_io.c"]
    assert "int net_run(const uint8_t *input, uint8_t *output);" in (out / "net.h").read_text()
    assert re.search(r"arena: \d+ bytes", result.output)


def test_json_summary_and_default_name(tmp_path: Path) -> None:
    model = _save(tmp_path, QuantConfig(scheme="pow2"))
    result = invoke(str(model), "-o", str(tmp_path / "c"), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["name"] == "net_int8" == default_name(str(model))
    assert summary["inputs"][0]["dtype"] == "int8"
    assert summary["arena_lower_bound"] <= summary["arena_bytes"]
    assert summary["weight_bytes"] > 0 and summary["table_bytes"] >= summary["weight_bytes"]
    assert len(summary["files"]) == 4


@pytest.mark.parametrize(
    ("config", "name", "message"),
    [
        (QuantConfig(exclude=("fc",)), "net", "in float"),
        (QuantConfig(), "3net", "C identifier"),
    ],
)
def test_refusals_exit_2_with_one_line(
    tmp_path: Path, config: QuantConfig, name: str, message: str
) -> None:
    model = _save(tmp_path, config)
    result = invoke(str(model), "-o", str(tmp_path / "c"), "--name", name)
    assert result.exit_code == 2
    assert result.output.startswith("error:") and message in result.output


def test_a_model_without_its_plan_exits_2(tmp_path: Path) -> None:
    model = _save(tmp_path, QuantConfig())
    plan_path_for(model).unlink()
    result = invoke(str(model), "-o", str(tmp_path / "c"))
    assert result.exit_code == 2 and "no plan" in result.output


def test_default_names_are_c_identifiers() -> None:
    assert default_name("models/mobilenet-v2.int8.onnx") == "mobilenet_v2_int8"
    assert default_name("2024_model.onnx") == "n2024_model"
    assert default_name("eb_net.onnx") == "model_eb_net"
