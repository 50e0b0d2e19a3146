"""Arena planning: no two tensors alive at the same step share a byte, and the bounds hold."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from eightbit.codegen.arena import ALIGNMENT, Buffer, lifetimes, lower_bound, plan_arena
from tests.engine.helpers import PROPERTY


@st.composite
def buffers(draw: st.DrawFn) -> list[Buffer]:
    count = draw(st.integers(0, 12))
    result = []
    for index in range(count):
        first = draw(st.integers(0, 10))
        last = draw(st.integers(first, 12))
        result.append(Buffer(f"t{index}", draw(st.integers(1, 300)), first, last))
    return result


@PROPERTY
@given(buffers())
def test_live_tensors_never_share_bytes(planned: list[Buffer]) -> None:
    plan = plan_arena(planned)
    for a in planned:
        start = plan.offsets[a.name]
        assert start % ALIGNMENT == 0 and start + a.size <= plan.size
        for b in planned:
            if a is b or not a.overlaps(b):
                continue
            other = plan.offsets[b.name]
            assert start + a.size <= other or other + b.size <= start, (a, b)
    assert plan.lower_bound <= plan.size


@PROPERTY
@given(buffers())
def test_lower_bound_is_the_most_bytes_alive_at_one_step(planned: list[Buffer]) -> None:
    alive = [sum(b.size for b in planned if b.first <= step <= b.last) for step in range(13)]
    assert lower_bound(planned) == max(alive, default=0)


def test_a_chain_needs_two_buffers_at_a_time() -> None:
    # x -> a -> b -> c -> y: each step holds its input and its output.
    steps = [(("x",), ("a",)), (("a",), ("b",)), (("b",), ("c",)), (("c",), ("y",))]
    sizes = {"a": 400, "b": 100, "c": 400}
    plan = plan_arena(lifetimes(steps, sizes, {}))
    assert plan.lower_bound == 500
    assert plan.size == 500  # a and c reuse the same bytes, b sits beside them
    assert plan.offsets["a"] == plan.offsets["c"]


def test_an_alias_extends_its_source_lifetime() -> None:
    # a -> reshape (r aliases a) -> read by the last step: a lives until then.
    steps = [((), ("a",)), (("a",), ("r",)), ((), ("b",)), (("r", "b"), ("c",))]
    sizes = {"a": 64, "b": 64, "c": 64}
    found = {b.name: (b.first, b.last) for b in lifetimes(steps, sizes, {"r": "a"})}
    assert found == {"a": (0, 3), "b": (2, 3), "c": (3, 3)}
    plan = plan_arena(lifetimes(steps, sizes, {"r": "a"}))
    assert len({plan.offsets[name] for name in ("a", "b", "c")}) == 3
