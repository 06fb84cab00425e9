"""pipeline/errors.py: one message shape for every bad value, "FILE: 'KEY': MESSAGE Got VALUE instead.", with
the value shown bounded (~200 characters, whatever its size, a YAML alias bomb included) and passwords masked; the
exception types a caller tells apart. Expected texts are written out by hand."""

from __future__ import annotations

import time

import pytest
import yaml

from pipeline.errors import (
    MAX_SHOWN,
    ConfigError,
    DataError,
    NoCompleteTrial,
    PipelineError,
    StudyLocked,
    shown,
)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"file": "studies/x.yaml", "key": "search.lr.low", "value": 0},
            "studies/x.yaml: 'search.lr.low': must be a float > 0. Got 0 instead.",
        ),
        ({"key": "--trials", "value": 2.5}, "'--trials': must be a float > 0. Got 2.5 instead."),
        ({"file": "studies/x.yaml"}, "studies/x.yaml: must be a float > 0."),
        ({"file": "studies/x.yaml", "key": "seed"}, "studies/x.yaml: 'seed': must be a float > 0."),
        ({"key": "model.name", "value": "svm"}, "'model.name': must be a float > 0. Got 'svm' instead."),
        (
            {"key": "budget", "value": None},
            "'budget': must be a float > 0. Got None instead.",
        ),  # None is a value
        ({"key": "k", "value": float("nan")}, "'k': must be a float > 0. Got nan instead."),
        ({"key": "k", "value": {"low": 1}}, "'k': must be a float > 0. Got {'low': 1} instead."),
        ({}, "must be a float > 0."),
    ],
)
def test_the_message_shape(kwargs, expected):
    error = ConfigError("must be a float > 0.", **kwargs)
    assert str(error) == expected
    assert (error.file, error.key) == (kwargs.get("file"), kwargs.get("key"))


def test_a_long_string_is_cut_at_200_characters_and_says_how_long_it_was():
    assert MAX_SHOWN == 200
    error = ConfigError("unknown dataset.", key="data.dataset", value="a" * 1000)
    assert (
        str(error) == "'data.dataset': unknown dataset. Got '" + "a" * 200 + "'... (1000 characters) instead."
    )


def test_a_long_list_shows_its_first_items():
    assert shown(list(range(1000))) == "[0, 1, 2, 3, 4, 5, ...]"


def test_a_few_long_items_are_cut_at_200_characters():
    text = shown(["x" * 50] * 10)
    assert text == repr(["x" * 50] * 10)[:200] + "... (cut)"


def test_a_yaml_alias_bomb_is_shown_in_bounded_size_and_time():
    # the "billion laughs": 9 levels of 9 aliases, 9**9 strings that all share a few objects
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        lines.append(f"{level}: &{level} [{', '.join(['*' + previous] * 9)}]")
    bomb = yaml.safe_load("\n".join(lines))["i"]
    start = time.perf_counter()
    error = ConfigError("must be a float.", key="search.lr", value=bomb)
    assert time.perf_counter() - start < 1.0
    text = str(error)
    assert text.startswith("'search.lr': must be a float. Got [[[") and text.endswith(" instead.")
    assert len(text) < 300


def test_a_password_in_the_value_or_the_message_is_masked():
    error = ConfigError(
        "cannot reach postgresql://u:msg-pw@db/x.", key="--storage", value="postgresql://u:val-pw@db/x"
    )
    assert str(error) == (
        "'--storage': cannot reach postgresql://u:***@db/x. Got 'postgresql://u:***@db/x' instead."
    )
    assert shown({"uri": "redis://:pw-in-dict@h"}) == "{'uri': 'redis://:***@h'}"


def test_the_exception_types_a_caller_tells_apart():
    assert issubclass(ConfigError, PipelineError) and issubclass(ConfigError, ValueError)
    assert issubclass(DataError, PipelineError) and issubclass(DataError, ValueError)
    assert issubclass(NoCompleteTrial, PipelineError) and not issubclass(NoCompleteTrial, ValueError)
    assert issubclass(StudyLocked, PipelineError)


def test_a_locked_study_names_its_holder_as_readme_shows():
    # README: locked: study 'moons-mlp' is being tuned by host=h pid=123 since ... (--exclusive); exit 75
    error = StudyLocked("moons-mlp", "host=h pid=123 since 2026-12-04T01:00:03+00:00")
    assert str(error) == (
        "study 'moons-mlp' is being tuned by host=h pid=123 since 2026-12-04T01:00:03+00:00 (--exclusive)"
    )
    assert (error.study, error.holder) == ("moons-mlp", "host=h pid=123 since 2026-12-04T01:00:03+00:00")
