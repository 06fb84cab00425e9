"""Learning-rate schedules as pure functions of the step.

A schedule is any callable ``schedule(step) -> lr``. ``step`` is the 0-based index of the optimizer update
(full batch: one update per epoch): a non-negative int, which gives a Python float, or an integer ndarray,
which gives a float64 ndarray of the same shape (for plots). Each factory checks its arguments once and
returns a pure schedule, optax style; the one exception is :class:`ReduceLROnPlateau`, whose rate depends on
the losses it has seen through ``observe(value)``.

One vocabulary for all: ``lr`` is the peak / initial rate; lengths in steps end in ``_steps``; floors are
fractions of ``lr`` named ``min_lr_ratio``; continuous per-step decay rates are ``decay_rate``; multiplicative
factors near 1 are ``gamma``. Past its last step every finite schedule stays at its final value.

References:
    L. N. Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017, arXiv:1506.01186 (2015):
        the triangular policy and the LR range test.
    L. N. Smith, "A disciplined approach to neural network hyper-parameters: Part 1", arXiv:1803.09820 (2018);
        L. N. Smith and N. Topin, "Super-Convergence", arXiv:1708.07120: the 1cycle policy.
    I. Loshchilov and F. Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts", ICLR 2017,
        arXiv:1608.03983: cosine annealing.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from numbers import Integral, Real

import numpy as np

from pipeline.core.checks import ArgumentError, check_float, check_int


def _check_step(step, where: str):
    """Return ``step`` as an int or an int64 ndarray, every entry >= 0."""
    if type(step) is int and step >= 0:  # the training loop's case, once per update: keep it cheap
        return step
    if isinstance(step, np.ndarray):
        if step.dtype.kind in "iu" and not (step.size and step.min() < 0):
            return step.astype(np.int64, copy=False)
        what = f"dtype {step.dtype}" if step.dtype.kind not in "iu" else f"an entry {step.min()}"
        raise ValueError(
            f"The 'step' parameter of the {where} schedule must be an integer ndarray with entries >= 0. "
            f"Got {what} instead."
        )
    if isinstance(step, Integral) and not isinstance(step, bool | np.bool_) and step >= 0:
        return int(step)
    raise ArgumentError("step", f"the {where} schedule", "an int >= 0 or an integer ndarray", step)


class _ScalarMath:
    """The few NumPy functions the formulas use, for one Python number: ``math`` is ~10x faster than NumPy on
    scalars, and the training loop asks for one step at a time."""

    cos, exp, floor, pi = math.cos, math.exp, math.floor, math.pi
    abs, minimum, maximum = abs, min, max

    @staticmethod
    def where(condition, x, y):
        return x if condition else y


class _Schedule:
    """A checked pure schedule: ``formula(t, xp)`` maps the steps ``t`` (an int with ``xp`` = ``_ScalarMath``,
    or an int64 ndarray with ``xp`` = ``numpy``) to the rate."""

    def __init__(self, factory: str, formula: Callable, **params):
        self.factory, self.params, self._formula = factory, params, formula

    def __call__(self, step):
        t = _check_step(step, self.factory)
        if isinstance(t, np.ndarray):
            return self._formula(t, np)
        return float(self._formula(t, _ScalarMath))

    def __repr__(self) -> str:
        return f"{self.factory}({', '.join(f'{k}={v!r}' for k, v in self.params.items())})"


def _cos_anneal(start: float, end: float, x, xp):
    """Half a cosine from ``start`` (x = 0) to ``end`` (x = 1), flat at both ends (Loshchilov & Hutter)."""
    return end + (start - end) * (1 + xp.cos(xp.pi * x)) / 2


def constant(lr: float) -> _Schedule:
    """Constant rate: lr(t) = lr."""
    lr = check_float(lr, "lr", "constant", low=0, low_open=True)
    return _Schedule("constant", lambda t, xp: lr + 0.0 * t, lr=lr)


def step_decay(lr: float, decay_steps: int, gamma: float) -> _Schedule:
    """Piecewise-constant decay: lr(t) = lr * gamma ** floor(t / decay_steps).

    Args:
        lr: rate for steps 0 .. decay_steps - 1, > 0.
        decay_steps: length of each constant piece, int >= 1.
        gamma: factor applied at every multiple of decay_steps, in (0, 1].
    """
    lr = check_float(lr, "lr", "step_decay", low=0, low_open=True)
    decay_steps = check_int(decay_steps, "decay_steps", "step_decay", low=1)
    gamma = check_float(gamma, "gamma", "step_decay", low=0, high=1, low_open=True)
    return _Schedule(
        "step_decay",
        lambda t, xp: lr * gamma ** (t // decay_steps),
        lr=lr,
        decay_steps=decay_steps,
        gamma=gamma,
    )


def exponential_decay(lr: float, decay_rate: float) -> _Schedule:
    """Continuous exponential decay: lr(t) = lr * exp(-decay_rate * t).

    Args:
        lr: rate at step 0, > 0.
        decay_rate: per-step decay rate, >= 0 (0 is a constant rate).
    """
    lr = check_float(lr, "lr", "exponential_decay", low=0, low_open=True)
    decay_rate = check_float(decay_rate, "decay_rate", "exponential_decay", low=0)
    return _Schedule(
        "exponential_decay", lambda t, xp: lr * xp.exp(-decay_rate * t), lr=lr, decay_rate=decay_rate
    )


def inverse_time_decay(lr: float, decay_rate: float) -> _Schedule:
    """Inverse-time (1/t) decay: lr(t) = lr / (1 + decay_rate * t).

    Args:
        lr: rate at step 0, > 0.
        decay_rate: per-step decay rate, >= 0 (0 is a constant rate).
    """
    lr = check_float(lr, "lr", "inverse_time_decay", low=0, low_open=True)
    decay_rate = check_float(decay_rate, "decay_rate", "inverse_time_decay", low=0)
    return _Schedule(
        "inverse_time_decay", lambda t, xp: lr / (1 + decay_rate * t), lr=lr, decay_rate=decay_rate
    )


def cosine_decay(lr: float, total_steps: int, min_lr_ratio: float = 0.0) -> _Schedule:
    """Cosine annealing without restarts (SGDR's annealing, Loshchilov & Hutter 2017, with a single cycle).

    lr(t) = floor + (lr - floor) * (1 + cos(pi * min(t, total_steps) / total_steps)) / 2,
    floor = min_lr_ratio * lr: lr at step 0, floor at step total_steps and after.

    Args:
        lr: rate at step 0, > 0.
        total_steps: step at which the floor is reached, int >= 1.
        min_lr_ratio: floor as a fraction of lr, in [0, 1].
    """
    lr = check_float(lr, "lr", "cosine_decay", low=0, low_open=True)
    total_steps = check_int(total_steps, "total_steps", "cosine_decay", low=1)
    min_lr_ratio = check_float(min_lr_ratio, "min_lr_ratio", "cosine_decay", low=0, high=1)
    floor = min_lr_ratio * lr
    return _Schedule(
        "cosine_decay",
        lambda t, xp: _cos_anneal(lr, floor, xp.minimum(t, total_steps) / total_steps, xp),
        lr=lr,
        total_steps=total_steps,
        min_lr_ratio=min_lr_ratio,
    )


def warmup(schedule: Callable, lr: float, warmup_steps: int) -> Callable:
    """Linear warmup joined to any schedule.

    lr(t) = lr * (t + 1) / (warmup_steps + 1) for t < warmup_steps, then schedule(t - warmup_steps).
    The rate is > 0 from step 0 (not 0, which wastes a step) and rises strictly to ``schedule(0)``, which
    should be ``lr`` for a smooth join. If ``schedule`` has an ``observe`` method (:class:`ReduceLROnPlateau`)
    the result forwards it.

    Args:
        schedule: the schedule that starts after the warmup; it must accept integer ndarrays too.
        lr: the rate the warmup climbs towards, > 0.
        warmup_steps: number of warmup steps, int >= 0 (0 returns ``schedule`` itself).
    """
    if not callable(schedule):
        raise ArgumentError("schedule", "warmup", "a callable schedule(step)", schedule)
    lr = check_float(lr, "lr", "warmup", low=0, low_open=True)
    warmup_steps = check_int(warmup_steps, "warmup_steps", "warmup", low=0)
    if warmup_steps == 0:
        return schedule

    def formula(t, xp):
        after = schedule(xp.maximum(t - warmup_steps, 0))  # evaluated everywhere, so keep its step valid
        return xp.where(t < warmup_steps, lr * (t + 1) / (warmup_steps + 1), after)

    joined = _Schedule("warmup", formula, schedule=schedule, lr=lr, warmup_steps=warmup_steps)
    if hasattr(schedule, "observe"):
        joined.observe = schedule.observe
    return joined


def one_cycle(
    lr: float,
    total_steps: int,
    warmup_fraction: float = 0.3,
    initial_lr_ratio: float = 1 / 25,
    min_lr_ratio: float = 1 / 25 / 1e4,
) -> _Schedule:
    """The 1cycle policy (Smith 2018) with cosine phases, as PyTorch's OneCycleLR and fastai do by default.

    With peak = warmup_fraction * total_steps (need not be an integer), t' = min(t, total_steps),
    lr0 = initial_lr_ratio * lr and floor = min_lr_ratio * lr:
        t' < peak:  lr(t) = lr0 + (lr - lr0) * (1 - cos(pi * t' / peak)) / 2
        t' >= peak: lr(t) = floor + (lr - floor) * (1 + cos(pi * (t' - peak) / (total_steps - peak))) / 2
    so lr0 at step 0, lr at the peak, floor at total_steps and after. Smith's paper uses linear phases; the
    cosine shape stays near the peak longer and lands softly on the floor (the defaults are OneCycleLR's:
    div_factor 25, final_div_factor 1e4, pct_start 0.3).

    Args:
        lr: peak rate, > 0.
        total_steps: step at which the floor is reached, int >= 1.
        warmup_fraction: fraction of total_steps spent rising to the peak, in (0, 1).
        initial_lr_ratio: starting rate as a fraction of lr, in [0, 1].
        min_lr_ratio: final rate as a fraction of lr, in [0, 1].

    References:
        L. N. Smith, arXiv:1803.09820 (2018); L. N. Smith and N. Topin, arXiv:1708.07120.
    """
    where = "one_cycle"
    lr = check_float(lr, "lr", where, low=0, low_open=True)
    total_steps = check_int(total_steps, "total_steps", where, low=1)
    warmup_fraction = check_float(
        warmup_fraction, "warmup_fraction", where, low=0, high=1, low_open=True, high_open=True
    )
    initial_lr_ratio = check_float(initial_lr_ratio, "initial_lr_ratio", where, low=0, high=1)
    min_lr_ratio = check_float(min_lr_ratio, "min_lr_ratio", where, low=0, high=1)
    peak, start, floor = warmup_fraction * total_steps, initial_lr_ratio * lr, min_lr_ratio * lr

    def formula(t, xp):
        t = xp.minimum(t, total_steps)
        up = _cos_anneal(start, lr, xp.minimum(t / peak, 1.0), xp)
        down = _cos_anneal(lr, floor, xp.maximum(t - peak, 0.0) / (total_steps - peak), xp)
        return xp.where(t < peak, up, down)

    return _Schedule(
        where,
        formula,
        lr=lr,
        total_steps=total_steps,
        warmup_fraction=warmup_fraction,
        initial_lr_ratio=initial_lr_ratio,
        min_lr_ratio=min_lr_ratio,
    )


def cyclic_triangular(lr: float, half_cycle_steps: int, min_lr_ratio: float = 0.1) -> _Schedule:
    """Smith's (2015) "triangular" cyclical rate, between base = min_lr_ratio * lr and lr, forever.

    cycle = floor(1 + t / (2 * half_cycle_steps)), x = |t / half_cycle_steps - 2 * cycle + 1|,
    lr(t) = base + (lr - base) * max(0, 1 - x): base at step 0 and every 2 * half_cycle_steps, lr half way.

    Args:
        lr: max_lr, the top of each cycle, > 0.
        half_cycle_steps: Smith's stepsize, steps from base to lr, int >= 1.
        min_lr_ratio: base_lr as a fraction of lr, in [0, 1].

    Reference:
        L. N. Smith, arXiv:1506.01186.
    """
    lr = check_float(lr, "lr", "cyclic_triangular", low=0, low_open=True)
    half_cycle_steps = check_int(half_cycle_steps, "half_cycle_steps", "cyclic_triangular", low=1)
    min_lr_ratio = check_float(min_lr_ratio, "min_lr_ratio", "cyclic_triangular", low=0, high=1)
    base = min_lr_ratio * lr

    def formula(t, xp):
        cycle = xp.floor(1 + t / (2 * half_cycle_steps))
        x = xp.abs(t / half_cycle_steps - 2 * cycle + 1)
        return base + (lr - base) * xp.maximum(0.0, 1 - x)

    return _Schedule(
        "cyclic_triangular", formula, lr=lr, half_cycle_steps=half_cycle_steps, min_lr_ratio=min_lr_ratio
    )


class ReduceLROnPlateau:
    """Multiply the rate by ``factor`` when the monitored loss stops improving (PyTorch's semantics, "min").

    The training loop calls ``observe(loss)`` once per epoch (validation loss, else training loss); the rate
    is the same for every step until the next reduction. An observation improves if
    value < best - threshold * |best| (relative threshold). After ``patience`` epochs in a row without
    improvement, the next one reduces the rate: lr <- max(lr * factor, min_lr_ratio * lr_0); then
    ``cooldown`` epochs are ignored before counting again. NaN/inf never count as an improvement.

    Args:
        lr: initial rate, > 0.
        factor: multiplier at each reduction, in (0, 1).
        patience: epochs without improvement that are tolerated, int >= 0.
        threshold: relative improvement needed to count, >= 0.
        min_lr_ratio: floor of the rate as a fraction of lr, in [0, 1].
        cooldown: epochs after a reduction during which bad epochs are not counted, int >= 0.
    """

    def __init__(
        self,
        lr: float,
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        min_lr_ratio: float = 0.0,
        cooldown: int = 0,
    ):
        where = "ReduceLROnPlateau"
        self.lr = check_float(lr, "lr", where, low=0, low_open=True)
        self.factor = check_float(factor, "factor", where, low=0, high=1, low_open=True, high_open=True)
        self.patience = check_int(patience, "patience", where, low=0)
        self.threshold = check_float(threshold, "threshold", where, low=0)
        self.min_lr_ratio = check_float(min_lr_ratio, "min_lr_ratio", where, low=0, high=1)
        self.cooldown = check_int(cooldown, "cooldown", where, low=0)
        self.current_lr = self.lr
        self.best = math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def __call__(self, step):
        t = _check_step(step, "ReduceLROnPlateau")
        return np.full(t.shape, self.current_lr) if isinstance(t, np.ndarray) else self.current_lr

    def observe(self, value: float) -> None:
        """Record one epoch's loss and reduce the rate if it has plateaued."""
        if not isinstance(value, Real) or isinstance(value, bool | np.bool_):
            raise ArgumentError("value", "ReduceLROnPlateau.observe", "a float", value)
        value = float(value)
        if math.isfinite(value) and (
            self.best == math.inf or value < self.best - self.threshold * abs(self.best)
        ):
            self.best, self.num_bad_epochs = value, 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            self.current_lr = max(self.current_lr * self.factor, self.min_lr_ratio * self.lr)
            self.cooldown_counter, self.num_bad_epochs = self.cooldown, 0

    def __repr__(self) -> str:
        return (
            f"ReduceLROnPlateau(lr={self.lr!r}, factor={self.factor!r}, patience={self.patience!r}, "
            f"threshold={self.threshold!r}, min_lr_ratio={self.min_lr_ratio!r}, cooldown={self.cooldown!r})"
        )


def exponential_ramp(start_lr: float, end_lr: float, total_steps: int) -> _Schedule:
    """Geometric ramp for the LR range test (Smith 2015; the exponential form used by fastai's lr_find).

    lr(t) = start_lr * (end_lr / start_lr) ** (min(t, total_steps - 1) / (total_steps - 1)):
    start_lr at step 0, end_lr at step total_steps - 1 and after.

    Args:
        start_lr, end_lr: rates at the first and last step, > 0.
        total_steps: number of steps of the test, int >= 2.
    """
    start_lr = check_float(start_lr, "start_lr", "exponential_ramp", low=0, low_open=True)
    end_lr = check_float(end_lr, "end_lr", "exponential_ramp", low=0, low_open=True)
    total_steps = check_int(total_steps, "total_steps", "exponential_ramp", low=2)
    log_ratio = math.log(end_lr) - math.log(start_lr)
    return _Schedule(
        "exponential_ramp",
        lambda t, xp: start_lr * xp.exp(log_ratio * xp.minimum(t, total_steps - 1) / (total_steps - 1)),
        start_lr=start_lr,
        end_lr=end_lr,
        total_steps=total_steps,
    )


def linear_ramp(start_lr: float, end_lr: float, total_steps: int) -> _Schedule:
    """Linear ramp for the LR range test (Smith 2015, who raises the rate linearly).

    lr(t) = start_lr + (end_lr - start_lr) * min(t, total_steps - 1) / (total_steps - 1):
    start_lr at step 0, end_lr at step total_steps - 1 and after.

    Args:
        start_lr, end_lr: rates at the first and last step, > 0.
        total_steps: number of steps of the test, int >= 2.
    """
    start_lr = check_float(start_lr, "start_lr", "linear_ramp", low=0, low_open=True)
    end_lr = check_float(end_lr, "end_lr", "linear_ramp", low=0, low_open=True)
    total_steps = check_int(total_steps, "total_steps", "linear_ramp", low=2)
    return _Schedule(
        "linear_ramp",
        lambda t, xp: start_lr + (end_lr - start_lr) * xp.minimum(t, total_steps - 1) / (total_steps - 1),
        start_lr=start_lr,
        end_lr=end_lr,
        total_steps=total_steps,
    )


SCHEDULES: dict[str, Callable] = {
    "constant": constant,
    "step": step_decay,
    "exponential": exponential_decay,
    "inverse_time": inverse_time_decay,
    "cosine": cosine_decay,
    "one_cycle": one_cycle,
    "cyclic": cyclic_triangular,
    "plateau": ReduceLROnPlateau,
}

_SIGNATURES = {name: inspect.signature(factory).parameters for name, factory in SCHEDULES.items()}
# Every factory argument but lr and total_steps (build_schedule passes those), in signature order.
SCHEDULE_PARAMS: dict[str, tuple[str, ...]] = {
    name: tuple(p for p in signature if p not in ("lr", "total_steps"))
    for name, signature in _SIGNATURES.items()
}


def build_schedule(name: str, *, lr: float, total_steps: int, warmup_steps: int = 0, **params) -> Callable:
    """Build the schedule called ``name`` in SCHEDULES, behind a linear warmup when warmup_steps > 0.

    Schedules with an end (cosine, one_cycle) get total_steps - warmup_steps, so that they end at total_steps.

    Args:
        name: a key of SCHEDULES.
        lr: peak / initial rate, > 0.
        total_steps: number of optimizer updates in the run, int >= 1.
        warmup_steps: linear warmup length, int in [0, total_steps).
        **params: the schedule's parameters, names from SCHEDULE_PARAMS[name].
    """
    if not isinstance(name, str) or name not in SCHEDULES:
        raise ArgumentError("name", "build_schedule", f"one of {', '.join(SCHEDULES)}", name)
    total_steps = check_int(total_steps, "total_steps", "build_schedule", low=1)
    warmup_steps = check_int(warmup_steps, "warmup_steps", "build_schedule", low=0)
    if warmup_steps >= total_steps:
        raise ArgumentError(
            "warmup_steps", "build_schedule", f"an int < total_steps = {total_steps}", warmup_steps
        )
    valid = SCHEDULE_PARAMS[name]
    for key in params:
        if key not in valid:
            raise ValueError(
                f"The {key!r} parameter of build_schedule is unknown for the {name!r} schedule; valid: "
                f"{', '.join(valid + ('warmup_steps',))}. Got {key}={params[key]!r}."
            )
    signature = _SIGNATURES[name]
    missing = [p for p in valid if signature[p].default is inspect.Parameter.empty and p not in params]
    if missing:
        raise ValueError(
            f"build_schedule({name!r}) needs the parameter(s) {', '.join(missing)}. Got {params!r} instead."
        )
    if "total_steps" in signature:
        params["total_steps"] = total_steps - warmup_steps
    schedule = SCHEDULES[name](lr=lr, **params)
    return warmup(schedule, lr, warmup_steps) if warmup_steps else schedule
