"""Models with analytic gradients on ONE flat float64 parameter vector.

Every model keeps all of its parameters in one 1-D float64 array, so optimizers, schedules and the training
loop never need to know a model's shapes; ``unpack`` gives named views (reshaped slices) into that array.
Losses are means over the rows of ``X``:

- regression: mean squared error ``L = mean((f(x) - y)^2)`` (no 1/2: the sources' worked example needs this);
- binary: cross-entropy of the logit z with y in {0, 1}, ``L = mean(log(1 + e^z) - y z)``, computed as
  ``logaddexp(0, z) - y z`` so that logits of +-1e4 stay finite;
- multiclass: softmax cross-entropy with integer labels, ``L = mean(logsumexp(z) - z_y)``, the row maximum is
  subtracted before ``exp``.

Parameters that have run away (a diverging run) give an inf/nan loss: the training loop decides what
divergence means. ``loss`` and ``predict`` stay silent then (np.errstate inside). ``loss_and_grad`` is the hot
path and does not pay for an np.errstate per call (2-4 us, a quarter of a linear-regression epoch on
diabetes): the training loop runs its whole loop under one ``np.errstate(over="ignore", invalid="ignore")``.
Finite logits of any size (1e4) never warn: the losses are written in stable forms.

``y`` follows one convention: regression float (n,), binary float or int (n,) in {0, 1}, multiclass int (n,)
in 0..k-1; the hot path does not re-check labels. The gradient is a new array on every call (the caller may
keep it).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from numbers import Integral

import numpy as np

from pipeline.core.checks import ArgumentError, check_choice, check_int
from pipeline.core.names import BINARY, MULTICLASS, REGRESSION, TASKS

ACTIVATIONS = ("tanh", "relu", "sigmoid")


def _check_n_classes(owner: str, task: str, n_classes) -> int:
    """multiclass needs k >= 2 outputs; regression has no classes (0); binary may say 0 or 2."""
    if task == MULTICLASS:
        return check_int(n_classes, "n_classes", owner, low=2)
    allowed = (0, 2) if task == BINARY else (0,)
    if isinstance(n_classes, bool) or not isinstance(n_classes, Integral) or n_classes not in allowed:
        raise ArgumentError(
            "n_classes", owner, f"{' or '.join(map(str, allowed))} for task {task!r}", n_classes
        )
    return int(n_classes)


_expit = None


def expit(z: np.ndarray) -> np.ndarray:
    """The logistic sigmoid 1 / (1 + exp(-z)) without overflow warnings: SciPy's, imported on first use (SciPy
    takes ~0.4 s to import, which commands that never train, such as `best`, should not pay)."""
    global _expit
    if _expit is None:
        from scipy.special import expit as scipy_expit

        _expit = scipy_expit
    return _expit(z)


# --- losses of the model's output z, each returning (loss, dL/dz); the 1/n of the mean is inside dL/dz ---


def _mse(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    r = z - y
    n = r.shape[0]
    return float(r @ r) / n, r * (2.0 / n)


def _bce_loss(z: np.ndarray, y: np.ndarray) -> float:
    # log(1 + e^z) - y z  ==  -y log sigmoid(z) - (1 - y) log(1 - sigmoid(z)); logaddexp never overflows.
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def _bce(z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    d = expit(z)  # sigmoid without overflow for any z
    d -= y
    d /= z.shape[0]
    return _bce_loss(z, y), d


def _softmax_ce(Z: np.ndarray, y: np.ndarray, grad: bool = True) -> tuple[float, np.ndarray | None]:
    """Mean cross-entropy of logits Z (n, k) against integer labels y, and (softmax(Z) - onehot(y)) / n."""
    n = Z.shape[0]
    rows = np.arange(n)
    S = Z - Z.max(axis=1, keepdims=True)  # largest logit becomes 0: exp cannot overflow
    lse = np.log(np.exp(S).sum(axis=1))
    loss = float(np.mean(lse - S[rows, y]))
    if not grad:
        return loss, None
    S -= lse[:, None]
    P = np.exp(S, out=S)
    P[rows, y] -= 1.0
    P /= n
    return loss, P


def _as_labels(y) -> np.ndarray:
    return np.asarray(y, dtype=np.intp)


class Model(ABC):
    """A differentiable model whose parameters are one flat float64 vector of length ``n_params``."""

    task: str  # "regression" | "binary" | "multiclass"
    n_params: int

    @abstractmethod
    def init_params(self, rng: np.random.Generator) -> np.ndarray:
        """A fresh parameter vector, shape (n_params,)."""

    @abstractmethod
    def unpack(self, params: np.ndarray) -> dict[str, np.ndarray]:
        """Named views into ``params`` (writing to them writes to ``params``)."""

    @abstractmethod
    def loss_and_grad(self, params: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        """The mean loss over the rows of X and its gradient, shape (n_params,), a new array per call.

        Not wrapped in np.errstate (hot path): runaway params may warn unless the caller suppresses it.
        """

    @abstractmethod
    def _output(self, params: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Regression predictions or logits: (n,) for one output, (n, k) for k classes."""

    def loss(self, params: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
        """The mean loss over the rows of X (no gradient); runaway params give inf/nan without a warning."""
        with np.errstate(over="ignore", invalid="ignore"):
            return self.loss_unguarded(params, X, y)

    def loss_unguarded(self, params: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
        """:meth:`loss` without its np.errstate (a few microseconds), for loops that suppress warnings once."""
        z = self._output(params, X)
        if self.task == REGRESSION:
            r = z - y
            return float(r @ r) / r.shape[0]
        if self.task == BINARY:
            return _bce_loss(z, y)
        return _softmax_ce(z, _as_labels(y), grad=False)[0]

    def predict(self, params: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Regression: the predicted values; classification: the predicted class labels (int)."""
        with np.errstate(over="ignore", invalid="ignore"):
            z = self._output(params, X)
        if self.task == REGRESSION:
            return z
        if self.task == BINARY:
            return (z > 0).astype(np.intp)  # sigmoid(z) > 1/2
        return np.argmax(z, axis=1)

    def accuracy(self, params: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
        """The fraction of rows whose predicted label equals y (classification only)."""
        if self.task == REGRESSION:
            raise ValueError(f"accuracy is defined for classification only; {self!r} has task 'regression'.")
        return float(np.mean(self.predict(params, X) == np.asarray(y)))

    def _check_params(self, params) -> np.ndarray:
        params = np.asarray(params)
        if params.shape != (self.n_params,) or params.dtype != np.float64:
            raise ValueError(
                f"The 'params' of {self!r} must be a float64 vector of shape ({self.n_params},). "
                f"Got {params.dtype} of shape {params.shape} instead."
            )
        return params


class _LinearModel(Model):
    """One affine map ``z = X W + b``; params = [W (d, k) row-major, b (k,)] is the (d + 1, k) matrix [W; b].

    So ``z = [X, 1] @ params.reshape(d + 1, k)`` and the gradient is ``[X, 1]^T dL/dz``: one product each way.
    ``[X, 1]^T`` is cached for the last few X arrays seen (by identity), so full-batch epochs and the
    validation set build it once: do not modify X in place between calls (pass a new array instead).
    """

    n_outputs = 1
    _CACHE_SIZE = 3  # training batch, validation set, one spare

    def __init__(self, n_features: int):
        self.n_features = check_int(n_features, "n_features", type(self).__name__, low=1)
        self.n_params = (self.n_features + 1) * self.n_outputs
        # One tuple of (X, [X, 1]^T) pairs, replaced whole so a concurrent reader never sees a torn pair.
        self._cache: tuple[tuple[np.ndarray, np.ndarray], ...] = ()

    def init_params(self, rng: np.random.Generator | None = None) -> np.ndarray:
        """Zeros (the problem is convex; ``rng`` is accepted for a uniform interface and unused)."""
        return np.zeros(self.n_params)

    def unpack(self, params: np.ndarray) -> dict[str, np.ndarray]:
        """{"w": (d,), "b": 0-d} views into params."""
        params = self._check_params(params)
        return {"w": params[:-1], "b": params[-1:].reshape(())}

    def _design_T(self, X: np.ndarray) -> np.ndarray:
        """``[X, 1]^T``, shape (d + 1, n), C order (rows contiguous for the BLAS products)."""
        cache = self._cache
        for X_seen, XaT in cache:
            if X_seen is X:
                return XaT
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise ValueError(f"X for {self!r} must have shape (n, {self.n_features}). Got {X.shape} instead.")
        XaT = np.empty((self.n_features + 1, X.shape[0]))
        XaT[:-1] = X.T
        XaT[-1] = 1.0
        self._cache = ((X, XaT), *cache[: self._CACHE_SIZE - 1])
        return XaT

    def _output(self, params: np.ndarray, X: np.ndarray) -> np.ndarray:
        XaT = self._design_T(X)
        if self.n_outputs == 1:
            return params @ XaT
        return XaT.T @ params.reshape(self.n_features + 1, self.n_outputs)

    def _grad(self, X: np.ndarray, dz: np.ndarray) -> np.ndarray:
        """``[X, 1]^T dL/dz`` flattened like params; dz (n,) or (n, k) already holds the 1/n of the mean."""
        return (self._design_T(X) @ dz).ravel()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_features={self.n_features})"


class LinearRegression(_LinearModel):
    """Least squares: ``L = mean(r^2)`` with the residual ``r = X w + b - y``.

    ``dL/dw = 2/n X^T r``, ``dL/db = 2/n sum(r)``. params = [w_1..w_d, b], zeros at init.
    """

    task = REGRESSION

    def loss_and_grad(self, params: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        # The hot path of every diabetes trial (300 epochs x many trials): a handful of NumPy calls.
        XaT = self._design_T(X)
        r = params @ XaT
        r -= y
        grad = XaT @ r
        n = r.shape[0]
        grad *= 2.0 / n
        return float(r @ r) / n, grad


class LogisticRegression(_LinearModel):
    """Binary logistic regression on the logit ``z = X w + b``.

    ``L = mean(log(1 + e^z) - y z)`` (binary cross-entropy of sigmoid(z)), ``dL/dz = (sigmoid(z) - y) / n``.
    params = [w_1..w_d, b], zeros at init (loss log 2).
    """

    task = BINARY

    def loss_and_grad(self, params: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        loss, dz = _bce(self._output(params, X), y)
        return loss, self._grad(X, dz)


class SoftmaxRegression(_LinearModel):
    """Multinomial logistic regression: logits ``Z = X W + b`` (W (d, k), b (k,)), softmax cross-entropy.

    ``L = mean(logsumexp(Z_i) - Z_{i, y_i})``, ``dL/dZ = (softmax(Z) - onehot(y)) / n``,
    ``dL/dW = X^T dL/dZ``, ``dL/db = sum over rows``. params = [W row-major, b], zeros at init (loss log k).
    """

    task = MULTICLASS

    def __init__(self, n_features: int, n_classes: int):
        self.n_classes = self.n_outputs = check_int(n_classes, "n_classes", "SoftmaxRegression", low=2)
        super().__init__(n_features)

    def unpack(self, params: np.ndarray) -> dict[str, np.ndarray]:
        """{"W": (d, k), "b": (k,)} views into params."""
        Wb = self._check_params(params).reshape(self.n_features + 1, self.n_classes)
        return {"W": Wb[:-1], "b": Wb[-1]}

    def loss_and_grad(self, params: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        loss, dZ = _softmax_ce(self._output(params, X), _as_labels(y))
        return loss, self._grad(X, dZ)

    def __repr__(self) -> str:
        return f"SoftmaxRegression(n_features={self.n_features}, n_classes={self.n_classes})"


class MLP(Model):
    """A two-layer perceptron: one hidden layer, then a linear output layer into the task's loss.

    ``H = act(X W1 + b1)``, ``z = H W2 + b2``; regression: MSE on one output; binary: cross-entropy of
    sigmoid(z) on one output; multiclass: softmax cross-entropy on k outputs. Backpropagation:
    ``dW2 = H^T dz``, ``db2 = sum(dz)``, ``dA = (dz W2^T) * act'(A)``, ``dW1 = X^T dA``, ``db1 = sum(dA)``.

    Init: W1 by He et al. (2015) normal(0, sqrt(2 / d)) for relu, else Glorot & Bengio (2010)
    uniform(+-sqrt(6 / (fan_in + fan_out))); W2 Glorot uniform (the output layer is linear); biases 0.
    params = [W1 (d, h) row-major, b1 (h,), W2 (h, o) row-major, b2 (o,)] with o = 1 or k.

    Args:
        n_features: input dimension d >= 1.
        hidden: number of hidden units h >= 1.
        activation: "tanh", "relu" or "sigmoid".
        task: "regression", "binary" or "multiclass".
        n_classes: k >= 2 for multiclass; 0 for regression; 0 or 2 for binary.
    """

    def __init__(
        self, n_features: int, hidden: int, activation: str = "tanh", *, task: str, n_classes: int = 0
    ):
        self.n_features = check_int(n_features, "n_features", "MLP", low=1)
        self.hidden = check_int(hidden, "hidden", "MLP", low=1)
        self.activation = check_choice(activation, "activation", "MLP", ACTIVATIONS)
        self.task = check_choice(task, "task", "MLP", TASKS)
        self.n_classes = _check_n_classes("MLP", self.task, n_classes)
        self.n_outputs = self.n_classes if self.task == MULTICLASS else 1
        d, h, o = self.n_features, self.hidden, self.n_outputs
        # Slices of the flat vector: W1, b1, W2, b2.
        self._cuts = np.cumsum([0, d * h, h, h * o, o])
        self.n_params = int(self._cuts[-1])

    def init_params(self, rng: np.random.Generator) -> np.ndarray:
        """He (relu) or Glorot (tanh, sigmoid) hidden weights, Glorot output weights, zero biases."""
        params = np.zeros(self.n_params)
        p = self.unpack(params)
        d, h, o = self.n_features, self.hidden, self.n_outputs
        if self.activation == "relu":
            p["W1"][...] = rng.normal(0.0, math.sqrt(2.0 / d), size=(d, h))
        else:
            p["W1"][...] = rng.uniform(-1.0, 1.0, size=(d, h)) * math.sqrt(6.0 / (d + h))
        p["W2"][...] = rng.uniform(-1.0, 1.0, size=(h, o)) * math.sqrt(6.0 / (h + o))
        return params

    def unpack(self, params: np.ndarray) -> dict[str, np.ndarray]:
        """{"W1": (d, h), "b1": (h,), "W2": (h, o), "b2": (o,)} views into params."""
        params = self._check_params(params)
        return self._views(params)

    def _views(self, params: np.ndarray) -> dict[str, np.ndarray]:
        c = self._cuts
        d, h, o = self.n_features, self.hidden, self.n_outputs
        return {
            "W1": params[c[0] : c[1]].reshape(d, h),
            "b1": params[c[1] : c[2]],
            "W2": params[c[2] : c[3]].reshape(h, o),
            "b2": params[c[3] : c[4]],
        }

    def _hidden(self, p: dict[str, np.ndarray], X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        A = X @ p["W1"]
        A += p["b1"]
        if self.activation == "tanh":
            H = np.tanh(A)
        elif self.activation == "relu":
            H = np.maximum(A, 0.0)
        else:
            H = expit(A)
        return A, H

    def _output(self, params: np.ndarray, X: np.ndarray) -> np.ndarray:
        p = self._views(params)
        Z = self._hidden(p, X)[1] @ p["W2"]
        Z += p["b2"]
        return Z if self.task == MULTICLASS else Z[:, 0]

    def loss_and_grad(self, params: np.ndarray, X: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        p = self._views(params)
        A, H = self._hidden(p, X)
        Z = H @ p["W2"]
        Z += p["b2"]
        if self.task == MULTICLASS:
            loss, dZ = _softmax_ce(Z, _as_labels(y))
        else:
            loss, dz = (_mse if self.task == REGRESSION else _bce)(Z[:, 0], y)
            dZ = dz[:, None]
        grad = np.empty(self.n_params)
        g = self._views(grad)
        np.matmul(H.T, dZ, out=g["W2"])
        dZ.sum(axis=0, out=g["b2"])
        dA = dZ @ p["W2"].T
        if self.activation == "tanh":
            dA *= 1.0 - H * H
        elif self.activation == "relu":
            dA *= A > 0.0
        else:
            dA *= H * (1.0 - H)
        np.matmul(X.T, dA, out=g["W1"])
        dA.sum(axis=0, out=g["b1"])
        return loss, grad

    def __repr__(self) -> str:
        return (
            f"MLP(n_features={self.n_features}, hidden={self.hidden}, activation={self.activation!r}, "
            f"task={self.task!r}, n_classes={self.n_classes})"
        )


MODELS: dict[str, type[Model]] = {
    "linear": LinearRegression,
    "logistic": LogisticRegression,
    "softmax": SoftmaxRegression,
    "mlp": MLP,
}
# The task each fixed-task model solves; "mlp" solves all three.
MODEL_TASKS: dict[str, tuple[str, ...]] = {
    "linear": (REGRESSION,),
    "logistic": (BINARY,),
    "softmax": (MULTICLASS,),
    "mlp": TASKS,
}
# Architecture parameters a study may set per model (besides n_features, task, n_classes).
MODEL_PARAMS: dict[str, tuple[str, ...]] = {
    "linear": (),
    "logistic": (),
    "softmax": (),
    "mlp": ("hidden", "activation"),
}


def build_model(name: str, *, n_features: int, task: str, n_classes: int = 0, **params) -> Model:
    """The model called ``name`` ("linear", "logistic", "softmax", "mlp") for ``n_features`` input columns.

    Args:
        name: a key of MODELS.
        n_features: number of input columns.
        task: "regression", "binary" or "multiclass"; must be one the model solves (MODEL_TASKS).
        n_classes: the dataset's number of classes (0 for regression).
        **params: the model's own parameters (MODEL_PARAMS), e.g. hidden=16, activation="relu" for "mlp".

    Raises:
        ArgumentError (a ValueError) naming the bad name, task or parameter and listing the valid ones.
    """
    check_choice(name, "name", "build_model", tuple(MODELS))
    check_choice(task, "task", "build_model", TASKS)
    if task not in MODEL_TASKS[name]:
        valid = ", ".join(repr(t) for t in MODEL_TASKS[name])
        raise ArgumentError("task", "build_model", f"{valid} for model {name!r}", task)
    unknown = sorted(set(params) - set(MODEL_PARAMS[name]))
    if unknown:
        valid = ", ".join(MODEL_PARAMS[name]) or "none"
        raise ValueError(
            f"Unknown parameter(s) {', '.join(map(repr, unknown))} for model {name!r}; valid: {valid}."
        )
    if name == "mlp":
        if "hidden" not in params:
            raise ValueError("Model 'mlp' needs the parameter 'hidden' (an int >= 1).")
        return MLP(n_features, task=task, n_classes=n_classes, **params)
    _check_n_classes(f"build_model (model {name!r})", task, n_classes)
    if name == "softmax":
        return SoftmaxRegression(n_features, n_classes)
    return MODELS[name](n_features)
