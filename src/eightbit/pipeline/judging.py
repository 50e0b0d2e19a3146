"""The steps of ``quantize`` that judge the int8 model: the quick check on the held-back
samples (§A.9), and the default preset's safety net (§I.9), which reads the check and, when
an output misses the floor, runs ``eightbit.rebuild.safety_net`` and judges the rebuilt
model on the same samples."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import onnx

from eightbit.analysis.quick_check import QuickCheck, quick_check
from eightbit.calibrate import DataSource
from eightbit.distributed import quick_check_on_ray
from eightbit.graph.session import through_file
from eightbit.pipeline.stages import held_back_source, rebuild_source
from eightbit.pipeline.state import Settings, SpilledModel, State
from eightbit.rebuild import safety_net
from eightbit.safety_net import SAFETY_SQNR_LOSS_DB
from eightbit.steps import StepReport


class Check:
    """The quick check on the held-back samples: top-1 agreement, SQNR, worst slice (§A.9)."""

    def applies(self, settings: Settings) -> bool:
        return True

    def run(self, state: State) -> State:
        if state.source is None or state.check_count <= 0:
            return state
        assert state.qdq is not None  # Export ran
        # A big float model waiting on disk is run from its file: its weights are not read
        # back into memory (issue 20).
        source = state.float_source
        float_model = source.skeleton() if isinstance(source, SpilledModel) else source
        held_back = held_back_source(state, float_model)
        if state.settings.ray is None and through_file(state.qdq):
            # (C.11) The int8 model waits on disk while its session runs (ONNX Runtime's
            # copy is then the only one in memory), and is read back after.
            spilled = SpilledModel.of(state.qdq)
            state = replace(state, qdq=None)
            check = _quick_check(state, held_back, float_model, spilled.path)
            return replace(state, held_back=held_back, check=check, qdq=spilled.load())
        check = _quick_check(state, held_back, float_model)
        return replace(state, held_back=held_back, check=check)


def _quick_check(
    state: State,
    held_back: DataSource,
    float_model: onnx.ModelProto,
    int8_file: Path | None = None,
) -> QuickCheck | None:
    """The check of ``state.qdq`` (or of the int8 model in ``int8_file``, here) on the
    held-back samples, on the cluster with ``--ray``. ``float_model``: the float model,
    or its skeleton when it waits on disk."""
    settings = state.settings
    source = state.float_source
    if settings.ray is None or state.data is None:
        int8 = int8_file or state.qdq
        assert int8 is not None  # Export ran
        return quick_check(
            float_model, int8, held_back, settings.threads,
            float_file=source.path if isinstance(source, SpilledModel) else None,
            float_outputs=state.check_float,
        )  # fmt: skip
    assert state.qdq is not None  # Export ran
    return quick_check_on_ray(
        state.float_model, state.qdq, state.data, ray=settings.ray,
        batch_size=settings.calibration.batch_size, start=state.calibrate_count,
        count=state.check_count, image=state.image, threads=settings.threads,
    )  # fmt: skip


@dataclass(frozen=True)
class SafetyNet:
    """The default preset's net (§I.9): when the check finds an output under the floor
    (``missed``: output -> why) and no budget was given, nodes back to float, then the
    model is judged again."""

    missed: Callable[[QuickCheck | None], dict[str, str]]

    def applies(self, settings: Settings) -> bool:
        return settings.improve.safety_net and not settings.improve.fallback

    def run(self, state: State) -> State:
        if state.held_back is None:  # no check ran: nothing to engage on
            return state
        missed = self.missed(state.check)
        if not missed:
            return state
        assert state.plan is not None and state.qdq is not None  # Export ran
        settings = state.settings
        profile = settings.config.profile
        if not profile.float_nodes and not profile.int16_activations:
            return state.reported(_no_float_net(settings, missed))
        net = rebuild_source(state)
        qdq, plan, report, promoted = safety_net(
            net, state.plan, state.qdq, state.samples, missed, settings.improve, settings.threads
        )
        if qdq is state.qdq:
            return state.reported(report)
        # Nodes were returned to float: judge the new model, and keep it only if it did not
        # buy its slices with the whole output (§I.9, ``SAFETY_SQNR_LOSS_DB``).
        check = quick_check(net.float_model, qdq, state.held_back, settings.threads)
        lost = _sqnr_lost(state.check, check)
        if lost is not None:
            note = (
                f"reverted: the rebuilt model lost {lost:.1f} dB of output SQNR on the "
                f"held-back samples (more than {SAFETY_SQNR_LOSS_DB:g} dB)"
            )
            kept = replace(report, after_db=report.before_db, notes=(*report.notes, note))
            return state.reported(kept)
        if promoted is None:
            return state.reported(report, qdq=qdq, plan=plan, check=check)
        # int16 tensors: their extremes, on the model the promotion quantized (§R.11)
        return state.reported(
            report, qdq=qdq, plan=plan, check=check, prepared=promoted.prepared,
            ranges=promoted.ranges,
        )  # fmt: skip


def _no_float_net(settings: Settings, missed: dict[str, str]) -> StepReport:
    """The net's report on a target without float kernels: what it found, and that it
    returned no node to float (the target cannot run one)."""
    note = (
        f"not run: {'; '.join(missed.values())}; target {settings.config.target!r} has no "
        "float kernels, so no node was returned to float (try --preset accurate)"
    )
    return StepReport("safety_net", 0.0, None, None, (), (note,))


def _sqnr_lost(before: QuickCheck | None, after: QuickCheck | None) -> float | None:
    """The largest SQNR loss of any output from ``before`` to ``after`` when it exceeds
    ``SAFETY_SQNR_LOSS_DB``, else None."""
    if before is None or after is None:
        return None
    losses = [
        old.sqnr_db - new.sqnr_db
        for old, new in zip(before.outputs, after.outputs, strict=True)
        if math.isfinite(old.sqnr_db)
    ]
    worst = max(losses, default=0.0)
    return worst if worst > SAFETY_SQNR_LOSS_DB else None
