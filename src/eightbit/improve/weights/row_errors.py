"""What the weight-choosing steps (learned rounding, reconstruction) report per layer."""

from __future__ import annotations

from eightbit.analysis.metrics import sqnr_from_sums


class RowErrors:
    """The SQNR of a layer's rows with nearest rounding and with the chosen weights, from
    the sums of squares a weight-choosing step keeps (``signal``, ``nearest_error``,
    ``error``)."""

    signal: float
    nearest_error: float
    error: float

    @property
    def nearest_db(self) -> float:
        return sqnr_from_sums(self.signal, self.nearest_error)

    @property
    def db(self) -> float:
        return sqnr_from_sums(self.signal, self.error)
