"""How many of the ranked nodes to return to float (docs/numerics.md §R.10).

``search_prefix`` finds the shortest prefix of the ranking whose model meets the budget by
galloping (1, 3, 7, ... nodes) and then bisecting, so the number of rebuilds grows with the
logarithm of the number of candidates, not with the number itself; a node whose return
would pass the latency cap is passed over (it stays int8) and the search goes on without
it; a short pruning pass then drops returned nodes the budget does not need. The caller's
``trial(nodes)`` builds, times and measures each model; this module only decides which to
try next.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Probe:
    """One rebuilt model with ``returned`` in float: ``slow`` when it passed the latency
    cap (then not measured), ``meets`` when it held the budget within the cap."""

    returned: tuple[str, ...]
    built: Any
    slow: bool
    meets: bool
    sqnr_db: float | None = None


Trial = Callable[[tuple[str, ...]], Probe]


@dataclass(frozen=True)
class Searched:
    """Where the search settled: ``final`` (the base probe when nothing was returned),
    the nodes ``passed_over`` as too slow in float, every probe in the order it was made,
    and ``stop``: why the budget is not met (None when it is)."""

    final: Probe
    passed_over: tuple[str, ...]
    probes: tuple[Probe, ...]
    stop: str | None


def rebuild_bound(candidates: int, pass_overs: int, prune: int) -> int:
    """The most rebuilds ``search_prefix`` makes (eq. R.13): ``2L - 1`` per search,
    ``L = ceil(log2(K + 1))`` for ``K`` candidates, one search more per pass-over, ``L``
    to trim the prefix found and ``prune`` to prune it (neither when ``prune`` is 0)."""
    if candidates <= 0:
        return 0
    steps = math.ceil(math.log2(candidates + 1))
    return (1 + pass_overs) * (2 * steps - 1) + (steps + prune if prune else 0)


def search_prefix(
    order: Sequence[str],
    base: Probe,
    trial: Trial,
    *,
    keep_one: bool,
    max_nodes: int | None,
    pass_overs: int,
    prune: int,
) -> Searched:
    """The shortest prefix of ``order`` whose model meets the budget (§R.10).

    ``base`` is the model with nothing returned (known to fail). ``keep_one``: ``order``
    holds every returnable node, so its last must stay int8. ``max_nodes`` caps the nodes
    returned; ``pass_overs`` how many nodes may be passed over for the latency cap;
    ``prune``: how many rebuilds the pruning pass may spend.
    """
    ranked: list[str] = list(order)
    passed: list[str] = []
    lo, low = 0, base  # longest prefix known to fail within the cap
    hi: int | None = None
    high = base  # shortest prefix known to meet the budget or pass the cap (when hi is set)
    step = 1
    probes: list[Probe] = []
    while True:
        limit = _limit(len(ranked), keep_one and not passed, max_nodes)
        if hi is None:
            if lo >= limit:
                return Searched(
                    low,
                    tuple(passed),
                    tuple(probes),
                    _why(lo, limit, ranked, passed, max_nodes, keep_one),
                )
            k = min(lo + step, limit)
            step *= 2
        elif hi - lo == 1:
            if high.meets:
                break
            if len(passed) >= pass_overs:
                stop = (
                    f"returning {ranked[hi - 1]} would pass the latency cap, and "
                    f"{len(passed)} node(s) were passed over already (the most a search "
                    "passes over); loosen max_latency or the budget"
                )
                return Searched(low, tuple(passed), tuple(probes), stop)
            passed.append(ranked.pop(hi - 1))  # too slow in float: it stays int8
            hi, step = None, 1
            continue
        else:
            k = (lo + hi) // 2
        probe = trial(tuple(ranked[:k]))
        probes.append(probe)
        if probe.slow or probe.meets:
            hi, high = k, probe
        else:
            lo, low = k, probe
    final, pruned = _prune(high, trial, prune)
    return Searched(final, tuple(passed), (*probes, *pruned), None)


def _prune(found: Probe, trial: Trial, budget: int) -> tuple[Probe, list[Probe]]:
    """Fewer nodes than ``found`` for the same budget: first drop the longest leading run
    of the prefix that is not needed (bisection), then try returning each remaining node
    but the last to int8, lowest-ranked first, at most ``budget`` times (§R.10, step 4).
    ``budget`` 0 keeps ``found`` as it is."""
    if budget == 0:
        return found, []
    final, probes = _trim(found, trial)
    for node in list(reversed(final.returned[:-1]))[:budget]:
        probe = trial(tuple(n for n in final.returned if n != node))
        probes.append(probe)
        if probe.meets:
            final = probe
    return final, probes


def _trim(found: Probe, trial: Trial) -> tuple[Probe, list[Probe]]:
    """The longest ``j`` for which ``found.returned[j:]`` still meets the budget, by
    bisection (``j = 0`` meets; keeping none is the base, which fails)."""
    nodes, best, probes = found.returned, found, []
    meets, fails = 0, len(nodes)
    while fails - meets > 1:
        middle = (meets + fails) // 2
        probe = trial(nodes[middle:])
        probes.append(probe)
        if probe.meets:
            meets, best = middle, probe
        else:
            fails = middle
    return best, probes


def _limit(count: int, keep_one: bool, max_nodes: int | None) -> int:
    limit = count - 1 if keep_one else count
    return limit if max_nodes is None else min(limit, max_nodes)


def _why(
    returned: int,
    limit: int,
    ranked: Sequence[str],
    passed: Sequence[str],
    max_nodes: int | None,
    keep_one: bool,
) -> str:
    """Why the search cannot return another node."""
    if max_nodes is not None and returned >= max_nodes:
        return f"stopped after max_steps={max_nodes} node(s) returned to float"
    if passed and returned >= len(ranked):
        return (
            f"every other ranked node would pass the latency cap in float ({len(passed)} "
            "passed over); loosen max_latency or the budget"
        )
    if keep_one and not passed:
        return (
            f"returning one more node would leave the whole model in float "
            f"({returned} node(s) already returned); loosen the budget"
        )
    return f"every ranked node ({len(ranked) + len(passed)}) is already float"
