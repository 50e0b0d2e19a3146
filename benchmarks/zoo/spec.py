"""One zoo model: where its float ONNX file comes from, its data, and its users' metric."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.models import WORK_DIR

ZOO_DIR = WORK_DIR / "zoo"


@dataclass(frozen=True)
class ZooModel:
    key: str  # short name: --zoo-models, file names
    name: str  # the table's row label
    family: str
    source: str  # the registry package (and file) the weights come from
    build: Callable[[], Path]  # the float ONNX file, built or copied on first use
    make_data: Callable[[], tuple[np.ndarray, np.ndarray]]  # calibration, evaluation inputs
    metric_name: str
    metric: Callable[[np.ndarray, np.ndarray], float]  # float output, int8 output -> [0, 1]
    slice_axis: int  # the output's channel/feature axis, for the worst-slice SQNR
    predicted_slices: bool = False  # worst slice over the float arg-max slices only
    packages: tuple[str, ...] = ()  # import names that must be installed (not imported)

    def data(self) -> tuple[np.ndarray, np.ndarray]:
        """Calibration and evaluation inputs, generated once into _work/zoo."""
        return cached_arrays(self.key, self.make_data)

    def missing(self) -> list[str]:
        return [p for p in self.packages if importlib.util.find_spec(p) is None]


def package_file(package: str, relative: str) -> Path:
    """A file inside an installed package, found without importing the package (several of
    the zoo's packages import heavy or missing dependencies at import time)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {package!r} is not installed (make bench installs it)")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from package {package!r}")
    return path


def cached_arrays(
    name: str, make: Callable[[], tuple[np.ndarray, np.ndarray]]
) -> tuple[np.ndarray, np.ndarray]:
    """Calibration and evaluation inputs of ``name``, generated once into _work/zoo."""
    calibration, evaluation = data_paths(name)
    recipe_path, recipe = ZOO_DIR / f"{name}_data.txt", data_recipe(make)
    fresh = recipe_path.exists() and recipe_path.read_text() == recipe
    if not (fresh and calibration.exists() and evaluation.exists()):
        ZOO_DIR.mkdir(parents=True, exist_ok=True)
        for path, array in zip((calibration, evaluation), make(), strict=True):
            tmp = path.with_name(path.name + ".tmp.npy")
            np.save(tmp, np.ascontiguousarray(array))
            tmp.replace(path)
        recipe_path.write_text(recipe)
    return np.load(calibration), np.load(evaluation)


def data_recipe(make: Callable[[], tuple[np.ndarray, np.ndarray]]) -> str:
    """What generated a model's data: the function's name and its bound arguments, so that
    a changed sample count regenerates the cached arrays instead of reusing stale ones."""
    func = getattr(make, "func", make)
    bound = (getattr(make, "args", ()), getattr(make, "keywords", {}))
    return f"{func.__module__}.{func.__qualname__} {bound!r}"


def data_paths(name: str) -> tuple[Path, Path]:
    return ZOO_DIR / f"{name}_calibration.npy", ZOO_DIR / f"{name}_evaluation.npy"
