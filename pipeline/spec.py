"""Study files (YAML) into typed, validated objects: the one place that reads a study, everything after trusts it.

A study file says what to train (``data``, ``model``, ``training``), what to search (``search``), how long
(``budget``) and how (``sampler``, ``pruner``, ``tracking``); see ``studies/diabetes-reference.yaml``.
:func:`load_study` checks every key once, when the file is loaded, and fails with ONE
:class:`~pipeline.errors.ConfigError` naming the file, the key path and the value::

    studies/x.yaml: 'search.lr.low': must be a float > 0. Got 0 instead.

Fixed schedule / optimizer / model parameters (and the ends of searched ranges) are checked by calling the
factories of :mod:`pipeline.schedules`, :mod:`pipeline.optimizers` and :mod:`pipeline.models`, so the rules live
in one place, next to the formulas. The search space samples itself through the small :class:`Suggester`
protocol, which the runner adapts an Optuna trial to: conditional sampling (a parameter of an unchosen schedule is
never asked) is written here once, and this module never imports Optuna.

Value forms for a parameter under ``search``:

- ``0.9`` / ``full``: fixed, never asked;
- ``{low: a, high: b}``: sampled on a log scale (``log: false`` for a linear range); integer-valued parameters
  (:data:`INT_PARAMS`) with integer bounds are sampled as ints;
- ``{one_minus: {low: a, high: b}}``: x log-uniform in [a, b], value ``1 - x`` (factors near 1: beta, gamma);
- ``{choices: [...]}``: categorical.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import yaml

from pipeline.errors import _MISSING, ConfigError

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
DATA_TASKS = ("regression", "binary", "multiclass")
DEFAULT_TRIALS = 100
DEFAULT_REPORT_POINTS = 50
# A learning rate handed to schedule factories when checking their other parameters at load time; the factories
# only ask it to be > 0.
_PROBE_LR = 0.01


# ----------------------------------------------------------------------------------------------- value forms


@dataclass(frozen=True)
class Fixed:
    """A value given as is: never asked from the sampler. ``None`` is full batch for ``batch_size``."""

    value: Any


@dataclass(frozen=True)
class Range:
    """Sampled uniformly in [low, high], on a log scale unless ``log`` is False; ints when ``integer``."""

    low: float
    high: float
    log: bool = True
    integer: bool = False


@dataclass(frozen=True)
class OneMinus:
    """``1 - x`` with x log-uniform in [low, high], 0 < low < high < 1: resolution where a factor nears 1."""

    low: float
    high: float


@dataclass(frozen=True)
class Choice:
    """Categorical: one of ``choices``."""

    choices: tuple


Param = Fixed | Range | OneMinus | Choice


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


class Suggester(Protocol):
    """What :meth:`SearchSpace.sample` asks for values; the runner adapts an ``optuna.Trial`` to it."""

    def float(self, name: str, low: float, high: float, *, log: bool) -> float: ...

    def int(self, name: str, low: int, high: int, *, log: bool) -> int: ...

    def categorical(self, name: str, choices: list) -> object: ...


def _draw(param: Param, name: str, suggest: Suggester):
    """One value of ``param``, asked from ``suggest`` under ``name`` unless it is fixed."""
    if isinstance(param, Fixed):
        return param.value
    if isinstance(param, Range):
        if param.integer:
            return int(suggest.int(name, int(param.low), int(param.high), log=param.log))
        return float(suggest.float(name, float(param.low), float(param.high), log=param.log))
    if isinstance(param, OneMinus):
        return 1.0 - float(suggest.float(name, param.low, param.high, log=True))
    return suggest.categorical(name, list(param.choices))


def _sampled_name(branch: str, param_name: str, param: Param) -> str:
    """The name Optuna sees for a branch parameter: ``cosine.min_lr_ratio``, ``momentum.one_minus_beta``."""
    return f"{branch}.one_minus_{param_name}" if isinstance(param, OneMinus) else f"{branch}.{param_name}"


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
    them all to ``pipeline.schedules.build_schedule(schedule, lr=lr, total_steps=..., **schedule_params)``.
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
        for name, value in (("low", low), ("high", high)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ValueError(
                    f"The '{name}' parameter of with_lr_range must be a float > 0. Got {value!r} instead."
                )
        if not low < high:
            raise ValueError(
                f"The 'high' parameter of with_lr_range must be > low = {low!r}. Got {high!r} instead."
            )
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
        lr = float(_draw(self.lr, "lr", suggest))
        batch_size = _draw(self.batch_size, "batch_size", suggest)
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
        params = {p: _draw(v, _sampled_name(name, p, v), suggest) for p, v in branch.params.items()}
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
            elif not isinstance(param, Fixed | Choice):
                found.append((key, name, _shown(param)))
        for branch in (*self.optimizers, *self.schedules):
            for p, v in branch.params.items():
                if isinstance(v, Range | OneMinus):
                    found.append((f"{branch.key}.{p}", _sampled_name(branch.name, p, v), _shown(v)))
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
            if isinstance(param, Choice):
                grid[name] = list(param.choices)
        for kind, branches, categorical in (
            ("optimizer", self.optimizers, self.optimizer_categorical),
            ("schedule", self.schedules, self.schedule_categorical),
        ):
            if categorical:
                grid[kind] = [b.name for b in branches]
            for branch in branches:
                for p, v in branch.params.items():
                    if isinstance(v, Choice):
                        grid[_sampled_name(branch.name, p, v)] = list(v.choices)
        return grid

    def max_warmup_steps(self) -> tuple[int, str] | None:
        """The largest warmup any trial can draw and the key that sets it, or None without warmup."""
        best = None
        for branch in self.schedules:
            param = branch.params.get("warmup_steps")
            if param is None:
                continue
            top = _top(param)
            if best is None or top > best[0]:
                best = (top, f"{branch.key}.warmup_steps")
        return best

    def batch_options(self) -> list[int | None]:
        """Every batch size a trial can draw (None = full batch; a range gives its two ends)."""
        p = self.batch_size
        if isinstance(p, Fixed):
            return [p.value]
        if isinstance(p, Choice):
            return [None if c == "full" else c for c in p.choices]
        return [int(p.low), int(p.high)]


def _top(param: Param):
    """The largest value a numeric parameter can take."""
    if isinstance(param, Fixed):
        return param.value
    if isinstance(param, Range):
        return param.high
    if isinstance(param, OneMinus):
        return 1 - param.low
    return max(param.choices)


# ----------------------------------------------------------------------------------------------- the study


def steps_per_epoch(n_train: int, batch_size: int | None) -> int:
    """Updates per epoch: ``ceil(n_train / batch_size)``; full batch (None, or batch_size >= n_train) is 1."""
    if batch_size is None:
        return 1
    return max(1, math.ceil(n_train / batch_size))


@dataclass(frozen=True)
class DataSpec:
    """Arguments of ``pipeline.data.load_dataset`` (the seed is the study's). ``path`` is absolute."""

    dataset: str
    path: Path | None = None
    target: str | None = None
    task: str | None = None
    val_fraction: float = 0.2
    standardize: bool = True
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelSpec:
    """``pipeline.models.build_model(name, n_features=..., task=..., n_classes=..., **params)``."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainingSpec:
    """``epochs``, the default ``batch_size`` (None = full batch; a trial's is ``TrialSettings.batch_size``,
    which ``search.batch_size`` may vary) and the divergence threshold passed to ``pipeline.training.train``."""

    epochs: int
    batch_size: int | None = None
    divergence_factor: float = 10.0

    def total_steps(self, n_train: int, batch_size: int | None) -> int:
        """Updates in a whole run: ``epochs * ceil(n_train / batch_size)`` (full batch: ``epochs``)."""
        return self.epochs * steps_per_epoch(n_train, batch_size)


@dataclass(frozen=True)
class Budget:
    """Stop after ``trials`` trials or ``timeout`` seconds, whichever comes first (None = no limit)."""

    trials: int | None = DEFAULT_TRIALS
    timeout: float | None = None


@dataclass(frozen=True)
class SamplerSpec:
    """``tpe`` | ``random`` | ``grid`` and extra constructor arguments (the seed is the study's)."""

    name: str = "tpe"
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PrunerSpec:
    """``none`` | ``median`` | ``percentile`` | ``hyperband`` | ``successive_halving`` and the Optuna pruner's
    constructor arguments. Divergence is pruned by the training loop whatever this says."""

    name: str = "none"
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrackingSpec:
    """``report_points``: how many intermediate values per trial go to Optuna (evenly spaced, plus the last)."""

    report_points: int = DEFAULT_REPORT_POINTS


@dataclass(frozen=True)
class StudySpec:
    """A validated study file. ``name`` is the Optuna study and MLflow experiment name (default: file stem)."""

    path: Path
    name: str
    seed: int
    data: DataSpec
    model: ModelSpec
    training: TrainingSpec
    search: SearchSpace
    budget: Budget
    sampler: SamplerSpec
    pruner: PrunerSpec
    tracking: TrackingSpec
    description: str = ""

    def total_steps(self, n_train: int, batch_size: int | None) -> int:
        """Updates in one trial at ``batch_size``: ``epochs * ceil(n_train / batch_size)``."""
        return self.training.total_steps(n_train, batch_size)

    def check_steps(self, n_train: int) -> None:
        """Check warmup against the real number of updates, once the training set's size is known.

        ``load_study`` can check ``warmup_steps < total steps`` only when a trial may train full batch (total =
        epochs); mini-batch studies need ``n_train``, which the runner learns when it loads the data.

        Raises:
            ConfigError: some trial could draw ``warmup_steps >= epochs * steps_per_epoch``.
        """
        _check_warmup(self.path.as_posix(), self.search, self.training.epochs, n_train)


def _check_warmup(file: str, search: SearchSpace, epochs: int, n_train: int | None) -> None:
    """``warmup_steps < total steps`` for every batch size a trial can draw (the fewest steps is the bound)."""
    warm = search.max_warmup_steps()
    if warm is None:
        return
    options = search.batch_options()
    if n_train is None:
        if None not in options:
            return  # mini-batch only: the bound needs n_train (StudySpec.check_steps)
        total, how = epochs, f"training.epochs = {epochs} (full batch)"
    else:
        batch = max(options, key=lambda b: math.inf if b is None else b)
        total = epochs * steps_per_epoch(n_train, batch)
        shown = "full" if batch is None else batch
        how = f"epochs x ceil(n_train / batch_size) = {epochs} x ceil({n_train} / {shown}) = {total}"
    top, key = warm
    if top >= total:
        raise ConfigError(f"must be < the total number of steps, {how}.", file=file, key=key, value=top)


# ----------------------------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """SafeLoader that fails on duplicate keys and reads ``1e-5`` as a float.

    YAML 1.1 (PyYAML) wants a dot in a float, so ``1e-5`` would otherwise be the string "1e-5"; YAML 1.2 and
    every reader of these files expect a number.
    """

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable key: SafeLoader's own error says so, with the line
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
        return super().construct_mapping(node, deep=deep)


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_study(path: str | Path, *, overrides: Mapping[str, Any] | None = None) -> StudySpec:
    """Read and validate the study file at ``path``.

    Args:
        path: a YAML study file (see the module docstring and ``studies/``).
        overrides: command-line values that replace the file's: ``trials``, ``timeout`` (None = keep the file's).

    Raises:
        ConfigError: the first problem found, naming the file, the key path and the value.
    """
    path = Path(path)
    file = path.as_posix()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("study file not found.", file=file) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the study file ({exc}).", file=file) from None
    try:
        raw = yaml.load(text, Loader=_Loader)  # safe: a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"invalid YAML{where}: {problem}.", file=file) from None
    if raw is None:
        raise ConfigError("the study file is empty.", file=file)
    return _Reader(file, path).study(raw, overrides or {})


class _Reader:
    """Validation of one file: one method per section, each with that section's cross-field rules."""

    def __init__(self, file: str, path: Path):
        self.file, self.path = file, path

    def error(self, message: str, key: str | None, value=_MISSING) -> ConfigError:
        return ConfigError(message, file=self.file, key=key, value=value)

    # --- generic checks ------------------------------------------------------------------------------------

    def mapping(self, value, key: str | None, valid: Iterable[str], required: Iterable[str] = ()) -> dict:
        """``value`` as a dict with only ``valid`` keys (all of ``required``)."""
        valid = tuple(valid)
        if not isinstance(value, dict):
            raise self.error("must be a mapping (key: value lines).", key or None, value)
        for k in value:
            if not isinstance(k, str) or k not in valid:
                listed = ", ".join(valid) if valid else "none (this mapping takes no keys)"
                raise self.error(f"unknown key; valid keys are {listed}.", _join(key, str(k)))
        for k in required:
            if k not in value:
                raise self.error("missing required key.", _join(key, k))
        return value

    def number(self, value, key: str, *, integer=False, low=None, low_open=False, high=None, high_open=False):
        """``value`` as an int / finite float within the bounds; the message states the rule."""
        kind = "an int" if integer else "a float"
        if low is not None and high is not None:
            rule = f"{kind} in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            rule = f"{kind} {'>' if low_open else '>='} {low:g}"
        elif high is not None:
            rule = f"{kind} {'<' if high_open else '<='} {high:g}"
        else:
            rule = kind
        ok_type = int if integer else int | float
        if isinstance(value, bool) or not isinstance(value, ok_type):
            raise self.error(f"must be {rule}.", key, value)
        if not math.isfinite(value):
            raise self.error(f"must be a finite {rule.split(' ', 1)[1]}.", key, value)
        if (low is not None and (value <= low if low_open else value < low)) or (
            high is not None and (value >= high if high_open else value > high)
        ):
            raise self.error(f"must be {rule}.", key, value)
        return value if integer else float(value)

    def boolean(self, value, key: str) -> bool:
        if not isinstance(value, bool):
            raise self.error("must be true or false.", key, value)
        return value

    def string(self, value, key: str, choices: Iterable[str] | None = None, what: str = "") -> str:
        if choices is not None:
            choices = tuple(choices)
            if not isinstance(value, str) or value not in choices:
                raise self.error(
                    f"unknown {what or 'value'}; valid {what or 'value'}s are {', '.join(choices)}.",
                    key,
                    value,
                )
        elif not isinstance(value, str) or not value.strip():
            raise self.error("must be a non-empty string.", key, value)
        return value

    def typed(self, value, key: str, rule: str):
        """A constructor argument of the rule's type: ``int>=k``, ``float>0``, ``bool``, ``percent``, ``auto|...``."""
        if rule.startswith("auto|"):
            return "auto" if value == "auto" else self.typed(value, key, rule[5:])
        if rule == "bool":
            return self.boolean(value, key)
        if rule == "percent":
            return self.number(value, key, low=0, high=100)
        if rule == "float>0":
            return self.number(value, key, low=0, low_open=True)
        return self.number(value, key, integer=True, low=int(rule.removeprefix("int>=")))

    # --- sections -------------------------------------------------------------------------------------------

    def study(self, raw, overrides: Mapping[str, Any]) -> StudySpec:
        top = self.mapping(
            raw,
            None,
            (
                "name",
                "description",
                "seed",
                "data",
                "model",
                "training",
                "search",
                "budget",
                "sampler",
                "pruner",
                "tracking",
            ),
            required=("data", "model", "training", "search"),
        )
        name = self.string(top["name"], "name") if "name" in top else self.path.stem
        description = top.get("description", "")
        if not isinstance(description, str):
            raise self.error("must be a string.", "description", description)
        seed = self.number(top.get("seed", 0), "seed", integer=True, low=0)
        data, task = self.data(top["data"])
        model = self.model(top["model"], task)
        training = self.training(top["training"])
        search = self.search(top["search"], training)
        optional = {
            k: {} if top.get(k) is None else top[k] for k in ("budget", "sampler", "pruner", "tracking")
        }
        budget = self.budget(optional["budget"], overrides)
        sampler = self.sampler(optional["sampler"], search)
        pruner = self.pruner(optional["pruner"])
        tracking = self.tracking(optional["tracking"])
        _check_warmup(self.file, search, training.epochs, None)
        return StudySpec(
            self.path,
            name,
            seed,
            data,
            model,
            training,
            search,
            budget,
            sampler,
            pruner,
            tracking,
            description,
        )

    def data(self, raw) -> tuple[DataSpec, str | None]:
        from pipeline.data import DATASET_PARAMS, DATASETS

        sec = self.mapping(
            raw,
            "data",
            ("dataset", "path", "target", "task", "val_fraction", "standardize", "params"),
            required=("dataset",),
        )
        dataset = self.string(sec["dataset"], "data.dataset", DATASETS, "dataset")
        is_csv = dataset == "csv"
        for k in ("path", "target", "task"):
            if k in sec and not is_csv:
                raise self.error("is only valid with dataset: csv.", f"data.{k}", sec[k])
        # None = the dataset's own default (the sources' one-row examples are neither split nor standardised).
        val_fraction = sec.get("val_fraction")
        if val_fraction is not None:
            val_fraction = self.number(val_fraction, "data.val_fraction", low=0, high=1, high_open=True)
        standardize = sec.get("standardize")
        if standardize is not None:
            standardize = self.boolean(standardize, "data.standardize")
        params = sec.get("params", {})
        if not isinstance(params, dict):
            raise self.error("must be a mapping of generator parameters.", "data.params", params)
        for k, v in params.items():
            if k not in DATASET_PARAMS[dataset]:
                valid = DATASET_PARAMS[dataset]
                listed = (
                    f"valid keys are {', '.join(valid)}"
                    if valid
                    else f"dataset {dataset} takes no parameters"
                )
                raise self.error(f"unknown key; {listed}.", f"data.params.{k}")
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float | None)
                or (v is not None and not math.isfinite(v))
            ):
                raise self.error("must be a finite number.", f"data.params.{k}", v)
        if not is_csv:
            return DataSpec(dataset, None, None, None, val_fraction, standardize, dict(params)), None
        for k in ("path", "target"):
            if k not in sec:
                raise self.error("missing required key (dataset: csv needs path and target).", f"data.{k}")
        given = self.string(sec["path"], "data.path")
        path = Path(given).expanduser()
        if not path.is_absolute():
            path = self.path.parent / path  # relative to the study file, not the current directory
        path = path.resolve()
        if not path.is_file():
            raise self.error(f"file not found ({path}).", "data.path", given)
        target = self.string(sec["target"], "data.target")
        task = self.string(sec["task"], "data.task", DATA_TASKS, "task") if "task" in sec else None
        columns = self._csv_header(path, given)
        if target not in columns:
            raise self.error(
                f"no such column in {given}; columns are {', '.join(columns)}.", "data.target", target
            )
        return DataSpec(dataset, path, target, task, val_fraction, standardize, {}), task

    def _csv_header(self, path: Path, given: str) -> list[str]:
        import pandas as pd  # only for csv studies: pandas takes a while to import

        try:
            return [str(c) for c in pd.read_csv(path, nrows=0).columns]
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
            raise self.error(f"cannot read the csv header ({exc}).", "data.path", given) from None

    def model(self, raw, task: str | None) -> ModelSpec:
        """``name`` plus the model's own parameters; the task is checked when the data section states it."""
        from pipeline.models import MODEL_PARAMS, MODEL_TASKS, MODELS, build_model

        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict):
            raise self.error("must be a model name or a mapping with name and parameters.", "model", raw)
        if "name" not in raw:
            raise self.error("missing required key.", "model.name")
        name = self.string(raw["name"], "model.name", MODELS, "model")
        self.mapping(raw, "model", ("name", *MODEL_PARAMS[name]))
        params = {k: v for k, v in raw.items() if k != "name"}
        if task is not None and task not in MODEL_TASKS[name]:
            raise self.error(
                f"model {name} solves {' or '.join(MODEL_TASKS[name])} tasks, not the data's {task} task.",
                "model.name",
                name,
            )
        task = task or MODEL_TASKS[name][0]
        classes = 3 if task == "multiclass" else 0  # any valid count: the parameters do not depend on it
        self.check_with_factory(
            lambda kv: build_model(name, n_features=2, task=task, n_classes=classes, **kv),
            {k: Fixed(v) for k, v in params.items()},
            "model",
        )
        return ModelSpec(name, dict(params))

    def training(self, raw) -> TrainingSpec:
        sec = self.mapping(
            raw, "training", ("epochs", "batch_size", "divergence_factor"), required=("epochs",)
        )
        epochs = self.number(sec["epochs"], "training.epochs", integer=True, low=1)
        batch = self.batch_value(sec.get("batch_size", "full"), "training.batch_size")
        factor = self.number(
            sec.get("divergence_factor", 10.0), "training.divergence_factor", low=1, low_open=True
        )
        return TrainingSpec(epochs, batch, factor)

    def batch_value(self, value, key: str):
        if value == "full":
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self.error('must be "full" or an int >= 1.', key, value)
        return value

    def budget(self, raw, overrides: Mapping[str, Any]) -> Budget:
        sec = self.mapping(raw, "budget", ("trials", "timeout"))
        trials = sec.get("trials", DEFAULT_TRIALS)
        if trials is not None:
            trials = self.number(trials, "budget.trials", integer=True, low=1)
        timeout = sec.get("timeout")
        if timeout is not None:
            timeout = self.number(timeout, "budget.timeout", low=0, low_open=True)
        cli = _Reader(None, self.path)  # command-line values: named by their option, not by the file
        for k in overrides:
            if k not in ("trials", "timeout"):
                raise cli.error("unknown override; valid overrides are --trials, --timeout.", f"--{k}")
        if overrides.get("trials") is not None:
            trials = cli.number(overrides["trials"], "--trials", integer=True, low=1)
        if overrides.get("timeout") is not None:
            timeout = cli.number(overrides["timeout"], "--timeout", low=0, low_open=True)
        if trials is None and timeout is None:
            raise self.error(
                "set trials or timeout (or both): without either a study never ends.", "budget", sec
            )
        return Budget(trials, timeout)

    def sampler(self, raw, search: SearchSpace) -> SamplerSpec:
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict):
            raise self.error("must be a mapping (key: value lines).", "sampler", raw)
        name = self.string(raw.get("name", "tpe"), "sampler.name", SAMPLERS, "sampler")
        rules = SAMPLER_PARAMS[name]
        self.mapping(raw, "sampler", ("name", *rules))
        params = {k: self.typed(v, f"sampler.{k}", rules[k]) for k, v in raw.items() if k != "name"}
        if params.get("group") and params.get("multivariate") is False:
            raise self.error("needs multivariate: true.", "sampler.group", True)
        if name == "grid":
            bad = search.non_categorical()
            if bad:
                key, _, value = bad[0]
                raise self.error(
                    "the grid sampler needs {choices: [...]} (or a fixed value) for every searched parameter.",
                    key,
                    value,
                )
        return SamplerSpec(name, params)

    def pruner(self, raw) -> PrunerSpec:
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict):
            raise self.error("must be a mapping (key: value lines).", "pruner", raw)
        name = self.string(raw.get("name", "none"), "pruner.name", PRUNER_PARAMS, "pruner")
        rules = PRUNER_PARAMS[name]
        self.mapping(raw, "pruner", ("name", *rules), required=REQUIRED_PRUNER_PARAMS.get(name, ()))
        params = {k: self.typed(v, f"pruner.{k}", rules[k]) for k, v in raw.items() if k != "name"}
        return PrunerSpec(name, params)

    def tracking(self, raw) -> TrackingSpec:
        sec = self.mapping(raw, "tracking", ("report_points",))
        points = self.number(
            sec.get("report_points", DEFAULT_REPORT_POINTS), "tracking.report_points", integer=True, low=1
        )
        return TrackingSpec(points)

    # --- search ---------------------------------------------------------------------------------------------

    def search(self, raw, training: TrainingSpec) -> SearchSpace:
        from pipeline.optimizers import OPTIMIZER_PARAMS, build_optimizer
        from pipeline.schedules import SCHEDULE_PARAMS, SCHEDULES, build_schedule

        sec = self.mapping(raw, "search", ("lr", "batch_size", "optimizer", "schedule"), required=("lr",))
        lr = self.lr(sec["lr"])
        if "batch_size" in sec:
            batch = self.param(sec["batch_size"], "search.batch_size", "batch_size", allow_one_minus=False)
        else:
            batch = Fixed(training.batch_size)
        optimizers, opt_cat = self.branches(
            sec.get("optimizer", "sgd"),
            "search.optimizer",
            "optimizer",
            OPTIMIZER_PARAMS,
            lambda name, kv: build_optimizer(name, **kv),
            required={},
        )
        schedule_params = {k: (*v, "warmup_steps") for k, v in SCHEDULE_PARAMS.items()}
        schedules, sched_cat = self.branches(
            sec.get("schedule", "constant"),
            "search.schedule",
            "schedule",
            schedule_params,
            lambda name, kv: build_schedule(name, lr=_PROBE_LR, total_steps=training.epochs, **kv),
            required={name: _required_args(f, SCHEDULE_PARAMS[name]) for name, f in SCHEDULES.items()},
        )
        return SearchSpace(lr, batch, optimizers, schedules, opt_cat, sched_cat)

    def lr(self, raw) -> Param | LrAuto:
        if raw == "auto":
            return LrAuto()
        if isinstance(raw, dict) and "auto" in raw:
            self.mapping(raw, "search.lr", ("auto",))
            auto = raw["auto"] if raw["auto"] is not None else {}
            sec = self.mapping(
                auto,
                "search.lr.auto",
                ("start_lr", "end_lr", "steps", "ramp", "stop_factor", "step_lr", "iterations_per_value"),
            )
            d = LrAuto()
            start = self.number(
                sec.get("start_lr", d.start_lr), "search.lr.auto.start_lr", low=0, low_open=True
            )
            end = self.number(sec.get("end_lr", d.end_lr), "search.lr.auto.end_lr", low=0, low_open=True)
            if not start < end:
                raise self.error(f"must be > start_lr = {start:g}.", "search.lr.auto.end_lr", end)
            steps = self.number(sec.get("steps", d.steps), "search.lr.auto.steps", integer=True, low=2)
            ramp = self.string(sec.get("ramp", d.ramp), "search.lr.auto.ramp", LR_RAMPS, "ramp")
            stop = self.number(
                sec.get("stop_factor", d.stop_factor), "search.lr.auto.stop_factor", low=1, low_open=True
            )
            step_lr = iterations = None
            if ramp == "segments":
                for key in ("step_lr", "iterations_per_value"):
                    if key not in sec:
                        raise self.error("is required when ramp is 'segments'.", f"search.lr.auto.{key}")
                step_lr = self.number(sec["step_lr"], "search.lr.auto.step_lr", low=0, low_open=True)
                iterations = self.number(
                    sec["iterations_per_value"], "search.lr.auto.iterations_per_value", integer=True, low=1
                )
            else:
                for key in ("step_lr", "iterations_per_value"):
                    if key in sec:
                        raise self.error(
                            "is only used when ramp is 'segments'.", f"search.lr.auto.{key}", sec[key]
                        )
            return LrAuto(start, end, steps, ramp, stop, step_lr, iterations)
        return self.param(raw, "search.lr", "lr", allow_one_minus=False)

    def scalar(self, value, key: str, name: str):
        """A fixed value or one choice of parameter ``name``: its type and, for lr / batch / warmup, its range."""
        if name == "lr":
            return self.number(value, key, low=0, low_open=True)
        if name == "batch_size":
            if value == "full":
                return "full"
            if isinstance(value, str):
                raise self.error('must be "full" or an int >= 1.', key, value)
            return self.number(value, key, integer=True, low=1)
        if name == "warmup_steps":
            return self.number(value, key, integer=True, low=0)
        return self.number(value, key, integer=name in INT_PARAMS)

    def param(self, raw, key: str, name: str, *, allow_one_minus: bool = True) -> Param:
        """One searched value in any of the four forms (see the module docstring)."""
        integer = name in INT_PARAMS
        if not isinstance(raw, dict):
            value = self.scalar(raw, key, name)
            return Fixed(None if value == "full" else value)
        forms = (
            "choices",
            "low",
            "high",
            "log",
            *(("one_minus",) if allow_one_minus and not integer else ()),
        )
        if "choices" in raw:
            self.mapping(raw, key, ("choices",))
            choices = raw["choices"]
            if not isinstance(choices, list) or not choices:
                raise self.error("must be a non-empty list.", f"{key}.choices", choices)
            values = tuple(self.scalar(v, f"{key}.choices[{i}]", name) for i, v in enumerate(choices))
            if len(set(values)) < len(values):
                raise self.error("must not repeat a value.", f"{key}.choices", choices)
            return Choice(values)
        if "one_minus" in raw:
            self.mapping(raw, key, forms)
            if len(raw) > 1:
                raise self.error("one_minus stands alone; put low and high inside it.", key, raw)
            sec = self.mapping(
                raw["one_minus"], f"{key}.one_minus", ("low", "high"), required=("low", "high")
            )
            low = self.number(
                sec["low"], f"{key}.one_minus.low", low=0, low_open=True, high=1, high_open=True
            )
            high = self.number(
                sec["high"], f"{key}.one_minus.high", low=0, low_open=True, high=1, high_open=True
            )
            if not low < high:
                raise self.error(f"must be > low = {low:g}.", f"{key}.one_minus.high", sec["high"])
            return OneMinus(low, high)
        sec = self.mapping(raw, key, forms, required=("low", "high"))
        log = self.boolean(sec.get("log", True), f"{key}.log")
        if log and name in NEAR_ONE_PARAMS:
            hint = ""
            if all(isinstance(sec[e], int | float) and 0 < sec[e] < 1 for e in ("low", "high")):
                hint = f" {{one_minus: {{low: {1 - sec['high']:.4g}, high: {1 - sec['low']:.4g}}}}} is the same range."
            raise self.error(
                f"is a factor near 1: search it as 1 - x on a log scale with {{one_minus: {{low, high}}}}, or give "
                f"log: false for a linear range.{hint}",
                key,
                raw,
            )
        low = self.number(sec["low"], f"{key}.low", integer=integer)
        high = self.number(sec["high"], f"{key}.high", integer=integer)
        if log and low <= 0:
            raise self.error(
                f"must be {'an int' if integer else 'a float'} > 0 on a log scale (log: false for a linear range).",
                f"{key}.low",
                sec["low"],
            )
        for end in (
            "low",
            "high",
        ):  # the ends must be valid values themselves (lr > 0, batch >= 1, warmup >= 0)
            self.scalar(sec[end], f"{key}.{end}", name)
        if not low < high:
            raise self.error(f"must be > low = {low:g}.", f"{key}.high", sec["high"])
        return Range(low, high, log, integer)

    def branches(
        self,
        raw,
        key: str,
        kind: str,
        catalogue: Mapping[str, tuple[str, ...]],
        build: Callable,
        required: Mapping[str, tuple[str, ...]],
    ) -> tuple[tuple[Branch, ...], bool]:
        """``name`` | ``{name: ..., param: ...}`` | ``{choices: {name: {param: ...}}}`` (or a list of names)."""
        if isinstance(raw, str):
            raw = {"name": raw}
        if not isinstance(raw, dict):
            raise self.error(f"must be a {kind} name, {{name: ..., params}} or {{choices: ...}}.", key, raw)
        if "choices" in raw:
            self.mapping(raw, key, ("choices",))
            choices = raw["choices"]
            if isinstance(choices, list) and all(isinstance(c, str) for c in choices):
                if len(set(choices)) < len(choices):
                    raise self.error("must not repeat a name.", f"{key}.choices", choices)
                choices = {c: {} for c in choices}
            if not isinstance(choices, dict) or not choices:
                raise self.error(f"must map {kind} names to their parameters.", f"{key}.choices", choices)
            branches = tuple(
                self.branch(
                    name,
                    params if params is not None else {},
                    f"{key}.choices.{name}",
                    kind,
                    catalogue,
                    build,
                    required,
                    name_key=f"{key}.choices",
                )
                for name, params in choices.items()
            )
            return branches, True
        if "name" not in raw:
            raise self.error("missing required key (or give choices).", f"{key}.name")
        params = {k: v for k, v in raw.items() if k != "name"}
        return (
            self.branch(raw["name"], params, key, kind, catalogue, build, required, name_key=f"{key}.name"),
        ), False

    def branch(self, name, raw, key: str, kind: str, catalogue, build, required, name_key: str) -> Branch:
        name = self.string(name, name_key, catalogue, kind)
        valid = catalogue[name]
        if not isinstance(raw, dict):
            raise self.error(f"must map parameter names of {kind} {name} to values.", key, raw)
        for k in raw:
            if k not in valid:
                shown = ("name", *valid) if name_key.endswith(".name") else valid
                listed = (
                    f"valid keys are {', '.join(shown)}" if valid else f"{kind} {name} takes no parameters"
                )
                raise self.error(f"unknown key; {listed}.", _join(key, str(k)))
        for k in required.get(name, ()):
            if k not in raw:
                raise self.error(
                    f"missing required key (the {name} {kind} has no default for it).", f"{key}.{k}"
                )
        params = {p: self.param(v, f"{key}.{p}", p) for p, v in raw.items()}
        self.check_with_factory(lambda kv: build(name, kv), params, key, skip=("warmup_steps",))
        return Branch(name, params, key)

    def check_with_factory(
        self, build: Callable[[dict], object], params: Mapping[str, Param], key: str, skip: Iterable[str] = ()
    ) -> None:
        """Check values by calling their factory: all at a representative value (fixed values, the low end of
        ranges, first choices), then each end / choice of every sampled one with the others representative.

        A factory's ValueError becomes a ConfigError at the key of the parameter its message names (the factories
        say "The 'gamma' parameter of ..."), else at ``key``. ``skip``: parameters checked elsewhere.
        """
        params = {p: v for p, v in params.items() if p not in skip}
        base = {p: _representative(v) for p, v in params.items()}
        self._probe(build, base, key, params, None)
        for p, v in params.items():
            for sub, given, value in _probe_values(v):
                self._probe(build, {**base, p: value}, key, params, (p, sub, given))

    def _probe(self, build, kwargs: dict, key: str, params: Mapping[str, Param], varied) -> None:
        try:
            build(kwargs)
        except ValueError as exc:
            message = re.sub(r"\s*Got .* instead\.\s*$", "", str(exc), flags=re.S)
            named = re.search(r"The '(\w+)' parameter", message)
            named = named.group(1) if named else None
            if varied is not None and named in (None, varied[0]):
                p, sub, given = varied
                raise self.error(message, f"{key}.{p}{sub}", given) from None
            if named in params:
                raise self.error(message, f"{key}.{named}", _shown(params[named])) from None
            raise self.error(message, key, {p: _shown(v) for p, v in params.items()}) from None


def _representative(param: Param):
    """The value a load-time check builds with: the fixed value, a range's low end, the first choice."""
    if isinstance(param, Fixed):
        return param.value
    if isinstance(param, Range):
        return param.low
    if isinstance(param, OneMinus):
        return 1 - param.low
    return param.choices[0]


def _shown(param: Param):
    """A searched value as the file wrote it, for messages."""
    if isinstance(param, Fixed):
        return param.value
    if isinstance(param, OneMinus):
        return {"one_minus": {"low": param.low, "high": param.high}}
    if isinstance(param, Range):
        return {"low": param.low, "high": param.high, **({} if param.log else {"log": False})}
    return {"choices": list(param.choices)}


def _probe_values(param: Param):
    """(key suffix, value as written, value passed to the factory) for each end / choice of a sampled param."""
    if isinstance(param, Range):
        return [(".low", param.low, param.low), (".high", param.high, param.high)]
    if isinstance(param, OneMinus):
        return [(".one_minus.low", param.low, 1 - param.low), (".one_minus.high", param.high, 1 - param.high)]
    if isinstance(param, Choice):
        return [(f".choices[{i}]", c, c) for i, c in enumerate(param.choices)]
    return []


def _required_args(factory: Callable, names: Iterable[str]) -> tuple[str, ...]:
    """The parameters among ``names`` that ``factory`` has no default for."""
    signature = inspect.signature(factory).parameters
    return tuple(n for n in names if signature[n].default is inspect.Parameter.empty)


def _join(prefix: str | None, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key
