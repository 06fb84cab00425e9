"""pipeline/study/search_reader.py: the values of a study file's ``search`` section (lr and ``auto``, fixed values,
ranges, one_minus, choices, the optimizer and schedule branches), each read into its search-space type or refused
with file, key path and value; a value a factory rejects is reported at the key the factory's message names."""

from __future__ import annotations

import math

import pytest
from test_loader import NO_VALUE, changed, expect_error, write

from pipeline.study.loader import load_study
from pipeline.study.space import Choice, Fixed, LrAuto, Range

# (changes to test_loader.BASE, key path in the message, message pattern, value in the message or NO_VALUE)
ERRORS = [
    ({"search.lr.lo": 1}, "search.lr.lo", r"unknown key; valid keys are choices, low, high, log\.", NO_VALUE),
    (
        {"search.schedule.choices.cosine.decay_rate": 0.1},
        "search.schedule.choices.cosine.decay_rate",
        r"unknown key; valid keys are min_lr_ratio, warmup_steps\.",
        NO_VALUE,
    ),
    (
        {"search.optimizer.choices.sgd": {"beta": 0.9}},
        "search.optimizer.choices.sgd.beta",
        r"unknown key; optimizer sgd takes no parameters\.",
        NO_VALUE,
    ),
    (
        # a factor near 1 on a log scale of its own would crowd its samples at the low end
        {"search.optimizer.choices.momentum.beta": {"low": 0.5, "high": 0.99}},
        "search.optimizer.choices.momentum.beta",
        r"is a factor near 1: search it as 1 - x .* \{one_minus: \{low: 0\.01, high: 0\.5\}\} is the same range\.",
        {"low": 0.5, "high": 0.99},
    ),
    (
        {"search.schedule.choices.step.decay_steps": {"one_minus": {"low": 0.1, "high": 0.5}}},
        "search.schedule.choices.step.decay_steps.one_minus",
        r"unknown key; valid keys are choices, low, high, log\.",  # one_minus is for float factors only
        NO_VALUE,
    ),
    (
        {"search.lr": {"auto": {"ramp": "segments", "iterations_per_value": 5}}},
        "search.lr.auto.step_lr",
        r"is required when ramp is 'segments'\.",
        NO_VALUE,
    ),
    (
        {"search.lr": {"auto": {"stop_factor": 1}}},
        "search.lr.auto.stop_factor",
        r"must be a float > 1\.",
        1,
    ),
    (
        {"search.lr": {"auto": {"stop": 1}}},
        "search.lr.auto.stop",
        r"unknown key; valid keys are start_lr, end_lr, steps, ramp, stop_factor, step_lr, iterations_per_value\.",
        NO_VALUE,
    ),
    (
        {"search.schedule": {"name": "step", "gamma": 0.5}},
        "search.schedule.decay_steps",
        r"missing required",
        NO_VALUE,
    ),
    ({"search.lr": True}, "search.lr", r"must be a float > 0\.", True),
    ({"search.lr.low": math.nan}, "search.lr.low", r"must be a finite float\.", math.nan),
    ({"search.lr.high": math.inf}, "search.lr.high", r"must be a finite float\.", math.inf),
    (
        {"search.schedule.choices.step.decay_steps": {"low": 5.5, "high": 20}},
        "search.schedule.choices.step.decay_steps.low",
        r"must be an int\.",
        5.5,
    ),
    # ranges: low < high, log scale needs low > 0, one_minus inside (0, 1)
    ({"search.lr": {"low": 1, "high": 0.1}}, "search.lr.high", r"must be > low = 1\.", 0.1),
    ({"search.lr.low": 0}, "search.lr.low", r"must be a float > 0 on a log scale \(log: false", 0),
    ({"search.lr": {"low": 0, "high": 1, "log": False}}, "search.lr.low", r"must be a float > 0\.", 0),
    ({"search.lr": -0.1}, "search.lr", r"must be a float > 0\.", -0.1),
    (
        {"search.schedule.choices.cosine.min_lr_ratio.low": 0},
        "search.schedule.choices.cosine.min_lr_ratio.low",
        r"on a log scale",
        0,
    ),
    (
        {"search.optimizer.choices.momentum.beta.one_minus.high": 1.5},
        "search.optimizer.choices.momentum.beta.one_minus.high",
        r"must be a float in \(0, 1\)\.",
        1.5,
    ),
    (
        {"search.optimizer.choices.momentum.beta.one_minus.low": 0},
        "search.optimizer.choices.momentum.beta.one_minus.low",
        r"must be a float in \(0, 1\)\.",
        0,
    ),
    (
        {"search.optimizer.choices.momentum.beta.one_minus": {"low": 0.5, "high": 0.1}},
        "search.optimizer.choices.momentum.beta.one_minus.high",
        r"must be > low = 0\.5\.",
        0.1,
    ),
    ({"search.lr": {"choices": []}}, "search.lr.choices", r"must be a non-empty list\.", []),
    ({"search.lr": {"choices": [0.1, 0.1]}}, "search.lr.choices", r"must not repeat", [0.1, 0.1]),
    (
        {"search.lr": {"auto": {"start_lr": 1, "end_lr": 0.1}}},
        "search.lr.auto.end_lr",
        r"must be > start_lr",
        0.1,
    ),
    # unknown names
    (
        {"search.schedule.choices": {"cosinus": {}}},
        "search.schedule.choices",
        r"unknown schedule; valid",
        "cosinus",
    ),
    (
        {"search.optimizer": "adamw"},
        "search.optimizer.name",
        r"unknown optimizer; valid optimizers are sgd",
        "adamw",
    ),
    # values the factories reject, at the key the factory's message names
    (
        {"search.schedule.choices.step.gamma": 1.5},
        "search.schedule.choices.step.gamma",
        r"The 'gamma' parameter of step_decay must be",
        1.5,
    ),
    (
        {
            "search.schedule.choices": {
                "one_cycle": {"warmup_fraction": {"low": 0.5, "high": 1.5, "log": False}}
            }
        },
        "search.schedule.choices.one_cycle.warmup_fraction.high",
        r"The 'warmup_fraction' parameter of one_cycle must be a float in \(0, 1\)\.",
        1.5,
    ),
    (
        {"search.optimizer": {"name": "adam", "beta1": {"choices": [0.9, 1.0]}}},
        "search.optimizer.beta1.choices[1]",
        r"The 'beta1' parameter of Adam must be",
        1.0,
    ),
    (
        {"search.batch_size": {"choices": [16, 0]}},
        "search.batch_size.choices[1]",
        r"must be an int >= 1\.",
        0,
    ),
    ({"search.batch_size": {"low": 0, "high": 8, "log": False}}, "search.batch_size.low", r"an int >= 1", 0),
]


@pytest.mark.parametrize(("changes", "key", "message", "value"), ERRORS, ids=[e[1] for e in ERRORS])
def test_each_mistake_names_file_key_and_value(tmp_path, changes, key, message, value):
    expect_error(write(tmp_path, changed(changes)), key, message, value)


@pytest.mark.parametrize(
    ("lr", "expected"),
    [
        (0.1, Fixed(0.1)),
        (1, Fixed(1.0)),
        ({"low": 1e-3, "high": 1}, Range(1e-3, 1.0, log=True)),
        ({"low": 0.1, "high": 0.5, "log": False}, Range(0.1, 0.5, log=False)),
        ({"choices": [0.1, 1]}, Choice((0.1, 1.0))),
        ("auto", LrAuto()),
        ({"auto": None}, LrAuto()),
        (
            {"auto": {"start_lr": 1e-6, "end_lr": 1, "steps": 50, "ramp": "linear"}},
            LrAuto(1e-6, 1.0, 50, "linear"),
        ),
    ],
)
def test_lr_forms(tmp_path, lr, expected):
    spec = load_study(write(tmp_path, changed({"search.lr": lr, "search.schedule": "constant"})))
    assert spec.search.lr == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"low": 5, "high": 20}, Range(5, 20, log=True, integer=True)),
        ({"low": 0, "high": 20, "log": False}, Range(0, 20, log=False, integer=True)),
        (7, Fixed(7)),
        ({"choices": [5, 10]}, Choice((5, 10))),
    ],
)
def test_integer_parameters_stay_integers(tmp_path, value, expected):
    spec = load_study(
        write(tmp_path, changed({"search.schedule": {"name": "cosine", "warmup_steps": value}}))
    )
    assert spec.search.schedules[0].params["warmup_steps"] == expected
