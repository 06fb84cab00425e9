"""pipeline/core/checks.py: one message shape for every bad argument, and the parameter's name carried by the
exception, so that the study-file boundary finds the key without reading the message."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.checks import ArgumentError, check_bool, check_choice, check_float, check_int, interval
from pipeline.errors import ConfigError
from pipeline.study.loader import _Reader
from pipeline.study.space import Fixed


def test_the_message_shape_is_scikit_learns():
    with pytest.raises(ArgumentError) as info:
        check_float(0, "decay_rate", "exponential", low=0, high=1, low_open=True)
    assert (
        str(info.value)
        == "The 'decay_rate' parameter of exponential must be a float in (0, 1]. Got 0 instead."
    )
    assert (info.value.param, info.value.owner, info.value.value) == ("decay_rate", "exponential", 0)
    assert info.value.rule == "The 'decay_rate' parameter of exponential must be a float in (0, 1]."
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("bounds", "text"),
    [
        ({"low": 0, "high": 1}, "in [0, 1]"),
        ({"low": 0, "high": 1, "low_open": True, "high_open": True}, "in (0, 1)"),
        ({"low": 0.0, "high": 1.0, "high_open": True}, "in [0.0, 1.0)"),
        ({"low": 1, "low_open": True}, "> 1"),
        ({"low": 2}, ">= 2"),
        ({"high": 5, "high_open": True}, "< 5"),
        ({}, ""),
    ],
)
def test_interval_text(bounds, text):
    assert interval(**bounds) == text


@pytest.mark.parametrize(
    "value", [math.nan, math.inf, -math.inf, True, np.bool_(False), "0.1", None, [0.1], 1.5, -0.1, 0]
)
def test_check_float_rejects_what_is_not_a_float_in_the_range(value):
    with pytest.raises(ArgumentError, match=r"must be a float in \(0, 1\]\. Got .* instead\."):
        check_float(value, "p", "f", low=0, high=1, low_open=True)


@pytest.mark.parametrize("value", [1, 0.5, np.float64(0.25), np.int64(1), np.float32(0.5)])
def test_check_float_accepts_real_numbers_in_the_range_and_returns_a_float(value):
    out = check_float(value, "p", "f", low=0, high=1, low_open=True)
    assert type(out) is float and out == float(value)


def test_inf_only_when_allowed():
    assert check_float(math.inf, "p", "f", low=1, low_open=True, inf_ok=True) == math.inf
    with pytest.raises(ArgumentError, match="Got nan instead"):
        check_float(math.nan, "p", "f", low=1, inf_ok=True)


def test_numpy_values_are_shown_as_a_user_writes_them():
    with pytest.raises(ArgumentError, match=r"Got 1\.5 instead\.$"):
        check_float(np.float64(1.5), "beta", "Momentum", low=0, high=1, high_open=True)


@pytest.mark.parametrize("value", [0, -1, 2.0, True, "3", None])
def test_check_int(value):
    with pytest.raises(ArgumentError, match=r"The 'n' parameter of f must be an int >= 1\."):
        check_int(value, "n", "f", low=1)
    assert check_int(np.int64(3), "n", "f", low=1) == 3


def test_check_choice_and_check_bool():
    assert check_choice("relu", "activation", "MLP", ("tanh", "relu")) == "relu"
    with pytest.raises(ArgumentError, match=r"must be one of 'tanh', 'relu'\. Got 'gelu' instead\."):
        check_choice("gelu", "activation", "MLP", ("tanh", "relu"))
    assert check_bool(None, "standardize", "f", none_ok=True) is None
    with pytest.raises(ArgumentError, match=r"must be a bool or None\. Got 'yes' instead\."):
        check_bool("yes", "standardize", "f", none_ok=True)


def test_the_data_loaders_errors_keep_the_shape_and_are_data_errors():
    from pipeline.datasets import DataArgumentError
    from pipeline.errors import DataError

    with pytest.raises(DataArgumentError) as info:
        check_int(-1, "seed", "load_dataset", low=0, error=DataArgumentError)
    assert isinstance(info.value, DataError) and isinstance(info.value, ArgumentError)
    assert str(info.value) == "The 'seed' parameter of load_dataset must be an int >= 0. Got -1 instead."


def test_the_study_file_boundary_finds_the_key_from_the_exception_not_from_the_wording():
    # A factory whose message says nothing like "The 'x' parameter": the key comes from exc.param.
    def factory(kv):
        if kv["gamma"] > 1:
            raise ArgumentError("gamma", "my_schedule", "something unusual", kv["gamma"])

    reader = _Reader("study.yaml", Path("study.yaml"))
    with pytest.raises(ConfigError) as info:
        reader.check_with_factory(factory, {"gamma": Fixed(2.0), "other": Fixed(1.0)}, "search.schedule")
    assert info.value.key == "search.schedule.gamma"
    assert info.value.value == 2.0
    assert str(info.value) == (
        "study.yaml: 'search.schedule.gamma': The 'gamma' parameter of my_schedule must be something unusual. "
        "Got 2.0 instead."
    )
