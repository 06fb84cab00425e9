"""Repair on every start: what a killed or interrupted run left behind in both stores, put right in a query each.

A process can die between any two writes. What that leaves, and what this module does about it:

- **A trial RUNNING in Optuna whose process is gone.** Every trial records its owner (host, pid, start time) in
  the record that creates it (journal files) or first thing after (other storages). On this machine, a trial whose
  owner is dead is stale at once, without any time threshold, and is marked FAIL (``fail_reason``
  ``owner-gone``). A trial owned by another machine is left to the heartbeat of database storages, or to an explicit
  ``stale_after`` threshold (``tune --fail-stale-after``).
- **An MLflow run still RUNNING** whose trial is finished, missing or stale. Runs are found by their tags
  (``study``, ``trial_number``), so a run whose process died before the trial recorded its id is found too. Each is
  terminated with the status matching its trial (COMPLETE -> FINISHED, PRUNED -> KILLED, FAIL -> FAILED), a
  ``reconciled`` tag saying why, and the trial's params when the run has none.
- **An MLflow run FINISHED or KILLED whose trial is RUNNING with its owner gone**: the process died between
  closing its run and Optuna's record of the trial's end. The run is set FAILED (tag ``reconciled``) before the
  trial is marked FAIL, so that a repair killed in between leaves the work to the next one.
- **A journal lock held by a dead process** is cleared with a message when the storage is opened
  (:mod:`pipeline.tuning.journal`).

:func:`repair_study` is the whole repair; another module that notices a dead worker (a heartbeat) can call it, or
:func:`reconcile_runs` alone after failing trials its own way.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.trial import FrozenTrial, TrialState

from pipeline.tuning import owner

OWNER_ATTR = "owner"  # user attribute: "host:pid:start" of the process that runs the trial
FAIL_REASON = "fail_reason"
OWNER_GONE = "owner-gone"
STALE = "stale"


@dataclass
class RepairReport:
    failed_trials: list[int] = field(default_factory=list)  # RUNNING trials failed (owner gone, or stale)
    reconciled_runs: dict[str, str] = field(default_factory=dict)  # run id -> reason

    def lines(self) -> list[str]:
        out = []
        if self.failed_trials:
            numbers = ", ".join(str(n) for n in self.failed_trials)
            out.append(f"repaired: trial(s) {numbers} left RUNNING by a process that is gone marked FAIL")
        if self.reconciled_runs:
            out.append(
                f"repaired: {len(self.reconciled_runs)} MLflow run(s) given their trial's state (tag 'reconciled')"
            )
        return out


def owned_trial(start: datetime.datetime) -> FrozenTrial:
    """The template of a new RUNNING trial that names this process as its owner from the record that creates it."""
    return FrozenTrial(
        number=-1,
        state=TrialState.RUNNING,
        value=None,
        datetime_start=start,
        datetime_complete=None,
        params={},
        distributions={},
        user_attrs={OWNER_ATTR: owner.me()},
        system_attrs={},
        intermediate_values={},
        trial_id=-1,
    )


class OwnedJournalStorage(JournalStorage):
    """Optuna's journal storage whose new trials carry their owner process in the record that creates them, so
    there is no instant at which a trial exists without an owner (a kill right after ``ask()`` is repairable)."""

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        if template_trial is None:
            template_trial = owned_trial(datetime.datetime.now(datetime.UTC))
        return super().create_new_trial(study_id, template_trial)

    def write_trial_end(self, trial_id: int, attrs: Mapping[str, Any], values: Mapping[int, float]) -> None:
        """A trial's last user attributes and intermediate values ``{step: value}`` as one append to the journal:
        one lock, one write, one fsync, where one call each would take 50 of them per trial and, with several
        workers on one file, make them queue for its lock (whose waiters back off up to a second)."""
        from optuna.storages.journal._storage import JournalOperation

        worker = self._replay_result.worker_id
        logs = [
            {"op_code": JournalOperation.SET_TRIAL_USER_ATTR, "worker_id": worker, "trial_id": trial_id,
             "user_attr": {key: value}}
            for key, value in attrs.items()
        ] + [
            {"op_code": JournalOperation.SET_TRIAL_INTERMEDIATE_VALUE, "worker_id": worker, "trial_id": trial_id,
             "step": int(step), "intermediate_value": float(value)}
            for step, value in sorted(values.items())
        ]  # fmt: skip
        if not logs:
            return
        with self._thread_lock:
            self._backend.append_logs(logs)
            self._sync_with_backend()


def claim(trial: optuna.Trial) -> None:
    """Record this process as the trial's owner (a trial taken from the queue, or any storage but a journal)."""
    if trial.user_attrs.get(OWNER_ATTR) != owner.me():
        trial.set_user_attr(OWNER_ATTR, owner.me())


def _stale_reason(trial: FrozenTrial, stale_after: float | None, now: datetime.datetime) -> str | None:
    alive = owner.is_alive(trial.user_attrs.get(OWNER_ATTR, ""))
    if alive is False:
        return f"{OWNER_GONE}: its process {trial.user_attrs[OWNER_ATTR]} is no longer running"
    if stale_after is not None and trial.datetime_start is not None:
        age = (now - trial.datetime_start).total_seconds()
        if age > stale_after:
            return f"{STALE}: RUNNING for {age:.0f} s > {stale_after:g} s when the study resumed"
    return None


def dead_trials(study: optuna.Study, *, stale_after: float | None = None) -> list[tuple[FrozenTrial, str]]:
    """The RUNNING trials whose owner process is gone (this machine) or older than ``stale_after`` s, and why."""
    now = datetime.datetime.now()
    found = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = _stale_reason(t, stale_after, now)
        if reason is not None:
            found.append((t, reason))
    return found


def fail_trial(study: optuna.Study, trial: FrozenTrial, reason: str) -> None:
    """Mark a dead owner's trial FAIL, with ``fail_reason`` (the reason's first word) and ``error`` (the reason)."""
    study._storage.set_trial_user_attr(trial._trial_id, FAIL_REASON, reason.split(":", 1)[0])
    study._storage.set_trial_user_attr(trial._trial_id, "error", reason)
    study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)


def close_runs_of_failed_trial(
    study: optuna.Study, tracker, trial: FrozenTrial, reason: str
) -> dict[str, str]:
    """Terminate FAILED every run of ``trial`` (failed, or about to be) not FAILED already: RUNNING, or FINISHED
    or KILLED by a process that died after closing its run and before Optuna recorded the trial's end. A run
    without params (they wait in memory for the trial's last batch) gets the trial's."""
    number = trial.number
    done: dict[str, str] = {}
    for run in tracker.trial_runs(study.study_name, number):
        status = run.info.status
        if status == "FAILED":
            continue
        why = f"trial {number} is FAIL in Optuna ({reason})"
        if status != "RUNNING":
            why += f"; the run had ended {status} before the trial's end reached Optuna"
        tracker.reconcile_run(run, "FAIL", why[:500], trial.params)
        done[run.info.run_id] = why
    return done


def reconcile_runs(study: optuna.Study, tracker, *, failed: dict[int, str] | None = None) -> dict[str, str]:
    """Terminate the study's MLflow runs still RUNNING whose trial is finished or missing (one query), and every
    run of the trials in ``failed`` (just failed by the caller) not FAILED already (one query each).

    A run whose trial is RUNNING is left alone: its process is alive, or another machine's (the heartbeat or a
    threshold decides those, then this runs again).
    """
    if tracker is None:
        return {}
    failed = failed or {}
    # The runs first, then the trials: a trial is created before its run, so every run found here has its trial in
    # the snapshot below. The other order takes a live worker's brand-new run for one whose trial is missing.
    runs = tracker.running_trial_runs(study.study_name)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    done: dict[str, str] = {}
    for number, why in failed.items():
        if number in trials and trials[number].state == TrialState.FAIL:
            done.update(close_runs_of_failed_trial(study, tracker, trials[number], why))
    for run in runs:
        if run.info.run_id in done:
            continue
        try:
            number = int(run.data.tags["trial_number"])
        except ValueError:
            number = -1
        trial = trials.get(number)
        if trial is None:
            state, reason, params = "FAIL", f"trial {number} does not exist in the Optuna study", None
        elif trial.state == TrialState.RUNNING:
            continue
        elif trial.state == TrialState.WAITING:
            state, reason, params = "FAIL", f"trial {number} is waiting, not running", None
        else:
            state = trial.state.name
            why = (
                failed.get(number)
                or trial.user_attrs.get("error")
                or "its process died before closing the run"
            )
            reason = f"trial {number} is {state} in Optuna ({why})"
            params = trial.params
        tracker.reconcile_run(run, state, reason[:500], params)
        done[run.info.run_id] = reason
    return done


def repair_study(study: optuna.Study, tracker, *, stale_after: float | None = None) -> RepairReport:
    """Both stores' repair, as done at the start of every run: dead owners' trials FAIL, their runs closed.

    A dead trial's runs are closed before the trial is failed: a process that died between closing its run and
    Optuna's record of the trial's end left the run FINISHED (or KILLED) and the trial RUNNING, and once the trial
    is FAIL nothing marks that run out. In this order, a repair killed in between leaves the trial RUNNING with
    its owner gone, and the next repair does the rest.
    """
    failed: dict[int, str] = {}
    closed: dict[str, str] = {}
    for trial, reason in dead_trials(study, stale_after=stale_after):
        if tracker is not None:
            closed.update(close_runs_of_failed_trial(study, tracker, trial, reason))
        fail_trial(study, trial, reason)
        failed[trial.number] = reason
    if tracker is not None:
        closed.update(reconcile_runs(study, tracker))
    return RepairReport(list(failed), closed)
