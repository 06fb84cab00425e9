"""pipeline/tuning/repair.py: what a killed run leaves behind is repaired by the next one. A real child process
asks a trial in a real journal file and is SIGKILLed; its trial, RUNNING with a dead owner, is marked FAIL, while a
trial whose owner is alive, or on another machine, is left alone unless it is older than ``stale_after``.
MLflow runs are reconciled through the tracker's two calls (a recording stand-in here: the real one is exercised
by test_faults.py and test_tracking.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from pipeline.tuning import owner
from pipeline.tuning.repair import (
    OWNER_ATTR,
    OwnedJournalStorage,
    RepairReport,
    claim,
    reconcile_runs,
    repair_study,
)

ROOT = Path(__file__).resolve().parent.parent

ASK_AND_WAIT = textwrap.dedent(
    """
    import sys, time
    import optuna
    from optuna.storages.journal import JournalFileBackend
    from pipeline.tuning.repair import OwnedJournalStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = OwnedJournalStorage(JournalFileBackend(sys.argv[1]))
    study = optuna.load_study(study_name="s", storage=storage)
    trial = study.ask()
    trial.suggest_float("lr", 1e-3, 1.0, log=True)
    print(trial.number, flush=True)
    time.sleep(60)  # a trial in the middle of its epochs
    """
)


def open_study(path: Path) -> optuna.Study:
    storage = OwnedJournalStorage(JournalFileBackend(str(path)))
    return optuna.create_study(study_name="s", storage=storage, load_if_exists=True)


@pytest.fixture
def killed(tmp_path):
    """A journal with trial 0 asked by a child process that was then SIGKILLed."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal = tmp_path / "optuna.journal"
    open_study(journal)
    child = subprocess.Popen(
        [sys.executable, "-c", ASK_AND_WAIT, str(journal)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "0"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    return journal, child.pid


def test_a_killed_workers_trial_is_running_with_its_owner_in_the_journal(killed):
    journal, pid = killed
    (trial,) = open_study(journal).get_trials()
    assert trial.state == TrialState.RUNNING
    name, owner_pid, _start = owner.parse(trial.user_attrs[OWNER_ATTR])
    assert (name, owner_pid) == (owner.host(), pid)  # recorded in the record that created the trial


def test_the_next_run_marks_it_fail_owner_gone_and_leaves_a_live_trial_alone(killed):
    journal, pid = killed
    study = open_study(journal)
    mine = study.ask()  # RUNNING, owned by this (live) process
    report = repair_study(study, tracker=None)
    assert report.failed_trials == [0] and report.reconciled_runs == {}
    assert report.lines() == ["repaired: trial(s) 0 left RUNNING by a process that is gone marked FAIL"]
    # what the next process reads back from the file
    dead, live = open_study(journal).get_trials()
    assert dead.state == TrialState.FAIL
    assert dead.user_attrs["fail_reason"] == "owner-gone"
    assert dead.user_attrs["error"].startswith(f"owner-gone: its process {owner.host()}:{pid}:")
    assert set(dead.params) == {"lr"} and 1e-3 <= dead.params["lr"] <= 1.0  # what it sampled is kept
    assert live.number == mine.number and live.state == TrialState.RUNNING
    # a second repair finds nothing left to do
    assert repair_study(open_study(journal), tracker=None).lines() == []


def test_another_machines_trial_is_failed_only_past_stale_after(tmp_path):
    study = open_study(tmp_path / "optuna.journal")
    trial = study.ask()
    study._storage.set_trial_user_attr(trial._trial_id, OWNER_ATTR, "another-host.invalid:123:456")
    assert repair_study(study, tracker=None, stale_after=3600).failed_trials == []
    assert study.get_trials()[0].state == TrialState.RUNNING
    report = repair_study(study, tracker=None, stale_after=0)
    assert report.failed_trials == [0]
    (failed,) = study.get_trials()
    assert failed.state == TrialState.FAIL and failed.user_attrs["fail_reason"] == "stale"
    assert failed.user_attrs["error"].endswith("> 0 s when the study resumed")


def test_claim_records_this_process_as_owner(tmp_path):
    study = optuna.create_study()  # in memory: no owner in the creating record
    trial = study.ask()
    assert OWNER_ATTR not in trial.user_attrs
    claim(trial)
    assert study.get_trials()[0].user_attrs[OWNER_ATTR] == owner.me()


class RecordingTracker:
    """The two calls reconcile_runs makes of a pipeline.tracking.Tracker, recorded."""

    def __init__(self, runs):
        self.runs, self.calls = runs, []

    def running_trial_runs(self, study_name):
        return self.runs

    def trial_runs(self, study_name, number):
        return [run for run in self.runs if run.data.tags["trial_number"] == str(number)]

    def reconcile_run(self, run, state, reason, params):
        self.calls.append((run.info.run_id, state, reason, params))


def run_of(run_id: str, number) -> SimpleNamespace:
    return SimpleNamespace(
        info=SimpleNamespace(run_id=run_id, status="RUNNING"),
        data=SimpleNamespace(tags={"trial_number": number}),
    )


def test_runs_left_running_are_closed_with_their_trials_state():
    study = optuna.create_study()
    study.enqueue_trial({"lr": 0.1})
    done = study.ask()
    done.suggest_float("lr", 1e-3, 1.0)
    study.tell(done, 0.5)  # trial 0 COMPLETE
    pruned = study.ask()
    study.tell(pruned, state=TrialState.PRUNED)  # trial 1 PRUNED
    study.ask()  # trial 2 RUNNING: its process may be alive, its run is left alone
    tracker = RecordingTracker(
        [run_of("a", "0"), run_of("b", "1"), run_of("c", "2"), run_of("d", "9"), run_of("e", "x")]
    )
    closed = reconcile_runs(study, tracker, failed={1: "owner-gone: its process h:1:1 is no longer running"})
    assert set(closed) == {"a", "b", "d", "e"}
    calls = {run_id: (state, reason, params) for run_id, state, reason, params in tracker.calls}
    assert calls["a"] == (
        "COMPLETE",
        "trial 0 is COMPLETE in Optuna (its process died before closing the run)",
        {"lr": 0.1},
    )
    assert calls["b"][:2] == (
        "PRUNED",
        "trial 1 is PRUNED in Optuna (owner-gone: its process h:1:1 is no longer running)",
    )
    assert calls["d"] == ("FAIL", "trial 9 does not exist in the Optuna study", None)
    assert calls["e"] == ("FAIL", "trial -1 does not exist in the Optuna study", None)
    assert "c" not in calls


def test_an_empty_report_says_nothing():
    assert RepairReport().lines() == []
    assert reconcile_runs(optuna.create_study(), None) == {}


CLOSE_RUN_AND_WAIT = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import optuna
    from optuna.storages.journal import JournalFileBackend
    from pipeline.tracking import Tracker
    from pipeline.tuning.repair import OwnedJournalStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = OwnedJournalStorage(JournalFileBackend(sys.argv[1]))
    study = optuna.load_study(study_name="s", storage=storage)
    tracker = Tracker("s", tracking_uri=sys.argv[2])
    trial = study.ask()
    lr = trial.suggest_float("lr", 1e-3, 1.0, log=True)
    run_id = tracker.start_trial(trial.number, {"lr": lr}, {"study": "s"})
    if sys.argv[3] == "finished":
        tracker.finish_trial(run_id, {"train_loss": np.array([1.0, 0.5])}, {"final_loss": 0.5}, "COMPLETE", {})
    print(trial.number, flush=True)
    time.sleep(60)  # killed here: the run FINISHED (or RUNNING, its params in memory), the trial RUNNING
    """
)


def killed_after_its_run(tmp_path: Path, run_state: str) -> tuple[Path, str]:
    """A journal and an MLflow sqlite store where a child asked trial 0, started its run (and closed it FINISHED
    when ``run_state`` is "finished"), then was SIGKILLed before Optuna recorded the trial's end."""
    from pipeline.tracking import Tracker

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    journal, uri = tmp_path / "optuna.journal", f"sqlite:///{tmp_path / 'mlflow.db'}"
    open_study(journal)
    Tracker("s", tracking_uri=uri).close()  # the store exists before the child opens it
    child = subprocess.Popen(
        [sys.executable, "-c", CLOSE_RUN_AND_WAIT, str(journal), uri, run_state],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "0"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    return journal, uri


class DiesAfterFirstReconcile:
    """A real tracker whose process 'dies' (an exception nothing catches) right after its first run is closed."""

    def __init__(self, tracker):
        self.tracker = tracker

    def __getattr__(self, name):
        return getattr(self.tracker, name)

    def reconcile_run(self, *args):
        self.tracker.reconcile_run(*args)
        raise SystemExit("killed")


def test_a_run_finished_by_a_process_killed_before_optuna_recorded_its_trial_is_failed_with_it(tmp_path):
    """A process closes its run FINISHED and is SIGKILLed before Optuna records the trial's end: the repair fails
    the trial (owner gone) and sets the run FAILED with it, even when the repair itself dies half-way."""
    from mlflow import MlflowClient

    from pipeline.tracking import Tracker

    journal, uri = killed_after_its_run(tmp_path, "finished")
    client = MlflowClient(tracking_uri=uri)

    def run_status() -> tuple[str, dict]:
        (run,) = [r for r in client.search_runs([client.get_experiment_by_name("s").experiment_id])
                  if r.data.tags.get("trial_number") == "0"]  # fmt: skip
        return run.info.status, run.data.tags

    assert run_status()[0] == "FINISHED"
    assert open_study(journal).get_trials()[0].state == TrialState.RUNNING

    # A repair that dies right after closing the run: the trial is still RUNNING, with its owner gone.
    with pytest.raises(SystemExit):
        repair_study(open_study(journal), DiesAfterFirstReconcile(Tracker("s", tracking_uri=uri)))
    assert run_status()[0] == "FAILED"
    assert open_study(journal).get_trials()[0].state == TrialState.RUNNING

    # The next repair fails the trial; the run, FAILED already, is not touched again.
    report = repair_study(open_study(journal), Tracker("s", tracking_uri=uri))
    assert report.failed_trials == [0] and report.reconciled_runs == {}
    (trial,) = open_study(journal).get_trials()
    assert trial.state == TrialState.FAIL and trial.user_attrs["fail_reason"] == "owner-gone"
    status, tags = run_status()
    assert status == "FAILED" and tags["state"] == "FAIL"
    assert tags["reconciled"].startswith("trial 0 is FAIL in Optuna (owner-gone: its process")
    assert tags["reconciled"].endswith("the run had ended FINISHED before the trial's end reached Optuna")
    assert repair_study(open_study(journal), Tracker("s", tracking_uri=uri)).lines() == []


@pytest.mark.parametrize("run_state", ["finished", "running"])
def test_one_repair_fails_a_killed_trial_and_its_run_finished_or_running(tmp_path, run_state):
    """The same kill, or one mid-trial (run RUNNING, its params not yet written), one repair: both stores say
    FAIL, the run has the trial's params, and the report counts the run."""
    from mlflow import MlflowClient

    from pipeline.tracking import Tracker

    journal, uri = killed_after_its_run(tmp_path, run_state)
    report = repair_study(open_study(journal), Tracker("s", tracking_uri=uri))
    assert report.failed_trials == [0] and len(report.reconciled_runs) == 1
    assert report.lines()[1] == "repaired: 1 MLflow run(s) given their trial's state (tag 'reconciled')"
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("s").experiment_id])
    (run,) = [r for r in runs if "trial_number" in r.data.tags]  # not the study's parent run
    assert run.info.status == "FAILED"
    (trial,) = open_study(journal).get_trials()
    # written by the repair when the run was RUNNING
    assert float(run.data.params["lr"]) == trial.params["lr"]
    assert open_study(journal).get_trials()[0].state == TrialState.FAIL
