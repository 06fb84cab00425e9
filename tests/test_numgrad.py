"""pipeline/core/numgrad.py: finite differences against closed-form derivatives, with the error orders the
formulas promise (central O(h^2), forward O(h)), and the drop-in model wrapper."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.core.checks import ArgumentError
from pipeline.core.models import LinearRegression, LogisticRegression
from pipeline.core.numgrad import FiniteDifference, numerical_gradient


def f(p):
    return math.sin(p[0]) * p[1] ** 3 + math.exp(0.5 * p[2])


def grad_f(p):  # by hand
    return np.array([math.cos(p[0]) * p[1] ** 3, 3 * math.sin(p[0]) * p[1] ** 2, 0.5 * math.exp(0.5 * p[2])])


P = np.array([0.3, 1.2, -0.4])


@pytest.mark.parametrize("scheme", ["central", "forward"])
def test_matches_the_closed_form_derivative(scheme):
    np.testing.assert_allclose(numerical_gradient(f, P, 1e-6, scheme), grad_f(P), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(("scheme", "order"), [("central", 2), ("forward", 1)])
def test_error_shrinks_with_the_order_of_the_scheme(scheme, order):
    errors = [np.abs(numerical_gradient(f, P, h, scheme) - grad_f(P)).max() for h in (1e-2, 1e-3)]
    # h / 10 divides the truncation error by about 10 ** order
    assert errors[0] / errors[1] == pytest.approx(10**order, rel=0.3)


def test_the_point_is_not_modified():
    p = P.copy()
    numerical_gradient(f, p)
    np.testing.assert_array_equal(p, P)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"h": 0}, "'h'"), ({"h": math.nan}, "'h'"), ({"scheme": "back"}, "'scheme'")]
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ArgumentError, match=match):
        numerical_gradient(f, P, **kwargs)


@pytest.mark.parametrize("model", [LinearRegression(3), LogisticRegression(3)], ids=["linear", "logistic"])
def test_the_wrapper_is_the_same_model_with_numerical_gradients(model):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 3))
    y = (rng.random(20) > 0.5).astype(float) if model.task == "binary" else rng.normal(size=20)
    params = model.init_params(rng)
    wrapped = FiniteDifference(model, h=1e-6)
    loss, grad = wrapped.loss_and_grad(params, X, y)
    exact_loss, exact_grad = model.loss_and_grad(params, X, y)
    assert loss == exact_loss
    np.testing.assert_allclose(grad, exact_grad, rtol=1e-6, atol=1e-9)
    assert (wrapped.task, wrapped.n_params) == (model.task, model.n_params)
