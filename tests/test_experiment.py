"""pipeline/study/experiment.py: a study and a trial's settings into the core's objects, replays, the range test
for a study, and the data-dependent checks that name the study file's key."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.core.schedules import exponential_decay
from pipeline.errors import ConfigError
from pipeline.study.experiment import (
    ReplaySuggester,
    build_components,
    load_study_data,
    replay,
    run_range_test,
)
from pipeline.study.loader import load_study

STUDIES = Path(__file__).resolve().parents[1] / "studies"


@pytest.fixture(scope="module")
def reference():
    spec = load_study(STUDIES / "diabetes-reference.yaml")
    spec = replace(spec, training=replace(spec.training, epochs=30))
    return spec, load_study_data(spec)


PARAMS = {"lr": 0.05, "exponential.decay_rate": 0.01}


def test_a_trial_is_built_from_its_recorded_params(reference):
    spec, data = reference
    settings = spec.search.sample(ReplaySuggester(PARAMS))
    model, optimizer, schedule = build_components(settings, spec, data)
    assert (model.n_features, model.task) == (data.n_features, "regression")
    # full batch: one update per epoch; lr(t) = lr * exp(-decay_rate * t), the closed form
    expected = exponential_decay(0.05, 0.01)
    for t in (0, 1, 29):
        assert schedule(t) == pytest.approx(expected(t)) == pytest.approx(0.05 * math.exp(-0.01 * t))


def test_a_replay_is_exact(reference):
    spec, data = reference
    _, first = replay(spec, data, PARAMS)
    _, again = replay(spec, data, PARAMS)
    np.testing.assert_array_equal(first.val_loss, again.val_loss)
    assert first.epochs_run == 30 and np.isfinite(first.final_loss)


def test_a_replay_needs_every_sampled_param(reference):
    spec, data = reference
    with pytest.raises(KeyError, match="exponential.decay_rate"):
        replay(spec, data, {"lr": 0.05})


def test_a_model_the_data_cannot_take_names_the_study_file_and_key(tmp_path):
    # softmax needs a multiclass target; breast_cancer is binary: only the loaded data can tell.
    raw = yaml.safe_load((STUDIES / "breast-cancer-logistic.yaml").read_text(encoding="utf-8"))
    raw["model"] = {"name": "softmax"}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    spec = load_study(path)
    with pytest.raises(ConfigError) as info:
        load_study_data(spec)  # checked as soon as the data are loaded, before anything is written
    assert info.value.key == "model.name"
    assert str(info.value).startswith(f"{path}: 'model.name': model softmax solves multiclass tasks")
    assert "binary target" in str(info.value) and "use model: logistic or mlp" in str(info.value)


def test_the_range_test_of_the_reference_study_brackets_two_over_lambda_max(reference):
    spec, data = reference
    report = run_range_test(spec, data)
    assert report.optimizer == "sgd" and report.batch_size is None
    # least squares, full batch: gradient descent diverges above 2 / lambda_max; the test finds it within 2x
    assert report.theory_lr is not None
    assert report.theory_lr <= report.diverged_lr <= 2 * report.theory_lr
    assert report.suggestions.high <= report.diverged_lr
