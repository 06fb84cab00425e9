"""Schedules against their closed forms at step 0, at each boundary and past the end.

Every expected number is written out from the formula (or the paper) here, never computed by the code
under test.
"""

import inspect
import math
import re

import numpy as np
import pytest

from pipeline.core.schedules import (
    SCHEDULE_PARAMS,
    SCHEDULES,
    ReduceLROnPlateau,
    build_schedule,
    constant,
    cosine_decay,
    cyclic_triangular,
    exponential_decay,
    exponential_ramp,
    inverse_time_decay,
    linear_ramp,
    one_cycle,
    step_decay,
    warmup,
)

SQRT2 = math.sqrt(2)

# (id, factory, [(step, expected lr), ...]): step 0, every boundary, and past the end.
CLOSED_FORMS = [
    ("constant", lambda: constant(0.1), [(0, 0.1), (1, 0.1), (10**6, 0.1)]),
    (
        "step",
        lambda: step_decay(1.0, decay_steps=10, gamma=0.5),
        [(0, 1.0), (9, 1.0), (10, 0.5), (19, 0.5), (20, 0.25), (1000, 0.5**100)],
    ),
    (
        "step_gamma_1",
        lambda: step_decay(0.3, decay_steps=1, gamma=1.0),
        [(0, 0.3), (1, 0.3), (500, 0.3)],
    ),
    (
        "exponential",
        lambda: exponential_decay(2.0, decay_rate=0.1),
        # exp(-10**4) underflows to exactly 0, without a warning.
        [(0, 2.0), (10, 2.0 / math.e), (20, 2.0 / math.e**2), (10**5, 0.0)],
    ),
    ("exponential_rate_0", lambda: exponential_decay(0.5, decay_rate=0.0), [(0, 0.5), (10**6, 0.5)]),
    (
        "inverse_time",
        lambda: inverse_time_decay(1.0, decay_rate=0.5),
        [(0, 1.0), (2, 0.5), (6, 0.25), (1998, 0.001)],
    ),
    (
        "cosine_floor",
        lambda: cosine_decay(1.0, total_steps=10, min_lr_ratio=0.1),
        # floor 0.1; half way: 0.1 + 0.9 * (1 + cos(pi/2)) / 2 = 0.55
        [(0, 1.0), (5, 0.55), (10, 0.1), (11, 0.1), (1000, 0.1)],
    ),
    (
        "cosine",
        lambda: cosine_decay(2.0, total_steps=4),
        # step 1: 2 * (1 + cos(pi/4)) / 2 = 1 + sqrt(2)/2; step 3: 1 - sqrt(2)/2
        [(0, 2.0), (1, 1 + SQRT2 / 2), (2, 1.0), (3, 1 - SQRT2 / 2), (4, 0.0), (5, 0.0)],
    ),
    (
        "warmup_constant",
        lambda: warmup(constant(1.0), 1.0, warmup_steps=4),
        # lr * (t + 1) / 5 for t < 4, then 1
        [(0, 0.2), (1, 0.4), (3, 0.8), (4, 1.0), (100, 1.0)],
    ),
    (
        "warmup_cosine",
        lambda: warmup(cosine_decay(1.0, total_steps=10), 1.0, warmup_steps=3),
        # (t + 1) / 4, then the cosine of t - 3: 1 at 3, 0.5 at 8, 0 from 13 on
        [(0, 0.25), (2, 0.75), (3, 1.0), (8, 0.5), (13, 0.0), (20, 0.0)],
    ),
    (
        "one_cycle",
        lambda: one_cycle(1.0, total_steps=20, warmup_fraction=0.5, initial_lr_ratio=0.1, min_lr_ratio=0.01),
        # peak at 10; up: 0.1 + 0.9 * (1 - cos(pi t/10)) / 2; down: 0.01 + 0.99 * (1 + cos(pi (t-10)/10)) / 2
        [(0, 0.1), (5, 0.55), (10, 1.0), (15, 0.505), (20, 0.01), (21, 0.01), (10**6, 0.01)],
    ),
    (
        "one_cycle_quarter",
        lambda: one_cycle(2.0, total_steps=8, warmup_fraction=0.25, initial_lr_ratio=0.5, min_lr_ratio=0.0),
        # peak at 2; step 1: 1 + 1 * (1 - cos(pi/2)) / 2 = 1.5; step 5 = half way down: 1.0
        [(0, 1.0), (1, 1.5), (2, 2.0), (5, 1.0), (8, 0.0), (9, 0.0)],
    ),
    (
        "one_cycle_defaults",
        lambda: one_cycle(0.5, total_steps=100),
        # OneCycleLR's defaults: start 0.5/25 = 0.02, peak at 30, end 0.5/25/1e4 = 2e-6
        [(0, 0.02), (30, 0.5), (100, 2e-6), (150, 2e-6)],
    ),
    (
        "cyclic",
        lambda: cyclic_triangular(1.0, half_cycle_steps=4, min_lr_ratio=0.2),
        # base 0.2 at 0, 8, 16 ...; max 1.0 at 4, 12, ...; linear in between
        [(0, 0.2), (2, 0.6), (4, 1.0), (6, 0.6), (8, 0.2), (10, 0.6), (12, 1.0), (10**6, 0.2)],
    ),
    (
        "cyclic_default_base",
        lambda: cyclic_triangular(0.5, half_cycle_steps=1),
        [(0, 0.05), (1, 0.5), (2, 0.05), (3, 0.5)],
    ),
    (
        "exponential_ramp",
        lambda: exponential_ramp(1e-6, 1.0, total_steps=7),
        # geometric: x10 per step; ends at step 6
        [(0, 1e-6), (1, 1e-5), (3, 1e-3), (6, 1.0), (7, 1.0), (100, 1.0)],
    ),
    (
        "linear_ramp",
        lambda: linear_ramp(0.1, 1.0, total_steps=10),
        # 0.1 + 0.9 * t / 9; ends at step 9
        [(0, 0.1), (3, 0.4), (9, 1.0), (10, 1.0), (100, 1.0)],
    ),
    (
        "linear_ramp_down",
        lambda: linear_ramp(1.0, 0.5, total_steps=2),
        [(0, 1.0), (1, 0.5), (2, 0.5)],
    ),
]


@pytest.mark.parametrize(
    ("factory", "table"), [c[1:] for c in CLOSED_FORMS], ids=[c[0] for c in CLOSED_FORMS]
)
def test_closed_form_values(factory, table):
    schedule = factory()
    for step, expected in table:
        got = schedule(step)
        assert type(got) is float
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-15), f"step {step}"


@pytest.mark.parametrize(
    ("factory", "table"), [c[1:] for c in CLOSED_FORMS], ids=[c[0] for c in CLOSED_FORMS]
)
def test_vectorised_equals_scalar(factory, table):
    schedule = factory()
    steps = np.arange(0, 60)
    values = schedule(steps)
    assert isinstance(values, np.ndarray) and values.dtype == np.float64 and values.shape == steps.shape
    # NumPy's vectorised cos/exp may differ from libm's in the last bit
    np.testing.assert_allclose(values, [schedule(int(s)) for s in steps], rtol=1e-14, atol=0)
    grid = np.array([[0, 1, 2], [30, 59, 10**6]], dtype=np.int32)  # any integer dtype, any shape
    np.testing.assert_allclose(schedule(grid), [[schedule(int(s)) for s in row] for row in grid], rtol=1e-14)
    assert schedule(np.int64(7)) == schedule(7)


@pytest.mark.parametrize("warmup_steps", [1, 2, 5, 20])
@pytest.mark.parametrize(
    "inner",
    [lambda lr: constant(lr), lambda lr: cosine_decay(lr, 50), lambda lr: exponential_decay(lr, 0.1)],
    ids=["constant", "cosine", "exponential"],
)
def test_warmup_starts_above_zero_and_rises_strictly_to_the_peak(inner, warmup_steps):
    lr = 0.3
    schedule = warmup(inner(lr), lr, warmup_steps)
    values = schedule(np.arange(warmup_steps + 1))
    assert values[0] == pytest.approx(lr / (warmup_steps + 1)) and values[0] > 0
    assert np.all(np.diff(values) > 0)
    assert values[-1] == lr


def test_warmup_of_zero_steps_is_the_schedule_itself():
    inner = cosine_decay(1.0, 10)
    assert warmup(inner, 1.0, 0) is inner


def test_build_schedule_without_warmup_is_the_factory():
    assert build_schedule("constant", lr=0.3, total_steps=10)(5) == 0.3
    assert build_schedule("step", lr=1.0, total_steps=100, decay_steps=10, gamma=0.5)(20) == 0.25
    assert build_schedule("exponential", lr=2.0, total_steps=100, decay_rate=0.1)(10) == pytest.approx(
        2 / math.e
    )
    assert build_schedule("inverse_time", lr=1.0, total_steps=100, decay_rate=0.5)(2) == 0.5
    cosine = build_schedule("cosine", lr=1.0, total_steps=10)
    assert [cosine(0), cosine(5), cosine(10)] == pytest.approx([1.0, 0.5, 0.0])
    assert build_schedule("cyclic", lr=1.0, total_steps=100, half_cycle_steps=4, min_lr_ratio=0.2)(
        2
    ) == pytest.approx(0.6)
    assert build_schedule("one_cycle", lr=0.5, total_steps=100)(0) == pytest.approx(0.02)
    assert build_schedule("plateau", lr=0.5, total_steps=100)(99) == 0.5


def test_build_schedule_hands_cosine_the_steps_left_after_warmup():
    schedule = build_schedule("cosine", lr=1.0, total_steps=13, warmup_steps=3, min_lr_ratio=0.1)
    # warmup (t+1)/4, then a cosine over 10 steps: 1 at step 3, 0.55 half way (step 8), floor 0.1 at step 13
    expected = {0: 0.25, 1: 0.5, 2: 0.75, 3: 1.0, 8: 0.55, 13: 0.1, 14: 0.1, 100: 0.1}
    assert [schedule(s) for s in expected] == pytest.approx(list(expected.values()))


def test_build_schedule_hands_one_cycle_the_steps_left_after_warmup():
    schedule = build_schedule(
        "one_cycle",
        lr=1.0,
        total_steps=25,
        warmup_steps=5,
        warmup_fraction=0.5,
        initial_lr_ratio=0.1,
        min_lr_ratio=0.01,
    )
    # warmup (t+1)/6 for t < 5; one_cycle over 20 steps from step 5: start 0.1, peak 1 at 15, floor 0.01 at 25
    expected = {0: 1 / 6, 4: 5 / 6, 5: 0.1, 15: 1.0, 25: 0.01, 30: 0.01}
    assert [schedule(s) for s in expected] == pytest.approx(list(expected.values()))


def test_build_schedule_warmup_forwards_observe_to_plateau():
    schedule = build_schedule("plateau", lr=1.0, total_steps=100, warmup_steps=2, factor=0.5, patience=0)
    assert [schedule(0), schedule(1), schedule(2)] == pytest.approx([1 / 3, 2 / 3, 1.0])
    schedule.observe(1.0)
    schedule.observe(1.0)  # no improvement, patience 0: halve
    assert schedule(5) == 0.5
    assert not hasattr(build_schedule("cosine", lr=1.0, total_steps=10, warmup_steps=2), "observe")


# (id, kwargs, observed losses, rate after each observation) -- PyTorch's ReduceLROnPlateau semantics.
PLATEAU_TABLE = [
    ("patience_2", {"factor": 0.5, "patience": 2}, [1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 0.5, 0.5, 0.5, 0.25]),
    ("patience_0", {"factor": 0.5, "patience": 0}, [1, 2, 3], [1, 0.5, 0.25]),
    ("improving_never_reduces", {"factor": 0.5, "patience": 0}, [5, 4, 3, 2, 1], [1, 1, 1, 1, 1]),
    ("improvement_resets", {"factor": 0.5, "patience": 1}, [5, 4, 4, 3, 3, 3], [1, 1, 1, 1, 1, 0.5]),
    # threshold 0.1: from best 1.0 only values < 0.9 count; 0.95 is a bad epoch, 0.85 is not
    ("threshold", {"factor": 0.5, "patience": 0, "threshold": 0.1}, [1.0, 0.95, 0.85], [1, 0.5, 0.5]),
    ("threshold_0", {"factor": 0.5, "patience": 0, "threshold": 0.0}, [1.0, 0.999999, 0.999999], [1, 1, 0.5]),
    ("cooldown", {"factor": 0.5, "patience": 0, "cooldown": 2}, [1, 1, 1, 1, 1], [1, 0.5, 0.5, 0.5, 0.25]),
    ("floor", {"factor": 0.5, "patience": 0, "min_lr_ratio": 0.3}, [1, 1, 1, 1], [1, 0.5, 0.3, 0.3]),
    ("nan_is_no_improvement", {"factor": 0.5, "patience": 0}, [1, math.nan, 0.5], [1, 0.5, 0.5]),
    ("inf_is_no_improvement", {"factor": 0.5, "patience": 1}, [math.inf, math.inf, 1.0], [1, 0.5, 0.5]),
    ("negative_losses", {"factor": 0.5, "patience": 0, "threshold": 0.1}, [-1.0, -1.05, -1.2], [1, 0.5, 0.5]),
    ("defaults_patience_10", {}, [1.0] * 12, [1.0] * 11 + [0.1]),
]


@pytest.mark.parametrize(
    ("kwargs", "values", "rates"), [c[1:] for c in PLATEAU_TABLE], ids=[c[0] for c in PLATEAU_TABLE]
)
def test_reduce_lr_on_plateau(kwargs, values, rates):
    schedule = ReduceLROnPlateau(1.0, **kwargs)
    assert schedule(0) == 1.0
    got = []
    for step, value in enumerate(values):
        schedule.observe(value)
        got.append(schedule(step))
    assert got == pytest.approx(rates)
    # the rate depends on what was observed, not on the step
    np.testing.assert_array_equal(schedule(np.arange(3)), [rates[-1]] * 3)


def test_schedule_params_match_the_factories():
    assert (
        set(SCHEDULES)
        == set(SCHEDULE_PARAMS)
        == {
            "constant",
            "step",
            "exponential",
            "inverse_time",
            "cosine",
            "one_cycle",
            "cyclic",
            "plateau",
        }
    )
    for name, factory in SCHEDULES.items():
        names = set(inspect.signature(factory).parameters) - {"lr", "total_steps"}
        assert set(SCHEDULE_PARAMS[name]) == names


def test_repr_shows_the_call():
    assert repr(cosine_decay(0.1, 100)) == "cosine_decay(lr=0.1, total_steps=100, min_lr_ratio=0.0)"
    assert repr(warmup(constant(1.0), 1.0, 2)) == "warmup(schedule=constant(lr=1.0), lr=1.0, warmup_steps=2)"


# (call, parameter, function, value as printed): every factory argument, each kind of bad value.
INVALID = [
    (lambda: constant(0), "lr", "constant", "0"),
    (lambda: constant(-0.1), "lr", "constant", "-0.1"),
    (lambda: constant(math.nan), "lr", "constant", "nan"),
    (lambda: constant(math.inf), "lr", "constant", "inf"),
    (lambda: constant("0.1"), "lr", "constant", "'0.1'"),
    (lambda: constant(None), "lr", "constant", "None"),
    (lambda: constant(True), "lr", "constant", "True"),
    (lambda: constant(np.float64(-1.0)), "lr", "constant", "-1.0"),
    (lambda: step_decay(0, 10, 0.5), "lr", "step_decay", "0"),
    (lambda: step_decay(1.0, 0, 0.5), "decay_steps", "step_decay", "0"),
    (lambda: step_decay(1.0, -5, 0.5), "decay_steps", "step_decay", "-5"),
    (lambda: step_decay(1.0, 2.5, 0.5), "decay_steps", "step_decay", "2.5"),
    (lambda: step_decay(1.0, 10.0, 0.5), "decay_steps", "step_decay", "10.0"),
    (lambda: step_decay(1.0, 10, 0), "gamma", "step_decay", "0"),
    (lambda: step_decay(1.0, 10, 1.5), "gamma", "step_decay", "1.5"),
    (lambda: step_decay(1.0, 10, -0.5), "gamma", "step_decay", "-0.5"),
    (lambda: step_decay(1.0, 10, math.nan), "gamma", "step_decay", "nan"),
    (lambda: exponential_decay(-1, 0.1), "lr", "exponential_decay", "-1"),
    (lambda: exponential_decay(1.0, -1), "decay_rate", "exponential_decay", "-1"),
    (lambda: exponential_decay(1.0, math.nan), "decay_rate", "exponential_decay", "nan"),
    (lambda: exponential_decay(1.0, math.inf), "decay_rate", "exponential_decay", "inf"),
    (lambda: inverse_time_decay(math.inf, 0.1), "lr", "inverse_time_decay", "inf"),
    (lambda: inverse_time_decay(1.0, -0.5), "decay_rate", "inverse_time_decay", "-0.5"),
    (lambda: cosine_decay(0, 10), "lr", "cosine_decay", "0"),
    (lambda: cosine_decay(1.0, 0), "total_steps", "cosine_decay", "0"),
    (lambda: cosine_decay(1.0, 1.5), "total_steps", "cosine_decay", "1.5"),
    (lambda: cosine_decay(1.0, 10, -0.1), "min_lr_ratio", "cosine_decay", "-0.1"),
    (lambda: cosine_decay(1.0, 10, 1.5), "min_lr_ratio", "cosine_decay", "1.5"),
    (lambda: cosine_decay(1.0, 10, math.nan), "min_lr_ratio", "cosine_decay", "nan"),
    (lambda: warmup(3, 1.0, 5), "schedule", "warmup", "3"),
    (lambda: warmup(constant(1.0), 0, 5), "lr", "warmup", "0"),
    (lambda: warmup(constant(1.0), 1.0, -1), "warmup_steps", "warmup", "-1"),
    (lambda: warmup(constant(1.0), 1.0, 1.5), "warmup_steps", "warmup", "1.5"),
    (lambda: one_cycle(0, 100), "lr", "one_cycle", "0"),
    (lambda: one_cycle(1.0, 0), "total_steps", "one_cycle", "0"),
    (lambda: one_cycle(1.0, 100, warmup_fraction=0), "warmup_fraction", "one_cycle", "0"),
    (lambda: one_cycle(1.0, 100, warmup_fraction=1), "warmup_fraction", "one_cycle", "1"),
    (lambda: one_cycle(1.0, 100, warmup_fraction=math.nan), "warmup_fraction", "one_cycle", "nan"),
    (lambda: one_cycle(1.0, 100, initial_lr_ratio=1.5), "initial_lr_ratio", "one_cycle", "1.5"),
    (lambda: one_cycle(1.0, 100, initial_lr_ratio=-0.1), "initial_lr_ratio", "one_cycle", "-0.1"),
    (lambda: one_cycle(1.0, 100, min_lr_ratio=-1), "min_lr_ratio", "one_cycle", "-1"),
    (lambda: one_cycle(1.0, 100, min_lr_ratio=math.inf), "min_lr_ratio", "one_cycle", "inf"),
    (lambda: cyclic_triangular(-1, 4), "lr", "cyclic_triangular", "-1"),
    (lambda: cyclic_triangular(1.0, 0), "half_cycle_steps", "cyclic_triangular", "0"),
    (lambda: cyclic_triangular(1.0, 4.0), "half_cycle_steps", "cyclic_triangular", "4.0"),
    (lambda: cyclic_triangular(1.0, 4, 2), "min_lr_ratio", "cyclic_triangular", "2"),
    (lambda: ReduceLROnPlateau(0), "lr", "ReduceLROnPlateau", "0"),
    (lambda: ReduceLROnPlateau(1.0, factor=0), "factor", "ReduceLROnPlateau", "0"),
    (lambda: ReduceLROnPlateau(1.0, factor=1), "factor", "ReduceLROnPlateau", "1"),
    (lambda: ReduceLROnPlateau(1.0, factor=1.5), "factor", "ReduceLROnPlateau", "1.5"),
    (lambda: ReduceLROnPlateau(1.0, patience=-1), "patience", "ReduceLROnPlateau", "-1"),
    (lambda: ReduceLROnPlateau(1.0, patience=1.5), "patience", "ReduceLROnPlateau", "1.5"),
    (lambda: ReduceLROnPlateau(1.0, threshold=-1), "threshold", "ReduceLROnPlateau", "-1"),
    (lambda: ReduceLROnPlateau(1.0, threshold=math.nan), "threshold", "ReduceLROnPlateau", "nan"),
    (lambda: ReduceLROnPlateau(1.0, min_lr_ratio=1.1), "min_lr_ratio", "ReduceLROnPlateau", "1.1"),
    (lambda: ReduceLROnPlateau(1.0, cooldown=-1), "cooldown", "ReduceLROnPlateau", "-1"),
    (lambda: ReduceLROnPlateau(1.0).observe("x"), "value", "ReduceLROnPlateau.observe", "'x'"),
    (lambda: ReduceLROnPlateau(1.0).observe(None), "value", "ReduceLROnPlateau.observe", "None"),
    (lambda: exponential_ramp(0, 1.0, 10), "start_lr", "exponential_ramp", "0"),
    (lambda: exponential_ramp(1e-6, -1, 10), "end_lr", "exponential_ramp", "-1"),
    (lambda: exponential_ramp(1e-6, math.inf, 10), "end_lr", "exponential_ramp", "inf"),
    (lambda: exponential_ramp(1e-6, 1.0, 1), "total_steps", "exponential_ramp", "1"),
    (lambda: linear_ramp(-0.1, 1.0, 10), "start_lr", "linear_ramp", "-0.1"),
    (lambda: linear_ramp(0.1, 0, 10), "end_lr", "linear_ramp", "0"),
    (lambda: linear_ramp(0.1, 1.0, 1), "total_steps", "linear_ramp", "1"),
    (lambda: build_schedule("cosine", lr=1.0, total_steps=0), "total_steps", "build_schedule", "0"),
    (
        lambda: build_schedule("cosine", lr=1.0, total_steps=10, warmup_steps=-1),
        "warmup_steps",
        "build_schedule",
        "-1",
    ),
    (
        lambda: build_schedule("cosine", lr=1.0, total_steps=10, warmup_steps=10),
        "warmup_steps",
        "build_schedule",
        "10",
    ),
    (lambda: build_schedule("cosine", lr=0, total_steps=10), "lr", "cosine_decay", "0"),
    (
        lambda: build_schedule("cosine", lr=1.0, total_steps=10, min_lr_ratio=2),
        "min_lr_ratio",
        "cosine_decay",
        "2",
    ),
]


@pytest.mark.parametrize(("call", "name", "function", "value"), INVALID)
def test_invalid_arguments_name_parameter_function_and_value(call, name, function, value):
    pattern = rf"The '{name}' parameter of {re.escape(function)} must be .* Got {re.escape(value)} instead\."
    with pytest.raises(ValueError, match=pattern):
        call()


SCHEDULE_INSTANCES = [
    constant(1.0),
    step_decay(1.0, 10, 0.5),
    exponential_decay(1.0, 0.1),
    inverse_time_decay(1.0, 0.1),
    cosine_decay(1.0, 10),
    warmup(cosine_decay(1.0, 10), 1.0, 3),
    one_cycle(1.0, 10),
    cyclic_triangular(1.0, 4),
    ReduceLROnPlateau(1.0),
    exponential_ramp(1e-6, 1.0, 10),
    linear_ramp(1e-6, 1.0, 10),
]


@pytest.mark.parametrize("schedule", SCHEDULE_INSTANCES, ids=repr)
@pytest.mark.parametrize(
    ("step", "shown"),
    [
        (-1, "-1"),
        (np.int64(-3), "-3"),
        (np.array([0, 5, -2]), "an entry -2"),
        (1.5, "1.5"),
        (2.0, "2.0"),
        (True, "True"),
        ("3", "'3'"),
        ([0, 1], "[0, 1]"),
        (np.array([0.0, 1.0]), "dtype float64"),
    ],
)
def test_bad_step_raises(schedule, step, shown):
    with pytest.raises(ValueError, match=rf"The 'step' parameter of the .* Got {re.escape(shown)} instead\."):
        schedule(step)


def test_build_schedule_unknown_name_lists_the_valid_ones():
    with pytest.raises(
        ValueError,
        match=r"'name' parameter of build_schedule must be one of constant, step, .*plateau\. Got 'linear' ",
    ):
        build_schedule("linear", lr=1.0, total_steps=10)


@pytest.mark.parametrize(
    ("name", "params", "bad", "valid"),
    [
        ("cosine", {"gamma": 0.5}, "gamma=0.5", "min_lr_ratio, warmup_steps"),
        ("constant", {"decay_rate": 0.1}, "decay_rate=0.1", "warmup_steps"),
        ("step", {"decay_steps": 10, "gamma": 0.5, "rate": 1}, "rate=1", "decay_steps, gamma, warmup_steps"),
        ("plateau", {"mode": "max"}, "mode='max'", "factor, patience, threshold, min_lr_ratio, cooldown"),
    ],
)
def test_build_schedule_unknown_param_lists_the_valid_ones(name, params, bad, valid):
    key = bad.split("=")[0]
    pattern = rf"The '{key}' parameter of build_schedule is unknown for the '{name}' schedule; valid: {valid}"
    with pytest.raises(ValueError, match=pattern + rf".* Got {re.escape(bad)}\."):
        build_schedule(name, lr=1.0, total_steps=10, **params)


def test_build_schedule_missing_required_param():
    with pytest.raises(
        ValueError,
        match=r"build_schedule\('step'\) needs the parameter\(s\) gamma\. Got \{'decay_steps': 10\}",
    ):
        build_schedule("step", lr=1.0, total_steps=10, decay_steps=10)
