"""The transformers section: registered, and one quantized file per row."""

from __future__ import annotations

from benchmarks import run, transformers


def test_the_section_is_registered() -> None:
    assert "transformers" in run.SECTIONS


def test_every_row_writes_its_own_file() -> None:
    names = [name for name, _ in transformers.tools()]
    assert names[0] == "eightbit default" and "NNCF model_type=TRANSFORMER" in names
    assert len({transformers._slug(name) for name in names}) == len(names)
