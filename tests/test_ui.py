"""What the UIs are given: the losses fit to show, the samplers' ranking of diverged trials, range-edge warnings,
the loss's meaning, MLflow param names and the printed link."""

from __future__ import annotations

import math
import urllib.parse
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.samplers._tpe.sampler import _split_trials
from optuna.trial import TrialState, create_trial

from pipeline.tuning.objective import ShownLoss
from pipeline.tuning.ui import (
    loss_meaning,
    mlflow_link,
    mlflow_param_name,
    range_edge_warnings,
)

# ------------------------------------------------------------------------------------------- losses fit to show


def shown(factor, losses, train0):
    check = ShownLoss(factor)
    return [
        check(epoch, loss, train0 if epoch == 0 else math.nan) for epoch, loss in enumerate(losses)
    ], check.last


@pytest.mark.parametrize(
    ("losses", "train0", "expected", "last"),
    [
        # A converging curve: everything is shown.
        ([0.9, 0.5, 0.45], 1.0, [True, True, True], (2, 0.45)),
        # The first step blew up (validation loss 705 after it, from an initial loss of 1): nothing to show.
        ([705.0], 1.0, [False], None),
        # Exactly 10x the lowest before it is still shown; just above is not.
        ([0.5, 5.0, 5.0000001], 1.0, [True, True, False], (1, 5.0)),
        # Non-finite losses are never shown, and do not move the reference.
        ([0.5, math.inf, math.nan, 0.4], 1.0, [True, False, False, True], (3, 0.4)),
    ],
)
def test_shown_loss_drops_the_blow_up(losses, train0, expected, last):
    flags, found = shown(10.0, losses, train0)
    assert flags == expected
    assert found == last


# ------------------------------------------------------------------------------- samplers rank diverged last


def _trial(number, state, value, intermediate):
    trial = create_trial(
        state=state,
        value=value if state == TrialState.COMPLETE else None,
        params={"lr": 10.0 ** -(number % 5)},
        distributions={"lr": FloatDistribution(1e-5, 10, log=True)},
        intermediate_values=intermediate,
    )
    trial.number = number
    return trial


def test_tpe_ranks_diverged_trials_below_every_complete_one_whatever_their_reported_value():
    """A diverged trial now reports its last loss before the blow-up, which can be lower than every complete
    trial's (it was doing well before it blew up): TPE's split (Optuna's own code) still puts every complete
    trial in the "good" group before any pruned one."""
    study = optuna.create_study(direction="minimize")
    complete = [_trial(i, TrialState.COMPLETE, 0.5 + 0.1 * i, {0: 1.0, 9: 0.5 + 0.1 * i}) for i in range(4)]
    diverged = [_trial(10 + i, TrialState.PRUNED, None, {0: 0.9, 3: 0.01 * (i + 1)}) for i in range(3)]
    trials = complete + diverged
    for n_below in range(1, len(complete) + 1):
        below, above = _split_trials(study, trials, n_below)
        assert {t.number for t in below} == {
            t.number for t in sorted(complete, key=lambda t: t.value)[:n_below]
        }
        assert {t.number for t in diverged} <= {t.number for t in above}


def test_a_pruned_trial_is_never_the_best_trial():
    study = optuna.create_study(direction="minimize")
    study.add_trial(create_trial(state=TrialState.COMPLETE, value=0.5))
    pruned = study.ask()
    pruned.report(0.01, 0)
    study.tell(pruned, state=TrialState.PRUNED)
    assert study.trials[1].value == 0.01  # Optuna gives a pruned trial its last reported value
    assert study.best_value == 0.5


# ----------------------------------------------------------------------------------------- range edge warnings


def _study_with_best(params: dict, distributions: dict) -> optuna.Study:
    study = optuna.create_study(direction="minimize")
    study.add_trial(
        create_trial(state=TrialState.COMPLETE, value=0.1, params=params, distributions=distributions)
    )
    return study


LR = FloatDistribution(1e-5, 10, log=True)  # 6 decades: 5% is 0.3 decade


@pytest.mark.parametrize(
    ("lr", "expected"),
    [
        (10 * 10**-0.29, "top"),  # 0.29 decade under the top: inside the 5% band
        (10 * 10**-0.31, None),  # 0.31 decade under it: outside
        (1e-5 * 10**0.29, "bottom"),
        (1e-5 * 10**0.31, None),
        (0.01, None),
    ],
)
def test_a_best_value_within_5_percent_of_a_bound_in_log_space_is_flagged(lr, expected):
    lines = range_edge_warnings(_study_with_best({"lr": lr}, {"lr": LR}))
    if expected is None:
        assert lines == []
    else:
        (line,) = lines
        assert line.startswith("lr = ") and expected in line
        assert ("raise its `high`" if expected == "top" else "lower its `low`") in line


def test_a_linear_range_is_measured_linearly_and_no_complete_trial_means_no_warning():
    dist = FloatDistribution(0.0, 1.0)
    assert range_edge_warnings(_study_with_best({"x": 0.96}, {"x": dist}))[0].startswith(
        "x = 0.96 is at the top"
    )
    assert range_edge_warnings(_study_with_best({"x": 0.94}, {"x": dist})) == []
    assert range_edge_warnings(optuna.create_study()) == []


def test_the_reference_study_s_best_decay_rate_at_0_0991_is_flagged():
    """The issue's example: decay_rate 0.0991 in [1e-4, 0.1]."""
    dist = FloatDistribution(1e-4, 0.1, log=True)
    (line,) = range_edge_warnings(
        _study_with_best({"exponential.decay_rate": 0.0991}, {"exponential.decay_rate": dist})
    )
    assert "exponential.decay_rate" in line and "top" in line


# ----------------------------------------------------------------------------------------- names and links


def _data(task, target_scale=1.0, n_val=3):
    # loss_meaning reads only these fields of pipeline.core.arrays.Dataset
    return SimpleNamespace(task=task, target_scale=target_scale, X_val=np.zeros((n_val, 2)))


def test_the_loss_is_named_with_its_meaning():
    assert "validation MSE on the standardised target" in loss_meaning(_data("regression", target_scale=76.0))
    assert "x 5776" in loss_meaning(
        _data("regression", target_scale=76.0)
    )  # 76^2: back to the target's units
    assert "own units" in loss_meaning(_data("regression"))
    assert "cross-entropy" in loss_meaning(_data("binary")) and "0.693" in loss_meaning(_data("binary"))
    assert "softmax cross-entropy" in loss_meaning(_data("multiclass"))
    assert loss_meaning(_data("regression", n_val=0)).startswith("training MSE")


def test_mlflow_param_names_follow_what_tracking_logs():
    assert mlflow_param_name("lr") == "lr"
    assert mlflow_param_name("exponential.decay_rate") == "exponential.decay_rate"
    assert mlflow_param_name("momentum.one_minus_beta") == "momentum.beta"


def test_the_link_opens_the_shared_view_of_the_experiment_in_model_training():
    link = mlflow_link("sqlite:////tmp/x/mlflow.db", "7")
    base, _, query = link.partition("/runs?")
    assert base == "http://127.0.0.1:5000/#/experiments/7"
    assert urllib.parse.parse_qs(query) == {
        "workflowType": ["machine_learning"],
        "viewStateShareKey": ["trials"],
        "compareRunsMode": ["CHART"],
    }
    assert mlflow_link("http://mlflow.lan:5000/", "3").startswith(
        "http://mlflow.lan:5000/#/experiments/3/runs?"
    )
    assert mlflow_link(None, "3") is None and mlflow_link("sqlite:///x.db", None) is None


# ------------------------------------------------------------------------------------------ importance caveat


def test_importance_needs_ten_complete_trials_per_parameter_of_each_branch():
    from pipeline.tuning.commands import importance_caveat

    lr = FloatDistribution(1e-5, 10, log=True)
    k = FloatDistribution(1e-4, 0.1, log=True)
    study = optuna.create_study()
    for i in range(15):  # 15 complete trials, lr in all, the cosine branch's parameter in 3 of them
        params, dists = {"lr": 10.0 ** -(i % 4)}, {"lr": lr}
        if i % 5 == 0:
            params["cosine.min_lr_ratio"], dists["cosine.min_lr_ratio"] = 0.01, k
        study.add_trial(
            create_trial(state=TrialState.COMPLETE, value=float(i), params=params, distributions=dists)
        )
    caveat = importance_caveat(study)
    assert caveat.startswith("importance left out") and "cosine.min_lr_ratio 3" in caveat
    for _ in range(7):  # 10 trials of the branch: enough
        params = {"lr": 0.1, "cosine.min_lr_ratio": 0.02}
        study.add_trial(
            create_trial(
                state=TrialState.COMPLETE,
                value=1.0,
                params=params,
                distributions={"lr": lr, "cosine.min_lr_ratio": k},
            )
        )
    assert importance_caveat(study) is None


# ------------------------------------------------------------------------------ what a trial reports to Optuna


def _reports(losses, train0=1.0, reported=None, diverges=False):
    """Feed `losses` through CurveReports into a real in-memory trial; its intermediate values and value."""
    from pipeline.tuning.objective import CurveReports

    study = optuna.create_study()
    trial = study.ask()
    curve = CurveReports(trial.report, frozenset(range(len(losses)) if reported is None else reported))
    for epoch, loss in enumerate(losses):
        curve.epoch(epoch, loss, train0 if epoch == 0 else math.nan)
    if diverges:
        curve.diverged()
        study.tell(trial, state=TrialState.PRUNED)
    else:
        curve.flush()
        study.tell(trial, losses[-1])
    done = study.trials[0]
    return done.intermediate_values, done.value


def test_a_spike_the_run_recovers_from_is_reported_late_not_lost():
    values, value = _reports([0.9, 0.5, 1.5, 0.45, 0.4])  # 1.5 > 2 x 0.5: held, then the run recovers
    assert values == {0: 0.9, 1: 0.5, 2: 1.5, 3: 0.45, 4: 0.4}
    assert value == 0.4


def test_a_blow_up_is_never_reported_and_the_value_is_the_last_loss_before_it():
    values, value = _reports([0.9, 0.6, 1.1, 4.0, 30.0], reported={0, 2, 4}, diverges=True)
    # 1.1 <= 2 x 0.6 is fit to show (epoch 2, reported); 4.0 and 30.0 are the blow-up, held then dropped.
    assert values == {0: 0.9, 2: 1.1}
    assert value == 1.1


def test_the_last_loss_before_the_blow_up_is_reported_even_between_reported_epochs():
    values, value = _reports([0.9, 0.6, 0.55, 40.0], reported={0, 3}, diverges=True)
    assert values == {0: 0.9, 2: 0.55}
    assert value == 0.55


def test_a_run_that_blows_up_at_its_first_step_reports_nothing():
    values, value = _reports([705.0], diverges=True)
    assert values == {} and value is None


def test_a_run_that_ends_held_without_diverging_reports_everything():
    values, value = _reports([0.9, 0.3, 0.7], reported={0, 2})  # 0.7 > 2 x 0.3, but the run completed
    assert values == {0: 0.9, 2: 0.7} and value == 0.7
