"""The transformers section's rows: the dynamic-mode row appears only when this eightbit's
QuantConfig has a ``mode`` field (issue 16's other half), so the section runs either way."""

from __future__ import annotations

import dataclasses

from benchmarks import run, transformers

from eightbit.quant import QuantConfig


def test_the_section_is_registered() -> None:
    assert "transformers" in run.SECTIONS


def test_the_dynamic_row_follows_the_config_field(monkeypatch) -> None:
    names = [name for name, _ in transformers.tools()]
    has_mode = "mode" in {field.name for field in dataclasses.fields(QuantConfig)}
    assert transformers.has_dynamic_mode() is has_mode
    assert ("eightbit dynamic" in names) is has_mode
    monkeypatch.setattr(transformers, "has_dynamic_mode", lambda: True)
    assert "eightbit dynamic" in [name for name, _ in transformers.tools()]
    monkeypatch.setattr(transformers, "has_dynamic_mode", lambda: False)
    names = [name for name, _ in transformers.tools()]
    assert "eightbit dynamic" not in names
    assert names[0] == "eightbit default" and "NNCF model_type=TRANSFORMER" in names
