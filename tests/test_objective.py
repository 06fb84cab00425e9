"""pipeline/tuning/objective.py: one trial, read top to bottom, against a real in-memory Optuna study (no MLflow):
what is reported, how a trial ends (complete, pruned because it diverged), and what it records."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from optuna.trial import TrialState

from pipeline.study.experiment import load_study_data, replay
from pipeline.study.loader import load_study
from pipeline.tuning.objective import Objective, last_shown_epoch, report_epochs

STUDY = Path(__file__).resolve().parents[1] / "studies" / "diabetes-reference.yaml"
EPOCHS, POINTS = 40, 5


@pytest.mark.parametrize(
    ("epochs", "points", "expected"),
    [
        (300, 4, {0, 100, 199, 299}),  # 0, 99.67, 199.33, 299 rounded
        (5, 50, {0, 1, 2, 3, 4}),  # more points than epochs: every epoch
        (10, 2, {0, 9}),  # always the first and the last
    ],
)
def test_reported_epochs_are_evenly_spaced_with_both_ends(epochs, points, expected):
    assert report_epochs(epochs, points) == expected


def study_file(tmp_path, lr) -> Path:
    raw = yaml.safe_load(STUDY.read_text(encoding="utf-8"))
    raw["training"]["epochs"] = EPOCHS
    raw["search"]["lr"] = lr
    raw["tracking"] = {"report_points": POINTS}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def one_trial(tmp_path, lr) -> tuple[optuna.trial.FrozenTrial, object, object]:
    spec = load_study(study_file(tmp_path, lr))
    data = load_study_data(spec)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(Objective(spec, data), n_trials=1)
    return study.trials[0], spec, data


def test_a_complete_trial_returns_the_final_validation_loss_of_its_replay(tmp_path):
    trial, spec, data = one_trial(tmp_path, 0.05)
    assert trial.state == TrialState.COMPLETE
    _, result = replay(spec, data, trial.params)
    assert trial.value == result.final_loss == result.val_loss[-1]
    # the thinned curve: POINTS epochs, each the validation loss of that epoch
    assert sorted(trial.intermediate_values) == sorted(report_epochs(EPOCHS, POINTS))
    for epoch, value in trial.intermediate_values.items():
        assert value == result.val_loss[epoch]
    assert trial.user_attrs["epochs_run"] == EPOCHS


def test_a_diverged_trial_is_pruned_with_its_reason_and_last_finite_loss(tmp_path):
    trial, spec, data = one_trial(tmp_path, 10.0)  # far above 2 / lambda_max (~0.24) for this data
    assert trial.state == TrialState.PRUNED
    assert trial.user_attrs["prune_reason"] == "diverged"
    _, result = replay(spec, data, trial.params)
    assert trial.user_attrs["diverged_epoch"] == result.diverged_epoch
    last = last_shown_epoch(result, spec.training.divergence_factor)
    # Optuna keeps the last loss before the blow-up, not the diverged one
    assert all(math.isfinite(v) for v in trial.intermediate_values.values())
    if last is not None:
        assert trial.intermediate_values[last] == result.monitored[last]
    assert trial.user_attrs["epochs_run"] == result.epochs_run < EPOCHS


def test_the_last_shown_epoch_stops_before_the_blow_up():
    class Result:
        def __init__(self, monitored, train_loss, diverged_epoch):
            self.monitored, self.train_loss = np.array(monitored), np.array(train_loss)
            self.diverged_epoch, self.epochs_run = diverged_epoch, len(monitored)

    # factor 10: epoch 2's 50 is more than 10x the lowest loss before it (2), so epoch 1 is the last shown
    assert last_shown_epoch(Result([3.0, 2.0, 50.0, np.inf], [3.0, 2.0, 1.0, 1.0], 3), 10) == 1
    assert last_shown_epoch(Result([np.nan], [np.nan], 0), 10) is None
    assert last_shown_epoch(Result([1.0, 0.5], [1.0, 0.5], None), 10) == 1


def test_no_tracker_means_no_mlflow(tmp_path):
    trial, spec, data = one_trial(tmp_path, 0.05)
    assert "mlflow_run_id" not in trial.user_attrs
