"""The check a user's model must pass (pipeline.core.usermodel.check_model) and the adapter the loop trains.

Oracles: the built-in models' analytic gradients (tested against finite differences in test_models.py) give the
true gradient of a model whose gradient we break on purpose at a known coordinate by a known amount, so the
coordinate, the analytic and the numerical values the check must report are known in advance.
"""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.models import MLP, LinearRegression, LogisticRegression
from pipeline.core.numgrad import FiniteDifference
from pipeline.core.usermodel import GradientTolerance, ModelCheckError, UserModel, check_model

RNG = np.random.default_rng(7)
X = RNG.normal(size=(40, 3))
Y_REG = X @ np.array([1.0, -2.0, 0.5]) + 0.3 + RNG.normal(0, 0.1, 40)
Y_BIN = (X[:, 0] > 0).astype(np.int64)


class Broken:
    """A linear regression whose gradient is off by ``delta`` at coordinate ``k`` (``scale`` multiplies it all)."""

    task = "regression"

    def __init__(self, k=None, delta=0.0, scale=1.0):
        self.inner, self.k, self.delta, self.scale = LinearRegression(3), k, delta, scale

    def init_params(self, rng):
        return self.inner.init_params(rng)

    def loss(self, params, X, y):
        return self.inner.loss(params, X, y)

    def loss_and_grad(self, params, X, y):
        loss, grad = self.inner.loss_and_grad(params, X, y)
        grad = grad * self.scale
        if self.k is not None:
            grad[self.k] += self.delta
        return loss, grad


@pytest.mark.parametrize(
    "model, y, task",
    [
        (LinearRegression(3), Y_REG, "regression"),
        (LogisticRegression(3), Y_BIN, "binary"),
        (MLP(3, 5, "tanh", task="regression"), Y_REG, "regression"),
        (MLP(3, 4, "sigmoid", task="binary"), Y_BIN, "binary"),
        (FiniteDifference(LinearRegression(3), h=1e-6), Y_REG, "regression"),
    ],
    ids=["linear", "logistic", "mlp-tanh", "mlp-sigmoid", "numerical"],
)
def test_correct_gradients_pass(model, y, task):
    checked = check_model(model, X, y, task=task, seed=3)
    assert isinstance(checked, UserModel) and checked.n_params == model.n_params


@pytest.mark.parametrize("k, delta", [(0, 1e-2), (2, -0.5), (3, 3e-3)])
def test_a_wrong_coordinate_is_named_with_both_values(k, delta):
    model = Broken(k, delta)
    with pytest.raises(ModelCheckError) as caught:
        check_model(model, X, Y_REG, task="regression", seed=0)
    exc = caught.value
    # The true gradient at the first check point (the init: zeros) from the built-in model.
    p0 = LinearRegression(3).init_params(np.random.default_rng(0))
    true = LinearRegression(3).loss_and_grad(p0, X, Y_REG)[1][k]
    assert exc.coordinate == k
    assert exc.analytic == pytest.approx(true + delta, rel=1e-12)
    assert exc.numerical == pytest.approx(true, rel=1e-7)
    assert abs(exc.analytic - exc.numerical) > exc.tolerance
    message = str(exc)
    assert f"coordinate {k}" in message and f"{exc.analytic:.10g}" in message
    assert f"{exc.numerical:.10g}" in message and "tolerance" in message


def test_a_term_that_vanishes_at_init_is_caught_at_a_later_point():
    """An error proportional to the parameters (a ridge term missing its factor 2) is invisible at a zero init."""

    class Ridge(Broken):
        def loss(self, params, X, y):
            return self.inner.loss(params, X, y) + 0.1 * float(params @ params)

        def loss_and_grad(self, params, X, y):
            loss, grad = self.inner.loss_and_grad(params, X, y)
            return loss + 0.1 * float(params @ params), grad + 0.1 * params  # should be 0.2 * params

    with pytest.raises(ModelCheckError, match=r"check point 2 of 3"):
        check_model(Ridge(), X, Y_REG, task="regression")
    # One point only (the zero init) cannot see it: that is why the check uses several.
    check_model(Ridge(), X, Y_REG, task="regression", tol=GradientTolerance(points=1))


def test_tolerance_scales_with_the_gradient():
    # A relative error of 1e-6 on every coordinate passes at rtol 1e-4 and fails at rtol 1e-7.
    check_model(Broken(scale=1 + 1e-6), X, Y_REG, task="regression")
    with pytest.raises(ModelCheckError, match="rtol 1e-07"):
        check_model(
            Broken(scale=1 + 1e-6), X, Y_REG, task="regression", tol=GradientTolerance(rtol=1e-7, atol=1e-12)
        )


class Shaped(Broken):
    def __init__(self, **overrides):
        super().__init__()
        self.overrides = overrides

    def __getattribute__(self, name):
        overrides = object.__getattribute__(self, "overrides")
        return overrides[name] if name in overrides else object.__getattribute__(self, name)


INTERFACE_ERRORS = [
    ("task", dict(task="ranking"), "task must be one of"),
    ("task vs data", dict(task="binary"), "the model's task is 'binary' but the data's task is 'regression'"),
    ("2-D params", dict(init_params=lambda rng: np.zeros((2, 2))), "1-D float64 array"),
    ("int params", dict(init_params=lambda rng: np.zeros(4, dtype=int)), "1-D float64 array"),
    ("gradient shape", dict(loss_and_grad=lambda p, X, y: (1.0, np.zeros(3))), "shape of params"),
    ("not a pair", dict(loss_and_grad=lambda p, X, y: 1.0), "pair"),
    ("nan loss", dict(loss=lambda p, X, y: float("nan")), "loss at init is nan"),
    ("inf loss", dict(loss=lambda p, X, y: float("inf")), "loss at init is inf"),
    ("raises", dict(loss=lambda p, X, y: 1 / 0), "ZeroDivisionError"),
    ("attribute not a method", dict(predict=3), "'predict' of the object returned must be a method"),
    ("predict rows", dict(predict=lambda p, X: np.zeros(3)), "one row per row of X"),
]


@pytest.mark.parametrize(
    "overrides, match", [e[1:] for e in INTERFACE_ERRORS], ids=[e[0] for e in INTERFACE_ERRORS]
)
def test_interface_errors(overrides, match):
    with pytest.raises(ModelCheckError, match=match):
        check_model(Shaped(**overrides), X, Y_REG, task="regression")


def test_a_missing_method_is_named():
    class NoGradient:
        task = "regression"

        def init_params(self, rng):
            return np.zeros(4)

        def loss(self, p, X, y):
            return 0.0

    with pytest.raises(
        ModelCheckError, match="has no 'loss_and_grad'; a model needs task, init_params, loss"
    ):
        check_model(NoGradient(), X, Y_REG, task="regression")


def test_modifying_params_in_place_is_refused():
    def loss_and_grad(p, X, y):
        loss, grad = LinearRegression(3).loss_and_grad(p, X, y)
        p -= 0.1 * grad
        return loss, grad

    with pytest.raises(ModelCheckError, match="modified params in place"):
        check_model(Shaped(loss_and_grad=loss_and_grad), X, Y_REG, task="regression")


def test_adapter_accuracy_from_predict_and_absent():
    class Clf:
        task = "binary"
        inner = LogisticRegression(3)

        def init_params(self, rng):
            return self.inner.init_params(rng)

        def loss(self, p, X, y):
            return self.inner.loss(p, X, y)

        def loss_and_grad(self, p, X, y):
            return self.inner.loss_and_grad(p, X, y)

    model = check_model(Clf(), X, Y_BIN, task="binary")
    assert model.accuracy is None  # no predict: the loop keeps no accuracy curve
    Clf.predict = lambda self, p, X: self.inner.predict(p, X)
    model = check_model(Clf(), X, Y_BIN, task="binary")
    p = np.array([1.0, 0.0, 0.0, 0.0])  # predicts x0 > 0, which is Y_BIN exactly
    assert model.accuracy(p, X, Y_BIN) == 1.0
    assert model.unpack(p)["params"] is not None


def test_the_worst_of_several_wrong_coordinates_is_named():
    class TwoWrong(Broken):
        def loss_and_grad(self, params, X, y):
            loss, grad = self.inner.loss_and_grad(params, X, y)
            grad = grad.copy()
            grad[1] += 0.01
            grad[3] -= 0.5
            return loss, grad

    with pytest.raises(
        ModelCheckError, match=r"coordinate 3, the worst .* of 4 checked, 2 over tolerance"
    ) as caught:
        check_model(TwoWrong(), X, Y_REG, task="regression")
    assert caught.value.coordinate == 3
