"""pipeline/study/spec.py: the typed study, as the shipped study files load into it; the tables of integer,
sampler and pruner parameters agree with the factories and constructors they feed.

How a file is read and refused is test_loader.py's subject, the ``search`` section test_search_reader.py's."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from pipeline.study.loader import load_study
from pipeline.study.space import INT_PARAMS, PRUNER_PARAMS, SAMPLER_PARAMS, Range
from pipeline.study.spec import StudySpec

STUDIES = sorted((Path(__file__).resolve().parent.parent / "studies").glob("*.yaml"))


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
