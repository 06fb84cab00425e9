"""Budgets that mean what they say (issue 8): the per-run budget the command line replaces, the study-wide
``max_trials`` and ``patience``, and the deadline that also bounds the last trial. Real processes, real time."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from pipeline.config import ROOT
from pipeline.errors import ConfigError
from pipeline.study.loader import load_study_mapping
from pipeline.tuning.budgets import converged

PY = sys.executable

FAST = {
    "name": "budgets",
    "seed": 0,
    "data": {"dataset": "diabetes"},
    "model": {"name": "linear"},
    "training": {"epochs": 20, "batch_size": "full"},
    "search": {"lr": {"low": 1.0e-3, "high": 0.5}, "optimizer": "sgd"},
    "budget": {"trials": 2},
}


# --- the convergence rule, against values worked out by hand ------------------------------------------------------

C = None  # a pruned trial


@pytest.mark.parametrize(
    ("values", "patience", "tolerance", "expected"),
    [
        ([1.0, 0.9, 0.8], 3, 0.0, False),  # not more finished trials than the window
        ([1.0, 0.9, 0.8, 0.7], 3, 0.0, False),  # 1.0 -> 0.7 inside the window
        ([0.5, 0.9, 0.8, 0.7], 3, 0.0, True),  # best before the window 0.5; nothing below it since
        ([0.5, 0.9, 0.8, 0.5], 3, 0.0, True),  # equal is no improvement
        ([0.5, 0.9, 0.8, 0.4999], 3, 0.0, False),  # any improvement counts with tolerance 0
        ([0.5, 0.9, 0.8, 0.4999], 3, 1e-3, True),  # 0.0001 / 0.5 = 2e-4 <= 1e-3
        ([0.5, 0.9, 0.8, 0.4990], 3, 1e-3, False),  # 0.001 / 0.5 = 2e-3 > 1e-3: an improvement
        (
            [C, C, C, 0.7],
            3,
            0.0,
            False,
        ),  # no complete trial before the window: the window found the first best
        ([0.5, C, C, C], 3, 0.0, True),  # pruned trials in the window improve nothing
        ([-2.0, -1.0, -1.9, -2.001], 3, 1e-3, True),  # negative losses: 0.001 / 2 = 5e-4 <= 1e-3
        ([-2.0, -1.0, -1.9, -2.01], 3, 1e-3, False),  # 0.01 / 2 = 5e-3 > 1e-3
    ],
)
def test_converged_is_no_improvement_beyond_the_tolerance_over_the_last_n(
    values, patience, tolerance, expected
):
    assert converged(values, patience, tolerance) is expected


# --- the study file and the command line ------------------------------------------------------------------------


def budget_of(budget: dict, **overrides):
    return load_study_mapping({**FAST, "budget": budget}, overrides=overrides).budget


def test_the_command_line_replaces_the_per_run_budget_as_a_whole():
    file = {"trials": 60, "timeout": 600, "max_trials": 500, "patience": 20}
    alone = budget_of(file, timeout=7200)
    assert (alone.trials, alone.timeout) == (None, 7200.0)  # "--timeout 7200" alone: tune for two hours
    assert (budget_of(file, trials=5).trials, budget_of(file, trials=5).timeout) == (5, None)
    both = budget_of(file, trials=5, timeout=30)
    assert (both.trials, both.timeout) == (5, 30.0)
    kept = budget_of(file)
    assert (kept.trials, kept.timeout) == (60, 600.0)
    assert (alone.max_trials, alone.patience) == (500, 20)  # study-wide limits are the file's


@pytest.mark.parametrize(
    ("budget", "key", "value"),
    [
        ({"max_trials": 0}, "budget.max_trials", 0),
        ({"max_trials": 2.5}, "budget.max_trials", 2.5),
        ({"patience": 0}, "budget.patience", 0),
        ({"patience": 5, "tolerance": -0.1}, "budget.tolerance", -0.1),
        ({"patience": 5, "tolerance": 1}, "budget.tolerance", 1),
        ({"trials": 5, "tolerance": 0.01}, "budget.tolerance", 0.01),  # tolerance without patience
        ({"trials": 5, "patinece": 3}, "budget.patinece", None),
        ({"trials": None}, "budget", None),  # no limit at all
    ],
)
def test_a_bad_budget_names_the_key_and_the_value(budget, key, value):
    with pytest.raises(ConfigError, match=f"'{key}'") as caught:
        budget_of(budget)
    if value is not None:
        assert f"Got {value!r} instead." in str(caught.value)


def test_max_trials_alone_is_a_budget():
    assert budget_of({"trials": None, "max_trials": 30}).max_trials == 30


# --- real runs ----------------------------------------------------------------------------------------------------


class Stores:
    def __init__(self, root: Path, study: dict):
        self.root = root
        self.journal = root / "optuna.journal"
        self.db = root / "mlflow.db"
        self.study = root / "study.yaml"
        self.study.write_text(yaml.safe_dump(study), encoding="utf-8")
        self.name = study["name"]

    def argv(self, *extra: str) -> list[str]:
        stores = ["--storage", str(self.journal), "--tracking-uri", f"sqlite:///{self.db}", "--no-progress"]
        return [PY, "-m", "pipeline", "tune", str(self.study), *stores, *extra]

    def tune(self, *extra: str) -> subprocess.CompletedProcess:
        json_file = self.root / "runs.jsonl"
        done = subprocess.run(
            self.argv("--summary-json", str(json_file), *extra), cwd=ROOT, capture_output=True, text=True
        )
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        return done

    def last_summary(self) -> dict:
        return json.loads((self.root / "runs.jsonl").read_text().splitlines()[-1])

    def trials(self):
        storage = JournalStorage(JournalFileBackend(str(self.journal)))
        return optuna.load_study(study_name=self.name, storage=storage).get_trials(deepcopy=False)

    def finished(self):
        return [t for t in self.trials() if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]


@pytest.mark.slow
def test_timeout_on_the_command_line_runs_past_the_files_trials(tmp_path):
    stores = Stores(tmp_path, FAST)  # the file says 2 trials
    done = stores.tune("--timeout", "3")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = stores.last_summary()
    assert summary["stop_reason"] == "deadline"
    assert summary["new_trials"] > FAST["budget"]["trials"]  # README's cron line: tune for the time given


@pytest.mark.slow
def test_max_trials_caps_the_study_across_runs_and_a_capped_study_starts_nothing(tmp_path):
    stores = Stores(tmp_path, {**FAST, "budget": {"trials": 4, "max_trials": 6}})
    first = stores.tune()
    assert first.returncode == 0 and stores.last_summary()["stop_reason"] == "trials"
    assert len(stores.finished()) == 4
    second = stores.tune()  # 4 allowed this run, 2 left in the study
    assert second.returncode == 0
    assert stores.last_summary()["stop_reason"] == "cap" and stores.last_summary()["new_trials"] == 2
    assert len(stores.finished()) == 6
    third = stores.tune()
    assert third.returncode == 0 and "cap: the study reached budget.max_trials" in third.stdout
    assert stores.last_summary()["new_trials"] == 0 and len(stores.trials()) == 6


@pytest.mark.slow
def test_two_workers_overshoot_max_trials_by_at_most_one(tmp_path):
    study = {
        **FAST,
        "training": {"epochs": 400, "batch_size": "full"},
        "budget": {"trials": 100, "max_trials": 9},
    }
    stores = Stores(tmp_path, study)
    assert stores.tune("--trials", "1").returncode == 0  # create both stores once, before the race
    procs = [
        subprocess.Popen(
            stores.argv("--worker", str(k)), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for k in (0, 1)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    finished = len(stores.finished())
    assert 9 <= finished <= 9 + (2 - 1)
    assert not [t for t in stores.trials() if t.state == TrialState.RUNNING]


def first_converged_at(values: list[float | None], patience: int, tolerance: float) -> int | None:
    """The test's own reading of the rule: after how many finished trials the best has not moved by more than
    the tolerance over the last ``patience`` (a plain loop, not the code under test)."""
    for n in range(patience + 1, len(values) + 1):
        head, window = values[: n - patience], values[n - patience : n]
        best_before = min((v for v in head if v is not None), default=None)
        if best_before is None:
            continue
        best_after = min([best_before, *(v for v in window if v is not None)])
        if (best_before - best_after) / abs(best_before) <= tolerance:
            return n
    return None


@pytest.mark.slow
def test_patience_stops_the_run_the_first_time_the_best_stalls_and_says_converged(tmp_path):
    study = {**FAST, "budget": {"trials": 200, "patience": 8, "tolerance": 1e-3}}
    stores = Stores(tmp_path, study)
    done = stores.tune()
    assert done.returncode == 0, done.stderr[-3000:]
    assert "converged" in done.stdout and stores.last_summary()["stop_reason"] == "converged"
    finished = sorted(stores.finished(), key=lambda t: t.datetime_complete)
    values = [t.value if t.state == TrialState.COMPLETE else None for t in finished]
    assert first_converged_at(values, 8, 1e-3) == len(values) < 200
    again = stores.tune()  # a converged study starts no trial on the next night
    assert again.returncode == 0 and stores.last_summary()["new_trials"] == 0


@pytest.mark.slow
def test_the_deadline_cuts_the_running_trial_at_an_epoch_and_prunes_it_in_both_stores(tmp_path):
    from mlflow import MlflowClient

    # Single-sample SGD on an MLP: an epoch is many small steps, so a trial is seconds while its curve (60
    # points) is cheap to store; the cut is then the deadline's doing, not the stores'.
    long = {
        **FAST,
        "data": {"dataset": "moons", "params": {"n_samples": 1000}},
        "model": {"name": "mlp", "hidden": 16},
        "training": {"epochs": 60, "batch_size": 1},
        "search": {"lr": 0.01, "optimizer": "sgd"},
    }
    stores = Stores(tmp_path, long)
    full = stores.tune("--trials", "1")  # one whole trial: how long the deadline would otherwise overshoot
    assert full.returncode == 0
    (whole,) = stores.trials()
    trial_seconds = (whole.datetime_complete - whole.datetime_start).total_seconds()
    timeout = trial_seconds / 3
    cut = stores.tune("--timeout", f"{timeout:.3f}")
    assert cut.returncode == 0, cut.stderr[-3000:]
    summary = stores.last_summary()
    assert summary["stop_reason"] == "deadline" and summary["new_pruned_deadline"] == 1
    (trial,) = [t for t in stores.trials() if t.number == 1]
    assert trial.state == TrialState.PRUNED and trial.user_attrs["prune_reason"] == "deadline"
    assert 0 < trial.user_attrs["epochs_run"] < long["training"]["epochs"]
    # The run ended before the trial would have (a whole one took trial_seconds, three times the budget): the
    # trial was cut, not run out. Relative to this machine's own trial time, so a loaded machine slows both.
    assert summary["elapsed"] < 0.9 * trial_seconds
    assert math.isfinite(trial.value)  # ranked by the loss it reached, like any pruned trial
    client = MlflowClient(tracking_uri=f"sqlite:///{stores.db}")
    experiment = client.get_experiment_by_name(stores.name)
    (run,) = client.search_runs([experiment.experiment_id], filter_string="tags.trial_number = '1'")
    assert run.info.status == "KILLED" and run.data.tags["prune_reason"] == "deadline"
    assert "1 cut by a deadline" in cut.stdout


# --- the cap with other workers' running trials: dead ones do not hold the study short -----------------------------


def _running_trial(study: optuna.Study, owner_text: str) -> optuna.Trial:
    trial = study.ask()
    study._storage.set_trial_user_attr(trial._trial_id, "owner", owner_text)  # as the other worker wrote it
    return trial


def _finished(study: optuna.Study, n: int) -> None:
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n)


def _dead_owner() -> str:
    from pipeline.tuning import owner

    child = subprocess.Popen([PY, "-c", "pass"])
    child.wait()  # reaped: its pid names no process
    return f"{owner.host()}:{child.pid}:1"


def test_without_heartbeats_a_dead_local_workers_trial_does_not_count_and_a_live_ones_does(tmp_path):
    from pipeline.tuning import owner
    from pipeline.tuning.budgets import StudyBudget, settle

    study = optuna.create_study(storage=JournalStorage(JournalFileBackend(str(tmp_path / "j.log"))))
    _finished(study, 2)
    budget = StudyBudget(max_trials=3)
    dead = _running_trial(study, _dead_owner())
    assert budget.reached(study) is None  # 2 finished; the dead worker's trial will never finish
    live = _running_trial(study, owner.me())
    reason, detail = budget.reached(study)
    assert (reason.value, detail) == ("cap", "2 finished + 1 running trials, budget.max_trials 3")
    waits = []
    assert settle(study, budget, poll=1.0, give_up=lambda: False, sleep=waits.append)[0] == reason
    assert waits == []  # no heartbeat: a dead worker elsewhere cannot be told from a live one, so no waiting
    study.enqueue_trial({"x": 0.5})  # a waiting trial is run by a worker that goes on, not counted
    study.tell(live, state=TrialState.FAIL)
    assert budget.reached(study) is None
    assert dead.number == 2


@pytest.mark.slow  # waits out a real grace period
def test_with_heartbeats_a_worker_at_the_cap_waits_for_a_dead_workers_trial_and_reopens_the_budget(tmp_path):
    """Cap 3, 2 finished, 1 running whose worker stopped beating: the cap is reached while it runs; settle waits
    until its heartbeat is stale (real time, grace 2 s), fails it, queues its retry (same params) and says go on."""
    from pipeline.tuning import owner, rdb
    from pipeline.tuning.budgets import StudyBudget, settle
    from pipeline.tuning.storage import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'hb.db'}")
    lines: list[str] = []
    heartbeat = rdb.Heartbeat(interval=1, grace_period=2)
    rdb.with_heartbeat(storage, heartbeat, rdb.StaleTrialRetry(heartbeat, None, log=lines.append))
    study = optuna.create_study(storage=storage, study_name="hb")
    _finished(study, 2)
    budget = StudyBudget(max_trials=3)
    dead = _running_trial(study, owner.me())  # this pid is alive: only the heartbeat can tell it is dead
    dead.suggest_float("x", 0, 1)
    study._storage.record_heartbeat(dead._trial_id)  # one beat, then none
    assert budget.reached(study)[0].value == "cap"
    assert settle(study, budget, poll=1.0, give_up=lambda: True)[0].value == "cap"  # a signal: no wait
    assert study.trials[dead.number].state == TrialState.RUNNING
    assert settle(study, budget, poll=0.5, give_up=lambda: False) is None  # the budget reopened
    trials = study.trials
    assert trials[dead.number].state == TrialState.FAIL
    (retry,) = [t for t in trials if t.state == TrialState.WAITING]
    assert retry.system_attrs["failed_trial"] == dead.number and retry.params == trials[dead.number].params
    assert [line.split(":")[1].strip() for line in lines] == [f"trial {dead.number} heartbeat-stale"]
    storage.engine.dispose()


def test_a_heartbeat_retry_is_run_even_when_the_cap_is_reached_and_an_enqueued_trial_is_not(tmp_path):
    """The dead trial counted while it ran, so other workers may have filled the cap meanwhile: its retry is owed
    to the study (Optuna's failed_trial attribute), a trial someone enqueued is not."""
    from pipeline.tuning.budgets import StudyBudget

    study = optuna.create_study(storage=JournalStorage(JournalFileBackend(str(tmp_path / "j.log"))))
    _finished(study, 3)
    budget = StudyBudget(max_trials=3)
    study.enqueue_trial({"x": 0.5})
    assert budget.reached(study)[0].value == "cap"
    study.enqueue_trial({"x": 0.25}, user_attrs={})
    retry = study.get_trials(states=(TrialState.WAITING,))[-1]
    study._storage.set_trial_system_attr(
        retry._trial_id, "failed_trial", 1
    )  # as Optuna's retry callback marks it
    assert budget.reached(study) is None
