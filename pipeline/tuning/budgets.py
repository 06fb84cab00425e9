"""The study-wide budget: ``budget.max_trials`` (a cap on finished trials) and ``budget.patience`` (converged).

Both are read from the storage, so they hold across runs (nights) and across workers: every process checks them
when it starts and after each of its trials. A worker stops when the finished trials plus those other workers are
still running reach the cap; the others are each in at most one trial at that instant, so N workers finish at most
N - 1 trials past the cap (Optuna's own ``MaxTrialsCallback`` counts finished trials only, and overshoots as much
routinely). A running trial whose worker is known to be dead does not count (its owner process gone from this
machine, without heartbeats), nor does a waiting one (enqueued, or a dead trial's retry): only a worker that
starts another trial runs it, and a heartbeat retry is run even at the cap (:func:`retries_waiting`). With
heartbeats on, a worker at the cap waits for the trials others still run (:func:`settle`): one whose worker died
goes stale, is failed and queued again, and is run, instead of staying RUNNING with the study one trial short.

The per-run budget (``trials``, ``timeout``) is Optuna's ``optimize`` arguments plus the objective's per-epoch
deadline check (:mod:`pipeline.tuning.objective`).

Optuna 5 deprecates ``optuna.terminator``; the rule here is small and says exactly what it measures.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from pipeline.study.spec import Budget
from pipeline.summary import StopReason
from pipeline.tuning import owner

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def converged(values: Sequence[float | None], patience: int, tolerance: float) -> bool:
    """True when the last ``patience`` finished trials did not lower the best loss by more than ``tolerance``
    (relative to the best before them).

    ``values``: the finished trials in the order they finished, a complete trial's loss or None for a pruned
    one. With fewer than ``patience`` finished trials, or no complete trial before the window (the window then
    found the first best, an improvement from nothing), it is not converged.
    """
    if len(values) <= patience:
        return False
    before = [v for v in values[:-patience] if v is not None]
    if not before:
        return False
    best_before = min(before)
    window = [v for v in values[-patience:] if v is not None]
    best_now = min([best_before, *window])
    return best_before - best_now <= tolerance * abs(best_before)


def finished_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Complete and pruned trials, in the order they finished (ties: by number)."""
    trials = study.get_trials(deepcopy=False, states=FINISHED)
    return sorted(trials, key=lambda t: (t.datetime_complete is None, t.datetime_complete, t.number))


@dataclass(frozen=True)
class StudyBudget:
    """The study-wide part of a study file's ``budget``."""

    max_trials: int | None = None
    patience: int | None = None
    tolerance: float = 0.0

    @classmethod
    def of(cls, budget: Budget) -> StudyBudget:
        return cls(budget.max_trials, budget.patience, budget.tolerance)

    @property
    def active(self) -> bool:
        return self.max_trials is not None or self.patience is not None

    def reached(self, study: optuna.Study) -> tuple[StopReason, str] | None:
        """Why the study must not start another trial, with a clause saying what was measured; None to go on."""
        if not self.active:
            return None
        finished = finished_trials(study)
        if self.max_trials is not None:
            # Trials other workers are running will finish too: counting them stops this worker when the cap will
            # be met without it, so N workers usually end on the cap exactly. Two workers that check at the same
            # instant can still each start one more: the overshoot stays <= N - 1.
            pending = len(running_elsewhere(study))
            if len(finished) + pending >= self.max_trials and not retries_waiting(study):
                counted = f"{len(finished)} finished" + (f" + {pending} running" if pending else "")
                return StopReason.CAP, f"{counted} trials, budget.max_trials {self.max_trials}"
        if self.patience is not None:
            values = [_value(t) for t in finished]
            if converged(values, self.patience, self.tolerance):
                return StopReason.CONVERGED, (
                    f"no improvement > {self.tolerance:.3g} (relative) of the best loss "
                    f"{min(v for v in values if v is not None):.6g} over the last {self.patience} finished trials"
                )
        return None


def running_elsewhere(study: optuna.Study) -> list[FrozenTrial]:
    """The RUNNING trials that count as pending. With heartbeats on, all of them: one whose worker died goes
    stale, is failed and queued again, and its retry takes its place (:func:`settle`). Without, not those whose
    owner process is gone from this machine: nothing retries them, and the next start's repair fails them."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if not running or is_heartbeat_enabled(study._storage):
        return running
    return [t for t in running if owner.is_alive(str(t.user_attrs.get("owner", ""))) is not False]


def retries_waiting(study: optuna.Study) -> list[FrozenTrial]:
    """Heartbeat retries still waiting (Optuna's ``failed_trial`` attribute names the dead trial): owed to the
    study whatever the cap, since the dead trial counted while it ran, and other workers may have stopped on it."""
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    return [t for t in waiting if "failed_trial" in t.system_attrs]


def settle(
    study: optuna.Study,
    budget: StudyBudget,
    *,
    poll: float,
    give_up: Callable[[], bool],
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[StopReason, str] | None:
    """:meth:`StudyBudget.reached`, waiting, at the cap, while other workers still run trials: every ``poll``
    seconds the trials whose heartbeat went stale are failed (Optuna's ``fail_stale_trials``, whose callback
    queues them again and ends their MLflow runs) and the budget is counted again. A dead worker's trial then
    reopens the budget, and this worker runs its retry; live workers' trials end and meet the cap. Stops waiting
    when ``give_up()`` (a signal, the run's deadline). Only with heartbeats on: without them a dead worker on
    another machine cannot be told from a live one, and the worker stops at once."""
    from optuna.storages import fail_stale_trials
    from optuna.storages._heartbeat import is_heartbeat_enabled

    reached = budget.reached(study)
    waits = is_heartbeat_enabled(study._storage)
    while reached is not None and reached[0] is StopReason.CAP and waits and running_elsewhere(study):
        for _ in range(max(1, round(poll / 0.2))):  # in steps, to answer a signal at once
            if give_up():
                break
            sleep(0.2)
        if give_up():
            break
        with warnings.catch_warnings():  # experimental in Optuna 5, as the optimize loop's own call is
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            fail_stale_trials(study)
        reached = budget.reached(study)
    return reached


def _value(trial: FrozenTrial) -> float | None:
    if trial.state != TrialState.COMPLETE or trial.value is None or not math.isfinite(trial.value):
        return None
    return trial.value
