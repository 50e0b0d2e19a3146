"""``Ranges``: the result of calibration, a plain value that saves, loads and reselects.

JSON holds what the quantizer reads (per tensor: the selected range and the exact observed
extremes); a sidecar ``<stem>.hist.npz`` holds the histograms, so range selection can be
redone later without the model or the data (docs/numerics.md §C.7).
"""

from __future__ import annotations

import difflib
import io
import json
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from eightbit._io import atomic_path, atomic_write_text
from eightbit.calibrate.clipping import select_range
from eightbit.calibrate.config import METHODS, check_choice, check_int, check_percentile
from eightbit.calibrate.histogram import Histogram
from eightbit.errors import ConfigError, DataError

FORMAT = "eightbit.ranges"
VERSION = 1


@dataclass(frozen=True)
class TensorRange:
    """A tensor's selected clipping range and the exact extremes it was chosen from.

    ``min <= max``; zero need not lie inside (the quantizer widens the range to hold it).
    """

    min: float
    max: float
    observed_min: float
    observed_max: float

    def __post_init__(self) -> None:
        values = (self.min, self.max, self.observed_min, self.observed_max)
        if not all(isinstance(v, float) and math.isfinite(v) for v in values):
            raise DataError(f"a tensor range must hold four finite floats (got {values!r})")
        if self.min > self.max or self.observed_min > self.observed_max:
            raise DataError(f"a tensor range must have min <= max (got {values!r})")

    @property
    def width(self) -> float:
        return self.max - self.min


class Ranges(Mapping[str, TensorRange]):
    """Selected ranges of activation tensors, by name, with the histograms they came from.

    ``options`` records the settings (``percentile``, ``bits``, ``bins``); ``samples`` is
    the number of samples observed and ``skipped`` the number left out for NaN/inf.
    Read-only: ``reselect`` and ``merge`` return new values.
    """

    def __init__(
        self,
        method: str,
        tensors: Mapping[str, TensorRange],
        samples: int,
        *,
        skipped: int = 0,
        histograms: Mapping[str, Histogram] | None = None,
        options: Mapping[str, float] | None = None,
    ) -> None:
        check_choice("method", method, METHODS)
        self.method = method
        self.tensors: Mapping[str, TensorRange] = MappingProxyType(dict(tensors))
        self.samples = samples
        self.skipped = skipped
        self._histograms = dict(histograms or {})
        self.options: Mapping[str, float] = MappingProxyType(dict(options or {}))

    # -- Mapping -----------------------------------------------------------------------

    def __getitem__(self, name: str) -> TensorRange:
        try:
            return self.tensors[name]
        except KeyError:
            close = difflib.get_close_matches(name, list(self.tensors), n=3)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
            raise KeyError(f"no range for tensor {name!r}{hint}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def __repr__(self) -> str:
        return f"Ranges(method={self.method!r}, tensors={len(self)}, samples={self.samples})"

    def histogram(self, name: str) -> Histogram | None:
        """The histogram ``name``'s range was selected from; None if only min/max were kept."""
        if name not in self.tensors:
            self[name]  # raises the KeyError with suggestions
        histogram = self._histograms.get(name)
        return None if histogram is None else histogram.copy()

    def widest(self, count: int) -> list[tuple[str, TensorRange]]:
        """The ``count`` tensors with the widest selected ranges, widest first."""
        return sorted(self.tensors.items(), key=lambda item: -item[1].width)[:count]

    # -- new values --------------------------------------------------------------------

    def reselect(
        self, method: str, *, percentile: float | None = None, bits: int | None = None
    ) -> Ranges:
        """Ranges chosen by ``method`` from the stored histograms; the model is not run again.

        ``percentile`` and ``bits`` default to the values this calibration used.
        """
        check_choice("method", method, METHODS)
        options = {**self.options}
        if percentile is not None:
            check_percentile(percentile)
            options["percentile"] = percentile
        if bits is not None:
            check_int("bits", bits, 2, 16)
            options["bits"] = bits
        missing = [name for name in self.tensors if name not in self._histograms]
        if method != "minmax" and missing:
            raise ConfigError(
                f"reselecting with {method!r} needs histograms, but {len(missing)} tensors "
                f"(e.g. {missing[0]!r}) have none (calibrated with {self.method!r}, or the "
                "'.hist.npz' sidecar is missing); calibrate again with a histogram method"
            )
        tensors = {}
        for name, old in self.tensors.items():
            histogram = self._histograms.get(name)
            if histogram is None:  # only reachable for minmax: the exact extremes are stored
                low, high = old.observed_min, old.observed_max
            else:
                low, high = select_range(
                    histogram,
                    method,
                    percentile=float(options.get("percentile", 99.99)),
                    bits=int(options.get("bits", 8)),
                )
            tensors[name] = TensorRange(low, high, old.observed_min, old.observed_max)
        return Ranges(
            method,
            tensors,
            self.samples,
            skipped=self.skipped,
            histograms=self._histograms,
            options=options,
        )

    def extremes(self) -> Ranges:
        """Every tensor's range set to the exact extremes calibration observed (``minmax``),
        histograms kept."""
        tensors = {
            name: TensorRange(r.observed_min, r.observed_max, r.observed_min, r.observed_max)
            for name, r in self.tensors.items()
        }
        return Ranges(
            "minmax",
            tensors,
            self.samples,
            skipped=self.skipped,
            histograms=self._histograms,
            options=self.options,
        )

    def merge(self, other: Ranges) -> Ranges:
        """Ranges of the union of both calibrations' samples (e.g. run on two machines).

        Histograms merge exactly (C.2.3) and extremes by min/max, so this equals one
        calibration over all samples.
        """
        if set(self.tensors) != set(other.tensors):
            different = sorted(set(self.tensors) ^ set(other.tensors))
            raise ConfigError(
                f"cannot merge ranges of different tensors (e.g. {different[0]!r}); "
                "calibrate the same model with the same tensors"
            )
        if self.options.get("bins") != other.options.get("bins"):
            raise ConfigError("cannot merge ranges calibrated with different 'bins'")
        if "moving_average" in self.options or "moving_average" in other.options:
            raise ConfigError("moving averages depend on batch order and cannot be merged")
        union = {}
        for name, mine in self.tensors.items():
            theirs = other.tensors[name]
            low = min(mine.observed_min, theirs.observed_min)
            high = max(mine.observed_max, theirs.observed_max)
            union[name] = TensorRange(low, high, low, high)
        histograms = {}
        if self._histograms or other._histograms or self.method != "minmax":
            for name in self.tensors:
                mine_h, theirs_h = self._histograms.get(name), other._histograms.get(name)
                if mine_h is None or theirs_h is None:
                    raise ConfigError(
                        f"cannot merge: tensor {name!r} has a histogram on one side only"
                    )
                histograms[name] = mine_h.merge(theirs_h)
        merged = Ranges(
            self.method,
            union,
            self.samples + other.samples,
            skipped=self.skipped + other.skipped,
            histograms=histograms,
            options=self.options,
        )
        return merged if not histograms else merged.reselect(self.method)

    # -- files -------------------------------------------------------------------------

    @staticmethod
    def sidecar_path(path: str | os.PathLike[str]) -> Path:
        """Where the histograms of ranges saved at ``path`` go: ``<stem>.hist.npz``."""
        json_path = Path(path)
        return json_path.with_name(f"{json_path.stem}.hist.npz")

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write ``path`` (JSON) and, when there are histograms, its sidecar; both atomically."""
        sidecar = self.sidecar_path(path)
        document: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "method": self.method,
            "options": dict(self.options),
            "samples": self.samples,
            "skipped": self.skipped,
            "histograms": sidecar.name if self._histograms else None,
            "tensors": {name: asdict(value) for name, value in self.tensors.items()},
        }
        if self._histograms:
            with atomic_path(sidecar) as temporary:
                temporary.write_bytes(_histograms_npz(self._histograms))
        atomic_write_text(path, json.dumps(document, indent=1, allow_nan=False) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Ranges:
        """Read ranges saved by ``save``; histograms come back when the sidecar is present."""
        json_path = Path(path)
        try:
            document = json.loads(json_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"ranges file {str(path)!r} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError(f"cannot read ranges file {str(path)!r}: {error}") from None
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise DataError(
                f'{str(path)!r} is not an eightbit ranges file (no "format": {FORMAT!r}); '
                "create one with `eightbit calibrate`"
            )
        if document.get("version") != VERSION:
            raise DataError(
                f"ranges file {str(path)!r} has version {document.get('version')!r}; "
                f"this eightbit reads version {VERSION}"
            )
        try:
            tensors = {
                str(name): _tensor_range(str(name), fields, path)
                for name, fields in document["tensors"].items()
            }
            method, samples = str(document["method"]), int(document["samples"])
            skipped = int(document.get("skipped", 0))
            options = {str(k): v for k, v in dict(document.get("options") or {}).items()}
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise DataError(f"ranges file {str(path)!r} is malformed: {error!r}") from None
        histograms = {}
        if document.get("histograms"):
            sidecar = json_path.with_name(str(document["histograms"]))
            if sidecar.exists():
                histograms = _read_histograms_npz(sidecar, int(options.get("bins", 2048)))
        return cls(
            method, tensors, samples, skipped=skipped, histograms=histograms, options=options
        )


# Activations are float32: a range past it cannot be a range the model computes.
_FLOAT32_MAX = float(np.finfo(np.float32).max)


def _tensor_range(
    name: str, fields: Mapping[str, Any], path: str | os.PathLike[str]
) -> TensorRange:
    """One tensor's range from a ranges file; a bad one is refused by the tensor's name."""
    where = f"tensor {name!r} in ranges file {str(path)!r}"
    try:
        chosen = TensorRange(**{key: float(v) for key, v in fields.items()})
    except DataError as error:
        raise DataError(f"{where}: {error}") from None
    widest = max(
        abs(chosen.min), abs(chosen.max), abs(chosen.observed_min), abs(chosen.observed_max)
    )
    if widest > _FLOAT32_MAX:
        raise DataError(
            f"{where} reaches {widest:.4g}, past float32's range (±{_FLOAT32_MAX:.4g}); "
            "calibrate again with `eightbit calibrate`"
        )
    return chosen


def _histograms_npz(histograms: Mapping[str, Histogram]) -> bytes:
    """One npz of plain arrays (no pickles): per-histogram fields plus concatenated counts."""
    items = list(histograms.items())
    buffer = io.BytesIO()
    np.savez(
        buffer,
        names=np.array([name for name, _ in items], dtype=str),
        bins=np.array([h.bins for _, h in items], dtype=np.int64),
        exponents=np.array([h.exponent for _, h in items], dtype=np.int64),
        offsets=np.array([h.offset for _, h in items], dtype=np.int64),
        minimums=np.array([h.min for _, h in items], dtype=np.float64),
        maximums=np.array([h.max for _, h in items], dtype=np.float64),
        lengths=np.array([h.counts.size for _, h in items], dtype=np.int64),
        counts=np.concatenate([h.counts for _, h in items] or [np.zeros(0, np.int64)]),
    )
    return buffer.getvalue()


def _read_histograms_npz(path: Path, default_bins: int) -> dict[str, Histogram]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            fields = {key: archive[key] for key in archive.files}
        names = [str(name) for name in fields["names"]]
        bins = fields.get("bins", np.full(len(names), default_bins))
        splits = np.cumsum(fields["lengths"])[:-1]
        counts = np.split(fields["counts"], splits) if names else []
        return {
            name: Histogram.from_state(
                bins=int(bins[i]),
                exponent=int(fields["exponents"][i]),
                offset=int(fields["offsets"][i]),
                counts=counts[i],
                minimum=float(fields["minimums"][i]),
                maximum=float(fields["maximums"][i]),
            )
            for i, name in enumerate(names)
        }
    except (OSError, KeyError, ValueError, IndexError) as error:
        raise DataError(f"cannot read histograms from {str(path)!r}: {error}") from None
