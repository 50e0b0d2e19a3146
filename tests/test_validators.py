"""The checks of user-given numbers: one wording, bools refused, NaN and infinities refused."""

from __future__ import annotations

import math

import pytest

from eightbit.errors import ConfigError
from eightbit.validators import (
    is_finite,
    is_real,
    require_at_least_zero,
    require_bool,
    require_finite,
    require_int,
    require_positive,
)


def test_real_and_finite() -> None:
    assert is_real(1) and is_real(1.5) and is_real(-math.inf)
    assert not is_real(True) and not is_real("1") and not is_real(None)
    assert is_finite(0) and is_finite(-2.5)
    assert not is_finite(math.inf) and not is_finite(math.nan) and not is_finite(False)


@pytest.mark.parametrize(
    ("check", "good", "bad", "message"),
    [
        (
            lambda v: require_bool("flag", v),
            [True, False],
            [1, 0, None],
            "'flag' must be True or False",
        ),
        (
            lambda v: require_int("n", v, 1),
            [1, 7],
            [0, True, 2.0, "3"],
            r"'n' must be an integer >= 1",
        ),
        (lambda v: require_int("n", v, 0), [0], [-1, False], r"'n' must be an integer >= 0"),
        (
            lambda v: require_at_least_zero("drop", v, ", e.g. 0.01"),
            [0, 0.5, 3],
            [-0.1, math.inf, math.nan, True],
            r"'drop' must be a number >= 0, e\.g\. 0\.01 \(got",
        ),
        (
            lambda v: require_positive("cap", v, "a ratio"),
            [0.5, 2],
            [0, -1, math.inf, math.nan, True],
            r"'cap' must be a ratio > 0 \(got",
        ),
        (
            lambda v: require_finite("db", v, " of dB"),
            [-3, 0.0, 40],
            [math.inf, -math.inf, math.nan, None, True],
            r"'db' must be a finite number of dB \(got",
        ),
    ],
)
def test_each_check_accepts_the_domain_and_names_the_rest(
    check,
    good: list[object],
    bad: list[object],
    message: str,  # type: ignore[no-untyped-def]
) -> None:
    for value in good:
        check(value)
    for value in bad:
        with pytest.raises(ConfigError, match=message):
            check(value)
