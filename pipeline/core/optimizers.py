"""First-order update rules on the model's flat parameter vector, applied in place.

An optimizer holds only its per-parameter state (velocity, squared-gradient averages); the learning rate comes
from the schedule at every step, so ``step(params, grad, lr)`` is the whole interface. ``init(params)``
allocates zeroed state for a vector of that size and must be called before the first step (and again to
restart). ``grad`` is only read during ``step``, so a caller may reuse its buffer afterwards. ``lr`` is not
re-validated in the hot path (schedules are validated when built), and ``step`` does not pay for an
np.errstate per call: the training loop suppresses overflow warnings once around its loop, and stops at the
first non-finite loss.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np

from pipeline.core.checks import check_choice, check_float


class Optimizer(ABC):
    """An update rule ``params <- params - lr * direction(grad, state)`` applied in place."""

    name: str

    @abstractmethod
    def init(self, params: np.ndarray) -> None:
        """Allocate zeroed state for a parameter vector like ``params``; also resets a used optimizer."""

    @abstractmethod
    def step(self, params: np.ndarray, grad: np.ndarray, lr: float) -> None:
        """Update ``params`` in place from the gradient ``grad`` (taken at ``params``) and the rate ``lr``."""

    def _state(self, grad: np.ndarray, state: np.ndarray | None) -> np.ndarray:
        if state is None or state.shape != grad.shape:
            got = "nothing" if state is None else f"shape {state.shape}"
            raise RuntimeError(
                f"{self!r}: call init(params) before step(); state is for {got}, the gradient has shape "
                f"{grad.shape}."
            )
        return state

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in OPTIMIZER_PARAMS[self.name])
        return f"{type(self).__name__}({args})"


class SGD(Optimizer):
    """Plain gradient descent: ``p <- p - lr g``."""

    name = "sgd"

    def init(self, params: np.ndarray) -> None:
        """Nothing to allocate: SGD has no state."""

    def step(self, params: np.ndarray, grad: np.ndarray, lr: float) -> None:
        params -= lr * grad


class Momentum(Optimizer):
    """Heavy-ball momentum (Polyak 1964): ``v <- beta v + g``, ``p <- p - lr v``.

    The velocity accumulates raw gradients (PyTorch convention), so a change of lr acts at once.
    """

    name = "momentum"

    def __init__(self, beta: float = 0.9):
        self.beta = check_float(beta, "beta", type(self).__name__, low=0, high=1, high_open=True)
        self._v: np.ndarray | None = None

    def init(self, params: np.ndarray) -> None:
        self._v = np.zeros_like(params, dtype=np.float64)

    def step(self, params: np.ndarray, grad: np.ndarray, lr: float) -> None:
        v = self._state(grad, self._v)
        v *= self.beta
        v += grad
        params -= lr * v


class Nesterov(Momentum):
    """Nesterov accelerated gradient (Nesterov 1983; Sutskever et al. 2013) in the look-ahead form.

    ``v <- beta v + g``, ``p <- p - lr (g + beta v)`` (PyTorch's ``nesterov=True``). With a constant lr and
    v = 0 at the start, ``p`` is exactly Sutskever's look-ahead point ``theta + beta u`` of the definition
    ``u <- beta u - lr grad f(theta + beta u)``, ``theta <- theta + u``, so the gradient the training loop
    computes at ``p`` is the look-ahead gradient.
    """

    name = "nesterov"

    def step(self, params: np.ndarray, grad: np.ndarray, lr: float) -> None:
        v = self._state(grad, self._v)
        v *= self.beta
        v += grad
        params -= lr * (grad + self.beta * v)


class AdaGrad(Optimizer):
    """AdaGrad (Duchi, Hazan & Singer 2011): ``G <- G + g^2``, ``p <- p - lr g / (sqrt(G) + eps)``.

    The accumulator starts at 0, so the first step moves every coordinate by about lr * sign(g).
    """

    name = "adagrad"

    def __init__(self, eps: float = 1e-8):
        self.eps = check_float(eps, "eps", "AdaGrad", low=0, low_open=True)
        self._G: np.ndarray | None = None

    def init(self, params: np.ndarray) -> None:
        self._G = np.zeros_like(params, dtype=np.float64)

    def step(self, params: np.ndarray, grad: np.ndarray, lr: float) -> None:
        G = self._state(grad, self._G)
        G += grad * grad
        params -= lr * grad / (np.sqrt(G) + self.eps)


class RMSProp(Optimizer):
    """RMSProp (Hinton, Coursera lecture 6e, 2012): ``s <- rho s + (1 - rho) g^2``,
    ``p <- p - lr g / (sqrt(s) + eps)``. No bias correction: s starts at 0."""

    name = "rmsprop"

    def __init__(self, rho: float = 0.9, eps: float = 1e-8):
        self.rho = check_float(rho, "rho", "RMSProp", low=0, high=1, high_open=True)
        self.eps = check_float(eps, "eps", "RMSProp", low=0, low_open=True)
        self._s: np.ndarray | None = None

    def init(self, params: np.ndarray) -> None:
        self._s = np.zeros_like(params, dtype=np.float64)

    def step(self, params: np.ndarray, grad: np.ndarray, lr: float) -> None:
        s = self._state(grad, self._s)
        s *= self.rho
        s += (1.0 - self.rho) * grad * grad
        params -= lr * grad / (np.sqrt(s) + self.eps)


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015) with bias correction, at step t = 1, 2, ...:

    ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``, ``m_hat = m / (1 - b1^t)``,
    ``v_hat = v / (1 - b2^t)``, ``p <- p - lr m_hat / (sqrt(v_hat) + eps)``.
    The first step therefore moves every coordinate by about lr * sign(g).
    """

    name = "adam"

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8):
        self.beta1 = check_float(beta1, "beta1", "Adam", low=0, high=1, high_open=True)
        self.beta2 = check_float(beta2, "beta2", "Adam", low=0, high=1, high_open=True)
        self.eps = check_float(eps, "eps", "Adam", low=0, low_open=True)
        self._m: np.ndarray | None = None
        self._v: np.ndarray | None = None
        self._t = 0

    def init(self, params: np.ndarray) -> None:
        self._m = np.zeros_like(params, dtype=np.float64)
        self._v = np.zeros_like(params, dtype=np.float64)
        self._t = 0

    def step(self, params: np.ndarray, grad: np.ndarray, lr: float) -> None:
        m = self._state(grad, self._m)
        v = self._state(grad, self._v)
        self._t += 1
        b1, b2 = self.beta1, self.beta2
        m *= b1
        m += (1.0 - b1) * grad
        v *= b2
        v += (1.0 - b2) * grad * grad
        # sqrt(v_hat) + eps == sqrt(v) / sqrt(1 - b2^t) + eps; the m correction folds into the step size.
        denom = np.sqrt(v)
        denom /= math.sqrt(1.0 - b2**self._t)
        denom += self.eps
        params -= (lr / (1.0 - b1**self._t)) * m / denom


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD,
    "momentum": Momentum,
    "nesterov": Nesterov,
    "adagrad": AdaGrad,
    "rmsprop": RMSProp,
    "adam": Adam,
}
# The tunable parameters of each optimizer (the learning rate belongs to the schedule).
OPTIMIZER_PARAMS: dict[str, tuple[str, ...]] = {
    "sgd": (),
    "momentum": ("beta",),
    "nesterov": ("beta",),
    "adagrad": ("eps",),
    "rmsprop": ("rho", "eps"),
    "adam": ("beta1", "beta2", "eps"),
}


def build_optimizer(name: str, **params) -> Optimizer:
    """The optimizer ``name`` (a key of OPTIMIZERS) with the given OPTIMIZER_PARAMS (defaults otherwise).

    Raises:
        ArgumentError (a ValueError) naming an unknown optimizer or parameter and listing the valid ones, or a
        parameter value out of range.
    """
    check_choice(name, "name", "build_optimizer", OPTIMIZERS)
    unknown = sorted(set(params) - set(OPTIMIZER_PARAMS[name]))
    if unknown:
        valid = ", ".join(OPTIMIZER_PARAMS[name]) or "none"
        raise ValueError(
            f"Unknown parameter(s) {', '.join(map(repr, unknown))} for optimizer {name!r}; valid: {valid}."
        )
    return OPTIMIZERS[name](**params)
