"""The evaluation protocol's images: crops of the colour photos that Python packages ship.

Protocol: calibrate on 128 crops of the photos bundled with scikit-image, scikit-learn and
matplotlib; evaluate on 400 other crops. No download is involved: every photo is a file inside
an installed package.

Photos (12, every natural colour photo the three packages install; grayscale images, synthetic
images like ``colorwheel``/``logo``, the clip-art ``Minduka_Present_Blue_Pack.png`` and the
scikit-image files that need ``pooch`` to download are left out):

* scikit-image: astronaut, chelsea, coffee, rocket, hubble_deep_field, immunohistochemistry,
  retina, motorcycle_left, motorcycle_right (a stereo pair);
* scikit-learn: china, flower;
* matplotlib: grace_hopper.

Crops: crop ``k`` of a set is taken from photo ``k mod 12`` (so every photo is equally
represented), with a square-ish box whose side is 35-100 % of the photo's shorter side, aspect
ratio 3/4..4/3 and a uniformly random position, resized to 224x224 with Pillow's bilinear
filter, scaled to [0, 1] and normalised with the ImageNet mean/std, NCHW float32.

Disjointness: the calibration and evaluation sets use the same photos (12 photos are too few to
split into two representative groups) but independent seeds; every evaluation box that equals a
calibration box of the same photo is redrawn, so no evaluation crop is a calibration crop.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

WORK_DIR = Path(__file__).resolve().parent / "_work"
SIZE = 224
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)

CALIBRATION_COUNT = 128
EVALUATION_COUNT = 400
CALIBRATION_SEED = 1
EVALUATION_SEED = 2
# The calibration benchmark's larger sample pool (written to disk, read memory-mapped).
POOL_SEED = 3
CALIBRATION_PATH = WORK_DIR / "calibration_128.npy"
EVALUATION_PATH = WORK_DIR / "evaluation_400.npy"

MIN_SCALE, MAX_SCALE = 0.35, 1.0
MIN_ASPECT, MAX_ASPECT = 3 / 4, 4 / 3

PHOTO_NAMES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "motorcycle_left",
    "motorcycle_right",
    "china",
    "flower",
    "grace_hopper",
)


def _load_photo(name: str) -> np.ndarray:
    """One photo as an (H, W, 3) uint8 array."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        return np.asarray(load_sample_image(f"{name}.jpg"))
    if name == "grace_hopper":
        from matplotlib import cbook

        with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as img:
            return np.asarray(img.convert("RGB"))
    import skimage.data

    if name.startswith("motorcycle_"):
        left, right, _disparity = skimage.data.stereo_motorcycle()
        return np.asarray(left if name == "motorcycle_left" else right)
    return np.asarray(getattr(skimage.data, name)())


def load_photos() -> dict[str, np.ndarray]:
    """Every photo of the protocol, by name, as (H, W, 3) uint8 arrays."""
    photos = {name: _load_photo(name) for name in PHOTO_NAMES}
    for name, photo in photos.items():
        if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
            raise ValueError(
                f"photo {name!r}: expected (H, W, 3) uint8, got {photo.shape} {photo.dtype}"
            )
    return photos


@dataclass(frozen=True)
class CropBox:
    photo: str
    left: int
    top: int
    width: int
    height: int

    def as_pil_box(self) -> tuple[int, int, int, int]:
        return (self.left, self.top, self.left + self.width, self.top + self.height)


def crop_boxes(
    shapes: dict[str, tuple[int, int]],
    count: int,
    seed: int,
    exclude: frozenset[CropBox] = frozenset(),
) -> list[CropBox]:
    """``count`` deterministic crop boxes, round-robin over the photos, none in ``exclude``."""
    rng = np.random.default_rng(seed)
    names = sorted(shapes)
    boxes: list[CropBox] = []
    while len(boxes) < count:
        name = names[len(boxes) % len(names)]
        height, width = shapes[name]
        side = min(height, width) * rng.uniform(MIN_SCALE, MAX_SCALE)
        aspect = np.exp(rng.uniform(np.log(MIN_ASPECT), np.log(MAX_ASPECT)))
        box_w = int(min(width, round(side * np.sqrt(aspect))))
        box_h = int(min(height, round(side / np.sqrt(aspect))))
        left = int(rng.integers(0, width - box_w + 1))
        top = int(rng.integers(0, height - box_h + 1))
        box = CropBox(name, left, top, box_w, box_h)
        if box not in exclude:
            boxes.append(box)
    return boxes


def render_crops(photos: dict[str, np.ndarray], boxes: list[CropBox]) -> Iterator[np.ndarray]:
    """Each box as a normalised (3, 224, 224) float32 array."""
    pil = {name: Image.fromarray(photo) for name, photo in photos.items()}
    for box in boxes:
        img = pil[box.photo].crop(box.as_pil_box()).resize((SIZE, SIZE), Image.Resampling.BILINEAR)
        x = np.asarray(img, dtype=np.float32) / 255.0
        yield ((x - MEAN) / STD).transpose(2, 0, 1)


def preprocess(photo: np.ndarray) -> np.ndarray:
    """A whole photo the usual ImageNet way (short side 256, centre crop 224), (1, 3, 224, 224)."""
    img = Image.fromarray(photo)
    scale = 256 / min(img.size)
    img = img.resize(
        (round(img.width * scale), round(img.height * scale)), Image.Resampling.BILINEAR
    )
    left, top = (img.width - SIZE) // 2, (img.height - SIZE) // 2
    img = img.crop((left, top, left + SIZE, top + SIZE))
    x = (np.asarray(img, dtype=np.float32) / 255.0 - MEAN) / STD
    return x.transpose(2, 0, 1)[None]


def _write_crops(path: Path, photos: dict[str, np.ndarray], boxes: list[CropBox]) -> None:
    """Write crops one at a time into a memory-mapped .npy (never all in RAM), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    out = np.lib.format.open_memmap(
        tmp, mode="w+", dtype=np.float32, shape=(len(boxes), 3, SIZE, SIZE)
    )
    for i, crop in enumerate(render_crops(photos, boxes)):
        out[i] = crop
    out.flush()
    del out
    tmp.replace(path)


def _cached(path: Path, count: int, seed: int, exclude_seed: int | None) -> np.ndarray:
    if not path.exists():
        photos = load_photos()
        shapes = {name: (p.shape[0], p.shape[1]) for name, p in photos.items()}
        exclude: frozenset[CropBox] = frozenset()
        if exclude_seed is not None:
            exclude = frozenset(crop_boxes(shapes, CALIBRATION_COUNT, exclude_seed))
        _write_crops(path, photos, crop_boxes(shapes, count, seed, exclude))
    data = np.load(path, mmap_mode="r")
    if data.shape != (count, 3, SIZE, SIZE):
        raise ValueError(
            f"{path}: cached shape {data.shape}, expected {(count, 3, SIZE, SIZE)}; delete it"
        )
    return data


def calibration_set(path: Path = CALIBRATION_PATH) -> np.ndarray:
    """The 128 calibration crops, (128, 3, 224, 224) float32, memory-mapped from the cache."""
    return _cached(path, CALIBRATION_COUNT, CALIBRATION_SEED, None)


def evaluation_set(path: Path = EVALUATION_PATH) -> np.ndarray:
    """The 400 evaluation crops (none equal to a calibration crop), memory-mapped."""
    return _cached(path, EVALUATION_COUNT, EVALUATION_SEED, CALIBRATION_SEED)


def sample_pool(count: int = 512, path: Path | None = None) -> Path:
    """A .npy file of ``count`` crops for the calibration benchmark, written crop by crop.

    Returns the path (not the array) so that a calibrator can stream it memory-mapped.
    """
    path = path or WORK_DIR / f"pool_{count}.npy"
    _cached(path, count, POOL_SEED, None)
    return path
