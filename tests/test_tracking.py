"""pipeline.tracking against a temporary sqlite store (never the repository's mlruns/).

One store for the whole module: importing mlflow (~2 s) and creating a store (~3 s of migrations) dominate.
Expected values are written out here (closed-form curves, MLflow's documented inf -> max float64), not
computed by the code under test.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from pipeline.config import MLRUNS_DIR
from pipeline.errors import ConfigError
from pipeline.tracking import Tracker, find_run, local_artifact_root

# MLflow's own SQLAlchemy models trigger this deprecation when the store opens; nothing we can change.
pytestmark = [
    pytest.mark.slow,  # Optuna and MLflow end to end against real stores
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated"),
]

EXPERIMENT = "test study"
EPOCHS = 5
STEPS = np.arange(EPOCHS)
FLOAT64_MAX = 1.7976931348623157e308  # how MLflow's SQL store writes +inf

# Closed-form curves: loss 1/(e+1), accuracy e/10, exponential decay 0.1 * 0.5**e.
COMPLETE_CURVES = {
    "train_loss": 1.0 / (STEPS + 1),
    "val_loss": 2.0 / (STEPS + 1),
    "val_accuracy": STEPS / 10.0,
    "lr": 0.1 * 0.5**STEPS,
}
DIVERGED_CURVES = {
    "train_loss": np.array([1.0, 10.0, 1e3, np.inf]),
    "val_loss": np.array([1.0, 12.0, 2e3, np.nan]),
    "val_accuracy": None,  # regression: no accuracy curve
    "lr": np.array([2.0, 2.0, 2.0, 2.0]),
}
PARAMS = {"lr": 0.1, "schedule": "exponential", "decay_rate": 0.6931471805599453, "warmup_steps": 0}
FINAL = {"final_train_loss": 0.2, "final_val_loss": 0.4, "best_val_loss": 0.4, "epochs_run": 5}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlruns') / 'mlflow.db'}"
    with Tracker(EXPERIMENT, tracking_uri=uri, tags={"dataset": "diabetes"}) as tracker:
        yield uri, tracker


@pytest.fixture(scope="module")
def runs(store):
    """run ids of a completed, a pruned (diverged) and a failed trial."""
    _, tracker = store
    completed = tracker.start_trial(0, PARAMS, {"sampler": "tpe"})
    tracker.finish_trial(completed, COMPLETE_CURVES, FINAL, "COMPLETE", {})
    pruned = tracker.start_trial(1, {**PARAMS, "lr": 2.0}, {"sampler": "tpe"})
    tracker.finish_trial(
        pruned,
        DIVERGED_CURVES,
        {"final_train_loss": math.inf, "epochs_run": 4},
        "PRUNED",
        {"prune_reason": "diverged", "diverged_epoch": 3},
    )
    failed = tracker.start_trial(2, PARAMS, {})
    tracker.finish_trial(failed, {}, {}, "FAIL", {"fail_reason": "ValueError"})
    return {"COMPLETE": completed, "PRUNED": pruned, "FAIL": failed}


@pytest.fixture(scope="module")
def client(store):
    return MlflowClient(tracking_uri=store[0])


def history(client, run_id, key):
    points = client.get_metric_history(run_id, key)
    return [m.step for m in points], [m.value for m in points]


@pytest.mark.parametrize(
    ("state", "status", "name"),
    [
        ("COMPLETE", "FINISHED", "trial-0000"),
        ("PRUNED", "KILLED", "trial-0001"),
        ("FAIL", "FAILED", "trial-0002"),
    ],
)
def test_state_maps_to_run_status_name_and_state_tag(client, runs, state, status, name):
    run = client.get_run(runs[state])
    assert (run.info.status, run.info.run_name, run.data.tags["state"]) == (status, name, state)


def test_completed_run_has_params_tags_and_final_metrics(client, runs):
    run = client.get_run(runs["COMPLETE"])
    assert run.data.params == {
        "lr": "0.1",
        "schedule": "exponential",
        "decay_rate": "0.6931471805599453",
        "warmup_steps": "0",
    }
    assert run.data.tags["trial_number"] == "0"
    assert run.data.tags["sampler"] == "tpe"
    for key in ("final_train_loss", "final_val_loss", "best_val_loss", "epochs_run"):
        assert run.data.metrics[key] == FINAL[key]


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("train_loss", [1.0, 1 / 2, 1 / 3, 1 / 4, 1 / 5]),
        ("val_loss", [2.0, 1.0, 2 / 3, 1 / 2, 2 / 5]),
        ("val_accuracy", [0.0, 0.1, 0.2, 0.3, 0.4]),
        ("lr", [0.1, 0.05, 0.025, 0.0125, 0.00625]),
    ],
)
def test_completed_run_keeps_every_epoch_at_step_epoch(client, runs, key, expected):
    steps, values = history(client, runs["COMPLETE"], key)
    assert steps == [0, 1, 2, 3, 4]
    assert values == pytest.approx(expected, rel=1e-15)


def test_pruned_diverged_run_keeps_its_finite_curve_and_says_where_it_stopped(client, runs):
    # A non-finite point would be stored as 1.797e308 (or NaN) and flatten every other run's curve in a shared
    # chart, so the curve stops at the last finite epoch and the tag carries the divergence.
    run = client.get_run(runs["PRUNED"])
    assert run.data.tags["prune_reason"] == "diverged"
    assert run.data.tags["diverged_epoch"] == "3"
    assert history(client, runs["PRUNED"], "train_loss") == ([0, 1, 2], [1.0, 10.0, 1e3])
    assert history(client, runs["PRUNED"], "val_loss") == ([0, 1, 2], [1.0, 12.0, 2e3])
    assert "final_train_loss" not in run.data.metrics
    assert FLOAT64_MAX not in run.data.metrics.values()
    assert "val_accuracy" not in run.data.metrics  # None curves are skipped


def test_experiment_reused_by_a_second_tracker(store, client):
    uri, tracker = store
    again = Tracker(EXPERIMENT, tracking_uri=uri)
    assert again.experiment_id == tracker.experiment_id
    assert len(client.search_experiments(filter_string=f"name = '{EXPERIMENT}'")) == 1
    again.close()


def test_experiment_created_concurrently_is_reread(store, monkeypatch):
    # Another process creates the experiment between our lookup and our create: the lookup sees nothing once.
    uri, tracker = store
    original = MlflowClient.get_experiment_by_name
    calls = []

    def lookup_misses_once(self, name):
        calls.append(name)
        return None if len(calls) == 1 else original(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", lookup_misses_once)
    assert Tracker(EXPERIMENT, tracking_uri=uri).experiment_id == tracker.experiment_id
    assert calls == [EXPERIMENT, EXPERIMENT]


def test_artifact_location_is_beside_the_sqlite_file(store, client):
    uri, tracker = store
    db = uri.removeprefix("sqlite:///")
    location = client.get_experiment(tracker.experiment_id).artifact_location
    assert location == f"file://{db.removesuffix('/mlflow.db')}/artifacts/test-study"
    assert not location.startswith(MLRUNS_DIR.as_uri())


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sqlite:////data/mlruns/mlflow.db", "/data/mlruns/artifacts"),
        ("sqlite:////data/mlflow.db?timeout=30", "/data/artifacts"),
        ("sqlite:///:memory:", None),
        ("postgresql://user@host/db", None),
        ("http://127.0.0.1:5000", None),
    ],
)
def test_local_artifact_root(uri, expected):
    root = local_artifact_root(uri)
    assert (str(root) if root else None) == expected


def test_log_artifact_to_a_trial_and_to_the_study_run(store, runs, client, tmp_path):
    _, tracker = store
    report = tmp_path / "report.txt"
    report.write_text("best lr 0.1")
    tracker.log_artifact(report, run_id=runs["COMPLETE"])
    tracker.log_artifact(report)
    tracker.log_artifact(report, artifact_path="plots")
    assert [f.path for f in client.list_artifacts(runs["COMPLETE"])] == ["report.txt"]
    study_runs = client.search_runs([tracker.experiment_id], "attributes.run_name = 'study'")
    assert len(study_runs) == 1 and study_runs[0].info.run_id == tracker.study_run_id()
    assert sorted(f.path for f in client.list_artifacts(tracker.study_run_id())) == ["plots", "report.txt"]
    local = client.download_artifacts(tracker.study_run_id(), "plots/report.txt", str(tmp_path / "back"))
    assert Path(local).read_text() == "best lr 0.1"


def test_find_run(store, runs):
    uri, _ = store
    assert find_run(uri, EXPERIMENT, 1).info.run_id == runs["PRUNED"]
    assert find_run(uri, EXPERIMENT, 99) is None
    assert find_run(uri, "no such study", 0) is None


def test_set_experiment_tags(store, client):
    _, tracker = store
    tracker.set_experiment_tags({"best_trial": 0, "skipped": None})
    tags = client.get_experiment(tracker.experiment_id).tags
    assert (tags["best_trial"], tags["dataset"], "skipped" in tags) == ("0", "diabetes", False)


def test_close_fails_unfinished_runs_and_is_idempotent(store, client):
    uri, _ = store
    with Tracker(EXPERIMENT, tracking_uri=uri) as tracker:
        run_id = tracker.start_trial(7, {"lr": 0.5}, {})
    tracker.close()
    run = client.get_run(run_id)
    assert (run.info.status, run.data.tags["state"], run.data.params) == ("FAILED", "FAIL", {"lr": "0.5"})
    with pytest.raises(RuntimeError, match="start_trial called after close"):
        tracker.start_trial(8, {}, {})


def test_deleted_experiment_is_a_config_error(store, client):
    uri, _ = store
    experiment_id = Tracker("deleted study", tracking_uri=uri).experiment_id
    client.delete_experiment(experiment_id)
    with pytest.raises(
        ConfigError, match=r"'experiment': The MLflow experiment 'deleted study' .* is deleted"
    ):
        Tracker("deleted study", tracking_uri=uri)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda t: t.start_trial(-1, {}, {}), r"'trial_number' parameter .* int >= 0\. Got -1 instead"),
        (lambda t: t.start_trial(True, {}, {}), r"'trial_number' parameter .* Got True instead"),
        (lambda t: t.finish_trial("x", {}, {}, "DONE", {}), r"'state' parameter .* Got 'DONE' instead"),
        (lambda t: t.finish_trial("x", {}, {}, "PRUNED", {}), r"must contain 'prune_reason' when state is"),
        (
            lambda t: t.finish_trial("x", {"lr": np.ones((2, 2))}, {}, "COMPLETE", {}),
            r"'curves\['lr'\]' parameter .* 1-D array",
        ),
        (
            lambda t: t.finish_trial("x", {"lr": ["a"]}, {}, "COMPLETE", {}),
            r"'curves\['lr'\]' parameter .* Got \['a'\] instead",
        ),
        (
            lambda t: t.finish_trial("x", {}, {"epochs_run": "5"}, "COMPLETE", {}),
            r"'final\['epochs_run'\]' parameter .* number\. Got '5' instead",
        ),
        (
            lambda t: t.log_artifact("/no/such/file.png"),
            r"'path' parameter .* Got '/no/such/file.png' instead",
        ),
    ],
)
def test_bad_arguments_name_parameter_and_value(store, call, match):
    with pytest.raises(ValueError, match=match):
        call(store[1])


def test_empty_experiment_name():
    with pytest.raises(ValueError, match=r"'experiment' parameter of Tracker must be a non-empty string"):
        Tracker("  ", tracking_uri="sqlite:///:memory:")
