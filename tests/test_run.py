"""pipeline/tuning/run.py, a study run, end to end: studies tuned through the CLI into a temporary journal + MLflow
sqlite store.

The studies are tuned once per session by the fixtures in conftest.py; the tests only read the storage and the
MLflow store. Oracles are independent of the code under test: full-batch gradient descent on the diabetes split
is written out below in plain NumPy (``w <- w - lr_e * 2/n X^T (X w - y)``, ``lr_e = lr0 exp(-decay e)``), the
median-pruner rule is Optuna's documented one, and the schedule's rates are computed here.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState

from pipeline.datasets import load_dataset

# MLflow's own SQLAlchemy models trigger this deprecation when the store opens; nothing we can change.
pytestmark = [
    pytest.mark.slow,  # Optuna and MLflow end to end against real stores
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]

DIVERGENCE_FACTOR = 10.0  # training.divergence_factor of studies/diabetes-reference.yaml
# Values written by different but equivalent NumPy expressions (X w + b vs [X 1] w): equal to rounding.
REL = 1e-9


# ----------------------------------------------------------------------------------------------- the oracle


@cache
def _diabetes():
    """The study's split (seed 0, 20 % validation, standardised), with a column of ones for the bias."""
    d = load_dataset("diabetes", val_fraction=0.2, seed=0, standardize=True)
    ones = np.ones((len(d.y_train), 1)), np.ones((len(d.y_val), 1))
    return np.hstack([d.X_train, ones[0]]), d.y_train, np.hstack([d.X_val, ones[1]]), d.y_val


def gradient_descent(lr0: float, decay: float, epochs: int):
    """Full-batch GD on the diabetes MSE from w = 0, stopped at the first divergence.

    Per epoch e: the training loss before the update, then ``w -= lr_e * 2/n X^T r``, then the validation loss.
    Divergence (the rule the study files state): the training loss exceeds 10x the best so far, or a loss is
    non-finite. Returns (train losses, val losses (non-finite -> inf), lrs, diverged epoch or None).
    """
    A, y, A_val, y_val = _diabetes()
    n = len(y)
    w = np.zeros(A.shape[1])
    train, val, lrs = [], [], []
    best = math.inf
    with np.errstate(all="ignore"):  # overflow is the expected outcome of a too-large rate
        for e in range(epochs):
            lr = lr0 * math.exp(-decay * e)
            r = A @ w - y
            loss = float(np.mean(r**2))
            if math.isfinite(loss):
                w = w - lr * 2.0 / n * (A.T @ r)
            v = float(np.mean((A_val @ w - y_val) ** 2))
            train.append(loss)
            val.append(v if math.isfinite(v) else math.inf)
            lrs.append(lr)
            if not math.isfinite(loss) or loss > DIVERGENCE_FACTOR * best or not math.isfinite(v):
                return train, val, lrs, e
            best = min(best, loss)
    return train, val, lrs, None


def oracle_for(trial, epochs: int):
    """gradient_descent with a trial's lr and decay rate (0 for a constant schedule)."""
    return gradient_descent(trial.params["lr"], trial.params.get("exponential.decay_rate", 0.0), epochs)


def last_shown(train, val, diverged_epoch: int, factor: float = 2.0) -> int | None:
    """The last epoch before the divergence whose validation loss is finite and at most `factor` times the lowest
    loss seen before it, the initial training loss included (README, Divergence)."""
    lowest, last = train[0], None
    for epoch in range(diverged_epoch):
        if math.isfinite(val[epoch]) and val[epoch] <= factor * lowest:
            last = epoch
        lowest = min(lowest, val[epoch])
    return last


def assert_close(actual: float, expected: float, what: str) -> None:
    if math.isinf(expected):
        assert actual == expected, f"{what}: {actual} != {expected}"
    else:
        assert actual == pytest.approx(expected, rel=REL), what


# ----------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def client(e2e_store):
    return MlflowClient(tracking_uri=e2e_store.tracking_uri)


def runs_by_name(client, experiment: str, *, trials_only: bool = True) -> dict[str, list]:
    """run name -> runs of that name in the experiment (without the study's parent run unless asked)."""
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no MLflow experiment {experiment!r}"
    found: dict[str, list] = {}
    for run in client.search_runs([exp.experiment_id], max_results=1000):
        if trials_only and run.info.run_name == "study":
            continue
        found.setdefault(run.info.run_name, []).append(run)
    return found


def history(client, run_id: str, key: str) -> tuple[list[int], list[float]]:
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
    return [m.step for m in points], [m.value for m in points]


@pytest.fixture(scope="module")
def diverge_study(e2e_store, diverge):
    assert diverge.first.code == 0 and diverge.second.code == 0, diverge.first.err + diverge.second.err
    return e2e_store.study(diverge.name)


# ----------------------------------------------------------------------------------------------- resume


def test_resume_loads_the_study_and_continues_its_trial_numbers(e2e_store, diverge, diverge_study):
    n = diverge.trials
    assert e2e_store.study_names().count("diverge") == 1
    assert [t.number for t in diverge.first_trials] == list(range(n))
    trials = diverge_study.get_trials()
    assert [t.number for t in trials] == list(range(2 * n))
    assert all(t.state.is_finished() for t in trials)
    # The first run's trials are kept as they were...
    for before, after in zip(diverge.first_trials, trials[:n], strict=True):
        assert (after.params, after.value, after.state) == (before.params, before.value, before.state)
    # ...and the second run samples new settings instead of replaying the first run's.
    assert {t.params["lr"] for t in trials[:n]}.isdisjoint(t.params["lr"] for t in trials[n:])
    assert f"{n} new trial(s)" in diverge.first.out and f"{n} in all" in diverge.first.out
    assert f"{n} new trial(s)" in diverge.second.out and f"{2 * n} in all" in diverge.second.out


def test_resume_reuses_the_mlflow_experiment(client, diverge):
    n = diverge.trials
    experiments = [e for e in client.search_experiments() if e.name == "diverge"]
    assert len(experiments) == 1
    runs = runs_by_name(client, "diverge")
    assert sorted(runs) == [f"trial-{i:04d}" for i in range(2 * n)]
    assert all(len(found) == 1 for found in runs.values())


# ----------------------------------------------------------------------------------------------- divergence


def test_some_trials_diverge_and_some_complete(diverge_study):
    states = [t.state for t in diverge_study.get_trials()]
    assert states.count(TrialState.PRUNED) >= 2
    assert states.count(TrialState.COMPLETE) >= 2
    assert TrialState.FAIL not in states


def test_diverged_trials_are_pruned_at_the_epoch_plain_gradient_descent_diverges(diverge, diverge_study):
    pruned = diverge_study.get_trials(states=(TrialState.PRUNED,))
    for t in pruned:
        _, val, _, diverged_epoch = oracle_for(t, diverge.epochs)
        assert diverged_epoch is not None, f"trial {t.number} pruned, but GD does not diverge"
        assert t.user_attrs["prune_reason"] == "diverged"
        # Pruned at the very epoch it diverged: no epoch is trained past the divergence.
        assert t.user_attrs["diverged_epoch"] == diverged_epoch, f"trial {t.number} lr={t.params['lr']}"
        assert t.user_attrs["epochs_run"] == diverged_epoch + 1
        # Optuna gets the curve up to the last finite epoch before the divergence, never the diverged loss
        # (which would stretch the dashboard's plots); that one is a user attribute.
        train = oracle_for(t, diverge.epochs)[0]
        last = last_shown(train, val, diverged_epoch)
        steps = sorted(t.intermediate_values)
        if last is None:  # blew up at the first step: nothing fit to show
            assert steps == [] and t.value is None
        else:
            assert steps[-1] == last
            for step in steps:
                assert_close(t.intermediate_values[step], val[step], f"trial {t.number} step {step}")
                assert val[step] <= 2 * max(train[0], 1e-12)  # nothing from the blow-up
            assert_close(t.value, val[last], f"trial {t.number} value")
        recorded = t.user_attrs["diverged_loss"]
        assert_close(float(recorded), val[diverged_epoch], f"trial {t.number} diverged_loss")


def test_complete_trials_never_diverge_and_report_the_final_validation_loss(diverge, diverge_study):
    complete = diverge_study.get_trials(states=(TrialState.COMPLETE,))
    for t in complete:
        _, val, _, diverged_epoch = oracle_for(t, diverge.epochs)
        assert diverged_epoch is None, f"trial {t.number} complete, but GD diverges at {diverged_epoch}"
        assert_close(t.value, val[-1], f"trial {t.number} value")
        assert "prune_reason" not in t.user_attrs and "diverged_epoch" not in t.user_attrs
        steps = sorted(t.intermediate_values)
        assert steps[0] == 0 and steps[-1] == diverge.epochs - 1
        for step in steps:
            assert_close(t.intermediate_values[step], val[step], f"trial {t.number} step {step}")


def test_best_trial_is_the_complete_trial_with_the_lowest_loss(diverge_study):
    complete = diverge_study.get_trials(states=(TrialState.COMPLETE,))
    best = diverge_study.best_trial
    assert best.state == TrialState.COMPLETE
    assert best.value == min(t.value for t in complete)


# ----------------------------------------------------------------------------------------------- median pruner


def test_median_pruner_prunes_underperforming_trials(median):
    trials = median.study.get_trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    assert pruned, "the median pruner pruned nothing"
    assert TrialState.FAIL not in [t.state for t in trials]
    for t in pruned:
        assert t.user_attrs["prune_reason"] == "underperforming"
        assert "diverged_epoch" not in t.user_attrs
        assert oracle_for(t, median.epochs)[3] is None
        step = max(t.intermediate_values)
        assert step >= median.pruner["n_warmup_steps"]
        # Training stops at the epoch the pruner decided on.
        assert t.user_attrs["epochs_run"] == step + 1
        # Optuna's median rule: the trial's best value so far is worse than the median of the values the
        # trials completed before it reported at that step.
        earlier = [
            u.intermediate_values[step]
            for u in trials
            if u.number < t.number and u.state == TrialState.COMPLETE and step in u.intermediate_values
        ]
        assert len(earlier) >= median.pruner["n_startup_trials"]
        assert min(t.intermediate_values.values()) > float(np.median(earlier)), f"trial {t.number}"


def test_median_pruned_trial_in_mlflow(client, median):
    t = next(t for t in median.study.get_trials() if t.state == TrialState.PRUNED)
    run = client.get_run(t.user_attrs["mlflow_run_id"])
    assert run.info.status == "KILLED"
    assert run.data.tags["state"] == "PRUNED"
    assert run.data.tags["prune_reason"] == "underperforming"
    assert "diverged_epoch" not in run.data.tags
    steps, _ = history(client, run.info.run_id, "val_loss")
    assert steps == list(range(t.user_attrs["epochs_run"]))


# ----------------------------------------------------------------------------------------------- MLflow


@pytest.mark.parametrize(
    ("state", "status", "prune_tags"),
    [
        (TrialState.COMPLETE, "FINISHED", {}),
        (TrialState.PRUNED, "KILLED", {"prune_reason": "diverged"}),
    ],
)
def test_mlflow_run_of_a_trial(client, diverge, diverge_study, state, status, prune_tags):
    t = next(t for t in diverge_study.get_trials() if t.state == state)
    lr0, decay = t.params["lr"], t.params["exponential.decay_rate"]
    train, val, _, diverged_epoch = oracle_for(t, diverge.epochs)
    epochs_run = diverge.epochs if diverged_epoch is None else diverged_epoch + 1
    run = client.get_run(t.user_attrs["mlflow_run_id"])

    assert run.info.run_name == f"trial-{t.number:04d}"
    assert run.info.status == status
    # Params: the sampled values exactly, and the fixed settings of the study file.
    params = run.data.params
    assert set(params) == {"lr", "batch_size", "optimizer", "schedule", "exponential.decay_rate"}
    assert float(params["lr"]) == lr0
    assert float(params["exponential.decay_rate"]) == decay
    assert (params["batch_size"], params["optimizer"], params["schedule"]) == ("full", "sgd", "exponential")

    tags = run.data.tags
    expected_tags = {"study": "diverge", "trial_number": str(t.number), "state": state.name, **prune_tags}
    if diverged_epoch is not None:
        expected_tags["diverged_epoch"] = str(diverged_epoch)
    assert {k: tags.get(k) for k in expected_tags} == expected_tags
    if state == TrialState.COMPLETE:
        assert "prune_reason" not in tags and "diverged_epoch" not in tags

    # Curves: one point per epoch, step = epoch; the lr follows lr0 exp(-k e). A diverged run's curves stop
    # before the epoch that diverged; the loss it diverged with is a metric of its own.
    end = diverge.epochs
    if diverged_epoch is not None:
        last = last_shown(train, val, diverged_epoch)
        end = 0 if last is None else last + 1
    steps, lrs = history(client, run.info.run_id, "lr")
    assert steps == list(range(end))
    assert lrs == pytest.approx([lr0 * math.exp(-decay * e) for e in range(end)], rel=1e-12)
    for key, expected in (("train_loss", train), ("val_loss", val)):
        steps, values = history(client, run.info.run_id, key)
        assert steps == list(range(end)), key
        assert values == pytest.approx(list(expected[:end]), rel=REL), key
    metrics = run.data.metrics
    if diverged_epoch is not None:
        assert "final_loss" not in metrics  # sorting by final_loss puts diverged runs last
        if end:
            assert metrics["loss_before_divergence"] == pytest.approx(val[end - 1], rel=REL)
        if math.isfinite(val[diverged_epoch]):
            assert metrics["diverged_loss"] == pytest.approx(val[diverged_epoch], rel=REL)
        assert float(tags["diverged_loss"]) == pytest.approx(val[diverged_epoch], rel=REL)
    else:
        assert metrics["final_loss"] == pytest.approx(val[-1], rel=REL)
        assert "diverged_loss" not in metrics
    assert run.data.metrics["epochs_run"] == epochs_run


def test_trials_are_runs_nested_under_one_study_run(client, diverge_study):
    runs = runs_by_name(client, "diverge", trials_only=False)
    (parent,) = runs["study"]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["study"] == "diverge"
    trial_runs = [r for name, rs in runs.items() if name != "study" for r in rs]
    assert len(trial_runs) == len(diverge_study.get_trials())
    for run in trial_runs:
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["study"] == "diverge" and "trial_number" in run.data.tags


def test_each_trial_links_to_its_mlflow_run_and_back(client, diverge_study):
    runs = runs_by_name(client, "diverge")
    experiment_id = client.get_experiment_by_name("diverge").experiment_id
    for t in diverge_study.get_trials():
        (run,) = runs[f"trial-{t.number:04d}"]
        assert t.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.info.experiment_id == experiment_id
        assert run.data.tags["trial_number"] == str(t.number)
        assert run.data.tags["state"] == t.state.name


# ----------------------------------------------------------------------------------------------- other studies


def test_classification_study_logs_validation_accuracy(client, breast):
    n_val = math.ceil(0.2 * 569)  # breast_cancer has 569 rows; 20 % held out, rounded up
    complete = breast.study.get_trials(states=(TrialState.COMPLETE,))
    assert complete, "no breast-cancer trial completed"
    for t in complete:
        run_id = t.user_attrs["mlflow_run_id"]
        steps, accuracy = history(client, run_id, "val_accuracy")
        assert steps == list(range(breast.epochs))
        for a in accuracy:
            assert 0.0 <= a <= 1.0
            assert a * n_val == pytest.approx(round(a * n_val), abs=1e-9)  # a share of the validation rows
        assert client.get_run(run_id).data.metrics["final_val_accuracy"] == accuracy[-1]


def test_grid_study_runs_each_grid_point_once(grid):
    assert grid.first.code == 0, grid.first.err
    trials = grid.trials_after_first
    assert sorted(t.params["lr"] for t in trials) == grid.lrs
    for t in trials:
        _, val, _, diverged_epoch = oracle_for(t, grid.epochs)
        if diverged_epoch is None:
            assert t.state == TrialState.COMPLETE, f"lr={t.params['lr']}"
            assert_close(t.value, val[-1], f"lr={t.params['lr']}")
        else:
            assert t.state == TrialState.PRUNED, f"lr={t.params['lr']}"
            assert t.user_attrs["diverged_epoch"] == diverged_epoch


def test_grid_study_rerun_adds_no_trial(e2e_store, client, grid):
    assert grid.second.code == 0, grid.second.err
    assert "0 new trial(s)" in grid.second.out
    study = e2e_store.study("compare")
    assert [t.number for t in study.get_trials()] == [t.number for t in grid.trials_after_first]
    assert sorted(runs_by_name(client, "compare")) == [f"trial-{i:04d}" for i in range(len(grid.lrs))]
