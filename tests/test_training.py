"""The training loop against the sources' worked examples and against least-squares theory.

Oracles: the numbers printed in the sources, closed-form GD on a quadratic (np.linalg on the data), np.polyfit.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from pipeline.core.models import LinearRegression, LogisticRegression, build_model
from pipeline.core.numgrad import FiniteDifference
from pipeline.core.optimizers import SGD, build_optimizer
from pipeline.core.schedules import ReduceLROnPlateau, constant, exponential_decay
from pipeline.core.training import COMPLETED, DIVERGED, STOPPED, train
from pipeline.datasets import load_dataset


@pytest.fixture(scope="module")
def numeric():
    return load_dataset("numeric_example", standardize=False, val_fraction=0.0)


def fit_numeric(data, lr, epochs=1000, model=None, **kw):
    model = model or LinearRegression(1)
    return train(model, SGD(), constant(lr), data, epochs=epochs, params=np.zeros(2), **kw)


# ------------------------------------------------------------------ the sources' numerical-gradient example


def test_numeric_example_lr_001_reaches_the_sources_weights(numeric):
    result = fit_numeric(numeric, 0.01)
    w, b = result.params
    assert result.status == COMPLETED
    assert w == pytest.approx(2.9845, abs=5e-5)
    assert b == pytest.approx(0.0456, abs=5e-5)


@pytest.mark.parametrize("scheme", ["central", "forward"])
def test_numeric_example_with_finite_difference_gradients_ends_within_1e_3(numeric, scheme):
    analytic = fit_numeric(numeric, 0.01).params
    numerical = fit_numeric(numeric, 0.01, model=FiniteDifference(LinearRegression(1), h=1e-4, scheme=scheme))
    assert np.max(np.abs(numerical.params - analytic)) < 1e-3


def test_numeric_example_lr_01_oscillates_but_converges(numeric):
    # Hessian of mean((wx + b - y)^2) is 2/n [[sum x^2, sum x], [sum x, n]]; 2/lambda_max = 0.1198 for x = 1..4.
    x = np.array([1.0, 2, 3, 4])
    H = 2 / 4 * np.array([[np.sum(x * x), np.sum(x)], [np.sum(x), 4]])
    lam = np.linalg.eigvalsh(H)
    assert 2 / lam.max() == pytest.approx(0.1198, abs=1e-4)
    assert (
        1 / lam.max() < 0.1 < 2 / lam.max()
    )  # past critical damping: the top direction flips sign each step

    top = np.linalg.eigh(H)[1][:, -1]
    errors = [(fit_numeric(numeric, 0.1, epochs=k).params - [3.0, 0.0]) @ top for k in range(1, 8)]
    assert all(a * b < 0 for a, b in zip(errors, errors[1:], strict=False)), errors
    final = fit_numeric(numeric, 0.1)
    assert final.status == COMPLETED
    np.testing.assert_allclose(final.params, [3.0, 0.0], atol=1e-8)


def test_numeric_example_lr_013_diverges_and_is_detected(numeric):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning may reach the user
        result = fit_numeric(numeric, 0.13)
    assert result.status == DIVERGED
    assert result.diverged_epoch is not None and result.diverged_epoch < 100
    assert result.epochs_run == result.diverged_epoch + 1
    assert "epoch" in result.reason


def test_divergence_to_non_finite_loss_is_detected_without_warnings(numeric):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = fit_numeric(numeric, 10.0, divergence_factor=math.inf)  # only the non-finite rule can fire
    assert result.status == DIVERGED
    assert "non-finite" in result.reason
    assert math.isinf(result.train_loss[-1])


# ------------------------------------------------------------------ the sources' single-sample example


def test_single_sample_mode_reproduces_the_sources_first_step():
    data = load_dataset("single_sample", standardize=False, val_fraction=0.0)
    result = train(
        LinearRegression(2),
        SGD(),
        constant(1e-5),
        data,
        epochs=1,
        batch_size=1,
        params=np.array([0.5, 0.5, 0.0]),
    )
    assert result.train_loss[0] == pytest.approx(14871.8025)  # (165 - 43.05)^2, loss before the step
    np.testing.assert_allclose(result.params, [0.5685359, 0.641462, 0.002439], rtol=1e-6)
    assert LinearRegression(2).loss(result.params, data.X_train, data.y_train) == pytest.approx(
        12503.020514375934
    )


def test_line_dataset_recovers_slope_2_and_intercept_1():
    data = load_dataset("line", seed=0, standardize=False, val_fraction=0.0)
    x, y = data.X_train[:, 0], data.y_train
    slope, intercept = np.polyfit(x, y, 1)
    lam_max = np.linalg.eigvalsh(2 / len(x) * np.array([[x @ x, x.sum()], [x.sum(), len(x)]])).max()
    result = train(LinearRegression(1), SGD(), constant(1 / lam_max), data, epochs=5000, params=np.zeros(2))
    w, b = result.params
    assert (w, b) == (pytest.approx(slope, abs=1e-3), pytest.approx(intercept, abs=1e-3))
    assert (w, b) == (pytest.approx(2, abs=0.15), pytest.approx(1, abs=0.3))


# ------------------------------------------------------------------ least squares on diabetes: the 2/lambda_max bound


@pytest.fixture(scope="module")
def diabetes():
    data = load_dataset("diabetes", seed=0)
    Xb = np.hstack([data.X_train, np.ones((len(data.X_train), 1))])
    lam_max = np.linalg.eigvalsh(2 / len(Xb) * Xb.T @ Xb).max()
    optimum = np.linalg.lstsq(Xb, data.y_train, rcond=None)[0]
    best_loss = np.mean((Xb @ optimum - data.y_train) ** 2)
    return data, lam_max, best_loss


def test_diabetes_converges_just_below_2_over_lambda_max(diabetes):
    data, lam_max, best_loss = diabetes
    result = train(LinearRegression(data.n_features), SGD(), constant(0.99 * 2 / lam_max), data, epochs=3000)
    assert result.status == COMPLETED
    assert result.train_loss[-1] < result.train_loss[0]
    assert result.train_loss[-1] == pytest.approx(best_loss, rel=0.02)


def test_diabetes_diverges_just_above_2_over_lambda_max(diabetes):
    data, lam_max, _ = diabetes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = train(
            LinearRegression(data.n_features), SGD(), constant(1.01 * 2 / lam_max), data, epochs=3000
        )
    assert result.status == DIVERGED


# ------------------------------------------------------------------ loop mechanics


def test_mini_batches_are_seeded_and_reshuffled():
    data = load_dataset("breast_cancer", seed=0)
    model = LogisticRegression(data.n_features)

    def run(seed, batch_size=32, epochs=3):
        return train(model, SGD(), constant(0.05), data, epochs=epochs, batch_size=batch_size, seed=seed)

    a, b, c = run(1), run(1), run(2)
    np.testing.assert_array_equal(a.train_loss, b.train_loss)
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(a.params, c.params)
    assert a.val_accuracy is not None and 0.8 < a.val_accuracy[-1] <= 1.0


def test_one_epoch_of_mini_batches_equals_manual_sgd_over_a_seeded_permutation():
    data = load_dataset("diabetes", seed=0)
    model, lr, k = LinearRegression(data.n_features), 0.01, 50
    result = train(model, SGD(), constant(lr), data, epochs=1, batch_size=k, seed=7, params=np.zeros(11))
    # Oracle: plain NumPy SGD over the same permutation (the loop seeds one Generator and permutes once per epoch;
    # with params given, the generator's first draw is the permutation).
    order = np.random.default_rng(7).permutation(len(data.y_train))
    X, y, w = data.X_train[order], data.y_train[order], np.zeros(11)
    for s in range(0, len(y), k):
        Xb, yb = X[s : s + k], y[s : s + k]
        r = Xb @ w[:-1] + w[-1] - yb
        w = w - lr * np.concatenate([2 / len(yb) * Xb.T @ r, [2 * r.mean()]])
    np.testing.assert_allclose(result.params, w, rtol=1e-12, atol=1e-12)


def test_records_carry_the_lr_actually_used_and_the_hook_can_stop():
    data = load_dataset("diabetes", seed=0)
    seen = []

    def hook(record):
        seen.append(record)
        return record.epoch == 4

    schedule = exponential_decay(0.1, 0.5)
    result = train(LinearRegression(data.n_features), SGD(), schedule, data, epochs=50, hook=hook)
    assert result.status == STOPPED and result.epochs_run == 5
    np.testing.assert_allclose([r.lr for r in seen], 0.1 * np.exp(-0.5 * np.arange(5)))
    np.testing.assert_allclose(result.lr, 0.1 * np.exp(-0.5 * np.arange(5)))
    assert [r.epoch for r in seen] == list(range(5))
    assert seen[-1].val_loss == result.val_loss[-1]


def test_plateau_schedule_is_shown_the_validation_loss_every_epoch():
    data = load_dataset("diabetes", seed=0)
    plateau = ReduceLROnPlateau(1e-6, factor=0.5, patience=2)  # so small a rate that nothing improves enough
    result = train(LinearRegression(data.n_features), SGD(), plateau, data, epochs=12)
    assert result.lr[0] == 1e-6
    assert result.lr[-1] < 1e-6  # reduced after `patience` flat epochs


def test_same_seed_same_numbers_for_an_mlp():
    data = load_dataset("moons", seed=3)
    runs = [
        train(
            build_model("mlp", n_features=2, task="binary", hidden=8),
            build_optimizer("adam"),
            constant(0.01),
            data,
            epochs=5,
            batch_size=16,
            seed=3,
        )
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].val_loss, runs[1].val_loss)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"epochs": 0}, r"'epochs' parameter of train must be an int >= 1\. Got 0"),
        ({"epochs": 5, "batch_size": 0}, r"'batch_size' parameter of train must be an int >= 1\. Got 0"),
        ({"epochs": 5, "divergence_factor": 1.0}, r"'divergence_factor' .* > 1\. Got 1\.0"),
        ({"epochs": 5, "divergence_factor": float("nan")}, r"'divergence_factor' .* Got nan"),
    ],
)
def test_invalid_arguments_name_the_parameter_and_value(numeric, kwargs, match):
    with pytest.raises(ValueError, match=match):
        train(LinearRegression(1), SGD(), constant(0.01), numeric, **kwargs)
