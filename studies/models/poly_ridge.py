"""Polynomial ridge regression: a model the built-in ones do not cover, written as a user would.

Features: every monomial of the inputs up to ``degree`` (x1, x2, x1^2, x1 x2, x2^2, ... : interactions included);
loss: mean squared error plus an L2 penalty on the weights (not on the bias),

    L(w, b) = mean((Phi w + b - y)^2) + l2 * |w|^2,
    dL/dw = 2/n Phi^T r + 2 l2 w,   dL/db = 2/n sum(r),   r = Phi w + b - y.

``make_data`` is a data entry point: a noisy cubic surface in two inputs. ``build_wrong`` is the same model with
the factor 2 of the penalty's gradient forgotten: the study loader refuses it (studies/poly-ridge-wrong.yaml).
"""

from itertools import combinations_with_replacement

import numpy as np


class PolyRidge:
    task = "regression"

    def __init__(self, n_features, degree=3, l2=0.01, penalty_factor=2.0):
        self.terms = [
            c for k in range(1, degree + 1) for c in combinations_with_replacement(range(n_features), k)
        ]
        self.l2, self.penalty_factor = l2, penalty_factor
        self._cache = (None, None)

    def features(self, X):
        if self._cache[0] is X:  # the training set comes back every epoch
            return self._cache[1]
        Phi = np.column_stack([np.prod(X[:, list(t)], axis=1) for t in self.terms])
        self._cache = (X, Phi)
        return Phi

    def init_params(self, rng):
        return rng.normal(0.0, 0.01, size=len(self.terms) + 1)  # [w..., b]

    def predict(self, params, X):
        return self.features(X) @ params[:-1] + params[-1]

    def loss(self, params, X, y):
        r = self.predict(params, X) - y
        w = params[:-1]
        return float(r @ r) / len(y) + self.l2 * float(w @ w)

    def loss_and_grad(self, params, X, y):
        Phi = self.features(X)
        r = Phi @ params[:-1] + params[-1] - y
        w = params[:-1]
        grad = np.empty_like(params)
        grad[:-1] = 2.0 / len(y) * (Phi.T @ r) + self.penalty_factor * self.l2 * w
        grad[-1] = 2.0 / len(y) * r.sum()
        return float(r @ r) / len(y) + self.l2 * float(w @ w), grad

    def unpack(self, params):
        names = {
            f"w[{'*'.join(f'x{i}' for i in t)}]": params[j : j + 1].reshape(())
            for j, t in enumerate(self.terms)
        }
        return {**names, "b": params[-1:].reshape(())}


def build(n_features, degree=3, l2=0.01):
    return PolyRidge(n_features, degree, l2)


def build_wrong(n_features, degree=3, l2=0.01):
    return PolyRidge(n_features, degree, l2, penalty_factor=1.0)  # wrong: d(l2 |w|^2)/dw is 2 l2 w


def make_data(seed, n_samples=300, noise=0.1):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2.0, 2.0, size=(n_samples, 2))
    y = X[:, 0] ** 3 - 2.0 * X[:, 0] * X[:, 1] + 0.5 * X[:, 1] ** 2 + rng.normal(0.0, noise, n_samples)
    return {"X": X, "y": y, "feature_names": ["x0", "x1"], "target_name": "z"}
