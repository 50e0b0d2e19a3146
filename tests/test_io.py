"""Safe output (``eightbit._io``): checks before work, and outputs all or none."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from eightbit._io import all_or_nothing, atomic_write_text, check_outputs, output_folder
from eightbit.errors import ConfigError


def test_outputs_of_a_failed_block_are_all_removed(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("old a\n")
    with pytest.raises(RuntimeError), all_or_nothing():
        atomic_write_text(tmp_path / "a.txt", "new a\n")
        folder = output_folder(tmp_path / "new" / "deeper")
        atomic_write_text(folder / "b.txt", "b\n")
        raise RuntimeError("the third output failed")
    assert sorted(os.listdir(tmp_path)) == ["a.txt"]  # no temporaries, no new folders
    assert (tmp_path / "a.txt").read_text() == "old a\n"


def test_outputs_of_a_block_appear_together_at_its_end(tmp_path: Path) -> None:
    with all_or_nothing():
        atomic_write_text(tmp_path / "a.txt", "a\n")
        assert not (tmp_path / "a.txt").exists()  # held until the block succeeds
        atomic_write_text(tmp_path / "b.txt", "b\n")
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt"]


def test_check_outputs_compares_real_paths(tmp_path: Path) -> None:
    data = tmp_path / "data.npz"
    data.write_bytes(b"x")
    (tmp_path / "link.npz").symlink_to(data)
    (tmp_path / "sub").mkdir()
    for output in (tmp_path / "link.npz", tmp_path / "sub" / ".." / "data.npz"):
        with pytest.raises(ConfigError, match="is the input file"):
            check_outputs([data], files=[output])
    with pytest.raises(ConfigError, match="holds the input"):
        check_outputs([data], folders=[tmp_path])
    check_outputs([data], files=[tmp_path / "new" / "x.c"], folders=[tmp_path / "new"])


def test_a_models_external_data_is_an_input(tmp_path: Path) -> None:
    from eightbit.cli.options import model_files

    model = tmp_path / "big.onnx"
    model.write_bytes(b"m")
    assert model_files(str(model)) == [str(model)]
    (tmp_path / "big.onnx.data").write_bytes(b"w")
    with pytest.raises(ConfigError, match="is the input file"):
        check_outputs(model_files(str(model)), files=[tmp_path / "big.onnx.data"])
