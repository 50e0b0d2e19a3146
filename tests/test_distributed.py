"""eightbit.distributed: every result on Ray equals, byte for byte, the one-process result.

One local Ray head for the whole session, bound to 127.0.0.1 with 2 CPUs, shut down at
the end. Each test compares the bytes a user keeps (ranges JSON and histograms, validate
JSON, the int8 model and its plan) with those of the same call without Ray.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

import eightbit
from eightbit.analysis.validate import RunOptions, validate
from eightbit.calibrate import CalibrationConfig, calibrate
from eightbit.cli import main
from eightbit.distributed import calibrate_on_ray, validate_on_ray
from eightbit.distributed.cluster import connect
from eightbit.distributed.shards import boundaries
from eightbit.errors import ConfigError, DataError
from eightbit.improve.presets import preset
from eightbit.quant import QuantConfig
from tests.fixtures import models

ROOT = Path(__file__).resolve().parent.parent


# Module scope: Ray's processes must not outlive these tests. A driver whose raylet dies
# exits at once (exit code 1, no traceback), which would end the whole test session.
@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    if importlib.util.find_spec("ray") is None:  # not imported here: connect() sets it up
        pytest.skip("ray is not installed (pip install eightbit[ray])")
    ray = connect("local", cpus=2)
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True)
def own_arena(monkeypatch: pytest.MonkeyPatch) -> None:
    # The scoring tasks run here by some tests turn on the shared arena for this process
    # (as on a worker); the other tests of the session keep their sessions' own arenas.
    from eightbit.graph import session

    monkeypatch.setitem(session._ARENA, "shared", False)


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[onnx.ModelProto, Path]:
    model = models.conv_bn_relu()
    folder = tmp_path_factory.mktemp("distributed")
    path = folder / "data.npz"
    np.savez(path, **models.random_inputs(model, n=150, seed=3))
    return model, path


def _saved(ranges: Any, folder: Path) -> tuple[bytes, bytes | None]:
    folder.mkdir()
    ranges.save(folder / "ranges.json")
    sidecar = folder / "ranges.hist.npz"
    return (folder / "ranges.json").read_bytes(), (
        sidecar.read_bytes() if sidecar.exists() else None
    )


# A tiny sample budget makes the histogram's sampled positions depend on where each batch
# starts: shards that cut a batch would count other values (§C.2).
SAMPLED = CalibrationConfig(batch_size=7, histogram_values_per_sample=10)


@pytest.mark.parametrize(
    ("config", "in_memory"),
    [
        (SAMPLED, False),
        (CalibrationConfig(method="minmax", batch_size=8), True),
        (CalibrationConfig(method="entropy", batch_size=5, samples=61), False),
    ],
)
def test_calibration_saves_the_same_bytes(
    ray_cluster: Any,
    model_and_data: tuple[onnx.ModelProto, Path],
    tmp_path: Path,
    config: CalibrationConfig,
    in_memory: bool,
) -> None:
    model, path = model_and_data
    data: Any = dict(np.load(path)) if in_memory else path
    alone = _saved(calibrate(model, data, config), tmp_path / "alone")
    on_ray = _saved(calibrate_on_ray(model, data, config), tmp_path / "ray")
    assert on_ray == alone


def test_calibration_of_a_list_of_samples_saves_the_same_bytes(
    ray_cluster: Any, model_and_data: tuple[onnx.ModelProto, Path], tmp_path: Path
) -> None:
    model, path = model_and_data
    items = list(np.load(path)["input"][:40])  # one sample per item
    alone = _saved(calibrate(model, items, SAMPLED), tmp_path / "alone")
    assert _saved(calibrate_on_ray(model, items, SAMPLED), tmp_path / "ray") == alone


def test_validation_json_is_the_same(
    ray_cluster: Any, model_and_data: tuple[onnx.ModelProto, Path], tmp_path: Path
) -> None:
    model, path = model_and_data
    int8 = eightbit.quantize(model, path).model
    labels = np.arange(150) % 3
    options = RunOptions(batch_size=6, samples=140)

    def spread(reference: np.ndarray, quantized: np.ndarray) -> float:
        return float(np.std(reference - quantized))

    settings: dict[str, Any] = {"labels": labels, "metric": spread, "what_if": 2}
    alone = validate(model, int8, path, options=options, **settings).to_dict()
    on_ray = validate_on_ray(model, int8, path, options=options, **settings).to_dict()
    assert json.dumps(on_ray) == json.dumps(alone)
    assert alone["layers"]["what_if"] and alone["outputs"][0]["int8_accuracy"] is not None


def _plan_decisions(path: Path) -> str:
    """The plan without what differs between two runs of one process: step times and the
    latency figures of the fallback's cost note."""
    plan = json.loads(path.read_text())
    for step in plan["steps"]:
        step["seconds"] = None
        step["notes"] = [note for note in step["notes"] if not note.startswith("cost:")]
    return json.dumps(plan)


def test_fallback_on_ray_returns_the_same_nodes_and_model(
    ray_cluster: Any,
    model_and_data: tuple[onnx.ModelProto, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from eightbit.improve.fallback import rank

    model, path = model_and_data
    improve = preset("fast", min_sqnr=60.0)
    alone = eightbit.quantize(model, path, improve=improve)

    def here(threads: int | None) -> None:
        raise AssertionError("the ranking scored its candidates in this process")

    monkeypatch.setattr(rank, "local_sqnrs", here)  # on Ray, the actors rank
    monkeypatch.setattr(eightbit.rebuild.fallback, "quick_check", here)  # and check the slices
    on_ray = eightbit.quantize(model, path, improve=improve, ray="local")
    alone.save(tmp_path / "alone.onnx")
    on_ray.save(tmp_path / "ray.onnx")
    assert (tmp_path / "ray.onnx").read_bytes() == (tmp_path / "alone.onnx").read_bytes()
    assert _plan_decisions(tmp_path / "ray.plan.json") == _plan_decisions(
        tmp_path / "alone.plan.json"
    )
    assert "returned to float (2)" in (tmp_path / "ray.plan.json").read_text()


def test_quick_check_on_ray_is_the_one_of_one_process(
    ray_cluster: Any,
    model_and_data: tuple[onnx.ModelProto, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from eightbit.pipeline import judging

    model, path = model_and_data
    config = CalibrationConfig(batch_size=7)  # 30 held back: shards of whole batches of 7
    alone = eightbit.quantize(model, path, calibration=config, improve="fast")

    def here(*args: object) -> None:
        raise AssertionError("the quick check ran in this process")

    monkeypatch.setattr(judging, "quick_check", here)
    on_ray = eightbit.quantize(model, path, calibration=config, improve="fast", ray="local")
    assert alone.check is not None and on_ray.check is not None
    assert alone.check.samples == 30
    assert json.dumps(on_ray.check.to_dict()) == json.dumps(alone.check.to_dict())


def test_a_bad_sample_is_named_with_its_shard(
    ray_cluster: Any,
    model_and_data: tuple[onnx.ModelProto, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def cancel(*args: object, **kwargs: object) -> None:  # it can end the driver: never
        raise AssertionError("ray.cancel called")

    monkeypatch.setattr(ray_cluster, "cancel", cancel)
    model, path = model_and_data
    inputs = np.load(path)["input"].copy()
    inputs[103, 1, 2, 2] = np.nan
    bad = tmp_path / "bad.npz"
    np.savez(bad, input=inputs)
    with pytest.raises(DataError, match=r"sample 103 .* \(shard \d+: samples \d+\.\.\d+\)"):
        calibrate_on_ray(model, bad, CalibrationConfig(batch_size=8))


def test_order_dependent_options_are_refused(
    model_and_data: tuple[onnx.ModelProto, Path],
) -> None:
    model, path = model_and_data
    with pytest.raises(ConfigError, match="moving averages"):
        calibrate_on_ray(model, path, CalibrationConfig(method="minmax", moving_average=0.1))
    with pytest.raises(ConfigError, match="non-finite"):
        calibrate_on_ray(model, path, CalibrationConfig(skip_nonfinite=True))


def test_progress_counts_every_sample_across_workers(
    ray_cluster: Any,
    model_and_data: tuple[onnx.ModelProto, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import contextlib

    from eightbit.distributed import calibration

    counted: list[int] = []

    @contextlib.contextmanager
    def recorder(total: int | None, description: str, *, show: bool) -> Iterator[Any]:
        counted.append(0)
        yield lambda samples: counted.append(samples)

    monkeypatch.setattr(calibration, "sample_progress", recorder)
    model, path = model_and_data
    calibrate_on_ray(model, path, CalibrationConfig(batch_size=8), progress=True)
    assert sum(counted) == 150 and len(counted) > 2  # one advance per shard


def test_shards_are_whole_batches_covering_the_samples() -> None:
    for total, batch, workers in [(150, 7, 2), (16, 16, 2), (1, 4, 3), (1000, 16, 5)]:
        edges = boundaries(total, batch, workers)
        assert edges[0] == 0 and edges[-1] == total
        assert all(edge % batch == 0 for edge in edges[:-1])
        assert all(a < b for a, b in itertools.pairwise(edges))


def _killer(title: str, killed: list[int], stop: threading.Event) -> None:
    """Kill the first of this test's processes (the Ray it started is a child of this
    process) whose title says it runs the task ``title``."""
    import psutil

    while not stop.is_set() and not killed:
        for process in psutil.Process().children(recursive=True):
            try:
                cmdline = " ".join(process.cmdline())
            except psutil.Error:
                continue
            if cmdline.startswith(f"ray::{title}"):
                process.kill()
                killed.append(process.pid)
                return
        time.sleep(0.01)


def kill_a_worker_during_calibration(folder: str) -> None:
    """Calibrate alone and on a new local Ray whose worker is killed mid-task; print
    whether a worker was killed and whether the saved files are the same."""
    model = models.conv_bn_relu()
    path = Path(folder) / "many.npz"
    np.savez(path, **models.random_inputs(model, n=4000, seed=5))
    config = CalibrationConfig(batch_size=1, histogram_values_per_sample=None)
    alone = _saved(calibrate(model, path, config), Path(folder) / "alone")
    connect("local", cpus=2)
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_killer, args=("calibrate_shard", killed, stop))
    killer.start()
    try:
        on_ray = _saved(calibrate_on_ray(model, path, config), Path(folder) / "ray")
    finally:
        stop.set()
        killer.join()
    print(json.dumps({"killed": bool(killed), "same": on_ray == alone}))


def test_a_worker_killed_during_a_task_changes_nothing(tmp_path: Path) -> None:
    # In a process of its own: the kill must not be able to take this session's Ray (or
    # this process, see ray_cluster) down with it.
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed (pip install eightbit[ray])")
    script = (
        "import sys; from tests.test_distributed import kill_a_worker_during_calibration as k;"
        " k(sys.argv[1])"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "src")},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"killed": True, "same": True}, result


def test_cli_calibrate_with_ray_writes_the_same_files(
    ray_cluster: Any, model_and_data: tuple[onnx.ModelProto, Path], tmp_path: Path
) -> None:
    model, path = model_and_data
    onnx.save(model, tmp_path / "model.onnx")
    written = []
    for name, extra in (("alone", []), ("ray", ["--ray"])):
        (tmp_path / name).mkdir()
        output = tmp_path / name / "r.json"
        args = ["calibrate", str(tmp_path / "model.onnx"), "-d", str(path), "-o", str(output)]
        result = CliRunner().invoke(main, [*args, "--json", *extra])
        assert result.exit_code == 0, result.output
        written.append((output.read_bytes(), output.with_suffix(".hist.npz").read_bytes()))
    assert written[0] == written[1]


def test_cli_validate_with_ray_local_prints_the_same_json(
    ray_cluster: Any, model_and_data: tuple[onnx.ModelProto, Path], tmp_path: Path
) -> None:
    model, path = model_and_data
    onnx.save(model, tmp_path / "model.onnx")
    eightbit.quantize(model, path).save(tmp_path / "int8.onnx")
    args = ["validate", str(tmp_path / "model.onnx"), str(tmp_path / "int8.onnx")]
    args += ["-d", str(path), "--json"]
    alone = CliRunner().invoke(main, args)
    on_ray = CliRunner().invoke(main, [*args, "--ray", "local"])
    assert alone.exit_code == on_ray.exit_code == 0, on_ray.output
    assert on_ray.stdout == alone.stdout


def test_cli_without_ray_installed_names_the_extra(
    model_and_data: tuple[onnx.ModelProto, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, path = model_and_data
    onnx.save(model, tmp_path / "model.onnx")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    args = ["calibrate", str(tmp_path / "model.onnx"), "-d", str(path)]
    result = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "r.json"), "--ray"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:")
    assert "pip install eightbit[ray]" in lines[0]
    assert not (tmp_path / "r.json").exists()


def test_without_the_flag_ray_is_never_imported(
    model_and_data: tuple[onnx.ModelProto, Path], tmp_path: Path
) -> None:
    model, path = model_and_data
    onnx.save(model, tmp_path / "model.onnx")
    script = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from eightbit.cli import main\n"
        f"args = ['calibrate', {str(tmp_path / 'model.onnx')!r}, '-d', {str(path)!r}, "
        f"'-o', {str(tmp_path / 'r.json')!r}]\n"
        "assert CliRunner().invoke(main, args).exit_code == 0\n"
        "print('ray' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True
    )
    assert done.stdout.strip() == "False"


def test_candidates_score_as_in_one_process(
    ray_cluster: Any, model_and_data: tuple[onnx.ModelProto, Path]
) -> None:
    from eightbit.calibrate import open_data
    from eightbit.distributed import RayScore
    from eightbit.graph import Graph
    from eightbit.improve.measure import OutputReference

    model, path = model_and_data
    int8 = eightbit.quantize(model, path).model

    def spread(reference: np.ndarray, quantized: np.ndarray) -> float:
        return float(np.std(reference - quantized))

    # Batches of 2: 75 partial sums, whose order of addition shows in the last bits.
    source = open_data(path, Graph(model).inputs, batch_size=2)
    alone = OutputReference(model, source, None, spread)
    on_ray = RayScore(model, path, ray="local", batch_size=2, metric=spread)
    try:
        assert on_ray.samples == alone.samples == 150
        assert on_ray(int8) == alone(int8)
        assert on_ray(model) == alone(model)
    finally:
        on_ray.close()


def test_ranking_candidates_score_as_in_one_process(
    ray_cluster: Any, model_and_data: tuple[onnx.ModelProto, Path]
) -> None:
    from eightbit.calibrate import open_data
    from eightbit.distributed import RayScore
    from eightbit.graph import Graph
    from eightbit.improve.measure import local_sqnrs

    model, path = model_and_data
    targets = ("ort", "fpga")
    candidates = [
        eightbit.quantize(model, path, QuantConfig.for_target(t), improve="fast").model
        for t in targets
    ]
    candidates += [model, candidates[0]]  # more candidates than actors: each actor scores two
    batches = [dict(b) for b in open_data(path, Graph(model).inputs, batch_size=16, limit=64)]
    alone = local_sqnrs(None)(model, batches)(candidates)
    on_ray = RayScore(model, path, ray="local", batch_size=16)
    try:
        assert on_ray.sqnrs_on(model, batches)(iter(candidates)) == alone
        assert len(set(alone)) == 3
    finally:
        on_ray.close()


def test_identical_samples_are_refused_but_shards_that_differ_are_not(
    ray_cluster: Any, model_and_data: tuple[onnx.ModelProto, Path]
) -> None:
    model, path = model_and_data
    one = np.load(path)["input"][:1]
    config = CalibrationConfig(batch_size=4)
    with pytest.raises(DataError, match="identical"):
        calibrate_on_ray(model, np.repeat(one, 40, axis=0), config)
    # Each shard repeats one sample, but the shards' samples differ: the data varies.
    halves = np.concatenate([np.repeat(one, 24, axis=0), np.repeat(one * 2, 24, axis=0)])
    assert calibrate_on_ray(model, halves, config).samples == 48


def test_an_image_folder_is_cut_by_file(ray_cluster: Any, tmp_path: Path) -> None:
    from PIL import Image

    folder = tmp_path / "images"
    (folder / "class_b").mkdir(parents=True)  # sub-folders sort after the top-level files
    for index in range(37):
        pixels = np.random.default_rng(index).integers(0, 256, (8, 8, 3), dtype=np.uint8)
        place = folder / "class_b" if index >= 30 else folder
        Image.fromarray(pixels).save(place / f"{index:03d}.png")
    model = models.conv_bn_relu()  # takes (3, 8, 8): the 8x8 RGB images as they are
    alone = _saved(calibrate(model, folder, SAMPLED), tmp_path / "alone")
    assert _saved(calibrate_on_ray(model, folder, SAMPLED), tmp_path / "ray") == alone


def _split_files(path: Path, folder: Path, sizes: tuple[int, ...]) -> list[Path]:
    """The samples of ``path`` cut into .npz/.npy files of ``sizes`` samples, in order."""
    folder.mkdir()
    samples = np.load(path)["input"]
    files, start = [], 0
    for index, size in enumerate(sizes):
        name = folder / (f"part{index}.npz" if index % 2 == 0 else f"part{index}.npy")
        rows = samples[start : start + size]
        np.savez(name, input=rows) if name.suffix == ".npz" else np.save(name, rows)
        files.append(name)
        start += size
    return files


def test_a_list_of_data_files_is_one_data_set_on_ray_as_alone(
    ray_cluster: Any, model_and_data: tuple[onnx.ModelProto, Path], tmp_path: Path
) -> None:
    model, path = model_and_data
    # Files that cut batches of 7 anywhere: the shards start inside files.
    files = _split_files(path, tmp_path / "files", (23, 40, 9, 78))
    whole = _saved(calibrate(model, path, SAMPLED), tmp_path / "whole")
    assert _saved(calibrate(model, files, SAMPLED), tmp_path / "alone") == whole
    assert _saved(calibrate_on_ray(model, files, SAMPLED), tmp_path / "ray") == whole
    folder = tmp_path / "files"  # the same files as a folder, read in name order
    assert _saved(calibrate_on_ray(model, folder, SAMPLED), tmp_path / "folder") == whole


def test_a_list_of_data_files_names_the_bad_one(
    model_and_data: tuple[onnx.ModelProto, Path], tmp_path: Path
) -> None:
    model, path = model_and_data
    files = _split_files(path, tmp_path / "files", (50, 100))
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, input=np.zeros((3, 5, 8, 8), np.float32))  # 5 channels, not 3
    with pytest.raises(DataError, match=r"wrong\.npz"):
        calibrate(model, [*files, wrong], SAMPLED)


def test_a_worker_imports_the_task_code_as_it_starts(ray_cluster: Any) -> None:
    # A lambda is sent by value: running it imports nothing of eightbit's, so what the
    # worker holds was imported by the setup hook as the worker started (warm_worker).
    loaded = ray_cluster.remote(num_cpus=1)(
        lambda: sorted(name for name in sys.modules if name.startswith("eightbit.distributed"))
    )
    modules = ray_cluster.get(loaded.remote())
    for module in ("calibration", "check", "scoring", "validation"):
        assert f"eightbit.distributed.{module}" in modules


def test_the_scoring_tasks_measure_as_one_process(
    model_and_data: tuple[onnx.ModelProto, Path],
) -> None:
    # The scoring tasks run here, as one worker process would run them: each group's float
    # outputs, both groups scored, twice; then another float model.
    from eightbit.analysis.outputs import OutputTally
    from eightbit.calibrate import open_data
    from eightbit.distributed import scoring
    from eightbit.distributed.shards import plan_shards
    from eightbit.graph import Graph
    from eightbit.improve.measure import OutputReference, measured

    model, path = model_and_data
    int8 = eightbit.quantize(model, path).model
    inputs = Graph(model).inputs
    shards, label = plan_shards(
        path, inputs, batch_size=16, image=None, start=0, count=None, workers=2
    )
    groups = [shards[0::2], shards[1::2]]
    settings = (16, None, label, None)

    def on_workers(float_model: onnx.ModelProto) -> Any:
        reader = (list(Graph(float_model).inputs), float_model.graph.output[0].name)
        found: dict[int, Any] = {}
        for group in groups:
            floats = scoring.shard_references(
                float_model.SerializeToString(), settings, reader, group
            )
            found.update(
                scoring.score_shards(
                    settings, reader, group, floats, int8.SerializeToString(), False
                )
            )
        tally = OutputTally(float_model.graph.output[0].name)
        for shard in shards:
            for batch in found[shard.index]:
                tally.merge(batch)
        return measured(tally, None, None)

    for float_model in (model, model, int8):
        alone = OutputReference(float_model, open_data(path, inputs, batch_size=16), None)
        assert on_workers(float_model) == alone.measure(int8)


def _int8_and_batches(
    model: onnx.ModelProto, path: Path, limit: int
) -> tuple[onnx.ModelProto, list[dict[str, np.ndarray]]]:
    """eightbit's int8 model of ``model`` and the first ``limit`` samples of ``path`` in
    batches of 16, as the scoring tasks receive them."""
    from eightbit.calibrate import open_data
    from eightbit.graph import Graph

    int8 = eightbit.quantize(model, path).model
    batches = open_data(path, Graph(model).inputs, batch_size=16, limit=limit)
    return int8, [dict(b) for b in batches]


def test_the_ranking_tasks_score_as_one_process(
    model_and_data: tuple[onnx.ModelProto, Path],
) -> None:
    # The ranking's tasks run here as the workers run them: the float outputs of 5 batches
    # dealt over 2 and over 3 reference tasks (batch i in task i mod n), then a candidate
    # scored against them; and with more tasks than batches.
    from eightbit.distributed import scoring
    from eightbit.improve.measure import local_sqnrs

    model, path = model_and_data
    int8, batches = _int8_and_batches(model, path, limit=80)
    settings = (16, None, "", None)
    name = model.graph.output[0].name
    for count, tasks in ((5, 2), (5, 3), (2, 3)):
        chosen = batches[:count]
        parts = [
            scoring.ranking_references(model.SerializeToString(), settings, chosen[i::tasks])
            for i in range(min(tasks, count))
        ]
        on_workers = scoring.rank_sqnr(settings, name, chosen, int8.SerializeToString(), *parts)
        assert on_workers == local_sqnrs(None)(model, chosen)([int8])[0]


def test_the_check_tasks_judge_as_one_process(
    model_and_data: tuple[onnx.ModelProto, Path],
) -> None:
    # The worst-slice checks' tasks run here as the workers run them: 5 batches dealt over
    # 2 and over 3 tasks, each running the float model once for two int8 models, then
    # judged in batch order: each check must be the one-process check of its own model.
    from eightbit.analysis.quick_check import judged_batches, quick_check
    from eightbit.calibrate import open_data
    from eightbit.distributed import scoring
    from eightbit.graph import Graph

    model, path = model_and_data
    int8 = eightbit.quantize(model, path).model
    coarse = eightbit.quantize(model, path, QuantConfig(per_channel=False)).model
    batches = [dict(b) for b in open_data(path, Graph(model).inputs, batch_size=16, limit=80)]
    samples = sum(len(next(iter(batch.values()))) for batch in batches)
    settings = (16, None, "", None)
    candidates = [int8, coarse]
    for tasks in (2, 3):
        parts = [
            scoring.check_outputs(
                model.SerializeToString(),
                settings,
                batches[i::tasks],
                *(c.SerializeToString() for c in candidates),
            )
            for i in range(tasks)
        ]
        for index, candidate in enumerate(candidates):
            ordered = [parts[i % tasks][index][i // tasks] for i in range(len(batches))]
            alone = quick_check(model, candidate, batches, None)
            assert judged_batches(model, ordered, samples) == alone


def test_the_scoring_tasks_open_their_sessions_on_one_shared_arena(
    model_and_data: tuple[onnx.ModelProto, Path],
) -> None:
    # A worker opens a session per candidate: the ranking's tasks switch the process to
    # ONNX Runtime's shared arena, so that the next session reuses the pages of the last
    # (no fresh pages per task), with the same score.
    from eightbit.distributed import scoring
    from eightbit.graph import make_session
    from eightbit.graph.session import _ARENA, _ENV_ALLOCATORS
    from eightbit.improve.measure import local_sqnrs

    model, path = model_and_data
    int8, batches = _int8_and_batches(model, path, limit=32)
    alone = local_sqnrs(None)(model, batches)([int8])[0]
    settings = (16, None, "", None)
    assert not _ARENA["shared"]
    parts = [scoring.ranking_references(model.SerializeToString(), settings, batches)]
    assert _ARENA["shared"]
    _ARENA["shared"] = False
    name = model.graph.output[0].name
    assert scoring.rank_sqnr(settings, name, batches, int8.SerializeToString(), *parts) == alone
    assert _ARENA["shared"]
    options = make_session(int8, threads=1).get_session_options()
    assert options.get_session_config_entry(_ENV_ALLOCATORS[0]) == _ENV_ALLOCATORS[1]
