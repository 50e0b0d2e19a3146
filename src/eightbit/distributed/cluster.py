"""Joining or starting Ray, and running tasks on it with the errors eightbit raises.

Ray is an optional extra: nothing here imports it until a distributed run asks for it, so
eightbit without ``--ray`` never loads it. ``local`` starts a Ray instance on this machine,
bound to the loopback address; any other address joins a running cluster.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from eightbit.errors import ConfigError, EightbitError

if TYPE_CHECKING:
    import types

LOCAL = "local"
INSTALL_HINT = "pip install eightbit[ray]"
# Retries of a task whose worker process died (a crash, a lost node); an error raised by
# eightbit itself (bad data) is not retried: it would fail the same way again.
TASK_RETRIES = 3
# Ray's switch that makes a local instance use the loopback address instead of the
# machine's network address (read when ray is first imported, so set before that).
_LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def import_ray() -> types.ModuleType:
    """The ``ray`` module, or a ConfigError naming the extra to install."""
    os.environ.setdefault(_LOOPBACK_SWITCH, "0")
    try:
        import ray
    except ImportError:
        raise ConfigError(
            f"--ray needs the Ray package, which is not installed; {INSTALL_HINT}"
        ) from None
    return ray


def check_address(address: object) -> str:
    """``local`` or a cluster address such as ``10.0.0.5:6379`` or ``ray://head:10001``."""
    if not isinstance(address, str) or not address.strip():
        raise ConfigError(
            f"'ray' must be 'local' or the address of a running Ray cluster, such as "
            f"'10.0.0.5:6379' (got {address!r})"
        )
    return address.strip()


def connect(address: str, *, cpus: int | None = None) -> types.ModuleType:
    """Ray, initialized: the instance already running in this process, a new local one
    on the loopback address (``cpus`` workers, default one per core), or the cluster at
    ``address``."""
    address = check_address(address)
    ray = import_ray()
    if ray.is_initialized():
        return ray
    options: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "configure_logging": False,
        # Workers import eightbit's task code as they start (Ray starts them with the
        # instance, while this process still loads the model), not in their first task.
        "runtime_env": {"worker_process_setup_hook": f"{__name__}.{warm_worker.__name__}"},
    }
    try:
        if address == LOCAL:
            # "local" tells Ray to start a new instance even when RAY_ADDRESS or a
            # `ray start` on this machine would otherwise be joined.
            ray.init(LOCAL, num_cpus=cpus, _node_ip_address="127.0.0.1", **options)
        else:
            ray.init(address=address, **options)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise ConfigError(f"cannot join the Ray cluster at {address!r}: {error}") from None
    return ray


def warm_worker() -> None:
    """Run by each Ray worker process as it starts: import what eightbit's tasks and actors
    run (ONNX Runtime, the models' code), so that a worker started ahead of the work
    (Ray starts one per CPU with the instance) does not import it in its first task."""
    import eightbit.distributed.calibration
    import eightbit.distributed.check
    import eightbit.distributed.scoring
    import eightbit.distributed.validation  # noqa: F401


def worker_count(ray: types.ModuleType) -> int:
    """CPUs of the cluster: how many tasks run at once."""
    return max(int(ray.cluster_resources().get("CPU", 1)), 1)


def run_in_order(
    ray: types.ModuleType,
    task: Callable[..., Any],
    calls: Sequence[tuple[Any, ...]],
    on_done: Callable[[int, Any], None] | None = None,
) -> list[Any]:
    """``task(*call)`` for every call on the cluster, results in the order of ``calls``.

    ``on_done(index, result)`` runs as each task finishes, in whatever order they finish
    (progress); the results themselves are returned in call order, so whatever merges
    them does so in one fixed order. An eightbit error raised in a task is raised here as
    itself (its message names the shard and sample).
    """
    remote = ray.remote(max_retries=TASK_RETRIES, num_cpus=1)(task)
    pending = {remote.remote(*call): index for index, call in enumerate(calls)}
    results: list[Any] = [None] * len(calls)
    try:
        for ref, index in _as_completed(ray, pending):
            results[index] = ray.get(ref)
            if on_done is not None:
                on_done(index, results[index])
    except ray.exceptions.RayTaskError as error:
        # The other tasks are left to finish and their results dropped, not cancelled:
        # ray.cancel racing with a task's reply fails a check in Ray's core worker, which
        # ends this process with exit code 1 and no message (ray-project/ray#54846).
        cause = error.cause
        if isinstance(cause, EightbitError):
            raise type(cause)(*cause.args) from None
        raise
    return results


def _as_completed(ray: types.ModuleType, pending: dict[Any, int]) -> Iterator[tuple[Any, int]]:
    waiting = list(pending)
    while waiting:
        done, waiting = ray.wait(waiting, num_returns=1)
        for ref in done:
            yield ref, pending[ref]


# The last model a worker process prepared (sessions included), by what it was built from.
_PREPARED: dict[bytes, Any] = {}


def prepared_once(parts: Sequence[object], build: Callable[[], Any]) -> Any:
    """``build()`` once per worker process for the same ``parts`` (model bytes, settings):
    the shards after the first reuse its sessions. Only the last is kept, so a worker holds
    one model however many runs it serves."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else repr(part).encode())
        digest.update(b"\0")
    key = digest.digest()
    if key not in _PREPARED:
        _PREPARED.clear()
        _PREPARED[key] = build()
    return _PREPARED[key]
