"""The one value ``quantize``'s steps pass along: what was asked (``Settings``) and what has
been made so far (``State``), and the result it ends as (``QuantizedModel``).

Each step is a function from one ``State`` to the next (``dataclasses.replace``): no step
edits another's values, so the order in ``eightbit.pipeline.steps`` is the whole story.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx

from eightbit.analysis.outputs import Metric
from eightbit.analysis.quick_check import QuickCheck
from eightbit.calibrate import CalibrationConfig, ImageOptions, Ranges
from eightbit.calibrate.data import DataLike, DataSource
from eightbit.graph import load_model, save_model
from eightbit.graph.files import write_for_session
from eightbit.graph.session import through_file
from eightbit.improve.float_pass import SharedFloat
from eightbit.improve.presets import ImproveConfig
from eightbit.plan import QuantPlan, plan_path_for
from eightbit.quant import QuantConfig
from eightbit.steps import StepReport


@dataclass(frozen=True)
class Settings:
    """What the user asked of ``quantize``: the steps read it, none changes it."""

    config: QuantConfig
    improve: ImproveConfig
    calibration: CalibrationConfig
    metric: Metric | None = None
    threads: int | None = None
    progress: bool = False
    # A Ray cluster ("local" or an address) for calibration and the fallback's scoring.
    ray: str | None = None
    # Auto mode's dynamic model's output SQNR on the held-back samples, while its static
    # model is made (§D.6): default's reconstruction rule reads it (eq. I.23).
    rival_db: float | None = None

    @property
    def learned(self) -> bool:
        """Whether the weights are learned (AdaRound or reconstruction) rather than rounded."""
        return self.improve.adaround or self.improve.reconstruct is True


@dataclass(frozen=True)
class SpilledModel:
    """A model written to a private temporary folder (weights as external data) while no
    step needs it in memory; the folder goes when the last state holding it does."""

    folder: tempfile.TemporaryDirectory[str] = field(repr=False)
    path: Path

    @classmethod
    def of(cls, model: onnx.ModelProto) -> SpilledModel:
        folder = tempfile.TemporaryDirectory(prefix="eightbit-", ignore_cleanup_errors=True)
        path = Path(folder.name) / "float.onnx"
        write_for_session(model, path)
        return cls(folder, path)

    def load(self) -> onnx.ModelProto:
        return load_model(self.path, check=False)

    def skeleton(self) -> onnx.ModelProto:
        """The model without the data of its large weights (names, types and shapes stay)."""
        return onnx.load(self.path, load_external_data=False)


@dataclass(frozen=True)
class State:
    """Everything ``quantize`` has made so far.

    ``exported``: the model as loaded, kept only without calibration samples (its
    BatchNormalization statistics then serve bias correction; otherwise None, so that one
    copy of the weights less is held); ``float_model``: normalized, what the int8 model is
    checked against (``float_source``: the model, or once ``prepared`` moved on from a big
    one, its ``SpilledModel``). ``source``: the data, split into ``calibrate_count``
    samples the steps learn from (``samples``; None with ranges from a file) and the
    ``check_count`` after them, held back for the quick check (``held_back``, once
    opened). ``prepared``: the float model the QDQ model quantizes; ``planned``: its float
    constants as planned, before rounding and correction (what a node returned to float
    gets back). ``given_ranges``: the ranges came from a file.
    """

    settings: Settings
    exported: onnx.ModelProto | None = field(repr=False)
    float_source: onnx.ModelProto | SpilledModel = field(repr=False)
    source: DataSource | None
    samples: DataLike | None
    calibrate_count: int
    check_count: int
    given_ranges: bool
    prepared: onnx.ModelProto = field(repr=False)
    ranges: Ranges | None = None
    planned_source: onnx.ModelProto | SpilledModel | None = field(default=None, repr=False)
    plan: QuantPlan | None = None
    qdq: onnx.ModelProto | None = field(default=None, repr=False)
    held_back: DataSource | None = None
    check: QuickCheck | None = None
    reports: tuple[StepReport, ...] = ()
    # What calibration's pass kept for the measuring steps of a big model (§C.10).
    shared_float: SharedFloat | None = field(default=None, repr=False)
    # (C.10.3) Every float output on the held-back samples, from calibration's session.
    check_float: Mapping[str, np.ndarray] | None = field(default=None, repr=False)
    # The data as given and its image options: a cluster's workers read their shards of it.
    data: DataLike | None = field(default=None, repr=False)
    image: ImageOptions | None = None

    def __post_init__(self) -> None:
        # A big float model no step runs on any more (``prepared`` moved on from it) waits
        # on disk until a step reads it: one copy of its weights less in memory (issue 20).
        spilled: dict[int, SpilledModel] = {}
        for name in ("float_source", "planned_source"):
            source = getattr(self, name)
            if not isinstance(source, onnx.ModelProto) or source is self.prepared:
                continue
            if id(source) in spilled or through_file(source):
                if id(source) not in spilled:
                    spilled[id(source)] = SpilledModel.of(source)
                object.__setattr__(self, name, spilled[id(source)])

    @property
    def float_model(self) -> onnx.ModelProto:
        """The original model, normalized (read back from disk when it waits there: each
        access reads it again, so keep the result while it is used)."""
        return _in_memory(self.float_source)

    @property
    def planned(self) -> onnx.ModelProto | None:
        """The model as planned (``planned_source``), read back as ``float_model`` is."""
        return None if self.planned_source is None else _in_memory(self.planned_source)

    def reported(self, report: StepReport | None, **changes: object) -> State:
        """This state with ``changes`` and ``report`` (when there is one) appended."""
        reports = self.reports if report is None else (*self.reports, report)
        return replace(self, reports=reports, **changes)  # type: ignore[arg-type]

    def result(self) -> QuantizedModel:
        assert self.plan is not None and self.qdq is not None  # the Plan and Export steps ran
        return QuantizedModel(
            model=self.qdq,
            plan=replace(self.plan, steps=self.reports),
            float_source=self.float_source,
            ranges=self.ranges,
            check=self.check,
            calibration_samples=getattr(self.ranges, "samples", 0) or 0,
            prepared_model=self.prepared,
        )


def _in_memory(source: onnx.ModelProto | SpilledModel) -> onnx.ModelProto:
    return source if isinstance(source, onnx.ModelProto) else source.load()


@dataclass(frozen=True)
class QuantizedModel:
    """The result of ``quantize``: the QDQ model, its plan, and what was measured.

    ``float_model``: the original model, normalized: what the int8 model is checked
    against (``float_source``: it, or the file where a big one waits, read back only when
    ``float_model`` is read: each read loads it again, so keep the result; issue 20).
    ``prepared_model``: the float model the QDQ model quantizes, after the
    improvement steps (equalized, learned-rounded, bias-corrected); ``ranges`` are its
    activation ranges. ``make_plan(Graph(prepared_model), ranges, config,
    separate_joins=...)`` (as the preset said, §Q13) and ``to_qdq`` rebuild the QDQ model,
    e.g. with other nodes excluded.
    """

    model: onnx.ModelProto
    plan: QuantPlan
    float_source: onnx.ModelProto | SpilledModel = field(repr=False)
    ranges: Ranges | None = field(default=None, repr=False)
    check: QuickCheck | None = None
    calibration_samples: int = 0
    prepared_model: onnx.ModelProto | None = field(default=None, repr=False)

    @property
    def float_model(self) -> onnx.ModelProto:
        return _in_memory(self.float_source)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model (checked, atomically) and its plan beside it; returns the plan path."""
        save_model(self.model, path)
        plan_path = plan_path_for(path)
        self.plan.save(plan_path)
        return plan_path
