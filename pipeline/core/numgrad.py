"""Numerical gradients by finite differences: the sources' way to train before backpropagation.

``FiniteDifference(model, h)`` is a drop-in model whose ``loss_and_grad`` differentiates ``model.loss``
numerically, so the same training loop runs with analytic or numerical gradients and the two can be compared.
"""

from __future__ import annotations

import numpy as np

from pipeline.core.checks import check_choice, check_float


def numerical_gradient(f, params: np.ndarray, h: float = 1e-4, scheme: str = "central") -> np.ndarray:
    """Gradient of the scalar function ``f`` at ``params`` by finite differences, one coordinate at a time.

    central: (f(p + h e_i) - f(p - h e_i)) / 2h, error O(h^2);  forward: (f(p + h e_i) - f(p)) / h, error O(h).
    """
    check_float(h, "h", "numerical_gradient", low=0, low_open=True)
    check_choice(scheme, "scheme", "numerical_gradient", ("central", "forward"))
    p = np.array(params, dtype=np.float64)
    grad = np.empty_like(p)
    base = f(p) if scheme == "forward" else None
    for i in range(p.size):
        old = p[i]
        p[i] = old + h
        plus = f(p)
        if scheme == "central":
            p[i] = old - h
            grad[i] = (plus - f(p)) / (2 * h)
        else:
            grad[i] = (plus - base) / h
        p[i] = old
    return grad


class FiniteDifference:
    """Wrap a model so that training uses numerical instead of analytic gradients (slow: 2 losses per parameter)."""

    def __init__(self, model, h: float = 1e-4, scheme: str = "central"):
        numerical_gradient(lambda p: 0.0, np.zeros(1), h, scheme)  # validates h and scheme once
        self.model, self.h, self.scheme = model, h, scheme

    def __getattr__(self, name):  # task, n_params, init_params, loss, predict, accuracy, unpack
        return getattr(self.model, name)

    def loss_and_grad(self, params, X, y):
        loss = self.model.loss(params, X, y)
        return loss, numerical_gradient(lambda p: self.model.loss(p, X, y), params, self.h, self.scheme)
