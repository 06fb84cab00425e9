"""Study files: every shipped study loads, every kind of mistake fails with file + key path + value, and the search
space samples conditionally (unchosen branches and fixed values are never asked)."""

from __future__ import annotations

import copy
import inspect
import math
import re
from pathlib import Path

import pytest
import yaml

from pipeline.errors import ConfigError
from pipeline.study.loader import load_study
from pipeline.study.space import (
    INT_PARAMS,
    PRUNER_PARAMS,
    SAMPLER_PARAMS,
    Choice,
    Fixed,
    LrAuto,
    Range,
)
from pipeline.study.spec import StudySpec

STUDIES = sorted((Path(__file__).resolve().parent.parent / "studies").glob("*.yaml"))
DELETE = object()
NO_VALUE = object()

# A small valid study that every error case below breaks in one place.
BASE = {
    "data": {"dataset": "diabetes"},
    "model": {"name": "linear"},
    "training": {"epochs": 50},
    "search": {
        "lr": {"low": 1.0e-4, "high": 1.0},
        "optimizer": {
            "choices": {
                "sgd": {},
                "momentum": {"beta": {"one_minus": {"low": 1.0e-3, "high": 0.5}}},
            }
        },
        "schedule": {
            "choices": {
                "constant": {},
                "cosine": {
                    "min_lr_ratio": {"low": 1.0e-3, "high": 0.5},
                    "warmup_steps": {"low": 1, "high": 10},
                },
                "step": {"decay_steps": {"low": 5, "high": 20}, "gamma": 0.5},
            }
        },
    },
}


def write(tmp_path: Path, study: dict | str, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(study if isinstance(study, str) else yaml.safe_dump(study, sort_keys=False))
    return path


def changed(changes: dict) -> dict:
    """BASE with ``{"a.b.c": value}`` applied (DELETE removes the key)."""
    study = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = study
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return study


def expect_error(path: Path, key: str | None, message: str, value=NO_VALUE, **kwargs) -> ConfigError:
    """load_study fails with 'FILE: 'KEY': MESSAGE ... Got VALUE instead.'"""
    where = f"{path.as_posix()}: '{key}': " if key else f"{path.as_posix()}: "
    with pytest.raises(ConfigError, match=re.escape(where)) as info:
        load_study(path, **kwargs)
    text = str(info.value)
    assert text.startswith(where), text
    assert re.search(message, text), text
    assert info.value.key == key
    if value is not NO_VALUE:
        assert text.endswith(f"Got {value!r} instead."), text
    return info.value


# ----------------------------------------------------------------------------------------------- shipped studies


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.name)
def test_every_shipped_study_loads(path):
    spec = load_study(path)
    assert isinstance(spec, StudySpec)
    assert spec.name == path.stem  # the Optuna study / MLflow experiment is named like the file
    assert spec.budget.trials >= 1


def test_the_expected_studies_are_shipped():
    names = {p.stem for p in STUDIES}
    assert {
        "single-sample",
        "diabetes-reference",
        "diabetes-schedules",
        "breast-cancer-logistic",
        "digits-softmax",
        "moons-mlp",
        "compare",
    } <= names


def test_reference_study_is_what_the_contract_says():
    spec = load_study(next(p for p in STUDIES if p.stem == "diabetes-reference"))
    assert (spec.data.dataset, spec.model.name, spec.training.epochs, spec.training.batch_size) == (
        "diabetes",
        "linear",
        300,
        None,
    )
    assert spec.search.lr == Range(1e-5, 10.0, log=True)
    assert [b.name for b in spec.search.optimizers] == ["sgd"]
    assert [b.name for b in spec.search.schedules] == ["exponential"]
    assert spec.search.schedules[0].params["decay_rate"] == Range(1e-4, 1e-1, log=True)
    assert (spec.sampler.name, spec.seed, spec.budget.trials) == ("tpe", 0, 100)


def test_compare_study_is_a_grid_over_learning_rates():
    spec = load_study(next(p for p in STUDIES if p.stem == "compare"))
    assert spec.sampler.name == "grid"
    assert spec.search.grid() == {"lr": [0.001, 0.01, 0.1, 1.0, 10.0]}


# ----------------------------------------------------------------------------------------------- errors in a section

# (changes to BASE, key path in the message, message pattern, value in the message or NO_VALUE)
ERRORS = [
    # unknown keys, with the valid ones listed
    (
        {"trainin": {}},
        "trainin",
        r"unknown key; valid keys are name, description, seed, data, model",
        NO_VALUE,
    ),
    ({"search.lr.lo": 1}, "search.lr.lo", r"unknown key; valid keys are choices, low, high, log\.", NO_VALUE),
    (
        {"training.epoch": 3},
        "training.epoch",
        r"valid keys are epochs, batch_size, divergence_factor",
        NO_VALUE,
    ),
    (
        {"search.schedule.choices.cosine.decay_rate": 0.1},
        "search.schedule.choices.cosine.decay_rate",
        r"unknown key; valid keys are min_lr_ratio, warmup_steps\.",
        NO_VALUE,
    ),
    (
        {"search.optimizer.choices.sgd": {"beta": 0.9}},
        "search.optimizer.choices.sgd.beta",
        r"unknown key; optimizer sgd takes no parameters\.",
        NO_VALUE,
    ),
    (
        # a factor near 1 on a log scale of its own would crowd its samples at the low end
        {"search.optimizer.choices.momentum.beta": {"low": 0.5, "high": 0.99}},
        "search.optimizer.choices.momentum.beta",
        r"is a factor near 1: search it as 1 - x .* \{one_minus: \{low: 0\.01, high: 0\.5\}\} is the same range\.",
        {"low": 0.5, "high": 0.99},
    ),
    (
        {"search.schedule.choices.step.decay_steps": {"one_minus": {"low": 0.1, "high": 0.5}}},
        "search.schedule.choices.step.decay_steps.one_minus",
        r"unknown key; valid keys are choices, low, high, log\.",  # one_minus is for float factors only
        NO_VALUE,
    ),
    (
        {"search.lr": {"auto": {"ramp": "segments", "iterations_per_value": 5}}},
        "search.lr.auto.step_lr",
        r"is required when ramp is 'segments'\.",
        NO_VALUE,
    ),
    (
        {"search.lr": {"auto": {"stop_factor": 1}}},
        "search.lr.auto.stop_factor",
        r"must be a float > 1\.",
        1,
    ),
    (
        {"search.lr": {"auto": {"stop": 1}}},
        "search.lr.auto.stop",
        r"unknown key; valid keys are start_lr, end_lr, steps, ramp, stop_factor, step_lr, iterations_per_value\.",
        NO_VALUE,
    ),
    (
        {"data.dataset": "moons", "data.params": {"n_sample": 10}},
        "data.params.n_sample",
        r"n_samples, noise",
        NO_VALUE,
    ),
    ({"data.params": {"noise": 0.1}}, "data.params.noise", r"dataset diabetes takes no parameters", NO_VALUE),
    (
        {"pruner": {"name": "median", "n_warmup": 5}},
        "pruner.n_warmup",
        r"valid keys are name, n_startup",
        NO_VALUE,
    ),
    # missing keys
    ({"training.epochs": DELETE}, "training.epochs", r"missing required key", NO_VALUE),
    ({"search": {"optimizer": "sgd"}}, "search.lr", r"missing required key", NO_VALUE),
    (
        {"search.schedule": {"name": "step", "gamma": 0.5}},
        "search.schedule.decay_steps",
        r"missing required",
        NO_VALUE,
    ),
    ({"pruner": {"name": "percentile"}}, "pruner.percentile", r"missing required key", NO_VALUE),
    # wrong types, NaN, inf
    ({"training.epochs": "ten"}, "training.epochs", r"must be an int >= 1\.", "ten"),
    ({"training.epochs": 2.5}, "training.epochs", r"must be an int >= 1\.", 2.5),
    ({"search.lr": True}, "search.lr", r"must be a float > 0\.", True),
    ({"search.lr.low": math.nan}, "search.lr.low", r"must be a finite float\.", math.nan),
    ({"search.lr.high": math.inf}, "search.lr.high", r"must be a finite float\.", math.inf),
    ({"training.divergence_factor": 1}, "training.divergence_factor", r"must be a float > 1\.", 1),
    ({"data.standardize": "yes please"}, "data.standardize", r"must be true or false\.", "yes please"),
    ({"data.val_fraction": 1.0}, "data.val_fraction", r"must be a float in \[0, 1\)\.", 1.0),
    ({"seed": -1}, "seed", r"must be an int >= 0\.", -1),
    ({"tracking": {"report_points": 0}}, "tracking.report_points", r"must be an int >= 1\.", 0),
    (
        {"search.schedule.choices.step.decay_steps": {"low": 5.5, "high": 20}},
        "search.schedule.choices.step.decay_steps.low",
        r"must be an int\.",
        5.5,
    ),
    # ranges: low < high, log scale needs low > 0, one_minus inside (0, 1)
    ({"search.lr": {"low": 1, "high": 0.1}}, "search.lr.high", r"must be > low = 1\.", 0.1),
    ({"search.lr.low": 0}, "search.lr.low", r"must be a float > 0 on a log scale \(log: false", 0),
    ({"search.lr": {"low": 0, "high": 1, "log": False}}, "search.lr.low", r"must be a float > 0\.", 0),
    ({"search.lr": -0.1}, "search.lr", r"must be a float > 0\.", -0.1),
    (
        {"search.schedule.choices.cosine.min_lr_ratio.low": 0},
        "search.schedule.choices.cosine.min_lr_ratio.low",
        r"on a log scale",
        0,
    ),
    (
        {"search.optimizer.choices.momentum.beta.one_minus.high": 1.5},
        "search.optimizer.choices.momentum.beta.one_minus.high",
        r"must be a float in \(0, 1\)\.",
        1.5,
    ),
    (
        {"search.optimizer.choices.momentum.beta.one_minus.low": 0},
        "search.optimizer.choices.momentum.beta.one_minus.low",
        r"must be a float in \(0, 1\)\.",
        0,
    ),
    (
        {"search.optimizer.choices.momentum.beta.one_minus": {"low": 0.5, "high": 0.1}},
        "search.optimizer.choices.momentum.beta.one_minus.high",
        r"must be > low = 0\.5\.",
        0.1,
    ),
    ({"search.lr": {"choices": []}}, "search.lr.choices", r"must be a non-empty list\.", []),
    ({"search.lr": {"choices": [0.1, 0.1]}}, "search.lr.choices", r"must not repeat", [0.1, 0.1]),
    (
        {"search.lr": {"auto": {"start_lr": 1, "end_lr": 0.1}}},
        "search.lr.auto.end_lr",
        r"must be > start_lr",
        0.1,
    ),
    # unknown names
    (
        {"search.schedule.choices": {"cosinus": {}}},
        "search.schedule.choices",
        r"unknown schedule; valid",
        "cosinus",
    ),
    (
        {"search.optimizer": "adamw"},
        "search.optimizer.name",
        r"unknown optimizer; valid optimizers are sgd",
        "adamw",
    ),
    ({"model.name": "svm"}, "model.name", r"unknown model; valid models are linear, logistic", "svm"),
    ({"data.dataset": "mnist"}, "data.dataset", r"unknown dataset; valid datasets are diabetes", "mnist"),
    (
        {"sampler": {"name": "cmaes"}},
        "sampler.name",
        r"unknown sampler; valid samplers are tpe, random, grid",
        "cmaes",
    ),
    (
        {"pruner": {"name": "patient"}},
        "pruner.name",
        r"unknown pruner; valid pruners are none, median",
        "patient",
    ),
    # values the factories reject, at the key the factory's message names
    (
        {"search.schedule.choices.step.gamma": 1.5},
        "search.schedule.choices.step.gamma",
        r"The 'gamma' parameter of step_decay must be",
        1.5,
    ),
    (
        {
            "search.schedule.choices": {
                "one_cycle": {"warmup_fraction": {"low": 0.5, "high": 1.5, "log": False}}
            }
        },
        "search.schedule.choices.one_cycle.warmup_fraction.high",
        r"The 'warmup_fraction' parameter of one_cycle must be a float in \(0, 1\)\.",
        1.5,
    ),
    (
        {"search.optimizer": {"name": "adam", "beta1": {"choices": [0.9, 1.0]}}},
        "search.optimizer.beta1.choices[1]",
        r"The 'beta1' parameter of Adam must be",
        1.0,
    ),
    (
        {"model": {"name": "mlp", "hidden": 0}},
        "model.hidden",
        r"The 'hidden' parameter of MLP must be an int >= 1",
        0,
    ),
    (
        {"model": {"name": "mlp", "activation": "relu"}},
        "model",
        r"needs the parameter 'hidden'",
        {"activation": "relu"},
    ),
    (
        {"model": {"name": "linear", "hidden": 3}},
        "model.hidden",
        r"unknown key; valid keys are name\.",
        NO_VALUE,
    ),
    # batch sizes, epochs, trials, budget
    ({"training.epochs": 0}, "training.epochs", r"must be an int >= 1\.", 0),
    ({"training.batch_size": 0}, "training.batch_size", r'must be "full" or an int >= 1\.', 0),
    (
        {"search.batch_size": {"choices": [16, 0]}},
        "search.batch_size.choices[1]",
        r"must be an int >= 1\.",
        0,
    ),
    ({"search.batch_size": {"low": 0, "high": 8, "log": False}}, "search.batch_size.low", r"an int >= 1", 0),
    ({"budget": {"trials": 0}}, "budget.trials", r"must be an int >= 1\.", 0),
    ({"budget": {"timeout": -5}}, "budget.timeout", r"must be a float > 0\.", -5),
    ({"budget": {"trials": None}}, "budget", r"set trials, timeout or max_trials", {"trials": None}),
    # cross-field rules
    (
        {"search.schedule.choices.cosine.warmup_steps.high": 50},
        "search.schedule.choices.cosine.warmup_steps",
        r"must be < the total number of steps, training\.epochs = 50 \(full batch\)\.",
        50,
    ),
    (
        {"sampler": {"name": "grid"}},
        "search.lr",
        r"the grid sampler needs \{choices",
        {"low": 0.0001, "high": 1.0},
    ),
    (
        {"sampler": {"name": "grid"}, "search.lr": {"choices": [0.1, 1]}, "search.optimizer": "sgd"},
        "search.schedule.choices.cosine.min_lr_ratio",
        r"the grid sampler needs \{choices",
        {"low": 0.001, "high": 0.5},
    ),
    (
        {"sampler": {"name": "grid"}, "search.lr": "auto", "search.schedule": "constant"},
        "search.lr",
        "grid",
        "auto",
    ),
    (
        {"sampler": {"name": "tpe", "multivariate": False, "group": True}},
        "sampler.group",
        r"multivariate",
        True,
    ),
    ({"pruner": {"name": "median", "n_warmup_steps": -1}}, "pruner.n_warmup_steps", r"an int >= 0\.", -1),
    ({"data.path": "x.csv"}, "data.path", r"is only valid with dataset: csv\.", "x.csv"),
]


@pytest.mark.parametrize(("changes", "key", "message", "value"), ERRORS, ids=[e[1] for e in ERRORS])
def test_each_mistake_names_file_key_and_value(tmp_path, changes, key, message, value):
    expect_error(write(tmp_path, changed(changes)), key, message, value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data: {dataset: diabetes\nmodel: linear\n", r"invalid YAML at line 2, column \d+"),
        (
            "data: {dataset: diabetes}\ndata: {dataset: wine}\n",
            r"invalid YAML at line 2.*duplicate key 'data'",
        ),
        ("", r"the study file is empty\."),
        ("# only a comment\n", r"the study file is empty\."),
    ],
)
def test_file_level_errors_name_the_file(tmp_path, text, message):
    expect_error(write(tmp_path, text), None, message)


def test_top_level_must_be_a_mapping(tmp_path):
    expect_error(write(tmp_path, "- a\n- b\n"), None, r"must be a mapping", ["a", "b"])


def test_missing_file(tmp_path):
    expect_error(tmp_path / "nope.yaml", None, r"study file not found\.")


# ----------------------------------------------------------------------------------------------- csv


@pytest.fixture
def csv_study(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "houses.csv").write_text("area,rooms,price\n50,2,100\n80,3,180\n")
    return changed({"data": {"dataset": "csv", "path": "data/houses.csv", "target": "price"}})


def test_csv_path_is_relative_to_the_study_file(tmp_path, csv_study, monkeypatch):
    path = write(tmp_path, csv_study)
    monkeypatch.chdir(tmp_path / "data")  # not the study's folder
    spec = load_study(path)
    assert spec.data.path == (tmp_path / "data" / "houses.csv").resolve()
    assert (spec.data.target, spec.data.task) == ("price", None)


@pytest.mark.parametrize(
    ("change", "key", "message", "value"),
    [
        (
            {"data.target": DELETE},
            "data.target",
            r"missing required key \(dataset: csv needs path and target\)",
            NO_VALUE,
        ),
        ({"data.path": DELETE}, "data.path", r"missing required key", NO_VALUE),
        (
            {"data.path": "data/missing.csv"},
            "data.path",
            r"file not found \(.*missing\.csv\)",
            "data/missing.csv",
        ),
        (
            {"data.target": "cost"},
            "data.target",
            r"no such column in data/houses\.csv; columns are area, rooms, price",
            "cost",
        ),
        (
            {"data.task": "ordinal"},
            "data.task",
            r"unknown task; valid tasks are regression, binary, multiclass",
            "ordinal",
        ),
        (
            {"data.task": "binary"},
            "model.name",
            r"model linear solves regression tasks, not the data's binary",
            "linear",
        ),
        ({"data.params": {"noise": 1}}, "data.params.noise", r"dataset csv takes no parameters", NO_VALUE),
    ],
)
def test_csv_errors(tmp_path, csv_study, change, key, message, value):
    study = copy.deepcopy(csv_study)
    for dotted, v in change.items():
        section, name = dotted.split(".")
        if v is DELETE:
            del study[section][name]
        else:
            study[section][name] = v
    expect_error(write(tmp_path, study), key, message, value)


# ----------------------------------------------------------------------------------------------- overrides


def test_overrides_replace_the_budget(tmp_path):
    path = write(tmp_path, changed({"budget": {"trials": 100}}))
    spec = load_study(path, overrides={"trials": 5, "timeout": 60})
    assert (spec.budget.trials, spec.budget.timeout) == (5, 60.0)
    assert (
        load_study(path, overrides={"trials": None}).budget.trials == 100
    )  # None: not given on the command line


@pytest.mark.parametrize(
    ("overrides", "key", "message", "value"),
    [
        ({"trials": 0}, "--trials", r"must be an int >= 1\.", 0),
        ({"trials": 2.5}, "--trials", r"must be an int >= 1\.", 2.5),
        ({"timeout": -1}, "--timeout", r"must be a float > 0\.", -1),
        ({"timeout": math.nan}, "--timeout", r"must be a finite float > 0\.", math.nan),
        ({"trails": 3}, "--trails", r"unknown override; valid overrides are --trials, --timeout\.", NO_VALUE),
    ],
)
def test_bad_overrides_name_the_option(tmp_path, overrides, key, message, value):
    with pytest.raises(ConfigError, match=re.escape(f"'{key}': ")) as info:
        load_study(write(tmp_path, BASE), overrides=overrides)
    text = str(info.value)
    assert text.startswith(f"'{key}': ") and re.search(message, text), text  # a command-line value: no file
    if value is not NO_VALUE:
        assert text.endswith(f"Got {value!r} instead."), text


# ----------------------------------------------------------------------------------------------- value forms


def test_yaml_exponent_numbers_are_floats(tmp_path):
    # YAML 1.1 reads 1e-5 as a string; study files mean a number
    spec = load_study(
        write(
            tmp_path,
            "data: {dataset: diabetes}\nmodel: linear\ntraining: {epochs: 5}\n"
            "search: {lr: {low: 1e-5, high: 1.0e1}}\n",
        )
    )
    assert spec.search.lr == Range(1e-5, 10.0, log=True)


@pytest.mark.parametrize(
    ("lr", "expected"),
    [
        (0.1, Fixed(0.1)),
        (1, Fixed(1.0)),
        ({"low": 1e-3, "high": 1}, Range(1e-3, 1.0, log=True)),
        ({"low": 0.1, "high": 0.5, "log": False}, Range(0.1, 0.5, log=False)),
        ({"choices": [0.1, 1]}, Choice((0.1, 1.0))),
        ("auto", LrAuto()),
        ({"auto": None}, LrAuto()),
        (
            {"auto": {"start_lr": 1e-6, "end_lr": 1, "steps": 50, "ramp": "linear"}},
            LrAuto(1e-6, 1.0, 50, "linear"),
        ),
    ],
)
def test_lr_forms(tmp_path, lr, expected):
    spec = load_study(write(tmp_path, changed({"search.lr": lr, "search.schedule": "constant"})))
    assert spec.search.lr == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"low": 5, "high": 20}, Range(5, 20, log=True, integer=True)),
        ({"low": 0, "high": 20, "log": False}, Range(0, 20, log=False, integer=True)),
        (7, Fixed(7)),
        ({"choices": [5, 10]}, Choice((5, 10))),
    ],
)
def test_integer_parameters_stay_integers(tmp_path, value, expected):
    spec = load_study(
        write(tmp_path, changed({"search.schedule": {"name": "cosine", "warmup_steps": value}}))
    )
    assert spec.search.schedules[0].params["warmup_steps"] == expected


def test_int_params_table_agrees_with_the_schedule_signatures():
    # oracle: the factories' own defaults (int default -> integer-valued) and the *_steps naming rule
    from pipeline.core.schedules import SCHEDULE_PARAMS, SCHEDULES

    for name, params in SCHEDULE_PARAMS.items():
        signature = inspect.signature(SCHEDULES[name]).parameters
        for p in params:
            default = signature[p].default
            is_int = p.endswith("_steps") or (type(default) is int)
            assert (p in INT_PARAMS) == is_int, (name, p)


def test_sampler_and_pruner_tables_are_constructor_arguments():
    import optuna

    classes = {
        "tpe": optuna.samplers.TPESampler,
        "random": optuna.samplers.RandomSampler,
        "grid": optuna.samplers.GridSampler,
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
        "none": optuna.pruners.NopPruner,
    }
    for name, rules in {**SAMPLER_PARAMS, **PRUNER_PARAMS}.items():
        accepted = inspect.signature(classes[name]).parameters
        assert set(rules) <= set(accepted), name


def test_pruner_params_go_to_the_constructor(tmp_path):
    import optuna

    spec = load_study(write(tmp_path, changed({"pruner": {"name": "hyperband", "max_resource": "auto"}})))
    assert (spec.pruner.name, dict(spec.pruner.params)) == ("hyperband", {"max_resource": "auto"})
    optuna.pruners.HyperbandPruner(**spec.pruner.params)


def test_defaults(tmp_path):
    spec = load_study(write(tmp_path, changed({"search": {"lr": 0.1}})))
    assert spec.name == "study" and spec.seed == 0
    assert [b.name for b in spec.search.optimizers] == ["sgd"]
    assert [b.name for b in spec.search.schedules] == ["constant"]
    assert spec.search.batch_size == Fixed(None) and spec.training.batch_size is None
    assert (spec.budget.trials, spec.budget.timeout) == (100, None)
    assert (spec.sampler.name, spec.pruner.name, spec.tracking.report_points) == ("tpe", "none", 50)
    # None: the dataset's own defaults (the sources' tiny examples are neither split nor standardised)
    assert (spec.data.val_fraction, spec.data.standardize) == (None, None)
