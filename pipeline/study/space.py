"""The search space: value forms (fixed, range, one_minus, choices), conditional branches, trial settings.

The search space samples itself through the small :class:`Suggester` protocol, which the tuning layer adapts an
Optuna trial to: conditional sampling (a parameter of an unchosen schedule is never asked) is written here once,
and this module never imports Optuna.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pipeline.core.checks import ArgumentError, check_float

# Parameters whose values are integers (numbers of steps, epochs' worth of patience, rows per batch); every other
# searched parameter is a float.
INT_PARAMS = frozenset(
    {"warmup_steps", "decay_steps", "half_cycle_steps", "patience", "cooldown", "batch_size"}
)
SAMPLERS = ("tpe", "random", "grid")
# Keyword arguments a study may pass to the sampler / pruner constructors, and what each must be. The seed is
# not among them: it is the study's `seed`.
SAMPLER_PARAMS: dict[str, dict[str, str]] = {
    "tpe": {
        "n_startup_trials": "int>=0",
        "n_ei_candidates": "int>=1",
        "multivariate": "bool",
        "group": "bool",
        "constant_liar": "bool",
        "consider_endpoints": "bool",
        "prior_weight": "float>0",
    },
    "random": {},
    "grid": {},
}
PRUNER_PARAMS: dict[str, dict[str, str]] = {
    "none": {},
    "median": {
        "n_startup_trials": "int>=0",
        "n_warmup_steps": "int>=0",
        "interval_steps": "int>=1",
        "n_min_trials": "int>=1",
    },
    "percentile": {
        "percentile": "percent",
        "n_startup_trials": "int>=0",
        "n_warmup_steps": "int>=0",
        "interval_steps": "int>=1",
        "n_min_trials": "int>=1",
    },
    "hyperband": {
        "min_resource": "int>=1",
        "max_resource": "auto|int>=1",
        "reduction_factor": "int>=2",
        "bootstrap_count": "int>=0",
    },
    "successive_halving": {
        "min_resource": "auto|int>=1",
        "reduction_factor": "int>=2",
        "min_early_stopping_rate": "int>=0",
        "bootstrap_count": "int>=0",
    },
}
REQUIRED_PRUNER_PARAMS = {"percentile": ("percentile",)}
LR_RAMPS = ("exponential", "linear", "segments")
# Factors near 1 act through 1 - x (beta2 = 0.999 averages over ~1000 steps, 0.99 over ~100): a log scale on the
# factor itself would spend its samples near the low end, so these are searched as {one_minus: {...}}.
NEAR_ONE_PARAMS = frozenset({"gamma", "beta", "beta1", "beta2", "rho"})
DEFAULT_TRIALS = 100
DEFAULT_TOLERANCE = 1e-3  # budget.tolerance: a relative improvement of at most 0.1% counts as none
DEFAULT_REPORT_POINTS = 50
# A learning rate handed to schedule factories when checking their other parameters at load time; the factories
# only ask it to be > 0.
_PROBE_LR = 0.01


# ----------------------------------------------------------------------------------------------- value forms
#
# Each form of a value in the ``search`` section is a small type that knows how to sample itself, which value
# the load-time checks build with, which values a trial can take, and how the file wrote it.


class Suggester(Protocol):
    """What :meth:`SearchSpace.sample` asks for values; the runner adapts an ``optuna.Trial`` to it."""

    def float(self, name: str, low: float, high: float, *, log: bool) -> float: ...

    def int(self, name: str, low: int, high: int, *, log: bool) -> int: ...

    def categorical(self, name: str, choices: list) -> object: ...


class SearchValue(ABC):
    """A value of the search space: fixed, a range, ``1 - x`` over a range, or a choice."""

    sampled: bool = True  # asked from the sampler (False: fixed)

    @abstractmethod
    def draw(self, name: str, suggest: Suggester):
        """One value, asked from ``suggest`` under ``name`` (the name the sampler sees, see :meth:`sampled_name`)."""

    def sampled_name(self, name: str) -> str:
        """The name the sampler sees for a parameter called ``name``."""
        return name

    @property
    @abstractmethod
    def representative(self):
        """The value load-time checks build with: the fixed value, a range's low end, the first choice."""

    @property
    @abstractmethod
    def top(self):
        """The largest value a trial can take (for numeric values)."""

    @property
    @abstractmethod
    def shown(self):
        """The value as the study file wrote it, for messages."""

    def ends(self) -> list[tuple[str, Any, Any]]:
        """(key suffix, value as written, value passed to a factory) for each end / choice a trial can draw:
        the values load-time checks try besides the representative one. Empty for a fixed value."""
        return []

    def options(self) -> list | None:
        """Every value a trial can take when they are finitely many (fixed, choices), else None."""
        return None


@dataclass(frozen=True)
class Fixed(SearchValue):
    """A value given as is: never asked from the sampler. ``None`` is full batch for ``batch_size``."""

    value: Any
    sampled = False

    def draw(self, name, suggest):
        return self.value

    @property
    def representative(self):
        return self.value

    @property
    def top(self):
        return self.value

    @property
    def shown(self):
        return self.value

    def options(self):
        return [self.value]


@dataclass(frozen=True)
class Range(SearchValue):
    """Sampled uniformly in [low, high], on a log scale unless ``log`` is False; ints when ``integer``."""

    low: float
    high: float
    log: bool = True
    integer: bool = False

    def draw(self, name, suggest):
        if self.integer:
            return int(suggest.int(name, int(self.low), int(self.high), log=self.log))
        return float(suggest.float(name, float(self.low), float(self.high), log=self.log))

    @property
    def representative(self):
        return self.low

    @property
    def top(self):
        return self.high

    @property
    def shown(self):
        return {"low": self.low, "high": self.high, **({} if self.log else {"log": False})}

    def ends(self):
        return [(".low", self.low, self.low), (".high", self.high, self.high)]


@dataclass(frozen=True)
class OneMinus(SearchValue):
    """``1 - x`` with x log-uniform in [low, high], 0 < low < high < 1: resolution where a factor nears 1."""

    low: float
    high: float

    def draw(self, name, suggest):
        return 1.0 - float(suggest.float(name, self.low, self.high, log=True))

    def sampled_name(self, name):
        return f"one_minus_{name}"

    @property
    def representative(self):
        return 1 - self.low

    @property
    def top(self):
        return 1 - self.low

    @property
    def shown(self):
        return {"one_minus": {"low": self.low, "high": self.high}}

    def ends(self):
        return [(".one_minus.low", self.low, 1 - self.low), (".one_minus.high", self.high, 1 - self.high)]


@dataclass(frozen=True)
class Choice(SearchValue):
    """Categorical: one of ``choices``."""

    choices: tuple

    def draw(self, name, suggest):
        return suggest.categorical(name, list(self.choices))

    @property
    def representative(self):
        return self.choices[0]

    @property
    def top(self):
        return max(self.choices)

    @property
    def shown(self):
        return {"choices": list(self.choices)}

    def ends(self):
        return [(f".choices[{i}]", c, c) for i, c in enumerate(self.choices)]

    def options(self):
        return list(self.choices)


Param = SearchValue  # the name the rest of the package uses


@dataclass(frozen=True)
class LrAuto:
    """``lr: auto``: the search range comes from an LR range test (Smith 2015) run before the study.

    Unresolved until the runner calls :meth:`SearchSpace.with_lr_range` with the range the test suggests.

    Args:
        start_lr, end_lr: the ramp's first and last rate.
        steps: number of updates of the ramp (exponential / linear). 3000 by default: a coarse ramp overshoots
            the divergence point (on full-batch diabetes, 100 steps stop at 9x the 2/lambda_max bound, 3000 at 1.7x).
        ramp: "exponential" (rates evenly spaced in log, as in Smith 2015), "linear", or "segments": start_lr,
            start_lr + step_lr, ..., end_lr, each held for iterations_per_value updates (the sources' table).
        stop_factor: stop once the smoothed loss exceeds this many times its best.

    Reference: L. N. Smith, "Cyclical Learning Rates for Training Neural Networks", 2015 (arXiv:1506.01186), §3.3.
    """

    start_lr: float = 1e-7
    end_lr: float = 10.0
    steps: int = 3000
    ramp: str = "exponential"
    stop_factor: float = 4.0
    step_lr: float | None = None
    iterations_per_value: int | None = None


def _sampled_name(branch: str, param_name: str, param: Param) -> str:
    """The name Optuna sees for a branch parameter: ``cosine.min_lr_ratio``, ``momentum.one_minus_beta``."""
    return f"{branch}.{param.sampled_name(param_name)}"


# ----------------------------------------------------------------------------------------------- search space


@dataclass(frozen=True)
class Branch:
    """One optimizer or schedule and its parameters; ``key`` is where it sits in the file (for messages)."""

    name: str
    params: Mapping[str, Param]
    key: str = field(default="", compare=False)


@dataclass(frozen=True)
class TrialSettings:
    """Every hyperparameter of one trial, sampled and fixed.

    ``batch_size`` None is full batch. ``schedule_params`` holds ``warmup_steps`` when the study sets it; pass
    them all to ``pipeline.core.schedules.build_schedule(schedule, lr=lr, total_steps=..., **schedule_params)``.
    """

    lr: float
    batch_size: int | None
    optimizer: str
    optimizer_params: Mapping[str, Any]
    schedule: str
    schedule_params: Mapping[str, Any]

    def as_params(self) -> dict[str, Any]:
        """A flat dict for MLflow params: ``lr``, ``batch_size`` ("full" or an int), ``optimizer``,
        ``schedule``, then ``"{optimizer}.{param}"`` and ``"{schedule}.{param}"``."""
        flat: dict[str, Any] = {
            "lr": self.lr,
            "batch_size": "full" if self.batch_size is None else self.batch_size,
            "optimizer": self.optimizer,
            "schedule": self.schedule,
        }
        flat.update({f"{self.optimizer}.{k}": v for k, v in self.optimizer_params.items()})
        flat.update({f"{self.schedule}.{k}": v for k, v in self.schedule_params.items()})
        return flat


@dataclass(frozen=True)
class SearchSpace:
    """What a trial samples. ``optimizers`` / ``schedules`` with ``*_categorical`` True are asked as a
    categorical ``optimizer`` / ``schedule``; a branch's parameters are asked only when the branch is chosen.

    ``batch_size`` is the effective one: ``search.batch_size`` when given, else ``training.batch_size``.
    """

    lr: Param | LrAuto
    batch_size: Param
    optimizers: tuple[Branch, ...]
    schedules: tuple[Branch, ...]
    optimizer_categorical: bool = False
    schedule_categorical: bool = False

    @property
    def lr_auto(self) -> LrAuto | None:
        """The LR range test's settings when ``lr: auto`` is still unresolved, else None."""
        return self.lr if isinstance(self.lr, LrAuto) else None

    def with_lr_range(self, low: float, high: float) -> SearchSpace:
        """A copy whose lr is sampled log-uniformly in [low, high] (e.g. the range an LR range test suggests)."""
        low = check_float(low, "low", "with_lr_range", low=0, low_open=True)
        high = check_float(high, "high", "with_lr_range", low=0, low_open=True)
        if not low < high:
            raise ArgumentError("high", "with_lr_range", f"> low = {low!r}", high)
        return replace(self, lr=Range(float(low), float(high), log=True))

    def sample(self, suggest: Suggester) -> TrialSettings:
        """One trial's settings: lr, batch_size, optimizer and its params, schedule and its params, in that order.

        Raises:
            RuntimeError: lr is ``auto`` and has not been resolved with :meth:`with_lr_range`.
        """
        if isinstance(self.lr, LrAuto):
            raise RuntimeError(
                "lr is 'auto' and unresolved: run the LR range test and call "
                "SearchSpace.with_lr_range(low, high) before sampling."
            )
        lr = float(self.lr.draw("lr", suggest))
        batch_size = self.batch_size.draw("batch_size", suggest)
        if batch_size == "full":
            batch_size = None
        optimizer, optimizer_params = self._branch(
            "optimizer", self.optimizers, self.optimizer_categorical, suggest
        )
        schedule, schedule_params = self._branch(
            "schedule", self.schedules, self.schedule_categorical, suggest
        )
        return TrialSettings(lr, batch_size, optimizer, optimizer_params, schedule, schedule_params)

    @staticmethod
    def _branch(kind: str, branches: tuple[Branch, ...], categorical: bool, suggest: Suggester):
        by_name = {b.name: b for b in branches}
        name = suggest.categorical(kind, list(by_name)) if categorical else branches[0].name
        branch = by_name[name]
        params = {p: v.draw(_sampled_name(name, p, v), suggest) for p, v in branch.params.items()}
        return name, params

    def non_categorical(self) -> list[tuple[str, str, object]]:
        """(key path in the file, sampled name, value as written) of every sampled non-categorical parameter."""
        found = []
        for key, name, param in (
            ("search.lr", "lr", self.lr),
            ("search.batch_size", "batch_size", self.batch_size),
        ):
            if isinstance(param, LrAuto):
                found.append((key, name, "auto"))
            elif param.options() is None:
                found.append((key, name, param.shown))
        for branch in (*self.optimizers, *self.schedules):
            for p, v in branch.params.items():
                if v.options() is None:
                    found.append((f"{branch.key}.{p}", _sampled_name(branch.name, p, v), v.shown))
        return found

    def grid(self) -> dict[str, list]:
        """The search space for ``optuna.samplers.GridSampler``: sampled name -> its choices.

        Branch parameters are in the grid whether or not their branch is chosen; a trial asks only its own, so a
        grid over several schedules with their own choices repeats some settings.

        Raises:
            ValueError: a sampled parameter is not categorical ({choices: [...]}), or lr is ``auto``.
        """
        bad = self.non_categorical()
        if bad:
            raise ValueError(
                f"The grid sampler needs {{choices: [...]}} for every sampled parameter; "
                f"{', '.join(repr(name) for _, name, _ in bad)} {'is' if len(bad) == 1 else 'are'} not categorical."
            )
        grid: dict[str, list] = {}
        for name, param in (("lr", self.lr), ("batch_size", self.batch_size)):
            if param.sampled:
                grid[name] = param.options()
        for kind, branches, categorical in (
            ("optimizer", self.optimizers, self.optimizer_categorical),
            ("schedule", self.schedules, self.schedule_categorical),
        ):
            if categorical:
                grid[kind] = [b.name for b in branches]
            for branch in branches:
                for p, v in branch.params.items():
                    if v.sampled:
                        grid[_sampled_name(branch.name, p, v)] = v.options()
        return grid

    def max_warmup_steps(self) -> tuple[int, str] | None:
        """The largest warmup any trial can draw and the key that sets it, or None without warmup."""
        best = None
        for branch in self.schedules:
            param = branch.params.get("warmup_steps")
            if param is None:
                continue
            top = param.top
            if best is None or top > best[0]:
                best = (top, f"{branch.key}.warmup_steps")
        return best

    def batch_options(self) -> list[int | None]:
        """Every batch size a trial can draw (None = full batch; a range gives its two ends)."""
        options = self.batch_size.options()
        if options is None:  # a range: its two ends
            return [int(value) for _, _, value in self.batch_size.ends()]
        return [None if c == "full" else c for c in options]


# ----------------------------------------------------------------------------------------------- the study


def steps_per_epoch(n_train: int, batch_size: int | None) -> int:
    """Updates per epoch: ``ceil(n_train / batch_size)``; full batch (None, or batch_size >= n_train) is 1."""
    if batch_size is None:
        return 1
    return max(1, math.ceil(n_train / batch_size))
