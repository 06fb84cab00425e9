"""pipeline/study/loader.py: a study file into a validated StudySpec. Every kind of mistake fails with one message
shape, 'FILE: 'KEY': MESSAGE Got VALUE instead.', naming the file, the key path and the value; file-level errors
(YAML, empty, missing) name the file; command-line overrides name the option; defaults are what README says.

The ``search`` section's values have their own file, test_search_reader.py (it uses the helpers below)."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import pytest
import yaml

from pipeline.errors import ConfigError
from pipeline.study.loader import load_study
from pipeline.study.space import Fixed, Range

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
    (
        {"training.epoch": 3},
        "training.epoch",
        r"valid keys are epochs, batch_size, divergence_factor",
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
    ({"pruner": {"name": "percentile"}}, "pruner.percentile", r"missing required key", NO_VALUE),
    # wrong types, NaN, inf
    ({"training.epochs": "ten"}, "training.epochs", r"must be an int >= 1\.", "ten"),
    ({"training.epochs": 2.5}, "training.epochs", r"must be an int >= 1\.", 2.5),
    ({"training.divergence_factor": 1}, "training.divergence_factor", r"must be a float > 1\.", 1),
    ({"data.standardize": "yes please"}, "data.standardize", r"must be true or false\.", "yes please"),
    ({"data.val_fraction": 1.0}, "data.val_fraction", r"must be a float in \[0, 1\)\.", 1.0),
    ({"seed": -1}, "seed", r"must be an int >= 0\.", -1),
    ({"tracking": {"report_points": 0}}, "tracking.report_points", r"must be an int >= 1\.", 0),
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


# ----------------------------------------------------------------------------------------------- a study as a dict


def test_a_dict_study_loads_as_the_same_file_would(tmp_path):
    from pipeline.study.loader import load_study_mapping

    from_file = load_study(write(tmp_path, {**BASE, "name": "same"}))
    from_dict = load_study_mapping({**BASE, "name": "same"})
    assert (from_dict.name, from_dict.search, from_dict.training) == (
        from_file.name,
        from_file.search,
        from_file.training,
    )


def test_a_dict_study_needs_a_name_and_a_mapping():
    from pipeline.study.loader import load_study_mapping

    with pytest.raises(
        ConfigError, match=r"^<study dict>: 'name': missing required key \(a study given as a dict"
    ):
        load_study_mapping(BASE)
    with pytest.raises(
        ConfigError, match=r"^<study dict>: a study must be a path or a mapping \(dict\)\. Got 3"
    ):
        load_study_mapping(3)


def test_a_dict_studys_csv_path_is_relative_to_base_dir(tmp_path):
    from pipeline.study.loader import load_study_mapping

    (tmp_path / "houses.csv").write_text("area,price\n50,100\n80,180\n")
    raw = {**BASE, "name": "h", "data": {"dataset": "csv", "path": "houses.csv", "target": "price"}}
    assert load_study_mapping(raw, base_dir=tmp_path).data.path == (tmp_path / "houses.csv").resolve()


def test_sections_replace_the_files_and_are_validated_the_same_way(tmp_path):
    path = write(tmp_path, BASE)
    assert load_study(path, sections={"training": {"epochs": 20}}).training.epochs == 20
    expect_error(path, "training.epochs", r"must be an int >= 1\.", 0, sections={"training": {"epochs": 0}})
