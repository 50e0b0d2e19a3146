"""The fallback's budget (``Budget``) and what one int8 model measured against it (``Measured``).

docs/numerics.md §R.7. The limits are checked once, here: ``check_limits`` for the numbers
an ``ImproveConfig`` carries (``max_drop``, ``min_sqnr``, ``max_latency``), ``Budget`` for
the whole budget (the numbers, a user metric, and that one goal is given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import onnx

from eightbit.analysis.outputs import Metric
from eightbit.errors import ConfigError
from eightbit.validators import require_at_least_zero, require_finite, require_positive

# Slack when comparing a measured fraction with a budget given in decimal: 1 - 0.05 must
# accept an agreement of 380/400 although the two floats differ in the last bit.
_SLACK = 1e-9


def check_limits(max_drop: float | None, min_sqnr: float | None, max_latency: float | None) -> None:
    """Each limit that is given is a number in its domain (ConfigError naming it if not)."""
    if max_drop is not None:
        example = ", e.g. 0.01 for one point of top-1 agreement"
        require_at_least_zero("max_drop", max_drop, example)
    if min_sqnr is not None:
        require_finite("min_sqnr", min_sqnr, " of dB")
    if max_latency is not None:
        example = " of int8 to float latency, e.g. 0.6"
        require_positive("max_latency", max_latency, "a ratio", example)


@dataclass(frozen=True)
class Budget:
    """What the int8 model must keep of the float model's behaviour (§R.7).

    ``max_drop``: largest drop of top-1 agreement (a fraction: 0.01 is one point), or of
    ``metric(float_output, int8_output)`` (higher is better) from ``metric(f, f)`` when a
    metric is given. ``min_sqnr``: smallest SQNR of the first output, in dB. Every given
    condition must hold. ``max_latency``: the largest int8/float latency ratio the model
    may reach (one thread, batch 1): a limit on the search, not a goal (R.9).
    """

    max_drop: float | None = None
    min_sqnr: float | None = None
    metric: Metric | None = None
    max_latency: float | None = None

    def __post_init__(self) -> None:
        if self.max_drop is None and self.min_sqnr is None:
            raise ConfigError("a fallback budget needs 'max_drop' or 'min_sqnr' (or both)")
        check_limits(self.max_drop, self.min_sqnr, self.max_latency)
        if self.max_drop is not None and self.metric is None and self.max_drop > 1:
            raise ConfigError(
                f"'max_drop' is a fraction of top-1 agreement in [0, 1] (got "
                f"{self.max_drop!r}); for 2 points write 0.02"
            )
        if self.metric is not None:
            if not callable(self.metric):
                raise ConfigError(f"'metric' must be callable (got {type(self.metric).__name__})")
            if self.max_drop is None:
                raise ConfigError("a fallback 'metric' needs 'max_drop', the drop it may take")

    def describe(self) -> str:
        parts = []
        if self.max_drop is not None:
            what = "metric" if self.metric is not None else "top-1 agreement"
            parts.append(f"{what} drop <= {self.max_drop:g}")
        if self.min_sqnr is not None:
            parts.append(f"SQNR >= {self.min_sqnr:g} dB")
        text = " and ".join(parts)
        if self.max_latency is not None:
            text += f", int8 latency <= {self.max_latency:g}x float"
        return text


@dataclass(frozen=True)
class Measured:
    """The first output of one int8 model against the float model (None: not measurable)."""

    sqnr_db: float
    agreement: float | None
    metric_drop: float | None = None

    def meets(self, budget: Budget) -> bool:
        if budget.min_sqnr is not None and not self.sqnr_db >= budget.min_sqnr - _SLACK:
            return False
        if budget.max_drop is None:
            return True
        if budget.metric is not None:
            return self.metric_drop is not None and self.metric_drop <= budget.max_drop + _SLACK
        if self.agreement is None:
            raise ConfigError(
                "'max_drop' without a metric is a drop of top-1 agreement, which needs a "
                "classification output of shape (samples, classes); give a metric or 'min_sqnr'"
            )
        return 1.0 - self.agreement <= budget.max_drop + _SLACK

    def describe(self) -> str:
        parts = [f"SQNR {self.sqnr_db:.2f} dB"]
        if self.agreement is not None:
            parts.append(f"top-1 agreement {self.agreement:.4f}")
        if self.metric_drop is not None:
            parts.append(f"metric drop {self.metric_drop:.4g}")
        return ", ".join(parts)


class Score(Protocol):
    """Measures one int8 model for a budget (``OutputReference`` is one); ``samples``: on
    how many samples it measures."""

    samples: int

    def __call__(self, quantized_model: onnx.ModelProto) -> Measured: ...
