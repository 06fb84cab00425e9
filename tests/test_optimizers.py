"""Optimizers against hand-written update formulas, closed forms and their definitions."""

from __future__ import annotations

import cmath
import inspect
import math

import numpy as np
import pytest

from pipeline.core.optimizers import (
    OPTIMIZER_PARAMS,
    OPTIMIZERS,
    SGD,
    AdaGrad,
    Adam,
    Momentum,
    Nesterov,
    RMSProp,
    build_optimizer,
)

P0 = [1.0, -2.0, 0.5]
G1 = [0.3, -0.1, 2.0]
G2 = [-0.2, 0.4, 1.0]
LR = 0.1


# Two updates per coordinate written out in scalar arithmetic, independent of the vectorised code.
def _sgd(p, g1, g2, lr):
    return p - lr * g1 - lr * g2


def _momentum(p, g1, g2, lr, beta=0.9):
    v = g1  # beta * 0 + g1
    p = p - lr * v
    v = beta * v + g2
    return p - lr * v


def _nesterov(p, g1, g2, lr, beta=0.9):
    v = g1
    p = p - lr * (g1 + beta * v)
    v = beta * v + g2
    return p - lr * (g2 + beta * v)


def _adagrad(p, g1, g2, lr, eps=1e-8):
    G = g1**2
    p = p - lr * g1 / (math.sqrt(G) + eps)
    G = G + g2**2
    return p - lr * g2 / (math.sqrt(G) + eps)


def _rmsprop(p, g1, g2, lr, rho=0.9, eps=1e-8):
    s = (1 - rho) * g1**2
    p = p - lr * g1 / (math.sqrt(s) + eps)
    s = rho * s + (1 - rho) * g2**2
    return p - lr * g2 / (math.sqrt(s) + eps)


def _adam(p, g1, g2, lr, b1=0.9, b2=0.999, eps=1e-8):
    m, v = (1 - b1) * g1, (1 - b2) * g1**2
    p = p - lr * (m / (1 - b1)) / (math.sqrt(v / (1 - b2)) + eps)
    m, v = b1 * m + (1 - b1) * g2, b2 * v + (1 - b2) * g2**2
    return p - lr * (m / (1 - b1**2)) / (math.sqrt(v / (1 - b2**2)) + eps)


HAND = [
    (SGD(), _sgd),
    (Momentum(), _momentum),
    (Momentum(beta=0.5), lambda p, g1, g2, lr: _momentum(p, g1, g2, lr, beta=0.5)),
    (Nesterov(), _nesterov),
    (Nesterov(beta=0.0), _sgd),
    (AdaGrad(), _adagrad),
    (RMSProp(), _rmsprop),
    (RMSProp(rho=0.5, eps=1e-3), lambda p, g1, g2, lr: _rmsprop(p, g1, g2, lr, rho=0.5, eps=1e-3)),
    (Adam(), _adam),
    (Adam(beta1=0.0, beta2=0.5), lambda p, g1, g2, lr: _adam(p, g1, g2, lr, b1=0.0, b2=0.5)),
]


@pytest.mark.parametrize(("opt", "formula"), HAND, ids=[repr(o) for o, _ in HAND])
def test_two_steps_match_the_update_formula(opt, formula):
    params = np.array(P0)
    opt.init(params)
    g1, g2 = np.array(G1), np.array(G2)
    opt.step(params, g1, LR)
    opt.step(params, g2, LR)
    expected = [formula(p, a, b, LR) for p, a, b in zip(P0, G1, G2, strict=True)]
    assert params == pytest.approx(expected, rel=1e-13, abs=1e-15)
    assert g1.tolist() == G1 and g2.tolist() == G2  # the gradient is only read


@pytest.mark.parametrize(
    ("opt", "factor"),
    [
        (Adam(), 1.0),
        (Adam(beta1=0.5, beta2=0.9), 1.0),
        (AdaGrad(), 1.0),
        (RMSProp(rho=0.9), 1 / math.sqrt(0.1)),
    ],
)
def test_first_adaptive_step_is_lr_times_sign(opt, factor):
    # Adam (bias-corrected) and AdaGrad divide g by |g|; RMSProp by sqrt(1 - rho) |g|.
    g = np.array([0.01, -50.0, 2.0])  # |g| >> eps, so eps changes the step by < 1e-5 relative
    params = np.zeros(3)
    opt.init(params)
    opt.step(params, g, 0.01)
    assert params == pytest.approx(-0.01 * factor * np.sign(g), rel=1e-5)


@pytest.mark.parametrize(("a", "lr", "beta"), [(2.0, 0.1, 0.9), (1.0, 0.5, 0.1), (3.0, 0.05, 0.5)])
def test_momentum_on_a_1d_quadratic_follows_the_closed_form(a, lr, beta):
    # f = a x^2 / 2: v' = beta v + a x, x' = x - lr v'  =>  x_{t+1} = (1 + beta - lr a) x_t - beta x_{t-1},
    # so x_t = c1 r1^t + c2 r2^t with r1, r2 the roots of r^2 - (1 + beta - lr a) r + beta = 0.
    x0 = 1.5
    x1 = x0 - lr * a * x0  # v_1 = a x_0
    s = 1 + beta - lr * a
    disc = cmath.sqrt(s * s - 4 * beta)
    r1, r2 = (s + disc) / 2, (s - disc) / 2
    c2 = (x1 - r1 * x0) / (r2 - r1)
    c1 = x0 - c2
    opt, x = Momentum(beta=beta), np.array([x0])
    opt.init(x)
    for t in range(1, 41):
        opt.step(x, a * x, lr)
        expected = (c1 * r1**t + c2 * r2**t).real
        assert x[0] == pytest.approx(expected, rel=1e-9, abs=1e-12), f"step {t}"


@pytest.mark.parametrize("beta", [0.9, 0.5])
def test_nesterov_is_sutskever_definition_at_the_look_ahead_point(beta):
    # Definition (Sutskever et al. 2013): u <- beta u - lr grad f(theta + beta u); theta <- theta + u.
    # With constant lr and u_0 = 0 the optimizer's params are the look-ahead point theta + beta u.
    A = np.array([[3.0, 0.5], [0.5, 1.0]])

    def grad(x):
        return A @ x

    lr = 0.05
    theta, u = np.array([1.0, -2.0]), np.zeros(2)
    opt, params = Nesterov(beta=beta), theta.copy()
    opt.init(params)
    for t in range(30):
        u = beta * u - lr * grad(theta + beta * u)
        theta = theta + u
        opt.step(params, grad(params), lr)
        assert params == pytest.approx(theta + beta * u, rel=1e-10, abs=1e-14), f"step {t}"


@pytest.mark.parametrize(
    ("name", "lr"),
    [
        ("sgd", 0.1),
        ("momentum", 0.05),
        ("nesterov", 0.05),
        ("adagrad", 0.5),
        ("rmsprop", 0.01),
        ("adam", 0.05),
    ],
)
def test_every_optimizer_minimises_a_convex_quadratic(name, lr):
    a = np.array([1.0, 10.0])  # f = sum(a x^2) / 2, condition number 10

    def f(x):
        return 0.5 * float(a @ (x * x))

    opt, x = build_optimizer(name), np.array([1.0, -1.0])
    opt.init(x)
    f0 = f(x)
    for _ in range(200):
        opt.step(x, a * x, lr)
    assert f(x) < 1e-6 * f0


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_init_resets_the_state(name):
    def run(opt, params):
        for g in (G1, G2, G1):
            opt.step(params, np.array(g), LR)
        return params

    used = build_optimizer(name)
    used.init(np.zeros(3))
    run(used, np.zeros(3))
    used.init(np.zeros(3))
    fresh = build_optimizer(name)
    fresh.init(np.zeros(3))
    assert np.array_equal(run(used, np.array(P0)), run(fresh, np.array(P0)))


@pytest.mark.parametrize("name", sorted(set(OPTIMIZERS) - {"sgd"}))
def test_step_before_init_is_an_error(name):
    with pytest.raises(RuntimeError, match=r"call init\(params\) before step"):
        build_optimizer(name).step(np.zeros(3), np.ones(3), 0.1)


def test_step_updates_in_place():
    for name in OPTIMIZERS:
        opt, params = build_optimizer(name), np.array(P0)
        opt.init(params)
        before = params.copy()
        assert opt.step(params, np.array(G1), LR) is None
        assert not np.array_equal(params, before)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda: Momentum(beta=1.0),
            r"The 'beta' parameter of Momentum must be a float in \[0, 1\). Got 1.0 instead.",
        ),
        (lambda: Momentum(beta=-0.1), r"'beta' parameter of Momentum .* Got -0.1 instead"),
        (lambda: Nesterov(beta=float("nan")), r"'beta' parameter of Nesterov .* Got nan instead"),
        (lambda: Nesterov(beta=np.float64(1.5)), r"'beta' parameter of Nesterov .* Got 1.5 instead"),
        (lambda: Momentum(beta="0.9"), r"'beta' .* Got '0.9' instead"),
        (lambda: Momentum(beta=True), r"'beta' .* Got True instead"),
        (lambda: AdaGrad(eps=0.0), r"The 'eps' parameter of AdaGrad must be a float > 0. Got 0.0 instead."),
        (lambda: AdaGrad(eps=-1e-8), r"'eps' .* Got -1e-08 instead"),
        (lambda: RMSProp(rho=1.0), r"'rho' parameter of RMSProp .* \[0, 1\). Got 1.0"),
        (lambda: RMSProp(eps=float("inf")), r"'eps' parameter of RMSProp .* Got inf instead"),
        (lambda: Adam(beta1=1.0), r"'beta1' parameter of Adam .* Got 1.0"),
        (lambda: Adam(beta2=1.0), r"'beta2' parameter of Adam .* Got 1.0"),
        (lambda: Adam(beta2=-float("inf")), r"'beta2' .* Got -inf"),
        (lambda: Adam(eps=0), r"'eps' parameter of Adam must be a float > 0. Got 0 instead"),
    ],
)
def test_invalid_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    ("name", "params", "expected"),
    [
        ("sgd", {}, "SGD()"),
        ("momentum", {"beta": 0.8}, "Momentum(beta=0.8)"),
        ("nesterov", {}, "Nesterov(beta=0.9)"),
        ("adagrad", {"eps": 1e-6}, "AdaGrad(eps=1e-06)"),
        ("rmsprop", {"rho": 0.99}, "RMSProp(rho=0.99, eps=1e-08)"),
        ("adam", {"beta1": 0.8, "beta2": 0.99, "eps": 1e-7}, "Adam(beta1=0.8, beta2=0.99, eps=1e-07)"),
    ],
)
def test_build_optimizer(name, params, expected):
    opt = build_optimizer(name, **params)
    assert repr(opt) == expected
    assert opt.name == name


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_params_are_the_constructor_arguments(name):
    assert tuple(inspect.signature(OPTIMIZERS[name]).parameters) == OPTIMIZER_PARAMS[name]


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("adamw", {}, r"'name' parameter of build_optimizer must be one of 'sgd', 'momentum', .*Got 'adamw'"),
        ("sgd", {"beta": 0.9}, r"Unknown parameter\(s\) 'beta' for optimizer 'sgd'; valid: none"),
        ("adam", {"beta": 0.9, "rho": 1}, r"'beta', 'rho' for optimizer 'adam'; valid: beta1, beta2, eps"),
        ("momentum", {"beta": 2.0}, r"'beta' parameter of Momentum .* Got 2.0 instead"),
    ],
)
def test_build_optimizer_rejects(name, params, match):
    with pytest.raises(ValueError, match=match):
        build_optimizer(name, **params)
