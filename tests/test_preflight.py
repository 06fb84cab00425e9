"""Everything is checked before anything is written (issue 9): every key of the study-file schema broken in turn,
bad stores and unreachable servers, names and paths, extreme numbers. Each bad input exits 2 with the file, the key
and the value in one message, no traceback, and both stores byte-identical."""

from __future__ import annotations

import hashlib
import math
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import cli
from pipeline.config import ROOT, STUDIES_DIR
from pipeline.errors import ConfigError, shown
from pipeline.secrets import mask_url
from pipeline.study.loader import load_study_mapping

BASE = {
    "name": "pre",
    "description": "a valid study",
    "seed": 0,
    "data": {"dataset": "diabetes", "val_fraction": 0.2, "standardize": True},
    "model": {"name": "linear"},
    "training": {"epochs": 5, "batch_size": "full", "divergence_factor": 10},
    "search": {
        "lr": {"low": 1.0e-3, "high": 0.1},
        "optimizer": "sgd",
        "schedule": {"name": "exponential", "decay_rate": {"low": 1.0e-4, "high": 1.0e-1}},
    },
    "budget": {"trials": 2, "timeout": 600},
    "sampler": {"name": "tpe", "n_startup_trials": 5},
    "pruner": {"name": "median", "n_startup_trials": 2},
    "tracking": {"report_points": 5},
}

_SPARE = object()


def edit(path: str, value):
    """BASE with the value at dotted ``path`` replaced (``_SPARE`` deletes it)."""
    study = yaml.safe_load(yaml.safe_dump(BASE))
    *parents, last = path.split(".")
    node = study
    for part in parents:
        node = node[part]
    if value is _SPARE:
        del node[last]
    else:
        node[last] = value
    return study


# A YAML alias bomb as a value: 9**9 strings once expanded, a few hundred bytes on disk.
BOMB = "description:\n  a: &a ['x','x','x','x','x','x','x','x','x']\n" + "".join(
    f"  {b}: &{b} [*{a},*{a},*{a},*{a},*{a},*{a},*{a},*{a},*{a}]\n"
    for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)

# (id, study as a dict or YAML text, the key named in the message, the value shown in it)
CASES = [
    ("name.traversal", edit("name", "../../x"), "name", "'../../x'"),
    ("name.absolute", edit("name", "/tmp/x"), "name", "'/tmp/x'"),
    ("name.dotdot", edit("name", ".."), "name", "'..'"),
    ("name.too-long", edit("name", "n" * 300), "name", "nnnn"),
    ("name.type", edit("name", 5), "name", "5"),
    ("description", edit("description", ["a"]), "description", "['a']"),
    ("seed.negative", edit("seed", -1), "seed", "-1"),
    ("seed.too-large", edit("seed", 4294967296), "seed", "4294967296"),
    ("seed.type", edit("seed", "zero"), "seed", "'zero'"),
    ("unknown-top-key", edit("budgett", 1), "budgett", None),
    ("data.missing", edit("data", _SPARE), "data", None),
    ("data.dataset", edit("data.dataset", "diabetis"), "data.dataset", "'diabetis'"),
    ("data.val_fraction", edit("data.val_fraction", 1.5), "data.val_fraction", "1.5"),
    ("data.standardize", edit("data.standardize", "yes"), "data.standardize", "'yes'"),
    ("data.path", edit("data.path", "x.csv"), "data.path", "'x.csv'"),
    ("data.params", edit("data.params", {"n_samples": 10}), "data.params.n_samples", None),
    ("model.missing", edit("model", _SPARE), "model", None),
    ("model.name", edit("model.name", "linearr"), "model.name", "'linearr'"),
    ("model.param", edit("model.hidden", 3), "model.hidden", None),
    ("training.epochs", edit("training.epochs", 0), "training.epochs", "0"),
    ("training.batch_size", edit("training.batch_size", -2), "training.batch_size", "-2"),
    ("training.divergence_factor", edit("training.divergence_factor", 1), "training.divergence_factor", "1"),
    ("training.unknown", edit("training.epoch", 3), "training.epoch", None),
    ("search.lr.low", edit("search.lr", {"low": 0, "high": 1}), "search.lr.low", "0"),
    ("search.lr.order", edit("search.lr", {"low": 1, "high": 0.1}), "search.lr.high", "0.1"),
    ("search.optimizer", edit("search.optimizer", "sgdd"), "search.optimizer.name", "'sgdd'"),
    ("search.schedule.name", edit("search.schedule.name", "expo"), "search.schedule.name", "'expo'"),
    (
        "search.schedule.param",
        edit("search.schedule.decay_rate", {"low": 0, "high": 0.1}),
        "search.schedule.decay_rate.low",
        "0",
    ),
    ("budget.trials", edit("budget.trials", 0), "budget.trials", "0"),
    ("budget.timeout", edit("budget.timeout", -5), "budget.timeout", "-5"),
    ("sampler.name", edit("sampler.name", "cmaes2"), "sampler.name", "'cmaes2'"),
    ("sampler.param", edit("sampler.n_startup_trials", "many"), "sampler.n_startup_trials", "'many'"),
    ("pruner.name", edit("pruner.name", "medium"), "pruner.name", "'medium'"),
    ("pruner.param", edit("pruner.n_startup_trials", -1), "pruner.n_startup_trials", "-1"),
    ("tracking.report_points", edit("tracking.report_points", 0), "tracking.report_points", "0"),
    (
        "data.params.n_samples.huge",
        {**edit("data", {"dataset": "regression", "params": {"n_samples": 10**12}})},
        "data.params.n_samples",
        "1000000000000",
    ),
    ("model.task.logistic-on-regression", edit("model.name", "logistic"), "model.name", "'logistic'"),
    ("model.task.softmax-on-regression", edit("model.name", "softmax"), "model.name", "'softmax'"),
    (
        "model.task.softmax-on-binary",
        {**edit("data", {"dataset": "breast_cancer"}), "model": {"name": "softmax"}},
        "model.name",
        "'softmax'",
    ),
    (
        "alias-bomb",
        "name: bomb\n"
        + BOMB
        + "data: {dataset: diabetes}\nmodel: linear\ntraining: {epochs: 1}\nsearch: {lr: 0.1}\n",
        "description",
        "{'a'",
    ),
    ("value.too-long", edit("data.dataset", "d" * 5000), "data.dataset", "(5000 characters)"),
]


EP = f"{STUDIES_DIR / 'models' / 'poly_ridge.py'}:"  # absolute: the bad study files are written elsewhere
EP_DATA = {"entry_point": EP + "make_data"}
EP_MODEL = {"entry_point": EP + "build"}


def tpe(**params):
    return edit("sampler", {"name": "tpe", **params})


def pruner(name, **params):
    return edit("pruner", {"name": name, **params})


def lr_auto(**auto):
    return edit("search.lr", {"auto": auto})


def optimizer(name, **params):
    return edit("search.optimizer", {"name": name, **params})


def schedule(name, **params):
    return edit("search.schedule", {"name": name, **params})


# The rest of the schema: at least one row per key (test_the_table_has_a_row_for_every_schema_key checks it).
CASES += [
    # data: a CSV (data.csv, written by the fixture), a generator's params, an entry point
    (
        "data.target",
        edit("data", {"dataset": "csv", "path": "data.csv", "target": "price"}),
        "data.target",
        "'price'",
    ),
    ("data.target.not-csv", edit("data.target", "y"), "data.target", "'y'"),
    (
        "data.task",
        edit("data", {"dataset": "csv", "path": "data.csv", "target": "y", "task": "regresion"}),
        "data.task",
        "'regresion'",
    ),
    (
        "data.params.n_features",
        edit("data", {"dataset": "regression", "params": {"n_features": 10**5}}),
        "data.params.n_features",
        "100000",
    ),
    (
        "data.params.n_informative",
        edit("data", {"dataset": "regression", "params": {"n_informative": True}}),
        "data.params.n_informative",
        "True",
    ),
    (
        "data.params.noise",
        edit("data", {"dataset": "regression", "params": {"noise": "high"}}),
        "data.params.noise",
        "'high'",
    ),
    (
        "data.params.bias",
        edit("data", {"dataset": "regression", "params": {"bias": math.inf}}),
        "data.params.bias",
        "inf",
    ),
    (
        "data.params.factor",
        edit("data", {"dataset": "circles", "params": {"factor": [0.5]}}),
        "data.params.factor",
        "[0.5]",
    ),
    ("data.entry_point", edit("data", {"entry_point": "nope.py:make"}), "data.entry_point", "'nope.py:make'"),
    ("data.entry_point.form", edit("data", {"entry_point": "make_data"}), "data.entry_point", "'make_data'"),
    ("data.entry_point.params", edit("data", {**EP_DATA, "params": [300]}), "data.params", "[300]"),
    (
        "data.entry_point.params.seed",
        edit("data", {**EP_DATA, "params": {"seed": 1}}),
        "data.params.seed",
        None,
    ),
    ("data.entry_point.unknown", edit("data", {**EP_DATA, "dataset": "diabetes"}), "data.dataset", None),
    # model: the MLP's parameters, an entry point and its gradient check
    (
        "model.activation",
        edit("model", {"name": "mlp", "hidden": 4, "activation": "relu6"}),
        "model.activation",
        "'relu6'",
    ),
    ("model.hidden.mlp", edit("model", {"name": "mlp", "hidden": 0}), "model.hidden", "0"),
    (
        "model.entry_point",
        edit("model", {"entry_point": "nope.py:build"}),
        "model.entry_point",
        "'nope.py:build'",
    ),
    (
        "model.entry_point.function",
        edit("model", {"entry_point": EP + "bulid"}),
        "model.entry_point",
        "bulid'",
    ),
    (
        "model.entry_point.wrong-gradient",
        {**edit("data", EP_DATA), "model": {"entry_point": EP + "build_wrong"}},
        "model.entry_point",
        "build_wrong'",
    ),
    ("model.params", edit("model", {**EP_MODEL, "params": "degree 3"}), "model.params", "'degree 3'"),
    (
        "model.params.injected",
        edit("model", {**EP_MODEL, "params": {"n_features": 2}}),
        "model.params.n_features",
        None,
    ),
    ("model.gradient_check", edit("model", {**EP_MODEL, "gradient_check": 3}), "model.gradient_check", "3"),
    (
        "model.gradient_check.points",
        edit("model", {**EP_MODEL, "gradient_check": {"points": 0}}),
        "model.gradient_check.points",
        "0",
    ),
    (
        "model.gradient_check.rtol",
        edit("model", {**EP_MODEL, "gradient_check": {"rtol": -1e-4}}),
        "model.gradient_check.rtol",
        "-0.0001",
    ),
    (
        "model.gradient_check.atol",
        edit("model", {**EP_MODEL, "gradient_check": {"atol": "tiny"}}),
        "model.gradient_check.atol",
        "'tiny'",
    ),
    # search: batch size, the value forms, lr auto, every optimizer's and schedule's parameters
    ("search.batch_size", edit("search.batch_size", "half"), "search.batch_size", "'half'"),
    (
        "search.batch_size.low",
        edit("search.batch_size", {"low": 0, "high": 64}),
        "search.batch_size.low",
        "0",
    ),
    (
        "search.batch_size.high",
        edit("search.batch_size", {"low": 8, "high": 4}),
        "search.batch_size.high",
        "4",
    ),
    (
        "search.batch_size.log",
        edit("search.batch_size", {"low": 8, "high": 64, "log": "yes"}),
        "search.batch_size.log",
        "'yes'",
    ),
    (
        "search.batch_size.choices",
        edit("search.batch_size", {"choices": [32, 0]}),
        "search.batch_size.choices[1]",
        "0",
    ),
    ("search.lr.log", edit("search.lr", {"low": 1e-3, "high": 0.1, "log": 1}), "search.lr.log", "1"),
    ("search.lr.choices", edit("search.lr", {"choices": [0.1, 0.1]}), "search.lr.choices", "[0.1, 0.1]"),
    ("search.lr.choices.empty", edit("search.lr", {"choices": []}), "search.lr.choices", "[]"),
    (
        "search.lr.one_minus",
        edit("search.lr", {"one_minus": {"low": 0.1, "high": 0.2}}),
        "search.lr.one_minus",
        None,
    ),
    ("search.lr.auto", edit("search.lr", {"auto": 5}), "search.lr.auto", "5"),
    ("search.lr.auto.start_lr", lr_auto(start_lr=0), "search.lr.auto.start_lr", "0"),
    ("search.lr.auto.end_lr", lr_auto(start_lr=1e-3, end_lr=1e-4), "search.lr.auto.end_lr", "0.0001"),
    ("search.lr.auto.steps", lr_auto(steps=1), "search.lr.auto.steps", "1"),
    ("search.lr.auto.ramp", lr_auto(ramp="linear-ish"), "search.lr.auto.ramp", "'linear-ish'"),
    ("search.lr.auto.stop_factor", lr_auto(stop_factor=1), "search.lr.auto.stop_factor", "1"),
    (
        "search.lr.auto.step_lr",
        lr_auto(ramp="segments", step_lr=0, iterations_per_value=2),
        "search.lr.auto.step_lr",
        "0",
    ),
    (
        "search.lr.auto.iterations_per_value",
        lr_auto(iterations_per_value=3),
        "search.lr.auto.iterations_per_value",
        "3",
    ),
    (
        "search.optimizer.choices",
        edit("search.optimizer", {"choices": ["sgd", "sgd"]}),
        "search.optimizer.choices",
        "['sgd', 'sgd']",
    ),
    ("search.optimizer.beta", optimizer("momentum", beta=1.5), "search.optimizer.beta", "1.5"),
    (
        "search.optimizer.beta.low",
        optimizer("momentum", beta={"low": -0.5, "high": 0.9, "log": False}),
        "search.optimizer.beta.low",
        "-0.5",
    ),
    (
        "search.optimizer.beta.high",
        optimizer("momentum", beta={"low": 0.5, "high": 0.4, "log": False}),
        "search.optimizer.beta.high",
        "0.4",
    ),
    (
        "search.optimizer.beta.log",
        optimizer("momentum", beta={"low": 0.5, "high": 0.9, "log": "no"}),
        "search.optimizer.beta.log",
        "'no'",
    ),
    (
        "search.optimizer.beta.log-near-1",
        optimizer("momentum", beta={"low": 0.5, "high": 0.9}),
        "search.optimizer.beta",
        "'low': 0.5",
    ),
    (
        "search.optimizer.beta.choices",
        optimizer("momentum", beta={"choices": [0.9, 2.0]}),
        "search.optimizer.beta.choices[1]",
        "2.0",
    ),
    (
        "search.optimizer.beta.one_minus",
        optimizer("momentum", beta={"one_minus": {"low": 0.01, "high": 0.1}, "low": 0.1}),
        "search.optimizer.beta",
        "'one_minus'",
    ),
    (
        "search.optimizer.beta.one_minus.low",
        optimizer("momentum", beta={"one_minus": {"low": 0, "high": 0.1}}),
        "search.optimizer.beta.one_minus.low",
        "0",
    ),
    (
        "search.optimizer.beta.one_minus.high",
        optimizer("momentum", beta={"one_minus": {"low": 0.1, "high": 0.05}}),
        "search.optimizer.beta.one_minus.high",
        "0.05",
    ),
    ("search.optimizer.beta1", optimizer("adam", beta1=1.0), "search.optimizer.beta1", "1.0"),
    ("search.optimizer.beta2", optimizer("adam", beta2=-0.1), "search.optimizer.beta2", "-0.1"),
    ("search.optimizer.eps", optimizer("adagrad", eps=0.0), "search.optimizer.eps", "0.0"),
    ("search.optimizer.rho", optimizer("rmsprop", rho=2.0), "search.optimizer.rho", "2.0"),
    ("search.optimizer.unknown", optimizer("sgd", beta=0.9), "search.optimizer.beta", None),
    ("search.schedule.choices", edit("search.schedule", {"choices": []}), "search.schedule.choices", "[]"),
    (
        "search.schedule.warmup_steps",
        schedule("constant", warmup_steps=-1),
        "search.schedule.warmup_steps",
        "-1",
    ),
    (
        "search.schedule.warmup_steps.too-long",
        schedule("constant", warmup_steps=10),
        "search.schedule.warmup_steps",
        "10",
    ),
    (
        "search.schedule.decay_steps",
        schedule("step", decay_steps=0, gamma=0.5),
        "search.schedule.decay_steps",
        "0",
    ),
    ("search.schedule.decay_steps.missing", schedule("step", gamma=0.5), "search.schedule.decay_steps", None),
    ("search.schedule.gamma", schedule("step", decay_steps=2, gamma=1.5), "search.schedule.gamma", "1.5"),
    (
        "search.schedule.min_lr_ratio",
        schedule("cosine", min_lr_ratio=2.0),
        "search.schedule.min_lr_ratio",
        "2.0",
    ),
    (
        "search.schedule.warmup_fraction",
        schedule("one_cycle", warmup_fraction=1.5),
        "search.schedule.warmup_fraction",
        "1.5",
    ),
    (
        "search.schedule.initial_lr_ratio",
        schedule("one_cycle", initial_lr_ratio=-1.0),
        "search.schedule.initial_lr_ratio",
        "-1.0",
    ),
    (
        "search.schedule.half_cycle_steps",
        schedule("cyclic", half_cycle_steps=0),
        "search.schedule.half_cycle_steps",
        "0",
    ),
    ("search.schedule.factor", schedule("plateau", factor=1.5), "search.schedule.factor", "1.5"),
    ("search.schedule.patience", schedule("plateau", patience=-1), "search.schedule.patience", "-1"),
    ("search.schedule.threshold", schedule("plateau", threshold=-0.1), "search.schedule.threshold", "-0.1"),
    ("search.schedule.cooldown", schedule("plateau", cooldown=-1), "search.schedule.cooldown", "-1"),
    # budget: the study-wide cap and convergence
    ("budget.max_trials", edit("budget.max_trials", 0), "budget.max_trials", "0"),
    ("budget.max_trials.type", edit("budget.max_trials", 2.5), "budget.max_trials", "2.5"),
    ("budget.patience", edit("budget.patience", 0), "budget.patience", "0"),
    (
        "budget.tolerance",
        edit("budget", {"trials": 2, "patience": 3, "tolerance": 1.5}),
        "budget.tolerance",
        "1.5",
    ),
    ("budget.tolerance.without-patience", edit("budget.tolerance", 0.01), "budget.tolerance", "0.01"),
    ("budget.unknown", edit("budget.max_trial", 5), "budget.max_trial", None),
    # sampler (tpe) and pruner parameters
    ("sampler.n_ei_candidates", tpe(n_ei_candidates=0), "sampler.n_ei_candidates", "0"),
    ("sampler.multivariate", tpe(multivariate="yes"), "sampler.multivariate", "'yes'"),
    ("sampler.group", tpe(group=True, multivariate=False), "sampler.group", "True"),
    ("sampler.constant_liar", tpe(constant_liar=1), "sampler.constant_liar", "1"),
    ("sampler.consider_endpoints", tpe(consider_endpoints="no"), "sampler.consider_endpoints", "'no'"),
    ("sampler.prior_weight", tpe(prior_weight=0), "sampler.prior_weight", "0"),
    ("sampler.grid-needs-choices", edit("sampler", "grid"), "search.lr", "{'low': 0.001"),
    ("pruner.n_warmup_steps", pruner("median", n_warmup_steps=-1), "pruner.n_warmup_steps", "-1"),
    ("pruner.interval_steps", pruner("median", interval_steps=0), "pruner.interval_steps", "0"),
    ("pruner.n_min_trials", pruner("median", n_min_trials=0), "pruner.n_min_trials", "0"),
    ("pruner.percentile", pruner("percentile", percentile=150), "pruner.percentile", "150"),
    ("pruner.percentile.missing", pruner("percentile"), "pruner.percentile", None),
    ("pruner.min_resource", pruner("hyperband", min_resource=0), "pruner.min_resource", "0"),
    ("pruner.max_resource", pruner("hyperband", max_resource="lots"), "pruner.max_resource", "'lots'"),
    ("pruner.reduction_factor", pruner("hyperband", reduction_factor=1), "pruner.reduction_factor", "1"),
    ("pruner.bootstrap_count", pruner("hyperband", bootstrap_count=-1), "pruner.bootstrap_count", "-1"),
    (
        "pruner.min_early_stopping_rate",
        pruner("successive_halving", min_early_stopping_rate=-1),
        "pruner.min_early_stopping_rate",
        "-1",
    ),
    # workers (several machines): heartbeat, grace period, retries
    ("workers", edit("workers", 5), "workers", "5"),
    (
        "workers.heartbeat_interval",
        edit("workers", {"heartbeat_interval": 0}),
        "workers.heartbeat_interval",
        "0",
    ),
    (
        "workers.heartbeat_interval.type",
        edit("workers", {"heartbeat_interval": 2.5}),
        "workers.heartbeat_interval",
        "2.5",
    ),
    (
        "workers.grace_period",
        edit("workers", {"heartbeat_interval": 10, "grace_period": 5}),
        "workers.grace_period",
        "5",
    ),
    (
        "workers.grace_period.without-interval",
        edit("workers", {"grace_period": 30}),
        "workers.grace_period",
        "30",
    ),
    ("workers.max_retry", edit("workers", {"max_retry": -1}), "workers.max_retry", "-1"),
    ("workers.unknown", edit("workers", {"heartbeat": 5}), "workers.heartbeat", None),
    ("tracking.unknown", edit("tracking.points", 5), "tracking.points", None),
]


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A journal and an MLflow store holding one finished study, to check that bad input leaves them alone."""
    root = tmp_path_factory.mktemp("preflight")
    good = root / "good.yaml"
    good.write_text(yaml.safe_dump(BASE), encoding="utf-8")
    (root / "data.csv").write_text("a,b,y\n1,2,3\n4,5,6\n7,8,9\n1,1,1\n2,2,2\n", encoding="utf-8")
    journal, db = root / "optuna.journal", root / "mlruns" / "mlflow.db"
    args = ["--storage", str(journal), "--tracking-uri", f"sqlite:///{db}"]
    assert cli.main(["tune", str(good), *args, "--no-progress"]) == 0
    return root, journal, db, args


def run_cli(capsys, argv) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.slow
@pytest.mark.parametrize(("study", "key", "value"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_broken_key_exits_2_naming_file_key_value_and_writes_nothing(stores, capsys, study, key, value):
    root, journal, db, args = stores
    path = root / "bad.yaml"
    path.write_text(study if isinstance(study, str) else yaml.safe_dump(study), encoding="utf-8")
    before = digest(journal), digest(db)
    code, text = run_cli(capsys, ["tune", str(path), *args, "--no-progress"])
    assert code == 2, text
    assert "Traceback" not in text
    (line,) = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert str(path.as_posix()) in line and f"'{key}'" in line, line
    if value is not None:
        assert value in line, line
    assert len(line) < 1500, f"message of {len(line)} characters"
    assert (digest(journal), digest(db)) == before


_BOGUS = "zz_not_a_key"


def _listed(section, value) -> set[str]:
    """The keys the loader lists as valid when ``section`` (a dotted path; None = the top) holds an unknown key."""
    study = yaml.safe_load(yaml.safe_dump(BASE))
    if section is None:
        study[_BOGUS] = 1
    else:
        *parents, last = section.split(".")
        node = study
        for part in parents:
            node = node[part]
        node[last] = value
    with pytest.raises(ConfigError) as caught:
        load_study_mapping(study, base_dir=STUDIES_DIR)
    found = re.search(
        r"'([^']*)': unknown key; (?:valid keys are ([^.]*)\.|.* takes no parameters)", str(caught.value)
    )
    assert found and found[1].endswith(_BOGUS), str(caught.value)
    where = found[1].removesuffix(_BOGUS)
    return {where + k for k in found[2].split(", ")} if found[2] else set()


def schema_keys() -> set[str]:
    """Every key of the study-file schema, as the loader itself lists them when a section holds an unknown key
    (so a key added to the loader shows up here without anyone updating this test).

    Parameters under a catalogue (sampler, pruner, optimizer, schedule, model, a dataset's params) are taken from
    every entry of the catalogue, under their generic path (``sampler.n_startup_trials`` for every sampler that
    takes it). The value forms of a searched parameter (low, high, log, choices, one_minus) are read by one
    function for every parameter (SearchValueReader.param): they are probed on ``search.lr``, ``search.batch_size``
    and on a factor near 1 (``search.optimizer.beta``, the only kind that takes one_minus).
    """
    from pipeline.core.models import MODEL_PARAMS
    from pipeline.core.optimizers import OPTIMIZER_PARAMS
    from pipeline.core.schedules import SCHEDULE_PARAMS
    from pipeline.datasets import DATASET_PARAMS
    from pipeline.study.space import PRUNER_PARAMS, SAMPLER_PARAMS

    bogus = {_BOGUS: 1}
    ep = "models/poly_ridge.py:"
    probes = [
        (None, None),
        ("data", {"dataset": "diabetes", **bogus}),
        ("data", {"entry_point": ep + "make_data", **bogus}),
        *(("data", {"dataset": d, "params": bogus}) for d in DATASET_PARAMS if DATASET_PARAMS[d]),
        *(("model", {"name": m, **bogus}) for m in MODEL_PARAMS),
        ("model", {"entry_point": ep + "build", **bogus}),
        ("model", {"entry_point": ep + "build", "gradient_check": bogus}),
        *((s, bogus) for s in ("training", "budget", "tracking", "workers", "search")),
        *(("sampler", {"name": s, **bogus}) for s in SAMPLER_PARAMS),
        *(("pruner", {"name": p, **bogus}) for p in PRUNER_PARAMS),
        *(("search.optimizer", {"name": o, **bogus}) for o in OPTIMIZER_PARAMS),
        ("search.optimizer", {"choices": ["sgd"], **bogus}),
        *(("search.schedule", {"name": s, **bogus}) for s in SCHEDULE_PARAMS),
        ("search.schedule", {"choices": ["constant"], **bogus}),
        ("search.lr", {"low": 1e-3, "high": 0.1, **bogus}),
        ("search.lr", {"auto": {}, **bogus}),
        ("search.lr", {"auto": bogus}),
        ("search.batch_size", {"low": 8, "high": 64, **bogus}),
        ("search.optimizer", {"name": "momentum", "beta": {"low": 0.5, "high": 0.9, "log": False, **bogus}}),
        ("search.optimizer", {"name": "momentum", "beta": {"one_minus": bogus}}),
    ]
    keys = set().union(*(_listed(section, value) for section, value in probes))
    return keys | {
        "search.optimizer.name",
        "search.schedule.name",
    }  # the name form (a name is required there)


def test_the_table_has_a_row_for_every_schema_key():
    """Every key the loader accepts is broken by at least one row of CASES: a row naming the key itself or a key
    under it (``search.lr.auto`` by ``search.lr.auto.steps``). A key added to the loader without a row fails here."""
    named = [case[2] for case in CASES]
    missing = sorted(
        key
        for key in schema_keys()
        if not any(n == key or n.startswith((f"{key}.", f"{key}[")) for n in named)
    )
    assert not missing, f"keys of the study-file schema with no row in CASES: {missing}"
    # The probe itself sees the sections added last (budgets, several machines) and a catalogue's parameters.
    assert {"budget.max_trials", "budget.patience", "budget.tolerance"} <= schema_keys()
    assert {"workers.heartbeat_interval", "workers.grace_period", "workers.max_retry"} <= schema_keys()
    assert {
        "pruner.min_early_stopping_rate",
        "search.schedule.cooldown",
        "data.params.factor",
    } <= schema_keys()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "key", "shown_value"),
    [
        (["--storage", ""], "--storage", "''"),
        (["--worker", "4295"], "--worker", "4295"),
        (["--tracking-uri", "http://127.0.0.1:1"], "--tracking-uri", "http://127.0.0.1:1"),
        (["--storage", "postgresql://u:hunter22@127.0.0.1:1/db"], "--storage", "u:***@127.0.0.1:1"),
        (["--tracking-uri", "sqlite:////etc/hostname/mlflow.db"], "--tracking-uri", "/etc/hostname"),
        (["--tracking-uri", "sqlite:///{root}/good.yaml"], "--tracking-uri", "good.yaml"),
        (["--storage", "{root}/good.yaml"], "--storage", "good.yaml"),
    ],
    ids=[
        "empty-storage",
        "worker",
        "tracking-unreachable",
        "storage-unreachable",
        "tracking-under-a-file",
        "tracking-not-sqlite",
        "storage-not-a-journal",
    ],
)
def test_bad_stores_and_arguments_exit_2_before_anything_is_written(stores, capsys, extra, key, shown_value):
    root, journal, db, args = stores
    extra = [e.replace("{root}", str(root)) for e in extra]
    argv = ["tune", str(root / "good.yaml"), *args, *extra, "--no-progress"]
    before = digest(journal), digest(db), digest(root / "good.yaml")
    code, text = run_cli(capsys, argv)
    assert code == 2, text
    assert f"'{key}'" in text and shown_value in text, text
    assert "Traceback" not in text and "hunter22" not in text
    assert (digest(journal), digest(db), digest(root / "good.yaml")) == before


def test_report_out_under_a_file_and_best_with_an_empty_storage_exit_2(stores, capsys):
    root, journal, db, args = stores
    code, text = run_cli(
        capsys, ["report", str(root / "good.yaml"), *args, "--out", str(root / "good.yaml/x")]
    )
    assert code == 2 and "'--out'" in text and "which is a file" in text, text
    code, text = run_cli(capsys, ["best", str(root / "good.yaml"), "--storage", ""])
    assert code == 2 and "'--storage'" in text and "must not be empty" in text, text


@pytest.mark.slow
def test_a_server_that_accepts_and_never_answers_is_given_up_within_the_timeout(tmp_path):
    """A tracking server that accepts connections and never answers: exit 2 with a message, not a hang."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])  # accept, never answer
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump(BASE), encoding="utf-8")
    uri = f"http://127.0.0.1:{server.getsockname()[1]}"
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline",
                "tune",
                str(study),
                "--storage",
                str(tmp_path / "j"),
                "--tracking-uri",
                uri,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()
    assert done.returncode == 2, done.stderr
    assert "cannot reach the MLflow tracking server within 10 s" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "j").exists()


def test_messages_are_bounded_and_masked():
    assert mask_url("postgresql://user:s3cr3t@db:5432/x") == "postgresql://user:***@db:5432/x"
    assert mask_url("http://u:p%40ss@h/") == "http://u:***@h/"
    assert mask_url("mysql+pymysql://root@db/x") == "mysql+pymysql://root@db/x"  # nothing to hide
    assert mask_url("sqlite:///x.db?password=abc&x=1") == "sqlite:///x.db?password=***&x=1"
    error = ConfigError("cannot open.", key="--storage", value="postgresql://a:topsecret@h/d")
    assert "topsecret" not in str(error) and "a:***@h" in str(error)
    nested: list = ["x"] * 9
    for _ in range(8):
        nested = [nested] * 9  # 9**9 leaves, shared: the YAML alias bomb's shape
    assert len(shown(nested)) <= 220
    assert shown("v" * 10_000).endswith("(10000 characters)")


def test_standardising_values_near_the_float_limit_does_not_overflow():
    """Standardisation is scale-invariant: data near 1e308 must standardise to exactly what the same data
    scaled down to ~1 give (the oracle), with no overflow warning."""
    from pipeline.core.arrays import prepare

    rng = np.random.default_rng(0)
    small = rng.normal(size=(50, 3)) * [1.0, 2.0, 0.5] + [0.1, -0.3, 0.0]
    y = rng.normal(size=50)
    common = dict(
        name="x",
        task="regression",
        y=y,
        classes=(),
        feature_names=("a", "b", "c"),
        target_name="y",
        source="test",
        val_fraction=0.2,
        seed=0,
        standardize=True,
        standardize_target=True,
    )
    with np.errstate(all="raise"):
        huge = prepare(X=small * 1e307, **common)
    reference = prepare(X=small, **common)
    assert np.isfinite(huge.X_train).all() and np.isfinite(huge.X_val).all()
    np.testing.assert_allclose(huge.X_train, reference.X_train, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(huge.X_val, reference.X_val, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_lr_range_test_on_unstandardised_data_restarts_lower_and_finds_the_theory_bound(tmp_path, capsys):
    """Features ~1e5 and not standardised: the ramp's first rate (1e-7) is already past divergence. The test
    restarts lower by itself, and its divergence point lands within 3x of 2/lambda_max (least-squares theory)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(1e5, 2e5, (200, 3))
    rows = ["a,b,c,y"] + [f"{a},{b},{c},{a + 2 * b + 3 * c}" for a, b, c in x]
    (tmp_path / "big.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    study = {
        "name": "big",
        "data": {"dataset": "csv", "path": "big.csv", "target": "y", "standardize": False},
        "model": "linear",
        "training": {"epochs": 5},
        "search": {"lr": "auto"},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study), encoding="utf-8")
    args = ["--storage", str(tmp_path / "j"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    code, text = run_cli(capsys, ["lr-find", str(tmp_path / "s.yaml"), *args])
    assert code == 0, text
    assert "ramp restarted" in text
    diverged = float(text.split("divergence point")[1].split()[0])
    theory = float(text.split("2/lambda_max")[1].split()[0])
    assert theory / 3 < diverged < theory * 3
    # A segments ramp cannot restart itself: exit 2 and the fix in one line.
    study["search"]["lr"] = {
        "auto": {
            "ramp": "segments",
            "start_lr": 0.01,
            "step_lr": 0.01,
            "iterations_per_value": 2,
            "end_lr": 0.1,
        }
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study), encoding="utf-8")
    code, text = run_cli(capsys, ["lr-find", str(tmp_path / "s.yaml"), *args])
    assert code == 2 and "'search.lr'" in text and "data.standardize: true" in text, text
