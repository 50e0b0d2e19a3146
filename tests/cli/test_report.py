"""``eightbit report`` through click's runner: the page is written; bad input exits 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from eightbit.cli import _Group
from eightbit.cli.report import report_command
from tests.analysis.helpers import Files, write_files


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    return write_files(tmp_path_factory.mktemp("report"))


def run(*args: str | Path) -> Result:
    group = _Group()
    group.add_command(report_command)
    return CliRunner().invoke(group, ["report", *map(str, args)])


def test_writes_the_page_with_the_plan_path_for(files: Files, tmp_path: Path) -> None:
    output = tmp_path / "report.html"
    result = run(
        files.float_model, files.int8_model, "--data", files.data, "--labels", files.labels,
        "-o", output, "--title", "CI <run>", "--latency-runs", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    # the quantized input, conv1, conv2, add, pool, flatten, fc (both Relus folded)
    assert result.stdout.startswith(f"wrote {output}: 7 layers, parameters")
    page = output.read_text(encoding="utf-8")
    assert "<title>CI &lt;run&gt;</title>" in page
    assert "folded into conv1" in page  # decisions from int8.plan.json beside the model
    assert "latency (1 thread, batch 1)" in page


def test_refuses_to_overwrite_an_input(files: Files) -> None:
    result = run(files.float_model, files.int8_model, "--data", files.data, "-o", files.int8_model)
    assert result.exit_code == 2
    assert "is the input file" in result.stderr


def test_missing_data_exits_2(files: Files, tmp_path: Path) -> None:
    result = run(
        files.float_model, files.int8_model, "--data", tmp_path / "none.npz", "-o",
        tmp_path / "r.html",
    )  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.startswith("error: data path")
    assert not (tmp_path / "r.html").exists()
