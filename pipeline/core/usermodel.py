"""A user's own model in the core: the interface it must have, an adapter, and the check it must pass first.

A model object (returned by a study file's ``model: {entry_point: ...}``) has the core's model interface:

- ``task``: "regression", "binary" or "multiclass";
- ``init_params(rng) -> params``: a 1-D float64 array (the optimizers update it in place);
- ``loss(params, X, y) -> float``: the mean loss over the rows of X;
- ``loss_and_grad(params, X, y) -> (float, grad)``: the same loss and its gradient, shape of ``params``;
- optionally ``predict(params, X)`` (regression values, or class codes 0..k-1), ``accuracy(params, X, y)`` and
  ``unpack(params) -> {name: view}`` (names for the weight plots).

:func:`check_model` runs before anything is written: the methods exist and can be called, the shapes agree, the
loss at init is finite, and the gradient matches central finite differences (the sources' numerical-gradient
method, :func:`pipeline.core.numgrad.numerical_gradient`) at a few seeded points. A failure raises
:class:`ModelCheckError` (a ValueError) whose message names the coordinate with the largest error, the analytic and
the numerical values and the tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.core.names import REGRESSION, TASKS
from pipeline.core.numgrad import numerical_gradient

REQUIRED = ("task", "init_params", "loss", "loss_and_grad")
OPTIONAL = ("predict", "accuracy", "unpack")


class ModelCheckError(ValueError):
    """The user's model does not have the interface, or its gradient is wrong. ``coordinate``, ``analytic``,
    ``numerical`` and ``tolerance`` are set for a wrong gradient."""

    def __init__(self, message: str, **details):
        super().__init__(message)
        self.coordinate = details.get("coordinate")
        self.analytic = details.get("analytic")
        self.numerical = details.get("numerical")
        self.tolerance = details.get("tolerance")


@dataclass(frozen=True)
class GradientTolerance:
    """Coordinate i passes when ``|analytic_i - numerical_i| <= rtol * max(|a_i|, |n_i|) + atol * max(1, |loss|)``.

    Central differences with step ``h * max(1, |p_i|)`` are exact for a quadratic loss up to rounding (about
    ``1e-16 * |loss| / h``) and off by ``h^2 f''' / 6`` otherwise: both far below the defaults, while a gradient
    with a wrong factor or sign is off by a fraction of its own size.
    """

    rtol: float = 1e-4
    atol: float = 1e-6
    h: float = 1e-5
    points: int = 3  # the init point, then points drawn around it
    max_rows: int = 256  # rows of X used: the identity holds on any subset
    max_coordinates: int = 500  # per point; a seeded sample of the coordinates beyond that


class UserModel:
    """Adapter: the user's object, plus what the training loop and the reports ask of every model.

    ``loss_and_grad`` is the user's bound method (the hot path pays nothing); ``loss_unguarded`` is the user's
    ``loss``; ``accuracy`` is the user's, else derived from ``predict``, else None (no accuracy curve).
    """

    def __init__(self, obj, n_params: int, name: str = "model"):
        self.obj, self.n_params, self.name = obj, int(n_params), name
        self.task = obj.task
        self.loss_and_grad = obj.loss_and_grad
        self.loss_unguarded = obj.loss
        self.has_predict = callable(getattr(obj, "predict", None))
        if callable(getattr(obj, "accuracy", None)):
            self.accuracy = obj.accuracy
        elif self.has_predict and self.task != REGRESSION:
            self.accuracy = self._accuracy_from_predict
        else:
            self.accuracy = None

    def init_params(self, rng: np.random.Generator) -> np.ndarray:
        return np.array(self.obj.init_params(rng), dtype=np.float64)

    def loss(self, params, X, y) -> float:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            return float(self.obj.loss(params, X, y))

    def predict(self, params, X) -> np.ndarray:
        if not self.has_predict:
            raise ValueError(f"{self.name} has no predict(params, X) method.")
        with np.errstate(over="ignore", invalid="ignore"):
            return np.asarray(self.obj.predict(params, X))

    def _accuracy_from_predict(self, params, X, y) -> float:
        return float(np.mean(self.predict(params, X) == np.asarray(y)))

    def unpack(self, params) -> dict[str, np.ndarray]:
        unpack = getattr(self.obj, "unpack", None)
        return dict(unpack(params)) if callable(unpack) else {"params": np.asarray(params)}

    def __repr__(self) -> str:
        return f"UserModel({self.name}, task={self.task!r}, n_params={self.n_params})"


def _fail(message: str, **details):
    raise ModelCheckError(message, **details)


def _scalar(value, what: str) -> float:
    try:
        result = float(np.asarray(value, dtype=np.float64).reshape(()))
    except (TypeError, ValueError):
        _fail(f"{what} must return a real number. Got {type(value).__name__} {np.shape(value)} instead.")
    return result


def _call(what: str, f, *args):
    try:
        return f(*args)
    except Exception as exc:  # the user's code: any error is the message
        _fail(f"{what} raised {type(exc).__name__}: {exc}")


def _labels(model) -> list[str] | None:
    try:
        return _param_labels(model)
    except Exception:  # names are a courtesy for the message; a broken unpack only loses them
        return None


def _param_labels(model: UserModel) -> list[str]:
    index = model.unpack(np.arange(model.n_params, dtype=np.float64))
    labels = [str(i) for i in range(model.n_params)]
    for key, positions in index.items():
        positions = np.asarray(positions)
        for idx in np.ndindex(positions.shape):
            suffix = f"[{','.join(map(str, idx))}]" if positions.ndim else ""
            labels[int(positions[idx])] = f"{key}{suffix}"
    return labels


def check_model(
    obj,
    X: np.ndarray,
    y: np.ndarray,
    *,
    task: str,
    seed: int = 0,
    tol: GradientTolerance | None = None,
    name: str = "model",
) -> UserModel:
    """Check a user's model object on data (X, y) of ``task``; return it wrapped in :class:`UserModel`.

    Raises:
        ModelCheckError: the first problem found, in words a user can act on.
    """
    tol = tol or GradientTolerance()
    for attr in REQUIRED:
        if not hasattr(obj, attr):
            _fail(f"the object returned has no {attr!r}; a model needs {', '.join(REQUIRED)}.")
    for attr in REQUIRED[1:] + OPTIONAL:
        if hasattr(obj, attr) and not callable(getattr(obj, attr)):
            _fail(
                f"{attr!r} of the object returned must be a method. Got {type(getattr(obj, attr)).__name__}."
            )
    if obj.task not in TASKS:
        _fail(f"task must be one of {', '.join(map(repr, TASKS))}. Got {obj.task!r} instead.")
    if obj.task != task:
        _fail(f"the model's task is {obj.task!r} but the data's task is {task!r}.")

    rng = np.random.default_rng(seed)
    p0 = _call("init_params(rng)", obj.init_params, rng)
    p0 = np.asarray(p0)
    if p0.ndim != 1 or p0.size == 0 or p0.dtype != np.float64:
        _fail(
            "init_params(rng) must return a non-empty 1-D float64 array (one flat parameter vector). "
            f"Got {p0.dtype} of shape {p0.shape} instead."
        )
    if not np.isfinite(p0).all():
        _fail("init_params(rng) returned non-finite values.")
    model = UserModel(obj, p0.size, name)
    rows = min(len(y), tol.max_rows)
    Xc, yc = X[:rows], y[:rows]

    loss0 = _scalar(_call("loss(params, X, y)", obj.loss, p0.copy(), Xc, yc), "loss(params, X, y)")
    if not math.isfinite(loss0):
        _fail(f"the loss at init is {loss0}: it must be finite.")
    before = p0.copy()
    out = _call("loss_and_grad(params, X, y)", obj.loss_and_grad, p0, Xc, yc)
    if not isinstance(out, tuple) or len(out) != 2:
        _fail("loss_and_grad(params, X, y) must return a pair (loss, gradient).")
    if not np.array_equal(p0, before):
        _fail("loss_and_grad(params, X, y) modified params in place; it must leave them unchanged.")
    loss1, grad = _scalar(out[0], "loss_and_grad(params, X, y)[0]"), np.asarray(out[1])
    if grad.shape != p0.shape:
        _fail(f"the gradient has shape {grad.shape}; it must have the shape of params, {p0.shape}.")
    if not math.isclose(loss1, loss0, rel_tol=1e-9, abs_tol=1e-12):
        _fail(f"loss_and_grad gives the loss {loss1!r} and loss gives {loss0!r} at the same point.")
    if model.has_predict:
        pred = np.asarray(_call("predict(params, X)", obj.predict, p0, Xc))
        if pred.shape[:1] != (rows,):
            _fail(
                f"predict(params, X) with {rows} rows returned shape {pred.shape}; it needs one row per row of X."
            )

    labels = _labels(model) if callable(getattr(obj, "unpack", None)) else None  # names, when it gives some
    n = p0.size
    for point in range(tol.points):
        # The init point, then points around it: a zero init hides every term that vanishes at zero (an L2 term).
        p = p0 if point == 0 else p0 + rng.normal(0.0, 0.5, size=n)
        coords = (
            np.arange(n) if n <= tol.max_coordinates else np.sort(rng.choice(n, tol.max_coordinates, False))
        )
        loss, analytic = _call("loss_and_grad(params, X, y)", obj.loss_and_grad, p.copy(), Xc, yc)
        analytic = np.asarray(analytic, dtype=np.float64)
        loss = _scalar(loss, "loss_and_grad(params, X, y)[0]")
        if not (math.isfinite(loss) and np.isfinite(analytic).all()):
            _fail(f"at check point {point + 1} the loss or the gradient is not finite (loss {loss}).")
        numerical = np.empty(coords.size)
        q = p.copy()
        for j, i in enumerate(coords):

            def along(v, i=i, q=q):  # the loss as a function of coordinate i alone
                q[i] = v[0]
                return float(obj.loss(q, Xc, yc))

            numerical[j] = numerical_gradient(along, p[i : i + 1], tol.h * max(1.0, abs(p[i])))[0]
            q[i] = p[i]
        a = analytic[coords]
        allowed = tol.rtol * np.maximum(np.abs(a), np.abs(numerical)) + tol.atol * max(1.0, abs(loss))
        excess = np.abs(a - numerical) / allowed
        worst = int(np.argmax(excess))
        if excess[worst] > 1.0:
            i = int(coords[worst])
            label = f" ({labels[i]})" if labels and labels[i] != str(i) else ""
            _fail(
                f"the gradient of loss_and_grad does not match central finite differences at check point "
                f"{point + 1} of {tol.points} (seed {seed}): coordinate {i}{label}, the worst (|difference| / "
                f"tolerance) of {coords.size} checked, {int((excess > 1).sum())} over tolerance, has analytic "
                f"{a[worst]:.10g}, "
                f"numerical {numerical[worst]:.10g}, |difference| {abs(a[worst] - numerical[worst]):.3g} > "
                f"tolerance {allowed[worst]:.3g} (rtol {tol.rtol:g} x max(|analytic|, |numerical|) + atol "
                f"{tol.atol:g} x max(1, |loss|); step h = {tol.h:g} x max(1, |p_i|)).",
                coordinate=i,
                analytic=float(a[worst]),
                numerical=float(numerical[worst]),
                tolerance=float(allowed[worst]),
            )
    return model
