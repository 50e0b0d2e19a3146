"""QuantParams: validation with clear messages, limits, power-of-two detection."""

from __future__ import annotations

import numpy as np
import pytest

from eightbit.errors import ConfigError
from eightbit.quant import QuantParams


def test_limits_follow_dtype_and_narrow_range() -> None:
    def limits(dtype: str, narrow: bool = False) -> tuple[int, int]:
        params = QuantParams(np.float32(1), np.int64(0), dtype, narrow_range=narrow)
        return params.qmin, params.qmax

    assert limits("uint8") == (0, 255)
    assert limits("int8") == (-128, 127)
    assert limits("int8", narrow=True) == (-127, 127)
    assert limits("int32") == (-(2**31), 2**31 - 1)


def test_arrays_are_copied_typed_and_read_only() -> None:
    scale = np.array([0.5, 0.25])
    params = QuantParams(scale, [0, 0], "int8", axis=0)
    scale[0] = 9.0
    assert params.scale.dtype == np.float32 and params.scale[0] == 0.5
    assert params.zero_point.dtype == np.int64
    with pytest.raises(ValueError, match="read-only"):
        params.scale[0] = 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"dtype": "int4"},
            r"'dtype' must be one of \['int8', 'uint8', 'int32', 'int16'\] \(got 'int4'\)",
        ),
        ({"scale": 0.0}, r"'scale' must be finite and > 0 \(got 0.0\)"),
        ({"scale": np.inf}, r"'scale' must be finite and > 0"),
        ({"zero_point": 300}, r"'zero_point' must lie in \[0, 255\] for uint8 \(got 300\)"),
        ({"axis": 0}, "'axis' must be given exactly when the parameters are per channel"),
        ({"scale": [1.0, 2.0], "zero_point": [0]}, "must have the same shape"),
        ({"narrow_range": True}, "'narrow_range' needs a signed dtype"),
    ],
)
def test_invalid_parameters_are_refused(kwargs: dict, message: str) -> None:
    args = {"scale": 1.0, "zero_point": 0, "dtype": "uint8", **kwargs}
    with pytest.raises(ConfigError, match=message):
        QuantParams(**args)


def test_fraction_lengths_only_for_powers_of_two_with_zero_point_0() -> None:
    pow2 = QuantParams(np.array([0.25, 8.0, 2.0**-20], np.float32), np.zeros(3), "int8", axis=0)
    np.testing.assert_array_equal(pow2.fraction_lengths, [2, -3, 20])
    assert QuantParams(np.float32(0.3), np.int64(0), "int8").fraction_lengths is None
    assert QuantParams(np.float32(0.25), np.int64(3), "int8").fraction_lengths is None


def test_equality_compares_values() -> None:
    a = QuantParams(np.float32(0.1), np.int64(3), "uint8")
    assert a == QuantParams(0.1, 3, "uint8")
    assert a != QuantParams(0.1, 4, "uint8")
    assert a != QuantParams([0.1], [3], "uint8", axis=0)
    assert hash(a) == hash(QuantParams(0.1, 3, "uint8"))


def test_from_dict_refuses_unknown_and_mistyped_fields() -> None:
    good = {"dtype": "int8", "scale": 0.5, "zero_point": 0}
    assert QuantParams.from_dict(good) == QuantParams(0.5, 0, "int8")
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['shift'\]"):
        QuantParams.from_dict({**good, "shift": 1})
    with pytest.raises(ConfigError, match="'zero_point' must be one of integers"):
        QuantParams.from_dict({**good, "zero_point": 0.5})
    with pytest.raises(ConfigError, match="'scale' must hold float32 values"):
        QuantParams.from_dict({**good, "scale": 0.1})  # 0.1 is not a float32
    with pytest.raises(ConfigError, match=r"miss field\(s\) \['scale'\]"):
        QuantParams.from_dict({"dtype": "int8", "zero_point": 0})


def test_pow2_params_show_their_fraction_length_in_json() -> None:
    params = QuantParams(
        scale=np.array([2.0**-7, 2.0**-3], dtype=np.float32),
        zero_point=np.zeros(2, dtype=np.int64),
        dtype="int8",
        axis=0,
    )
    data = params.to_dict()
    assert data["fraction_length"] == [7, 3]
    assert QuantParams.from_dict(data) == params
    data["fraction_length"] = [7, 4]
    with pytest.raises(ConfigError, match="does not match scale"):
        QuantParams.from_dict(data)


def test_affine_params_have_no_fraction_length() -> None:
    params = QuantParams(
        scale=np.array(0.3, dtype=np.float32), zero_point=np.array(3), dtype="uint8", axis=None
    )
    assert "fraction_length" not in params.to_dict()
