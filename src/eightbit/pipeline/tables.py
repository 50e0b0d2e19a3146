"""Static mode's int8 embedding tables (docs/numerics.md §D.3): a step after the export.

Static mode's plan keeps ``Gather`` float; this step stores the tables it reads as int8
rows with per-row scales in the written model and adds the new nodes to the plan. It runs
before the quick check, and again after the safety net, whose rebuild starts from the plan
of the prepared model (the step leaves a model without float tables as it is).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from eightbit.export.embedding import int8_tables
from eightbit.pipeline.state import Settings, State


@dataclass(frozen=True)
class Int8Tables:
    """Every float lookup in a constant table reads int8 rows (§D.3). ``after_safety_net``:
    the second run, on a model the safety net may have rebuilt (only where the net runs)."""

    after_safety_net: bool = False

    def applies(self, settings: Settings) -> bool:
        if self.after_safety_net:
            return settings.improve.safety_net and not settings.improve.fallback
        return True

    def run(self, state: State) -> State:
        assert state.qdq is not None and state.plan is not None  # Export ran
        model, plan = int8_tables(state.qdq, state.plan)
        if model is state.qdq:
            return state
        return replace(state, qdq=model, plan=plan)
