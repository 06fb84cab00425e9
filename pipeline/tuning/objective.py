"""The objective: one trial read top to bottom.

Sample the settings, build model / optimizer / schedule, open the trial's MLflow run, train (the per-epoch hook
reports a thinned learning curve to Optuna and asks the optional pruner), then end the trial as complete, pruned
("diverged", "underperforming", or "deadline" when the run's time budget ran out mid-trial) or failed, with the full curve sent to MLflow in one batch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna

from pipeline.core.arrays import Dataset
from pipeline.core.names import DIVERGED, PRUNE_DEADLINE, PRUNE_DIVERGED, PRUNE_UNDERPERFORMING
from pipeline.core.training import EpochRecord, TrainResult
from pipeline.study.experiment import (
    run_settings,
)
from pipeline.study.spec import StudySpec
from pipeline.tuning import interrupt, rdb
from pipeline.tuning.repair import OwnedJournalStorage, claim


class _OptunaSuggester:
    """Adapts an Optuna trial to the spec's Suggester protocol, so conditional sampling lives in the spec."""

    def __init__(self, trial: optuna.Trial):
        self._trial = trial

    def float(self, name, low, high, *, log):
        return self._trial.suggest_float(name, low, high, log=log)

    def int(self, name, low, high, *, log):
        return self._trial.suggest_int(name, low, high, log=log)

    def categorical(self, name, choices):
        return self._trial.suggest_categorical(name, list(choices))


# A loss more than this times the lowest before it may be the start of a blow-up: it is held back until the run
# shows it recovered (then it is reported late) or diverges (then it is dropped).
SHOWN_FACTOR = 2.0


class ShownLoss:
    """Which monitored losses are fit to show at once: finite, and at most ``factor`` times the lowest loss seen
    before (the initial training loss included). A run that diverges climbs for a few epochs before its training
    loss passes the loop's ``divergence_factor`` (10x), and the validation loss of the step that blew up is seen
    one epoch before the training loss says so; those values (10-1000x the rest) would otherwise reach the stores
    and set the scale of every plot. Fed one epoch at a time, in order."""

    def __init__(self, factor: float):
        self.factor = factor
        self.lowest = math.inf
        self.last: tuple[int, float] | None = None  # the last shown (epoch, loss)

    def __call__(self, epoch: int, loss: float, train_loss: float) -> bool:
        if epoch == 0 and math.isfinite(train_loss):
            self.lowest = train_loss  # the loss of the initial parameters
        shown = math.isfinite(loss) and loss <= self.factor * self.lowest
        if math.isfinite(loss):
            self.lowest = min(self.lowest, loss)
        if shown:
            self.last = (epoch, float(loss))
        return shown


class CurveReports:
    """The losses a trial reports to Optuna: at the ``reported`` epochs, those :class:`ShownLoss` lets through at
    once; the others are held back, then reported when the run shows it recovered (a spike, not a blow-up; also
    :meth:`flush` when the run ends without diverging) or dropped when it diverges (:meth:`diverged`).

    ``report(value, epoch)`` is ``optuna.Trial.report``.
    """

    def __init__(self, report, reported: frozenset[int], factor: float = SHOWN_FACTOR):
        self._report = report
        self.reported = reported
        self.shown = ShownLoss(factor)
        self.held: list[tuple[int, float]] = []

    def epoch(self, epoch: int, loss: float, train_loss: float) -> None:
        if self.shown(epoch, loss, train_loss):
            self.flush()  # whatever was held back was a spike the run recovered from
            if epoch in self.reported:
                self._report(loss, epoch)
        elif epoch in self.reported and math.isfinite(loss):
            self.held.append((epoch, loss))

    def flush(self) -> None:
        for epoch, loss in self.held:
            self._report(loss, epoch)
        self.held.clear()

    def diverged(self) -> None:
        """Drop what was held back (the blow-up) and end the curve on the last loss fit to show."""
        self.held.clear()
        if self.shown.last is not None and self.shown.last[0] not in self.reported:
            self._report(self.shown.last[1], self.shown.last[0])


def last_shown_epoch(result: TrainResult, factor: float) -> int | None:
    """The last epoch of a run whose loss :class:`ShownLoss` lets through before it diverged (None: none)."""
    end = result.diverged_epoch if result.diverged_epoch is not None else result.epochs_run
    shown = ShownLoss(factor)
    for epoch in range(end):
        shown(epoch, float(result.monitored[epoch]), float(result.train_loss[epoch]))
    return shown.last[0] if shown.last is not None else None


def report_epochs(epochs: int, points: int) -> frozenset[int]:
    """The epochs whose loss is reported to Optuna: ``points`` evenly spaced ones, always the first and last.

    Every report is a storage write (1-2 ms on a journal file, 3-16 ms on SQLite); the full curve goes to MLflow in
    one batch instead, so Optuna gets just enough points to draw the curve and to let a pruner decide.
    """
    if points >= epochs:
        return frozenset(range(epochs))
    return frozenset(int(round(x)) for x in np.linspace(0, epochs - 1, points))


@dataclass
class Objective:
    spec: StudySpec
    data: Dataset
    tracker: object | None = None  # pipeline.tracking.Tracker; None = no tracking (benchmarks, tests)
    prune_underperforming: bool = False
    should_stop: Callable[[], bool] | None = None  # Ctrl-C's flag, read once per epoch
    # The run's deadline (time.monotonic()), read once per epoch: a trial still training then is cut at that
    # epoch and pruned with reason "deadline", so a run overshoots its time budget by at most one epoch.
    deadline: float | None = None
    cut_by_deadline: int = 0  # trials this objective cut (the summary's count)

    def __call__(self, trial: optuna.Trial) -> float:
        spec = self.spec
        claim(trial)
        settings = spec.search.sample(_OptunaSuggester(trial))
        if self.should_stop is not None and self.should_stop():
            self._interrupted(trial, None, None, "before it started")
        run_id = None
        if self.tracker is not None:
            tags = {"study": spec.name, **rdb.retry_tags(trial)}  # a heartbeat retry names its original
            run_id = self.tracker.start_trial(trial.number, settings.as_params(), tags)
            trial.set_user_attr("mlflow_run_id", run_id)
        try:
            reported = report_epochs(spec.training.epochs, spec.tracking.report_points)
            pruned_by_pruner = False
            stopped_at: list[int] = []
            past_deadline: list[int] = []

            # No pruner reads the curve while the trial runs: its points are kept and written when the trial ends
            # (_finish), in one write on a database storage (one statement on PostgreSQL) and one append on a
            # journal, not one write per report (50 per trial; on a journal shared by workers, each waits for the
            # file's lock).
            self._curve_buffer = None
            if not self.prune_underperforming and (
                rdb.unwrap(trial.storage) is not None or isinstance(trial.storage, OwnedJournalStorage)
            ):
                self._curve_buffer = rdb.CurveBuffer(trial)
            curve = CurveReports(self._curve_buffer or trial.report, reported)

            def hook(record: EpochRecord) -> bool:
                nonlocal pruned_by_pruner
                if self.should_stop is not None and self.should_stop():
                    stopped_at.append(record.epoch)
                    return True
                value = record.val_loss if self.data.X_val.shape[0] else record.train_loss
                curve.epoch(record.epoch, value, record.train_loss)
                if self.deadline is not None and time.monotonic() >= self.deadline:
                    past_deadline.append(record.epoch)
                    return True
                if record.epoch in reported and self.prune_underperforming and trial.should_prune():
                    pruned_by_pruner = True
                    return True
                return False

            result = run_settings(settings, spec, self.data, hook=hook)
        except Exception as exc:
            self._finish(trial, run_id, None, "FAIL", {"error": f"{type(exc).__name__}: {exc}"[:5000]})
            raise

        if stopped_at:
            self._interrupted(trial, run_id, result, f"at epoch {stopped_at[0]}")
        if result.status == DIVERGED:
            # Optuna gets the last loss before the blow-up (ShownLoss), not the loss that diverged (up to 1e308):
            # that value would stretch every plot of the dashboard (history, intermediate values, slice, EDF)
            # until the other trials lie flat on 0. The diverged loss is kept as a user attribute. Pruned trials
            # still rank below every complete one in TPE whatever their value (see tests/test_objective.py).
            diverged_loss = float(result.monitored[result.diverged_epoch])
            curve.diverged()
            trial.set_user_attr(
                "diverged_loss", diverged_loss if math.isfinite(diverged_loss) else repr(diverged_loss)
            )
            tags = {
                "prune_reason": PRUNE_DIVERGED,
                "diverged_epoch": result.diverged_epoch,
                "diverged_loss": repr(diverged_loss),
                "stop": result.reason,
            }
            self._finish(trial, run_id, result, "PRUNED", tags)
            raise optuna.TrialPruned(f"diverged at epoch {result.diverged_epoch}: {result.reason}")
        curve.flush()  # the run did not diverge: whatever was held back is its curve after all
        if past_deadline:
            # Pruned, not complete: a curve cut short is not the settings' result, and must not rank as one. The
            # epochs it ran are reported to Optuna like any other pruned trial's.
            self.cut_by_deadline += 1
            epoch = past_deadline[0]
            tags = {"prune_reason": PRUNE_DEADLINE, "stop": f"the run's deadline, before epoch {epoch + 1}"}
            self._finish(trial, run_id, result, "PRUNED", tags)
            raise optuna.TrialPruned(f"cut by the run's deadline after epoch {epoch}")
        if pruned_by_pruner:
            tags = {"prune_reason": PRUNE_UNDERPERFORMING, "stop": f"pruned by {spec.pruner.name} pruner"}
            self._finish(trial, run_id, result, "PRUNED", tags)
            raise optuna.TrialPruned(f"underperforming at epoch {result.epochs_run - 1}")
        self._finish(trial, run_id, result, "COMPLETE", {"stop": result.reason})
        return result.final_loss

    def _interrupted(self, trial, run_id, result: TrainResult | None, when: str):
        """Store the trial as FAIL with reason ``interrupted`` in both stores, then end it (the run stops)."""
        tags = {"fail_reason": interrupt.REASON, "error": f"interrupted by Ctrl-C {when}"}
        self._finish(trial, run_id, result, "FAIL", tags)
        raise interrupt.TrialInterrupted(tags["error"])

    def _finish(self, trial, run_id, result: TrainResult | None, state: str, tags: dict) -> None:
        attrs = {
            k: v for k, v in tags.items() if k in ("prune_reason", "diverged_epoch", "error", "fail_reason")
        }
        if result is not None:
            attrs["epochs_run"] = result.epochs_run
        # One transaction on a database storage: these attributes and the curve kept back (no pruner reads it).
        buffered = getattr(self, "_curve_buffer", None)
        rdb.write_trial_end(trial, attrs, buffered.take() if buffered is not None else {})
        if self.tracker is None or run_id is None:
            return
        curves, final = {}, {}
        if result is not None:
            # A diverged run's curves stop at its last shown loss (ShownLoss), before the blow-up: the losses after
            # it (up to 1e308) would set the y-axis of every chart the run shares with the others. It is logged on its own instead, as the
            # metric `diverged_loss` (when finite) and the tags `diverged_loss` and `diverged_epoch`.
            end = result.epochs_run
            last = None
            if result.diverged:
                last = last_shown_epoch(result, SHOWN_FACTOR)
                end = 0 if last is None else last + 1
            curves = {"train_loss": result.train_loss[:end], "lr": result.lr[:end]}
            if result.has_validation:
                curves["val_loss"] = result.val_loss[:end]
            if result.val_accuracy is not None:
                curves["val_accuracy"] = result.val_accuracy[:end]
            final = {"best_loss": result.best_loss, "epochs_run": result.epochs_run}
            if result.diverged:
                # No final_* metric: sorting the runs table by final_loss puts diverged runs last, not among the
                # best on the strength of the loss they had before they blew up.
                final["diverged_loss"] = float(result.monitored[result.diverged_epoch])
                if last is not None:
                    final["loss_before_divergence"] = float(result.monitored[last])
            else:
                final["final_train_loss"] = float(result.train_loss[-1])
                final["final_loss"] = result.final_loss
                if result.has_validation:
                    final["final_val_loss"] = float(result.val_loss[-1])
                if result.val_accuracy is not None and len(result.val_accuracy):
                    final["final_val_accuracy"] = float(result.val_accuracy[-1])
        all_tags = {"study": self.spec.name, "trial_number": trial.number, "state": state, **tags}
        self.tracker.finish_trial(run_id, curves, final, state, {k: str(v) for k, v in all_tags.items()})
