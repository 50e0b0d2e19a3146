"""Rebuilding the int8 model with nodes back in float or tensors promoted to int16.

- ``fallback``: ``quantize``'s fallback step (§R.7-§R.9) and what every rebuild shares;
- ``net``: the default preset's safety net (§I.9);
- ``promotion``: int16 promotion to a budget (§R.11).
"""

from eightbit.rebuild.fallback import EVALUATION_BATCH, Prepared, run_fallback
from eightbit.rebuild.net import cheap_tail, safety_net
from eightbit.rebuild.promotion import promote_after_fallback, run_promotion

__all__ = [
    "EVALUATION_BATCH",
    "Prepared",
    "cheap_tail",
    "promote_after_fallback",
    "run_fallback",
    "run_promotion",
    "safety_net",
]
