"""What every improvement step reports: its name, its time, and what it gained.

The steps of ``eightbit.improve`` (equalization, range refinement, learned rounding,
reconstruction, bias correction, accuracy-aware fallback) and the pipeline's own (the
space-to-depth stem, the safety net) are functions between plain values; each returns its
result and a ``StepReport``. This module sits beside ``eightbit.plan``, below the steps
(docs/design.md). The plan records the reports of
the steps that ran (``QuantPlan.steps``), so a user can see what each step cost and what it
bought.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eightbit.errors import ConfigError
from eightbit.serialize import check_fields, field_names, to_dict


@dataclass(frozen=True)
class LayerGain:
    """SQNR (dB) of one layer's output against float, before and after a step."""

    layer: str
    before_db: float
    after_db: float

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerGain:
        fields = field_names(cls)
        check_fields("a layer gain", data, fields, fields)
        if not isinstance(data["layer"], str):
            raise ConfigError(f"a layer gain's 'layer' must be a string (got {data['layer']!r})")
        return cls(
            layer=data["layer"],
            before_db=_float_of(data["before_db"], "before_db"),
            after_db=_float_of(data["after_db"], "after_db"),
        )


@dataclass(frozen=True)
class StepReport:
    """One step that ran: how long it took and the output SQNR before and after it.

    ``before_db``/``after_db``: SQNR of the first model output, int8 against float, on the
    samples the step measured on (None when it did not measure). ``layers``: per-layer
    gains, when the step measures layers. ``notes``: what a person should know, e.g.
    ``"12 pairs equalized"`` or ``"reverted: output SQNR fell"``.
    """

    name: str
    seconds: float
    before_db: float | None
    after_db: float | None
    layers: tuple[LayerGain, ...] = ()
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"a step's 'name' must be a non-empty string (got {self.name!r})")
        object.__setattr__(self, "layers", tuple(self.layers))
        object.__setattr__(self, "notes", tuple(self.notes))

    @property
    def gain_db(self) -> float | None:
        """``after_db - before_db``, when both were measured."""
        if self.before_db is None or self.after_db is None:
            return None
        return self.after_db - self.before_db

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StepReport:
        data = check_fields("a plan step", data, field_names(cls), ("name", "seconds"))
        notes = data.get("notes", [])
        if not isinstance(notes, list | tuple) or not all(isinstance(n, str) for n in notes):
            raise ConfigError(f"a plan step's 'notes' must be a list of strings (got {notes!r})")
        layers = data.get("layers", [])
        if not isinstance(layers, list | tuple):
            raise ConfigError(f"a plan step's 'layers' must be a list (got {layers!r})")
        before, after = data.get("before_db"), data.get("after_db")
        return cls(
            name=data["name"],
            seconds=_float_of(data["seconds"], "seconds"),
            before_db=None if before is None else _float_of(before, "before_db"),
            after_db=None if after is None else _float_of(after, "after_db"),
            layers=tuple(LayerGain.from_dict(layer) for layer in layers),
            notes=tuple(notes),
        )


def _float_of(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"a plan step's {name!r} must be a number (got {value!r})")
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"a plan step's {name!r} must be a number (got {value!r})") from None
