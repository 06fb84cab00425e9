"""Study files (YAML) into typed, validated objects: the one place that reads a study, everything after trusts it.

A study file says what to train (``data``, ``model``, ``training``), what to search (``search``), how long
(``budget``) and how (``sampler``, ``pruner``, ``tracking``); see ``studies/diabetes-reference.yaml``.
:func:`load_study` checks every key once, when the file is loaded, and fails with ONE
:class:`~pipeline.errors.ConfigError` naming the file, the key path and the value::

    studies/x.yaml: 'search.lr.low': must be a float > 0. Got 0 instead.

Fixed schedule / optimizer / model parameters (and the ends of searched ranges) are checked by calling the
factories of :mod:`pipeline.core.schedules`, :mod:`pipeline.core.optimizers` and :mod:`pipeline.core.models`, so the rules live
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
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.names import MULTICLASS, TASKS
from pipeline.errors import _MISSING, ConfigError
from pipeline.study import entry_points
from pipeline.study.search_reader import SearchValueReader, _join
from pipeline.study.space import (
    _PROBE_LR,
    DEFAULT_REPORT_POINTS,
    DEFAULT_TOLERANCE,
    DEFAULT_TRIALS,
    PRUNER_PARAMS,
    REQUIRED_PRUNER_PARAMS,
    SAMPLER_PARAMS,
    SAMPLERS,
    Fixed,
    SearchSpace,
)
from pipeline.study.spec import (
    Budget,
    DataSpec,
    ModelSpec,
    PrunerSpec,
    SamplerSpec,
    StudySpec,
    TrackingSpec,
    TrainingSpec,
    WorkersSpec,
    _check_warmup,
)

# ----------------------------------------------------------------------------------------------- loading


_NAME = re.compile(r"[A-Za-z0-9._-](?:[A-Za-z0-9._ -]{0,98}[A-Za-z0-9._-])?")
SEED_MAX = 2**32 - 1


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


def load_study(
    path: str | Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    sections: Mapping[str, Any] | None = None,
) -> StudySpec:
    """Read and validate the study file at ``path``.

    Args:
        path: a YAML study file (see the module docstring and ``studies/``).
        overrides: command-line values that replace the file's: ``trials``, ``timeout`` (None = keep the file's).
        sections: top-level sections that replace the file's (the Python API's ``model=``), validated the same way.

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
    if sections and isinstance(raw, dict):
        raw = {**raw, **sections}
    return _Reader(file, path).study(raw, overrides or {})


def load_study_mapping(
    raw: Mapping[str, Any], *, base_dir: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> StudySpec:
    """Validate a study given as a dict (the Python API), exactly as a file: relative paths (a CSV, an entry
    point's file) are taken from ``base_dir`` (default: the current directory). ``name`` is required."""
    base = Path(base_dir or Path.cwd()).resolve()
    file = "<study dict>"
    if not isinstance(raw, Mapping):
        raise ConfigError("a study must be a path or a mapping (dict).", file=file, value=raw)
    if "name" not in raw:
        raise ConfigError(
            "missing required key (a study given as a dict needs a name).", file=file, key="name"
        )
    return _Reader(file, base / file).study(dict(raw), overrides or {})


class _Reader(SearchValueReader):
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
                "workers",
            ),
            required=("data", "model", "training", "search"),
        )
        name = self.study_name(top["name"] if "name" in top else self.path.stem, "name" in top)
        description = top.get("description", "")
        if not isinstance(description, str):
            raise self.error("must be a string.", "description", description)
        seed = self.number(top.get("seed", 0), "seed", integer=True, low=0)
        if seed > SEED_MAX:
            raise self.error(f"must be an int in [0, {SEED_MAX}] (the samplers' seed range).", "seed", seed)
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
        workers = self.workers({} if top.get("workers") is None else top["workers"])
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
            workers,
        )

    def study_name(self, value, given: bool) -> str:
        """The study's name names files (reports/<name>/) and both stores' entries: a safe set of characters."""
        where = "" if given else " (taken from the file name; set `name:` to choose another)"
        if not isinstance(value, str) or not _NAME.fullmatch(value) or value.strip() in (".", ".."):
            raise self.error(
                "must be 1 to 100 letters, digits, '.', '_', '-' or spaces (not '.' or '..', no leading or "
                f"trailing space){where}.",
                "name",
                value,
            )
        return value

    def data(self, raw) -> tuple[DataSpec, str | None]:
        from pipeline.datasets import DATA_LIMITS, DATASET_PARAMS, DATASETS

        if isinstance(raw, dict) and "entry_point" in raw:
            return entry_points.read_data(self, raw)
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
            limit = DATA_LIMITS.get(k)
            if limit is not None and v is not None and v > limit:
                raise self.error(
                    f"must be at most {limit:,} (the data are generated in memory).", f"data.params.{k}", v
                )
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
        task = self.string(sec["task"], "data.task", TASKS, "task") if "task" in sec else None
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
        from pipeline.core.models import MODEL_PARAMS, MODEL_TASKS, MODELS, build_model

        if isinstance(raw, dict) and "entry_point" in raw:
            return entry_points.read_model(self, raw, task)
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
        classes = 3 if task == MULTICLASS else 0  # any valid count: the parameters do not depend on it
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
        sec = self.mapping(raw, "budget", ("trials", "timeout", "max_trials", "patience", "tolerance"))
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
        given = {k: v for k, v in overrides.items() if v is not None}
        if given:
            # The command line replaces the file's per-run budget as a whole: `--timeout 7200` alone means "tune
            # for two hours", not "for two hours or budget.trials trials, whichever comes first".
            trials = (
                cli.number(given["trials"], "--trials", integer=True, low=1) if "trials" in given else None
            )
            timeout = (
                cli.number(given["timeout"], "--timeout", low=0, low_open=True)
                if "timeout" in given
                else None
            )
        max_trials = sec.get("max_trials")
        if max_trials is not None:
            max_trials = self.number(max_trials, "budget.max_trials", integer=True, low=1)
        patience = sec.get("patience")
        if patience is not None:
            patience = self.number(patience, "budget.patience", integer=True, low=1)
        tolerance = sec.get("tolerance", DEFAULT_TOLERANCE)
        tolerance = self.number(tolerance, "budget.tolerance", low=0, high=1, high_open=True)
        if "tolerance" in sec and patience is None:
            raise self.error(
                "applies only with budget.patience; set patience too.", "budget.tolerance", tolerance
            )
        if trials is None and timeout is None and max_trials is None:
            raise self.error(
                "set trials, timeout or max_trials: without one of them a run never ends.", "budget", sec
            )
        return Budget(trials, timeout, max_trials, patience, tolerance)

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

    def workers(self, raw) -> WorkersSpec:
        """``workers: {heartbeat_interval: S, grace_period: S, max_retry: N}`` (seconds; whole numbers, as Optuna's
        heartbeat takes them). The grace period must exceed the interval, or live trials would be failed."""
        sec = self.mapping(raw, "workers", ("heartbeat_interval", "grace_period", "max_retry"))
        interval = sec.get("heartbeat_interval")
        if interval is not None:
            interval = self.number(interval, "workers.heartbeat_interval", integer=True, low=1)
        grace = sec.get("grace_period")
        if grace is not None:
            grace = self.number(grace, "workers.grace_period", integer=True, low=1)
            if interval is None:
                raise self.error(
                    "needs workers.heartbeat_interval: without a heartbeat there is nothing to wait for.",
                    "workers.grace_period",
                    grace,
                )
            if grace <= interval:
                raise self.error(
                    f"must be > workers.heartbeat_interval ({interval}): a live trial beats only every "
                    f"{interval} s.",
                    "workers.grace_period",
                    grace,
                )
        retry = self.number(sec.get("max_retry", 1), "workers.max_retry", integer=True, low=0)
        return WorkersSpec(interval, grace, retry)

    # --- search ---------------------------------------------------------------------------------------------

    def search(self, raw, training: TrainingSpec) -> SearchSpace:
        from pipeline.core.optimizers import OPTIMIZER_PARAMS, build_optimizer
        from pipeline.core.schedules import SCHEDULE_PARAMS, SCHEDULES, build_schedule

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


def _required_args(factory: Callable, names: Iterable[str]) -> tuple[str, ...]:
    """The parameters among ``names`` that ``factory`` has no default for."""
    signature = inspect.signature(factory).parameters
    return tuple(n for n in names if signature[n].default is inspect.Parameter.empty)
