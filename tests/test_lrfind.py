"""The LR range test against hand computations, hand-built curves and least-squares theory.

Oracles: numbers written out here (the ramp tables, the moving average of three losses, the stop step of a
loss that is a known function of the rate), curves built so their steepest point / minimum / longest decrease
is known, the closed-form Hessian of least squares, and the theorem that full-batch gradient descent on a
quadratic cannot increase the loss below 2 / lambda_max.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest

from pipeline.core.arrays import Dataset
from pipeline.core.lrfind import (
    RangeTestResult,
    least_squares_bound,
    range_test,
    segments_ramp,
    suggest,
    suggest_from_curve,
)
from pipeline.core.models import LinearRegression, Model
from pipeline.core.optimizers import SGD, Optimizer
from pipeline.core.schedules import constant
from pipeline.core.training import train
from pipeline.datasets import load_dataset

# ----------------------------------------------------------------------------------------------- fakes


def tiny_dataset(n: int = 4) -> Dataset:
    """n rows whose target is the row number, so a model can tell which rows it was given."""
    return Dataset(
        name="tiny",
        task="regression",
        X_train=np.zeros((n, 1)),
        y_train=np.arange(float(n)),
        X_val=np.zeros((0, 1)),
        y_val=np.zeros(0),
        n_classes=0,
        feature_names=("x",),
        target_name="row",
        source="test",
    )


class LossIsParam(Model):
    """loss = params[0], gradient 0; with SetToF the loss at step t is f(lr_{t-1})."""

    task = "regression"
    n_params = 1

    def __init__(self, initial: float = 4.0):
        self.initial = initial
        self.batches: list[tuple[int, ...]] = []

    def init_params(self, rng):
        return np.array([self.initial])

    def unpack(self, params):
        return {"p": params}

    def _output(self, params, X):
        return np.zeros(len(X))

    def loss_and_grad(self, params, X, y):
        self.batches.append(tuple(int(v) for v in y))
        return float(params[0]), np.zeros(1)


class SetToF(Optimizer):
    """An 'update' that writes f(lr) into the parameter: the next loss is then f(lr) exactly."""

    name = "set_to_f"

    def __init__(self, f):
        self.f = f

    def init(self, params):
        pass

    def step(self, params, grad, lr):
        params[0] = self.f(lr)


def v_shape(lr: float) -> float:
    """1 + |log10 lr|: 4, 3, 2, 1, 2, 3, 4 at lr = 1e-3 .. 1e3."""
    return 1.0 + abs(math.log10(lr))


# ----------------------------------------------------------------------------------------------- ramps


def test_segments_ramp_is_the_table_of_held_values():
    schedule, total = segments_ramp(0.01, 0.01, 3, 0.05)
    assert total == 15
    expected = [0.01, 0.01, 0.01, 0.02, 0.02, 0.02, 0.03, 0.03, 0.03, 0.04, 0.04, 0.04, 0.05, 0.05, 0.05]
    np.testing.assert_allclose(schedule(np.arange(15)), expected, rtol=1e-12)
    assert [schedule(t) for t in (0, 2, 3, 14, 15, 1000)] == pytest.approx(
        [0.01, 0.01, 0.02, 0.05, 0.05, 0.05]
    )
    assert isinstance(schedule(3), float)


def test_segments_ramp_reaches_end_lr_exactly_despite_round_off():
    schedule, total = segments_ramp(0.1, 0.1, 2, 1.0)  # (1.0 - 0.1) / 0.1 = 8.999999999999998 in floats
    assert total == 20
    assert schedule(19) == 1.0
    np.testing.assert_allclose(schedule(np.arange(0, 20, 2)), np.arange(1, 11) / 10, rtol=1e-12)


@pytest.mark.parametrize(
    ("args", "param", "shown"),
    [
        ((0.0, 0.01, 3, 0.05), "start_lr", "0.0"),
        ((0.01, 0.0, 3, 0.05), "step_lr", "0.0"),
        ((0.01, math.nan, 3, 0.05), "step_lr", "nan"),
        ((0.01, 0.01, 0, 0.05), "iterations_per_value", "0"),
        ((0.01, 0.01, 2.0, 0.05), "iterations_per_value", "2.0"),
        ((0.05, 0.01, 3, 0.05), "end_lr", "0.05"),
        ((0.01, 0.01, 3, 0.055), "end_lr", "0.055"),  # not a whole number of steps: refuse, do not stop short
        ((0.01, 0.01, 3, math.inf), "end_lr", "inf"),
    ],
)
def test_segments_ramp_rejects_bad_arguments(args, param, shown):
    with pytest.raises(ValueError, match=rf"The '{param}' parameter of segments_ramp .* Got {shown} instead"):
        segments_ramp(*args)


@pytest.mark.parametrize(
    ("mode", "start", "end", "steps"), [("exponential", 1e-4, 1.0, 5), ("linear", 0.5, 2.5, 5)]
)
def test_builtin_ramp_endpoints_and_spacing(mode, start, end, steps):
    result = range_test(
        LossIsParam(),
        SetToF(lambda lr: 1.0),
        tiny_dataset(),
        start_lr=start,
        end_lr=end,
        steps=steps,
        mode=mode,
    )
    expected = {"exponential": [1e-4, 1e-3, 1e-2, 1e-1, 1.0], "linear": [0.5, 1.0, 1.5, 2.0, 2.5]}[mode]
    np.testing.assert_allclose(result.lrs, expected, rtol=1e-12)
    assert result.lrs[0] == pytest.approx(start, rel=1e-15) and result.lrs[-1] == pytest.approx(
        end, rel=1e-15
    )
    assert result.stop_step is None and result.diverged_lr is None
    assert result.stop_reason.startswith("ramp ended after 5 steps")


def test_ramp_override_uses_the_segments_table():
    result = range_test(
        LossIsParam(), SetToF(lambda lr: 1.0), tiny_dataset(), ramp=segments_ramp(0.1, 0.1, 2, 0.3)
    )
    np.testing.assert_allclose(result.lrs, [0.1, 0.1, 0.2, 0.2, 0.3, 0.3], rtol=1e-12)


# ---------------------------------------------------------------------------------------- stop rule


# Ramp 1e-3 .. 1e3 in 7 steps (one decade per step); loss_0 = 4 (the initial parameter) and
# loss_t = v_shape(lr_{t-1}) = 1 + |t - 4| for t >= 1: losses 4, 4, 3, 2, 1, 2, 3. With beta = 0 the smoothed
# loss is the loss, whose best so far is 1 from step 4 on: 2 > 1.5 x 1 at step 5, 3 > 2.5 x 1 at step 6.
@pytest.mark.parametrize(
    ("stop_factor", "stop_step", "diverged_lr"), [(1.5, 5, 1e2), (2.5, 6, 1e3), (4.0, None, None)]
)
def test_stop_rule_on_a_loss_that_is_a_known_function_of_the_rate(stop_factor, stop_step, diverged_lr):
    result = range_test(
        LossIsParam(4.0),
        SetToF(v_shape),
        tiny_dataset(),
        start_lr=1e-3,
        end_lr=1e3,
        steps=7,
        beta=0.0,
        stop_factor=stop_factor,
    )
    assert result.stop_step == stop_step
    n = 7 if stop_step is None else stop_step + 1
    np.testing.assert_allclose(result.losses, [4, 4, 3, 2, 1, 2, 3][:n], rtol=1e-12)
    np.testing.assert_array_equal(result.smoothed, result.losses)
    assert len(result.lrs) == n
    if diverged_lr is None:
        assert result.diverged_lr is None and "ramp ended" in result.stop_reason
    else:
        assert result.diverged_lr == pytest.approx(diverged_lr, rel=1e-12)
        assert result.diverged and f"at step {stop_step}" in result.stop_reason


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_non_finite_loss_stops_and_is_recorded_as_inf(bad):
    # losses 4, 4, 3, 2, 1, then f(lr_4 = 10) is non-finite at step 5
    result = range_test(
        LossIsParam(4.0),
        SetToF(lambda lr: bad if lr > 1 else v_shape(lr)),
        tiny_dataset(),
        start_lr=1e-3,
        end_lr=1e3,
        steps=7,
        stop_factor=math.inf,
    )
    assert result.stop_step == 5
    assert result.diverged_lr == pytest.approx(100.0)
    assert result.losses[-1] == math.inf and result.smoothed[-1] == math.inf
    assert result.stop_reason.startswith("non-finite loss")


def test_bias_corrected_moving_average_of_three_losses_by_hand():
    # losses 4 (initial parameter), then f(lr_0 = 1) = 1, f(lr_1 = 2) = 2; beta = 0.9:
    # a_0 = 0.4 -> 0.4 / 0.1 = 4; a_1 = 0.36 + 0.1 = 0.46 -> 0.46 / 0.19; a_2 = 0.414 + 0.2 = 0.614 -> / 0.271
    result = range_test(
        LossIsParam(4.0),
        SetToF(lambda lr: lr),
        tiny_dataset(),
        start_lr=1.0,
        end_lr=3.0,
        steps=3,
        mode="linear",
        beta=0.9,
    )
    np.testing.assert_allclose(result.losses, [4.0, 1.0, 2.0])
    np.testing.assert_allclose(result.smoothed, [4.0, 46 / 19, 614 / 271], rtol=1e-12)


# -------------------------------------------------------------------------------------- mini-batches


def test_mini_batches_cover_every_row_once_per_pass_in_the_order_train_uses():
    data = tiny_dataset(7)
    model = LossIsParam(1.0)
    range_test(model, SetToF(lambda lr: 1.0), data, batch_size=3, seed=5, start_lr=0.1, end_lr=1.0, steps=6)
    seen = model.batches
    assert [len(b) for b in seen] == [3, 3, 1, 3, 3, 1]  # two passes; the last batch of a pass is short
    first_pass, second_pass = sum(seen[:3], ()), sum(seen[3:], ())
    assert sorted(first_pass) == sorted(second_pass) == list(range(7))
    assert first_pass != second_pass  # reshuffled

    trained = LossIsParam(1.0)
    train(trained, SGD(), constant(0.1), data, epochs=2, batch_size=3, seed=5)
    assert trained.batches == seen


def test_same_seed_same_curves_other_seed_other_batches():
    data = load_dataset("diabetes", seed=0)

    def run(seed):
        return range_test(LinearRegression(10), SGD(), data, batch_size=32, seed=seed, steps=300)

    a, b, c = run(3), run(3), run(4)
    for name in ("lrs", "losses", "smoothed"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.stop_step == b.stop_step and a.stop_reason == b.stop_reason
    assert not np.array_equal(a.losses[:10], c.losses[:10])


def test_given_params_are_copied_not_modified():
    data = load_dataset("diabetes", seed=0)
    start = np.zeros(11)
    first = range_test(LinearRegression(10), SGD(), data, params=start, steps=200, end_lr=1.0)
    second = range_test(LinearRegression(10), SGD(), data, params=start, steps=200, end_lr=1.0)
    np.testing.assert_array_equal(start, np.zeros(11))
    np.testing.assert_array_equal(first.losses, second.losses)
    assert not first.lrs.flags.writeable


# ------------------------------------------------------------------------------------------ warnings


@pytest.mark.parametrize("batch_size", [None, 16])
def test_overflow_to_inf_raises_no_warning(batch_size):
    data = load_dataset("diabetes", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = range_test(
            LinearRegression(10),
            SGD(),
            data,
            start_lr=1e-3,
            end_lr=1e6,
            steps=100,
            batch_size=batch_size,
            stop_factor=math.inf,  # only a non-finite loss stops: the run must overflow
        )
    assert result.stop_reason.startswith("non-finite loss")
    assert result.losses[-1] == math.inf


# -------------------------------------------------------------------------------------- suggestions

LOG_GRID = 10.0 ** np.linspace(-5, 1, 61)  # 0.1 decade apart; LOG_GRID[30] = 1e-2


def test_steepest_is_the_centre_of_a_symmetric_drop():
    # s = 2 - tanh((log10 lr + 2) / 0.3): symmetric about lr = 1e-2, where it falls fastest in log lr
    smoothed = 2.0 - np.tanh((np.log10(LOG_GRID) + 2.0) / 0.3)
    s = suggest_from_curve(LOG_GRID, smoothed)
    assert s.steepest == pytest.approx(1e-2, rel=1e-9)


def test_steepest_ignores_a_steeper_drop_after_the_minimum():
    # a gentle fall to the minimum at 1e-2, then a rise and a sharp drop (a ragged tail) that stays above it
    x = np.log10(LOG_GRID)
    smoothed = np.where(x <= -2, 1.0 - 0.1 * (x + 5), 0.7 + 5 * (x + 2))
    smoothed[45:] = np.linspace(8.0, 2.0, 16)  # slope -6 per 0.1 decade: much steeper than the fall
    s = suggest_from_curve(LOG_GRID, smoothed)
    assert s.lr_at_min == pytest.approx(1e-2, rel=1e-9)
    assert s.steepest <= 1e-2


def test_min_over_10_is_a_tenth_of_the_rate_at_the_minimum():
    lrs = 0.03 * 10.0 ** (np.arange(-20, 11) / 10)  # lrs[20] = 0.03
    smoothed = (np.log10(lrs / 0.03)) ** 2 + 1.0
    s = suggest_from_curve(lrs, smoothed)
    assert s.lr_at_min == pytest.approx(0.03, rel=1e-12)
    assert s.min_over_10 == pytest.approx(0.003, rel=1e-12)


# 10 > 9 > 8 > 7 > 6 > 5 > 4 > 3 > 2 (indices 0 1 3 4 6 7 9 10 12, or 9.5 for 9 etc.) is the longest
# decreasing subsequence: 9 points, its middle one is 6 at index 6. The longest contiguous decreasing run
# would be 9.5 > 8 > 7 (indices 2..4): upticks must not split the valley.
NOISY_DESCENT = [10, 9, 9.5, 8, 7, 7.5, 6, 5, 5.5, 4, 3, 3.5, 2, 6, 12]


@pytest.mark.parametrize(
    ("smoothed", "middle"),
    [
        (NOISY_DESCENT, 6),
        ([3.0, 3.2, 3.0, 2.0, 1.0, 0.0, 0.5, 1.0], 3),  # strictly decreasing 3.2 .. 0 at indices 1..5
        ([5.0, 4.0, 6.0, 5.0, 4.0, 3.0, 2.0, 1.0], 4),  # 6 > 5 > 4 > 3 > 2 > 1 beats the earlier 5 > 4
    ],
)
def test_valley_is_the_middle_of_the_longest_decrease(smoothed, middle):
    lrs = 10.0 ** np.arange(len(smoothed)) * 1e-6
    assert suggest_from_curve(lrs, smoothed).valley == pytest.approx(lrs[middle], rel=1e-12)


def test_recommended_range_by_hand():
    lrs = 2.0 ** np.arange(len(NOISY_DESCENT))
    # minimum 2 at index 12: lr_at_min = 2^12 = 4096, min_over_10 = 409.6; valley = lrs[6] = 64
    s = suggest_from_curve(lrs, NOISY_DESCENT)
    assert (s.lr_at_min, s.min_over_10, s.valley) == pytest.approx((4096, 409.6, 64))
    assert (s.low, s.high) == pytest.approx((64, 4096))  # low = min(valley, min/10); high = lr at min
    s = suggest_from_curve(lrs, NOISY_DESCENT, diverged_lr=8192.0)
    assert (s.low, s.high) == pytest.approx((64, 8192))  # high = the divergence point when there is one
    lrs = 10.0 ** (np.arange(len(NOISY_DESCENT)) / 12)  # closer rates: min / 10 = 10 / 10 < valley = 10^0.5
    s = suggest_from_curve(lrs, NOISY_DESCENT)
    assert (s.valley, s.lr_at_min, s.low) == pytest.approx((10**0.5, 10.0, 1.0))


def test_held_rates_count_once_with_their_last_value():
    # all points: the minimum 1 is at lr 2; last value of each held rate: 4, 3.5, 2, 7 -> minimum at lr 3
    lrs = [1, 1, 2, 2, 3, 3, 4, 4]
    s = suggest_from_curve(lrs, [5, 4, 1, 3.5, 3, 2, 6, 7])
    assert s.lr_at_min == 3


def test_points_from_the_first_non_finite_value_on_are_dropped():
    s = suggest_from_curve([1, 2, 3, 4, 5], [3.0, 2.0, 1.5, math.inf, 0.1])
    assert s.lr_at_min == 3


@pytest.mark.parametrize(
    ("lrs", "smoothed", "kwargs", "match"),
    [
        ([1, 2], [2.0, 1.0], {}, "too short"),
        ([1, 2, 3, 4], [2.0, 1.0, math.nan, 0.5], {}, "too short"),
        ([1, 1, 2, 2], [3.0, 2.0, 1.0, 0.5], {}, "too short"),
        ([1, 2, 3], [1.0, 2.0, 3.0], {}, "lowest at the first rate"),
        ([1, 3, 2], [3.0, 2.0, 1.0], {}, "The 'lrs' parameter of suggest_from_curve"),
        ([0, 1, 2], [3.0, 2.0, 1.0], {}, "The 'lrs' parameter of suggest_from_curve"),
        ([1, 2, 3], [3.0, 2.0], {}, "The 'smoothed' parameter of suggest_from_curve"),
        ([1, 2, 3], [3.0, 2.0, 1.0], {"diverged_lr": 2.0}, "The 'diverged_lr' parameter"),
        ([1, 2, 3], [3.0, 2.0, 1.0], {"diverged_lr": math.nan}, "The 'diverged_lr' parameter"),
    ],
)
def test_suggest_from_curve_rejects_unusable_curves(lrs, smoothed, kwargs, match):
    with pytest.raises(ValueError, match=match):
        suggest_from_curve(lrs, smoothed, **kwargs)


def test_suggest_on_a_too_short_test_says_why():
    result = range_test(LossIsParam(), SetToF(lambda lr: 1.0), tiny_dataset(), steps=2)
    with pytest.raises(ValueError, match=r"too short.*range test: 2 steps, ramp ended"):
        suggest(result)


# --------------------------------------------------------------------------- least squares: 2 / lambda_max


def test_least_squares_bound_on_the_sources_example():
    # H = (2/4) [[sum x^2, sum x], [sum x, 4]] = [[15, 5], [5, 2]]: trace 17, det 5,
    # lambda_max = (17 + sqrt(269)) / 2, so 2 / lambda_max = 4 / (17 + sqrt(269)) = 0.1198
    x = np.array([1.0, 2.0, 3.0, 4.0])
    assert least_squares_bound(x) == pytest.approx(4 / (17 + math.sqrt(269)), rel=1e-12)
    assert least_squares_bound(x.reshape(-1, 1)) == pytest.approx(0.1198, abs=5e-5)
    assert least_squares_bound(x, intercept=False) == pytest.approx(2 / 15, rel=1e-12)  # H = (2/4) * 30


@pytest.mark.parametrize(("factor", "converges"), [(0.99, True), (1.01, False)])
def test_least_squares_bound_is_where_gradient_descent_stops_converging(factor, converges):
    x = np.array([1.0, 2.0, 3.0, 4.0])
    A = np.c_[x, np.ones(4)]
    y = 3.0 * x
    lr = factor * least_squares_bound(x)
    p = np.zeros(2)
    for _ in range(3000):
        p -= lr * (2 / 4) * A.T @ (A @ p - y)
    assert np.allclose(p, [3.0, 0.0], atol=1e-6) == converges


@pytest.mark.parametrize(
    ("X", "kwargs", "match"),
    [
        (np.array([[1.0, math.nan]]), {}, "The 'X' parameter of least_squares_bound"),
        (np.zeros((2, 2, 2)), {}, "The 'X' parameter of least_squares_bound"),
        (np.zeros((0, 2)), {}, "The 'X' parameter of least_squares_bound"),
        (np.zeros((3, 2)), {"intercept": False}, "all zeros"),
    ],
)
def test_least_squares_bound_rejects_bad_input(X, kwargs, match):
    with pytest.raises(ValueError, match=match):
        least_squares_bound(X, **kwargs)


@pytest.fixture(scope="module")
def diabetes_run():
    data = load_dataset("diabetes", seed=0)
    n = data.n_train
    A = np.c_[data.X_train, np.ones(n)]
    bound = 2 / np.linalg.eigvalsh(2 / n * A.T @ A)[-1]  # closed form, independently of least_squares_bound
    result = range_test(LinearRegression(10), SGD(), data, start_lr=1e-7, end_lr=10.0, mode="exponential")
    return data, bound, result


def test_diabetes_divergence_point_is_within_a_factor_2_above_the_stability_bound(diabetes_run):
    data, bound, result = diabetes_run
    assert least_squares_bound(data.X_train) == pytest.approx(bound, rel=1e-10)
    assert bound == pytest.approx(0.2444, abs=1e-4)
    assert result.diverged
    assert bound < result.diverged_lr < 2 * bound, (result.diverged_lr, bound)


def test_diabetes_loss_never_rises_below_the_bound(diabetes_run):
    # Each GD step multiplies the error along every Hessian eigenvector by |1 - lr lambda| <= 1 when
    # lr <= 2 / lambda_max, so the loss cannot increase there: any stop must come above the bound.
    _, bound, result = diabetes_run
    below = result.losses[result.lrs < bound]
    assert np.all(np.diff(below) <= 1e-12 * below[:-1])


def test_diabetes_coarse_ramp_overshoots_the_bound(diabetes_run):
    # fastai's 100 steps over 1e-7..10: the top eigen-direction is damped to round-off while
    # lr ~ 1 / lambda_max and needs ~12 steps of 20% rate increases to grow back: hence the default of 3000
    # steps.
    data, bound, _ = diabetes_run
    coarse = range_test(LinearRegression(10), SGD(), data, start_lr=1e-7, end_lr=10.0, steps=100)
    assert coarse.diverged_lr > 4 * bound


def test_diabetes_suggestions_form_a_range_below_the_divergence_point(diabetes_run):
    _, bound, result = diabetes_run
    s = suggest(result)
    assert 0 < s.low < s.high
    assert s.high == result.diverged_lr
    assert s.low == min(s.valley, s.min_over_10)
    assert s.low < bound / 10  # room below the stability limit for the tuner
    assert s.steepest < s.lr_at_min and s.valley < s.lr_at_min


# ------------------------------------------------------------------------------------------ validation


def _call(**kwargs):
    defaults = {"start_lr": 1e-3, "end_lr": 1.0, "steps": 5}
    return range_test(LossIsParam(), SetToF(lambda lr: 1.0), tiny_dataset(), **{**defaults, **kwargs})


@pytest.mark.parametrize(
    ("kwargs", "param", "shown"),
    [
        ({"start_lr": 0}, "start_lr", "0"),
        ({"start_lr": -1e-3}, "start_lr", "-0.001"),
        ({"start_lr": math.nan}, "start_lr", "nan"),
        ({"end_lr": math.inf}, "end_lr", "inf"),
        ({"end_lr": 1e-3}, "end_lr", "0.001"),  # not > start_lr
        ({"end_lr": "1"}, "end_lr", "'1'"),
        ({"steps": 1}, "steps", "1"),
        ({"steps": 2.0}, "steps", "2.0"),
        ({"steps": True}, "steps", "True"),
        ({"mode": "log"}, "mode", "'log'"),
        ({"ramp": (lambda t: 0.1,)}, "ramp", r"\(<function"),
        ({"ramp": (lambda t: 0.1, 1)}, r"ramp\[1\] \(total_steps\)", "1"),
        ({"batch_size": 0}, "batch_size", "0"),
        ({"seed": -1}, "seed", "-1"),
        ({"seed": 1.5}, "seed", "1.5"),
        ({"stop_factor": 1.0}, "stop_factor", "1.0"),
        ({"stop_factor": math.nan}, "stop_factor", "nan"),
        ({"beta": 1.0}, "beta", "1.0"),
        ({"beta": -0.1}, "beta", "-0.1"),
        ({"params": np.zeros(2)}, "params", "'shape \\(2,\\)'"),
        ({"params": np.array([math.nan])}, "params", "'shape \\(1,\\)'"),
    ],
)
def test_range_test_rejects_bad_arguments(kwargs, param, shown):
    with pytest.raises(ValueError, match=rf"The '{param}' parameter of range_test must be .* Got {shown}"):
        _call(**kwargs)


@pytest.mark.parametrize(
    "ramp",
    [
        (lambda t: 1.0 - 0.1 * t, 5),  # decreasing
        (lambda t: math.nan, 5),
        (lambda t: 0.0, 5),
    ],
)
def test_range_test_rejects_a_ramp_that_is_not_positive_and_non_decreasing(ramp):
    with pytest.raises(ValueError, match=re.escape("The 'ramp' parameter of range_test must give finite")):
        _call(ramp=ramp)


def test_range_test_rejects_data_that_is_not_a_dataset():
    with pytest.raises(
        ValueError, match="The 'data' parameter of range_test must be a pipeline.core.arrays.Dataset"
    ):
        range_test(LossIsParam(), SetToF(lambda lr: 1.0), (np.zeros((2, 1)), np.zeros(2)))


@pytest.mark.parametrize("skip_start", [-1, 1.5])
def test_suggest_rejects_bad_skip_start(skip_start):
    result = _call()
    with pytest.raises(ValueError, match=rf"The 'skip_start' parameter of suggest .* Got {skip_start}"):
        suggest(result, skip_start=skip_start)


def test_result_type_is_checked():
    with pytest.raises(ValueError, match="The 'result' parameter of suggest must be a RangeTestResult"):
        suggest({"lrs": [1, 2, 3]})
    assert RangeTestResult.__dataclass_params__.frozen
