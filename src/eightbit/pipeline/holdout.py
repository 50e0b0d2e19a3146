"""Which samples calibrate and which are held back for the quick check.

The steps learn from the calibration samples only; the held-back ones, at the end of the
data, stay unseen until the quick check judges the int8 model on them.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from eightbit.calibrate import CalibrationConfig
from eightbit.calibrate.data import DataSource
from eightbit.validators import require_int

# Samples held back from calibration for the quick check, at most, and at most this
# share of the data: a check should not starve calibration of a small data set.
DEFAULT_CHECK_SAMPLES = 64
CHECK_SHARE = 0.2


def split(
    source: DataSource | None,
    calibration: CalibrationConfig,
    check_samples: int | None,
    calibrating: bool,
) -> tuple[int, int]:
    """How many samples calibrate and how many, after them, check."""
    if check_samples is not None:
        require_int("check_samples", check_samples, 0)
    if source is None:
        return 0, 0
    total = source.samples
    if not calibrating:
        # Ranges came from a file: every sample can serve the check.
        wanted = DEFAULT_CHECK_SAMPLES if check_samples is None else check_samples
        return 0, wanted if total is None else min(wanted, total)
    if total is None:
        # An iterable of unknown length: calibrate on what was asked, check on nothing
        # unless a count was given explicitly.
        count = calibration.samples or 0
        return count, check_samples or 0 if calibration.samples else 0
    if check_samples is None:
        check_samples = min(DEFAULT_CHECK_SAMPLES, int(total * CHECK_SHARE))
    check_samples = min(check_samples, max(total - 1, 0))
    calibrate_count = total - check_samples
    if calibration.samples is not None:
        calibrate_count = min(calibrate_count, calibration.samples)
        check_samples = min(check_samples, total - calibrate_count)
    return calibrate_count, check_samples


class _Window:
    """Samples ``[start, start + count)`` of a data source, as batches (re-iterable)."""

    def __init__(self, source: DataSource, start: int, count: int) -> None:
        self.source, self.start, self.count = source, start, count

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        seen = 0
        end = self.start + self.count
        for batch in self.source:
            rows = len(next(iter(batch.values())))
            low, high = max(self.start - seen, 0), min(end - seen, rows)
            seen += rows
            if high > low:
                yield {name: array[low:high] for name, array in batch.items()}
            if seen >= end:
                return


def window(source: DataSource, start: int, count: int) -> _Window | DataSource:
    if count <= 0 and start == 0:
        return source  # unknown length: the whole source
    return _Window(source, start, count)
