"""Calibration, the quick check, validation and the fallback's scoring on a Ray cluster
(docs/distributed.md).

Ray is imported only when one of these runs: eightbit without ``--ray`` never loads it.
Every result equals, byte for byte, the one-process result: the data is cut into shards of
whole batches, and the per-batch statistics are merged in one fixed order.
"""

from __future__ import annotations

from eightbit.distributed.calibration import calibrate_on_ray
from eightbit.distributed.check import quick_check_on_ray
from eightbit.distributed.cluster import INSTALL_HINT, LOCAL, connect
from eightbit.distributed.scoring import RayScore
from eightbit.distributed.validation import ray_passes, validate_on_ray

__all__ = [
    "INSTALL_HINT",
    "LOCAL",
    "RayScore",
    "calibrate_on_ray",
    "connect",
    "quick_check_on_ray",
    "ray_passes",
    "validate_on_ray",
]
