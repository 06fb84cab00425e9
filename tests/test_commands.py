"""pipeline/tuning/commands.py: what `report` and `lr-find` attach to a study and which pictures they leave out.
Real Optuna studies (in memory, or in a journal file with its artifact folder beside it); importance is left out
below 10 complete trials per parameter, counted here by hand. The commands end to end (plots, MLflow) are
test_report.py's, test_lrfind.py's and test_lr_auto.py's subject."""

from __future__ import annotations

import optuna
import pytest
from optuna.artifacts import get_all_artifact_meta
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from test_settings import STUDY, spec_of

from pipeline.study.space import Range
from pipeline.tuning.commands import (
    MIN_TRIALS_PER_PARAM,
    attach_artifact,
    importance_caveat,
    param_importances,
    spec_as_run,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def study_with(trials: list[dict], values=None) -> optuna.Study:
    """An in-memory study of complete trials with the given params (floats in [0, 1], a categorical 'schedule')."""
    study = optuna.create_study()
    for k, params in enumerate(trials):
        distributions = {
            name: optuna.distributions.CategoricalDistribution(["constant", "step"])
            if name == "schedule"
            else optuna.distributions.FloatDistribution(0.0, 1.0)
            for name in params
        }
        value = values[k] if values is not None else sum(v for v in params.values() if isinstance(v, float))
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=value))
    return study


def test_one_parameter_needs_no_importance_and_no_caveat():
    study = study_with([{"lr": i / 20} for i in range(20)])
    assert importance_caveat(study) is None
    assert param_importances(study) == {}


def test_a_branch_sampled_by_too_few_complete_trials_is_named_with_its_count():
    assert MIN_TRIALS_PER_PARAM == 10
    # 12 trials: lr in all, step.decay in the 4 that chose step, schedule in all
    trials = [
        {"lr": i / 12, "schedule": "step", "step.decay": 0.1 * i}
        if i < 4
        else {"lr": i / 12, "schedule": "constant"}
        for i in range(12)
    ]
    caveat = importance_caveat(study_with(trials))
    assert caveat == (
        "importance left out: it needs 10 complete trials per parameter (per branch of a conditional space); "
        "complete trials that sampled step.decay 4"
    )
    assert param_importances(study_with(trials)) == {}


def test_enough_trials_per_parameter_give_importances_that_sum_to_one():
    trials = [{"lr": (i % 7) / 7, "decay": (i % 3) / 3} for i in range(12)]
    values = [10 * t["lr"] + 0.01 * t["decay"] for t in trials]  # lr decides the loss
    study = study_with(trials, values)
    assert importance_caveat(study) is None
    importances = param_importances(study)
    assert set(importances) == {"lr", "decay"}
    assert sum(importances.values()) == pytest.approx(1.0)
    assert importances["lr"] > importances["decay"]


def test_a_report_attached_twice_replaces_the_first_file_in_the_artifact_folder(tmp_path):
    journal = tmp_path / "optuna.journal"
    study = optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(journal))))
    picture = tmp_path / "curves.png"
    picture.write_bytes(b"first")
    attach_artifact(study, picture, str(journal))
    picture.write_bytes(b"second, longer")
    attach_artifact(study, picture, str(journal))
    (meta,) = get_all_artifact_meta(study)
    assert meta.filename == "curves.png"
    stored = tmp_path / "artifacts" / meta.artifact_id  # beside the journal, where `make dashboard` looks
    assert stored.read_bytes() == b"second, longer"
    assert [p.name for p in (tmp_path / "artifacts").iterdir()] == [meta.artifact_id]


def test_a_study_run_with_lr_auto_is_replayed_over_the_range_it_searched(tmp_path):
    spec = spec_of(tmp_path, {**STUDY, "search": {**STUDY["search"], "lr": "auto"}})
    study = optuna.create_study()
    study.set_user_attr("lr_range", [2e-4, 0.3])
    assert spec_as_run(spec, study).search.lr == Range(2e-4, 0.3, log=True)
