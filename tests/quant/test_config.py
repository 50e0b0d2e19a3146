"""QuantConfig: validated, frozen, resolved; messages name the value and what is expected."""

from __future__ import annotations

import dataclasses

import pytest

from eightbit.errors import ConfigError
from eightbit.quant import QuantConfig


def test_defaults_and_resolution() -> None:
    assert QuantConfig().activations == "uint8"
    assert QuantConfig(scheme="pow2").activations == "int8"
    assert QuantConfig(exclude=["a", "b"]).exclude == ("a", "b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        QuantConfig().scheme = "pow2"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scheme": "power2"}, r"'scheme' must be one of \['affine', 'pow2'\] \(got 'power2'\)"),
        ({"activations": "u8"}, r"'activations' must be one of \['uint8', 'int8'\] \(got 'u8'\)"),
        (
            {"scheme": "pow2", "activations": "uint8"},
            r"'activations' must be 'int8' when 'scheme' is 'pow2'.*\(got 'uint8'\)",
        ),
        ({"per_channel": "yes"}, r"'per_channel' must be True or False \(got 'yes'\)"),
        ({"exclude": "conv1"}, r"'exclude' must be a list of names, not one string"),
        ({"exclude": ("",)}, r"'exclude' must hold non-empty strings \(got ''\)"),
        ({"op_types": ()}, "'op_types' must name at least one op type"),
        ({"op_types": ("Conv", "Softmax")}, r"'op_types' must be op types eightbit quantizes.*"),
    ],
)
def test_invalid_options_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        QuantConfig(**kwargs)


def test_dict_round_trip_and_unknown_fields() -> None:
    config = QuantConfig(activations="int8", per_channel=False, exclude=("a",), op_types=("Conv",))
    assert QuantConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['per_chanel'\]"):
        QuantConfig.from_dict({"per_chanel": True})
