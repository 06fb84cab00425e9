"""Models against independent oracles: central finite differences, the sources' example, losses by hand."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from pipeline.core.models import (
    MLP,
    LinearRegression,
    LogisticRegression,
    SoftmaxRegression,
    build_model,
)
from pipeline.core.optimizers import SGD

N, D, K = 12, 4, 3

# (id, model factory): every model, every task and activation of the MLP.
MODELS = [
    ("linear", lambda: LinearRegression(D)),
    ("logistic", lambda: LogisticRegression(D)),
    ("softmax-2", lambda: SoftmaxRegression(D, 2)),
    ("softmax-3", lambda: SoftmaxRegression(D, K)),
] + [
    (
        f"mlp-{act}-{task}",
        lambda act=act, task=task: MLP(D, 5, act, task=task, n_classes=K * (task == "multiclass")),
    )
    for act in ("tanh", "relu", "sigmoid")
    for task in ("regression", "binary", "multiclass")
]


def _data(model, rng):
    X = rng.standard_normal((N, D))
    if model.task == "regression":
        y = rng.standard_normal(N)
    elif model.task == "binary":
        y = rng.integers(0, 2, N).astype(float)
    else:
        y = rng.integers(0, model.n_classes, N)
    return X, y


def _fd_grad(model, params, X, y, h=1e-6):
    """Central differences (f(p + h e_i) - f(p - h e_i)) / 2h, one coordinate at a time."""
    g = np.empty_like(params)
    for i in range(params.size):
        up, down = params.copy(), params.copy()
        up[i] += h
        down[i] -= h
        g[i] = (model.loss(up, X, y) - model.loss(down, X, y)) / (2 * h)
    return g


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize(("name", "make"), MODELS, ids=[m[0] for m in MODELS])
def test_gradient_matches_central_differences(name, make, seed):
    model = make()
    rng = np.random.default_rng(seed)
    X, y = _data(model, rng)
    params = rng.normal(0.0, 0.5, model.n_params)
    loss, grad = model.loss_and_grad(params, X, y)
    fd = _fd_grad(model, params, X, y)
    assert grad.shape == (model.n_params,)
    assert loss == pytest.approx(model.loss(params, X, y), rel=1e-12)
    rel = np.linalg.norm(grad - fd) / max(np.linalg.norm(grad), np.linalg.norm(fd))
    assert rel < 1e-6, f"{name}: relative error {rel:.2e}"


def test_single_sample_example_from_the_sources():
    # x = [28.1, 58.0], y = 165, w = [0.5, 0.5], b = 0, one SGD step with lr = 1e-5.
    model = LinearRegression(2)
    X, y = np.array([[28.1, 58.0]]), np.array([165.0])
    params = np.array([0.5, 0.5, 0.0])
    assert model.predict(params, X) == pytest.approx([43.05], rel=1e-12)
    loss, grad = model.loss_and_grad(params, X, y)
    assert loss == pytest.approx(14871.8025, rel=1e-12)
    opt = SGD()
    opt.init(params)
    opt.step(params, grad, 1e-5)
    w, b = model.unpack(params)["w"], model.unpack(params)["b"]
    assert w == pytest.approx([0.5685359, 0.641462], rel=1e-12)
    assert float(b) == pytest.approx(0.002439, rel=1e-12)
    assert model.loss(params, X, y) == pytest.approx(12503.020514375934, rel=1e-12)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: LogisticRegression(D), math.log(2)),
        (lambda: SoftmaxRegression(D, 2), math.log(2)),
        (lambda: SoftmaxRegression(D, 3), math.log(3)),
        (lambda: SoftmaxRegression(D, 10), math.log(10)),
        (lambda: MLP(D, 3, task="binary"), math.log(2)),
        (lambda: MLP(D, 3, "relu", task="multiclass", n_classes=7), math.log(7)),
    ],
)
def test_zero_parameters_give_log_k(make, expected):
    model = make()
    rng = np.random.default_rng(0)
    X, y = _data(model, rng)
    assert model.loss(np.zeros(model.n_params), X, y) == pytest.approx(expected, rel=1e-14)


def test_linear_models_start_at_zero():
    for model in (LinearRegression(D), LogisticRegression(D), SoftmaxRegression(D, K)):
        assert np.array_equal(model.init_params(np.random.default_rng(0)), np.zeros(model.n_params))


def test_logistic_loss_and_gradient_by_hand():
    # w = 1, b = 0: logits z = [2, -1] with labels [1, 0].
    model = LogisticRegression(1)
    X, y = np.array([[2.0], [-1.0]]), np.array([1.0, 0.0])
    params = np.array([1.0, 0.0])
    # -log sigmoid(2) = log(1 + e^-2);  -log(1 - sigmoid(-1)) = log(1 + e^-1)
    expected = (math.log1p(math.exp(-2)) + math.log1p(math.exp(-1))) / 2
    # dL/dz = sigmoid(z) - y: sigmoid(2) - 1 = -1/(1 + e^2), sigmoid(-1) = 1/(1 + e)
    d = [-1 / (1 + math.exp(2)), 1 / (1 + math.e)]
    loss, grad = model.loss_and_grad(params, X, y)
    assert loss == pytest.approx(expected, rel=1e-14)
    assert grad == pytest.approx([(d[0] * 2 + d[1] * -1) / 2, (d[0] + d[1]) / 2], rel=1e-14)


def test_softmax_loss_and_gradient_by_hand():
    # W = 0, b = [1, 2, 3]: every row has logits [1, 2, 3]; label 0.
    model = SoftmaxRegression(1, 3)
    params = np.array([0.0, 0.0, 0.0, 1.0, 2.0, 3.0])
    X, y = np.array([[5.0]]), np.array([0])
    s = math.e + math.e**2 + math.e**3
    p = [math.e / s, math.e**2 / s, math.e**3 / s]
    loss, grad = model.loss_and_grad(params, X, y)
    assert loss == pytest.approx(math.log(s) - 1.0, rel=1e-14)
    # dL/dZ = p - onehot(0); dL/dW = x * dL/dZ with x = 5; dL/db = dL/dZ
    dz = [p[0] - 1, p[1], p[2]]
    assert grad == pytest.approx([5 * v for v in dz] + dz, rel=1e-13)


@pytest.mark.parametrize(
    ("make", "bias", "y", "expected"),
    [
        (lambda: LogisticRegression(2), [1e4], [0.0], 1e4),
        (lambda: LogisticRegression(2), [1e4], [1.0], 0.0),
        (lambda: LogisticRegression(2), [-1e4], [1.0], 1e4),
        (lambda: SoftmaxRegression(2, 3), [1e4, 0.0, -1e4], [0], 0.0),
        (lambda: SoftmaxRegression(2, 3), [1e4, 0.0, -1e4], [1], 1e4),
        (lambda: SoftmaxRegression(2, 3), [1e4, 0.0, -1e4], [2], 2e4),
        (lambda: MLP(2, 3, task="binary"), [-1e4], [1.0], 1e4),
        (lambda: MLP(2, 3, task="multiclass", n_classes=3), [1e4, 0.0, -1e4], [2], 2e4),
    ],
)
def test_logits_of_1e4_are_finite_and_silent(make, bias, y, expected):
    model = make()
    params = np.zeros(model.n_params)
    params[-len(bias) :] = bias  # the output bias is last in every layout; all weights 0
    X, y = np.array([[0.3, -0.7]]), np.array(y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grad = model.loss_and_grad(params, X, y)
        assert model.loss(params, X, y) == loss
    assert loss == pytest.approx(expected, abs=1e-9)
    assert np.all(np.isfinite(grad))


def test_accuracy_and_predict_by_hand():
    model = LogisticRegression(1)
    params = np.array([1.0, 0.0])
    X = np.array([[1.0], [-1.0], [2.0]])
    assert model.predict(params, X).tolist() == [1, 0, 1]
    assert model.accuracy(params, X, np.array([1, 1, 1])) == pytest.approx(2 / 3)
    soft = SoftmaxRegression(1, 3)
    # b = [0, 1, 0], W = [1, 0, -1]: x = 3 -> class 0, x = 0 -> class 1, x = -3 -> class 2.
    p = np.array([1.0, 0.0, -1.0, 0.0, 1.0, 0.0])
    assert soft.predict(p, np.array([[3.0], [0.0], [-3.0]])).tolist() == [0, 1, 2]


def test_accuracy_is_for_classification_only():
    with pytest.raises(ValueError, match="classification only"):
        LinearRegression(2).accuracy(np.zeros(3), np.zeros((1, 2)), np.zeros(1))


@pytest.mark.parametrize(
    ("make", "shapes"),
    [
        (lambda: LinearRegression(D), {"w": (D,), "b": ()}),
        (lambda: LogisticRegression(D), {"w": (D,), "b": ()}),
        (lambda: SoftmaxRegression(D, K), {"W": (D, K), "b": (K,)}),
        (lambda: MLP(D, 5, task="regression"), {"W1": (D, 5), "b1": (5,), "W2": (5, 1), "b2": (1,)}),
        (
            lambda: MLP(D, 5, task="multiclass", n_classes=K),
            {"W1": (D, 5), "b1": (5,), "W2": (5, K), "b2": (K,)},
        ),
    ],
)
def test_unpack_gives_views_of_the_right_shapes(make, shapes):
    model = make()
    params = np.zeros(model.n_params)
    parts = model.unpack(params)
    assert {k: v.shape for k, v in parts.items()} == shapes
    assert sum(v.size for v in parts.values()) == model.n_params
    for v in parts.values():
        assert np.shares_memory(v, params)
    parts["b" if "b" in parts else "b2"][...] = 7.0
    assert params[-1] == 7.0  # the output bias is the last entry


def test_unpack_rejects_a_wrong_vector():
    with pytest.raises(ValueError, match=r"shape \(5,\)"):
        LinearRegression(4).unpack(np.zeros(4))


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid"])
def test_mlp_init_glorot_or_he_and_seeded(activation):
    d, h = 200, 300
    model = MLP(d, h, activation, task="multiclass", n_classes=4)
    p1, p2 = model.init_params(np.random.default_rng(3)), model.init_params(np.random.default_rng(3))
    assert np.array_equal(p1, p2)
    parts = model.unpack(p1)
    assert not parts["b1"].any() and not parts["b2"].any()
    W1 = parts["W1"]
    if activation == "relu":  # He: normal with std sqrt(2 / fan_in)
        assert W1.std() == pytest.approx(math.sqrt(2 / d), rel=0.02)
    else:  # Glorot: uniform on +-sqrt(6 / (fan_in + fan_out)), std = bound / sqrt(3)
        bound = math.sqrt(6 / (d + h))
        assert np.abs(W1).max() <= bound
        assert W1.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert np.abs(parts["W2"]).max() <= math.sqrt(6 / (h + 4))


def test_design_cache_follows_the_array_passed():
    # Training set, validation set, training set again, a mini-batch: same numbers as a fresh model each time.
    rng = np.random.default_rng(5)
    X_train, X_val = rng.standard_normal((20, 3)), rng.standard_normal((7, 3))
    y_train, y_val = rng.standard_normal(20), rng.standard_normal(7)
    params = rng.standard_normal(4)
    model = LinearRegression(3)
    for X, y in [(X_train, y_train), (X_val, y_val), (X_train, y_train), (X_train[:5], y_train[:5])]:
        fresh_loss, fresh_grad = LinearRegression(3).loss_and_grad(params, X, y)
        loss, grad = model.loss_and_grad(params, X, y)
        assert loss == fresh_loss and np.array_equal(grad, fresh_grad)
        assert model.loss(params, X, y) == pytest.approx(
            np.mean((X @ params[:3] + params[3] - y) ** 2), rel=1e-13
        )


def test_gradient_is_a_new_array_each_call():
    model, rng = LinearRegression(3), np.random.default_rng(0)
    X, y = rng.standard_normal((5, 3)), rng.standard_normal(5)
    _, g1 = model.loss_and_grad(np.zeros(4), X, y)
    kept = g1.copy()
    _, g2 = model.loss_and_grad(np.ones(4), X, y)
    assert g1 is not g2 and np.array_equal(g1, kept)


def test_wrong_feature_count_is_rejected():
    with pytest.raises(ValueError, match=r"must have shape \(n, 3\)"):
        LinearRegression(3).loss(np.zeros(4), np.zeros((2, 5)), np.zeros(2))


def test_runaway_parameters_give_inf_loss_silently():
    model = LinearRegression(2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = model.loss(np.full(3, 1e300), np.ones((4, 2)), np.zeros(4))
    assert loss == math.inf


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda: LinearRegression(0),
            r"'n_features' parameter of LinearRegression must be an int >= 1. Got 0",
        ),
        (lambda: LinearRegression(2.5), r"'n_features' .* Got 2.5 instead"),
        (lambda: LogisticRegression(True), r"'n_features' .* Got True instead"),
        (
            lambda: SoftmaxRegression(3, 1),
            r"'n_classes' parameter of SoftmaxRegression must be an int >= 2. Got 1",
        ),
        (lambda: MLP(3, 0, task="binary"), r"'hidden' parameter of MLP must be an int >= 1. Got 0"),
        (
            lambda: MLP(3, 4, "gelu", task="binary"),
            r"'activation' parameter of MLP must be one of .*Got 'gelu'",
        ),
        (lambda: MLP(3, 4, task="ranking"), r"'task' parameter of MLP must be one of .*Got 'ranking'"),
        (lambda: MLP(3, 4, task="multiclass", n_classes=1), r"'n_classes' .* >= 2. Got 1 instead"),
        (
            lambda: MLP(3, 4, task="regression", n_classes=3),
            r"'n_classes' .* must be 0 for task 'regression'",
        ),
        (lambda: MLP(3, 4, task="binary", n_classes=3), r"'n_classes' .* must be 0 or 2 .* Got 3"),
        (lambda: MLP(np.int64(3), 4.0, task="binary"), r"'hidden' .* Got 4.0 instead"),
    ],
)
def test_invalid_constructor_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    ("name", "task", "n_classes", "params", "expected"),
    [
        ("linear", "regression", 0, {}, "LinearRegression(n_features=4)"),
        ("logistic", "binary", 2, {}, "LogisticRegression(n_features=4)"),
        ("softmax", "multiclass", 3, {}, "SoftmaxRegression(n_features=4, n_classes=3)"),
        (
            "mlp",
            "multiclass",
            3,
            {"hidden": 8, "activation": "relu"},
            "MLP(n_features=4, hidden=8, activation='relu', task='multiclass', n_classes=3)",
        ),
        (
            "mlp",
            "regression",
            0,
            {"hidden": 2},
            "MLP(n_features=4, hidden=2, activation='tanh', task='regression'",
        ),
    ],
)
def test_build_model(name, task, n_classes, params, expected):
    model = build_model(name, n_features=4, task=task, n_classes=n_classes, **params)
    assert repr(model).startswith(expected)
    assert model.task == task


@pytest.mark.parametrize(
    ("name", "kwargs", "match"),
    [
        (
            "ridge",
            {"task": "regression"},
            r"'name' parameter of build_model must be one of 'linear', 'logistic'",
        ),
        ("linear", {"task": "binary"}, r"'task' .* must be 'regression' for model 'linear'. Got 'binary'"),
        ("softmax", {"task": "binary"}, r"must be 'multiclass' for model 'softmax'"),
        ("mlp", {"task": "ranking", "hidden": 3}, r"'task' parameter of build_model must be one of"),
        (
            "linear",
            {"task": "regression", "hidden": 3},
            r"Unknown parameter\(s\) 'hidden' for model 'linear'",
        ),
        (
            "mlp",
            {"task": "binary", "hidden": 3, "depth": 2},
            r"'depth' for model 'mlp'; valid: hidden, activation",
        ),
        ("mlp", {"task": "binary"}, r"needs the parameter 'hidden'"),
        ("softmax", {"task": "multiclass", "n_classes": 1}, r"'n_classes' .* >= 2. Got 1 instead"),
        ("logistic", {"task": "binary", "n_classes": 3}, r"'n_classes' .* 0 or 2 .* Got 3"),
    ],
)
def test_build_model_rejects(name, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model(name, n_features=4, **kwargs)
