"""Dynamic mode's steps (docs/numerics.md §D): plan, write, the budget's fallback, check.

No calibration: the int8 weights are planned from the model alone (``plan_dynamic``) and the
activations are quantized at run time. A budget (``--min-sqnr``/``--max-drop``) is met by
the same fallback as static mode (``improve.fallback.driver.fallback``, §R.7-§R.10), whose
``build`` here writes the dynamic model with the returned nodes left in float.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import onnx

from eightbit.export.dynamic import plan_dynamic, to_dynamic
from eightbit.graph import Graph
from eightbit.improve.fallback.driver import fallback
from eightbit.improve.outliers import keep_outliers_float
from eightbit.improve.row_choice import choose_row_scales
from eightbit.improve.smoothquant import smooth_quant
from eightbit.pipeline.judging import Check
from eightbit.pipeline.stages import Step
from eightbit.pipeline.state import Settings, State
from eightbit.plan import QuantPlan
from eightbit.rebuild import EVALUATION_BATCH


class OutlierChannels:
    """With calibration samples: each product's outlier input channels in float (§D.5)."""

    def applies(self, settings: Settings) -> bool:
        return True

    def run(self, state: State) -> State:
        if state.samples is None:
            return state  # no data: the model alone decides (per-row scales only)
        settings = state.settings
        model, report = keep_outliers_float(
            state.prepared, state.samples, settings.config.exclude, settings.threads
        )
        return state.reported(report, prepared=model)


class DynamicSmoothQuant:
    """With calibration samples: LayerNorm outputs' outlier channels moved into the weights
    of the products reading them (§D.9), so that one scale per tensor suits more inputs."""

    def applies(self, settings: Settings) -> bool:
        return settings.config.row_scales

    def run(self, state: State) -> State:
        if state.samples is None:
            return state
        settings = state.settings
        model, report = smooth_quant(
            state.prepared, state.samples, settings.config, threads=settings.threads,
            tails_only=True,
        )  # fmt: skip
        return state if report is None else state.reported(report, prepared=model)


class RowScales:
    """With calibration samples: per-row scales only for the inputs where they gain
    (§D.9); the other products take ONNX Runtime's fused per-tensor form."""

    def applies(self, settings: Settings) -> bool:
        return settings.config.row_scales and not settings.config.tensor_scales

    def run(self, state: State) -> State:
        if state.samples is None:
            return state  # no data: per-row scales everywhere (§D.4)
        settings = state.settings
        products, report = choose_row_scales(
            state.prepared, state.samples, settings.config.exclude, settings.threads
        )
        config = replace(settings.config, tensor_scales=products)
        return replace(state.reported(report), settings=replace(settings, config=config))


class DynamicPlan:
    """The int8 weights and tables of the model; every other node float (§D)."""

    def applies(self, settings: Settings) -> bool:
        return True

    def run(self, state: State) -> State:
        plan = plan_dynamic(Graph(state.prepared), state.settings.config)
        return replace(state, plan=plan, planned_source=state.prepared)


class DynamicExport:
    """The run-time form of the plan: DynamicQuantizeLinear/MatMulInteger, int8 tables."""

    def applies(self, settings: Settings) -> bool:
        return True

    def run(self, state: State) -> State:
        assert state.plan is not None  # DynamicPlan ran
        return replace(state, qdq=to_dynamic(state.prepared, state.plan))


@dataclass(frozen=True)
class _Built:
    """A dynamic model and its plan, as the fallback rebuilds them."""

    model: onnx.ModelProto
    plan: QuantPlan


class DynamicFallback:
    """Nodes back to float until the budget (``max_drop``/``min_sqnr``) holds (§D.5)."""

    def applies(self, settings: Settings) -> bool:
        return settings.improve.fallback

    def run(self, state: State) -> State:
        assert state.plan is not None and state.qdq is not None  # DynamicExport ran
        assert state.samples is not None  # quantize keeps samples for a budget
        settings, prepared, config = state.settings, state.prepared, state.plan.config

        base = _Built(state.qdq, state.plan)

        def build(excluded: frozenset[str]) -> _Built:
            if not excluded:
                return base
            exclude = tuple(dict.fromkeys([*config.exclude, *sorted(excluded)]))
            plan = plan_dynamic(Graph(prepared), replace(config, exclude=exclude))
            return _Built(to_dynamic(prepared, plan), plan)

        result = fallback(
            state.float_model, build, state.samples, settings.improve.budget(settings.metric),
            base=base, ranking="build", threads=settings.threads,
            progress=settings.progress, batch_size=EVALUATION_BATCH,
        )  # fmt: skip
        return state.reported(result.report, qdq=result.model, plan=result.plan)


def dynamic_steps() -> tuple[Step, ...]:
    """Dynamic mode's steps, in order: the check judges the final model."""
    return (
        DynamicSmoothQuant(),
        OutlierChannels(),
        RowScales(),
        DynamicPlan(),
        DynamicExport(),
        DynamicFallback(),
        Check(),
    )
