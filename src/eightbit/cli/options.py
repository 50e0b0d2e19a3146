"""Options shared by the subcommands that read data: one definition, one meaning."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import click

from eightbit.calibrate import ImageOptions
from eightbit.errors import ConfigError

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_IMAGE_FLAGS = ("image_size", "resize_short", "mean", "std", "scale", "layout", "channels")


def _numbers(
    option: str, text: str | None, convert: Callable[[str], T], example: str
) -> tuple[T, ...] | None:
    """'a,b,c' as a tuple of numbers; a ConfigError naming ``option`` otherwise."""
    if text is None:
        return None
    try:
        return tuple(convert(part) for part in text.split(","))
    except ValueError:
        kind = "integers" if convert is int else "numbers"
        raise ConfigError(
            f"{option} must be comma-separated {kind}, e.g. {example} (got {text!r})"
        ) from None


def image_options(values: dict[str, Any]) -> ImageOptions | None:
    """ImageOptions from the image flags in ``values`` (popped); None when none was given."""
    size = values.pop("image_size", None)
    mean = values.pop("mean", None)
    std = values.pop("std", None)
    given: dict[str, Any] = {
        "size": _numbers("--image-size", size, int, "224 or 224,224"),
        "resize_short": values.pop("resize_short", None),
        "mean": _numbers("--mean", mean, float, "0.485,0.456,0.406"),
        "std": _numbers("--std", std, float, "0.229,0.224,0.225"),
        "scale": values.pop("scale", None),
        "layout": values.pop("layout", None),
        "channels": values.pop("channels", None),
    }
    given = {key: value for key, value in given.items() if value is not None}
    if not given:
        return None
    image_size = given.get("size")
    if image_size is not None:
        if len(image_size) not in (1, 2):
            raise ConfigError(f"--image-size must be H or H,W (got {size!r})")
        given["size"] = (image_size[0], image_size[-1])
    return ImageOptions(**given)


def image_flags(command: F) -> F:
    """The preprocessing flags for a folder of images."""
    flags = [
        click.option("--image-size", help="Images: model input size H or H,W."),
        click.option("--resize-short", type=int, help="Images: resize the short side, then crop."),
        click.option("--mean", help="Images: per-channel mean, e.g. 0.485,0.456,0.406."),
        click.option("--std", help="Images: per-channel std, e.g. 0.229,0.224,0.225."),
        click.option("--scale", type=float, help="Images: pixel scale before mean/std [1/255]."),
        click.option("--layout", help="Images: nchw or nhwc [nchw]."),
        click.option("--channels", help="Images: rgb, bgr or gray [rgb]."),
    ]
    for flag in reversed(flags):
        command = flag(command)
    return command


def model_files(*models: str) -> list[str]:
    """The files a model is read from: ``<name>`` and its external data ``<name>.data``."""
    return [
        path
        for model in models
        for path in (model, f"{model}.data")
        if path == model or Path(path).is_file()
    ]


@contextlib.contextmanager
def model_problems_first(model: str) -> Iterator[None]:
    """Name a missing, empty or broken model file rather than the plan it has no match for.

    Preparing a quantized model reads its plan first; when that fails with a ConfigError
    (no plan beside it, say), the model is loaded to see whether it is the real problem.
    """
    try:
        yield
    except ConfigError:
        from eightbit.graph import load_model

        load_model(model)  # raises the ModelError that says what is wrong with the file
        raise


DATA_HELP = (
    "Samples: an .npz (one array per input, first axis samples), an .npy, a folder of images, "
    "or a folder of .npz/.npy files (read in name order as one data set)."
)


def exact_kernels_note() -> str | None:
    """A warning for CPUs whose default ONNX Runtime session saturates int8 sums (§1.9)."""
    from eightbit.graph.session import default_int8_kernels_saturate

    if not default_int8_kernels_saturate():
        return None
    return (
        "this CPU's ONNX Runtime int8 kernels saturate by default (x86 without VNNI): the "
        "figures here use session option session.x64quantprecision=1; set it when you run "
        "the int8 model on such a CPU (README, 'Running the int8 model')"
    )


def ray_option(command: F) -> F:
    """``--ray [ADDRESS|local]``: run the passes over the data on a Ray cluster."""
    return click.option(
        "--ray",
        "ray",
        metavar="[ADDRESS|local]",
        is_flag=False,
        flag_value="local",
        default=None,
        help=(
            "Run on Ray: alone or 'local' starts Ray on this machine; an address joins a "
            "cluster. Same results as without it (docs/distributed.md)."
        ),
    )(command)


def require_ray(address: str | None) -> None:
    """Refuse ``--ray`` up front, before any work, when the address or Ray is missing."""
    if address is None:
        return
    from eightbit.distributed.cluster import check_address, import_ray

    check_address(address)
    import_ray()
