"""Output metrics float vs int8, accumulated batch by batch (§A.1), slice by slice (§A.9).

``OutputTally`` keeps fixed-size sums and integer counts per graph output; ``OutputMetrics``
is the frozen result. User metrics (MATLAB's MetricFcn) see the whole outputs, so only
when one is given are the outputs kept.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from eightbit.analysis.labels import check_label_classes
from eightbit.analysis.metrics import ErrorSums, correct_predictions, json_number, topk_hits
from eightbit.analysis.slices import Part, Probability, SliceSums, SliceVerdict
from eightbit.errors import ConfigError, DataError

Metric = Callable[[np.ndarray, np.ndarray], float]
# Top-5 of five classes or fewer is 1 by definition; it is reported above this.
TOP5_MIN_CLASSES = 6


@dataclass(frozen=True)
class OutputMetrics:
    """Float vs int8 on one graph output; agreement and accuracy for classification outputs."""

    name: str
    samples: int
    sqnr_db: float
    cosine: float
    max_abs_error: float
    top1_agreement: float | None = None
    top5_agreement: float | None = None
    float_accuracy: float | None = None
    int8_accuracy: float | None = None
    custom: Mapping[str, float] = field(default_factory=dict)
    slices: SliceVerdict | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "custom", MappingProxyType(dict(self.custom)))

    @property
    def is_classification(self) -> bool:
        return self.top1_agreement is not None

    @property
    def worst_slice_sqnr_db(self) -> float | None:
        """The worst slice's SQNR (§A.9); None for an output with no axis but the samples."""
        return None if self.slices is None else self.slices.worst_sqnr_db

    @property
    def collapsed(self) -> bool:
        """True when a slice or part of this output carries no signal in int8 (§A.9)."""
        return self.slices is not None and self.slices.has_collapse

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "samples": self.samples,
            "sqnr_db": json_number(self.sqnr_db),
            "cosine": self.cosine,
            "max_abs_error": self.max_abs_error,
            "top1_agreement": self.top1_agreement,
            "top5_agreement": self.top5_agreement,
            "float_accuracy": self.float_accuracy,
            "int8_accuracy": self.int8_accuracy,
            "custom": {name: json_number(value) for name, value in self.custom.items()},
            "worst_slice_sqnr_db": json_number(self.worst_slice_sqnr_db),
            "collapsed": self.collapsed,
            "slices": None if self.slices is None else self.slices.to_dict(),
        }


def named_metrics(metric: Metric | Mapping[str, Metric] | None) -> dict[str, Metric]:
    """User metrics by name: a mapping as given, a lone callable under its ``__name__``."""
    if metric is None:
        return {}
    if isinstance(metric, Mapping):
        metrics = dict(metric)
    elif callable(metric):
        metrics = {getattr(metric, "__name__", "metric"): metric}
    else:
        raise ConfigError(
            f"'metric' must be a callable metric(float_output, int8_output) -> float, or a "
            f"mapping of names to such callables (got {type(metric).__name__})"
        )
    for name, function in metrics.items():
        if not callable(function):
            raise ConfigError(f"metric {name!r} is not callable (got {type(function).__name__})")
    return metrics


class OutputTally:
    """Sums and counts for one output over every batch; ``keep`` holds the outputs too."""

    def __init__(
        self,
        name: str,
        *,
        keep: bool = False,
        parts: tuple[Part, ...] = (),
        probabilities: tuple[Probability, ...] = (),
        spatial: tuple[int, ...] = (),
    ) -> None:
        self.name = name
        self.errors = ErrorSums()
        self.slice_sums = SliceSums()
        self.parts = parts
        self.probabilities = probabilities
        self.spatial = spatial
        self.samples = 0
        self.classes: int | None = None
        self.top1 = self.top5 = self.float_correct = self.int8_correct = 0
        self.labelled = False
        self._kept: list[tuple[np.ndarray, np.ndarray]] | None = [] if keep else None

    def update(
        self, reference: np.ndarray, quantized: np.ndarray, labels: np.ndarray | None = None
    ) -> None:
        self.errors.update(reference, quantized)
        self.slice_sums.update(reference, quantized)
        count = reference.shape[0] if reference.ndim else 1
        if self.samples == 0:
            self.classes = _classes(reference)
        self.samples += count
        if self.classes is not None:
            self.top1 += int(np.count_nonzero(topk_hits(reference, quantized, 1)))
            self.top5 += int(np.count_nonzero(topk_hits(reference, quantized, 5)))
            if labels is not None:
                check_label_classes(labels, self.classes, self.name)
                self.labelled = True
                self.float_correct += int(np.count_nonzero(correct_predictions(reference, labels)))
                self.int8_correct += int(np.count_nonzero(correct_predictions(quantized, labels)))
        if self._kept is not None:
            self._kept.append((np.asarray(reference), np.asarray(quantized)))

    def merge(self, batch: OutputTally) -> None:
        """Fold in the tally of one later batch: the same bits as ``update`` on it (§S.2)."""
        self.errors.merge(batch.errors)
        self.slice_sums.merge(batch.slice_sums)
        if self.samples == 0:
            self.classes = batch.classes
        self.samples += batch.samples
        self.top1 += batch.top1
        self.top5 += batch.top5
        self.float_correct += batch.float_correct
        self.int8_correct += batch.int8_correct
        self.labelled = self.labelled or batch.labelled
        if self._kept is not None and batch._kept is not None:
            self._kept.extend(batch._kept)

    def result(self, metrics: Mapping[str, Metric] | None = None) -> OutputMetrics:
        if self.samples == 0:
            raise DataError(f"no samples reached output {self.name!r}")
        classification = self.classes is not None
        top5 = classification and (self.classes or 0) >= TOP5_MIN_CLASSES
        return OutputMetrics(
            name=self.name,
            samples=self.samples,
            sqnr_db=self.errors.sqnr_db,
            cosine=self.errors.cosine,
            max_abs_error=self.errors.max_abs,
            top1_agreement=self.top1 / self.samples if classification else None,
            top5_agreement=self.top5 / self.samples if top5 else None,
            float_accuracy=self.float_correct / self.samples if self.labelled else None,
            int8_accuracy=self.int8_correct / self.samples if self.labelled else None,
            custom=self._custom(metrics or {}),
            slices=self.slice_sums.verdict(self.parts, self.probabilities, self.spatial),
        )

    def _custom(self, metrics: Mapping[str, Metric]) -> dict[str, float]:
        if not metrics or not self._kept:
            return {}
        reference = np.concatenate([pair[0] for pair in self._kept])
        quantized = np.concatenate([pair[1] for pair in self._kept])
        values = {}
        for name, function in metrics.items():
            value = function(reference, quantized)
            try:
                values[name] = float(value)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"metric {name!r} returned {type(value).__name__} {value!r}; "
                    "a metric must return one number"
                ) from None
        return values


def _classes(reference: np.ndarray) -> int | None:
    """The class count of a (samples, classes) output with two classes or more, else None."""
    if reference.ndim == 2 and reference.shape[1] >= 2:
        return int(reference.shape[1])
    return None
