"""A study run: create or resume the study, run its budget, stop cleanly on SIGTERM, summarise."""

from __future__ import annotations

import contextlib
import datetime
import math
import os
import signal
import socket
import threading
import time
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from pipeline import config
from pipeline.errors import ConfigError
from pipeline.study.experiment import build_model_for, load_study_data
from pipeline.study.spec import StudySpec
from pipeline.summary import RunSummary, StopReason, now_utc
from pipeline.tuning.commands import resolve_auto_lr
from pipeline.tuning.objective import Objective
from pipeline.tuning.storage import _check_journal_file, best_trial_info, count_trials, open_storage
from pipeline.tuning.ui import (
    describe_study,
    loss_meaning,
    mlflow_link,
    range_edge_warnings,
    set_mlflow_view,
)


def _sampler(spec: StudySpec, seed: int) -> optuna.samplers.BaseSampler:
    name, params = spec.sampler.name, dict(spec.sampler.params)
    if name == "grid":
        return optuna.samplers.GridSampler(spec.search.grid(), seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    # group=True: schedules and optimizers are conditional branches; grouping lets multivariate TPE model each
    # branch's parameters jointly instead of falling back to independent sampling.
    if params.setdefault("multivariate", True):
        params.setdefault("group", True)
    with warnings.catch_warnings():  # `group` is marked experimental; the pipeline relies on it knowingly
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, **params)


def _pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    name, params = spec.pruner.name, dict(spec.pruner.params)
    builders = {
        "none": optuna.pruners.NopPruner,
        "median": optuna.pruners.MedianPruner,
        "percentile": optuna.pruners.PercentilePruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
    }
    if name == "none":
        return optuna.pruners.NopPruner()
    return builders[name](**params)


# The run's summary lives in pipeline.summary (no Optuna there): this module fills it, the CLI renders it.
StudySummary = RunSummary


@contextlib.contextmanager
def _stop_gracefully_on_sigterm(study: optuna.Study, stopped: list[int]):
    """A scheduler's SIGTERM (a nightly job past its slot) lets the running trial finish, then ends the study:
    no trial is left RUNNING in the storage nor a run RUNNING in MLflow, and no storage write is cut in half
    (an exception raised mid-write could leave a journal lock behind). Trials take seconds, well inside the
    usual grace period before SIGKILL. Ctrl-C (SIGINT) still interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum, frame):
        stopped.append(signum)
        with contextlib.suppress(RuntimeError):  # between trials, outside the optimize loop: nothing to stop
            study.stop()

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def fail_stale_trials(study: optuna.Study, older_than: float, tracker) -> int:
    """Mark FAIL every trial RUNNING for more than ``older_than`` seconds (and FAILED its MLflow run).

    Database storages can use Optuna's heartbeat for this; a journal file has none, so a worker killed by
    SIGKILL or a reboot leaves its trial RUNNING for good. Only the caller knows how long a trial may take:
    pick a threshold far above it, or live workers' trials are failed too.
    """
    now = datetime.datetime.now()
    failed = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if t.datetime_start is None or (now - t.datetime_start).total_seconds() <= older_than:
            continue
        study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
        run_id = t.user_attrs.get("mlflow_run_id")
        if tracker is not None and run_id:
            tracker.fail_run(run_id, f"stale: RUNNING for more than {older_than:g} s when the study resumed")
        failed += 1
    return failed


def _grid_left(spec: StudySpec, study: optuna.Study) -> int:
    """Grid points a grid study has not finished yet."""
    grid_size = math.prod(len(v) for v in spec.search.grid().values())
    done = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
    return max(0, grid_size - done)


def sampler_seed(seed: int, existing_trials: int, worker: int = 0) -> int:
    """The sampler's seed for a run that finds ``existing_trials`` in the study: the study's seed on a new study
    (reproducible), shifted by the trials already stored (a resumed study does not replay its start-up trials)
    and by the worker index (workers started together do not propose the same trials)."""
    return seed + existing_trials + 1_000_003 * worker


def run_study(
    spec: StudySpec,
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    track: bool = True,
    progress: bool = True,
    worker: int = 0,
    fail_stale_after: float | None = None,
) -> RunSummary:
    """Create the study, or load it when it exists (resume: new trials add to it), and run its budget.

    ``worker``: this process's index when several processes share the study (same storage URL, on one machine
    or several); it only offsets the sampler's seed so that workers started together do not propose the same
    trials. A seeded study is reproducible with one worker only.
    ``fail_stale_after``: seconds after which a trial still RUNNING is taken for one a killed worker left behind
    (a journal file has no heartbeat) and marked FAIL, with its MLflow run, before new trials start.
    """
    from pipeline.tracking import NOTE_TAG, Tracker  # the only MLflow contact, imported only when tracking

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started_at = now_utc()
    # Everything that can be wrong with the input is found before anything is written: the data, the warmup
    # against the real number of updates, the MLflow store; only then the Optuna storage.
    data = load_study_data(spec)
    spec.check_steps(data.n_train)
    build_model_for(spec, data)  # the model against the data; a user's model against finite differences
    storage_url = storage or config.DEFAULT_STORAGE
    if "://" not in storage_url:
        _check_journal_file(Path(storage_url))
    tracker = None
    if track:
        tracker = Tracker(
            spec.name,
            tracking_uri=tracking_uri,
            tags={"study_file": str(spec.path), NOTE_TAG: spec.description or None},
        )
    try:
        backend = open_storage(storage_url)
    except ConfigError:
        if tracker is not None:
            tracker.close()
        raise

    # A resumed study continues from a different seed: the same seed would replay the first night's startup
    # trials. The offset is the number of trials already stored, so one worker stays reproducible; parallel
    # workers also differ by their index.
    study = optuna.create_study(
        storage=backend, study_name=spec.name, direction="minimize", pruner=_pruner(spec), load_if_exists=True
    )
    existing = len(study.get_trials(deepcopy=False))
    before = best_trial_info(study)
    study.sampler = _sampler(spec, sampler_seed(spec.seed, existing, worker))
    study.set_user_attr("study_file", str(spec.path))
    study.set_user_attr("dataset", data.source)
    study.set_user_attr("model", spec.model.label)
    describe_study(study, spec)

    n_trials = spec.budget.trials
    if spec.sampler.name == "grid":
        left = _grid_left(spec, study)
        n_trials = left if n_trials is None else min(n_trials, left)

    stale = fail_stale_trials(study, fail_stale_after, tracker) if fail_stale_after else 0
    if tracker is not None:
        study.set_user_attr("mlflow_experiment", spec.name)
        study.set_user_attr("mlflow_tracking_uri", tracker.tracking_uri)
    if spec.search.lr_auto is not None:
        spec = resolve_auto_lr(spec, data, study, tracker, storage_url)
    objective = Objective(spec, data, tracker, prune_underperforming=spec.pruner.name != "none")
    first_error: list[str] = []
    failed_here = 0
    stopped: list[int] = []  # the signal that asked the study to stop, if any
    finished_here = 0  # this process's trials: other workers may add to the study meanwhile

    def on_trial_end(_study, trial):
        nonlocal finished_here, failed_here
        finished_here += 1
        if trial.state == TrialState.FAIL:
            failed_here += 1
            if not first_error:
                first_error.append(str(trial.user_attrs.get("error", "see the log above")))
        if stopped:  # a SIGTERM that came before the optimize loop could be told
            _study.stop()

    start = time.perf_counter()
    try:
        with _stop_gracefully_on_sigterm(study, stopped):
            if n_trials is None or n_trials > 0:
                study.optimize(
                    objective,
                    n_trials=n_trials,
                    timeout=spec.budget.timeout,
                    catch=(Exception,),
                    callbacks=[on_trial_end],
                    show_progress_bar=progress,
                )
        if tracker is not None:
            set_mlflow_view(study, tracker)
    finally:
        if tracker is not None:
            tracker.close()
    elapsed = time.perf_counter() - start
    if stopped:
        reason = StopReason.SIGNAL
    elif spec.sampler.name == "grid" and _grid_left(spec, study) == 0:
        reason = StopReason.EXHAUSTED
    elif n_trials is not None and finished_here >= n_trials:
        reason = StopReason.TRIALS
    else:
        reason = StopReason.DEADLINE
    return RunSummary(
        study_name=spec.name,
        storage=storage_url,
        tracking_uri=tracker.tracking_uri if tracker else None,
        new_trials=finished_here,
        elapsed=elapsed,
        counts=count_trials(study),
        best=best_trial_info(study),
        first_error=first_error[0] if first_error else None,
        stopped_by_signal=stopped[0] if stopped else None,
        stale_failed=stale,
        stop_reason=reason,
        best_before=before["value"] if before else None,
        new_failed=failed_here,
        started_at=started_at,
        ended_at=now_utc(),
        host=socket.gethostname(),
        pid=os.getpid(),
        worker=worker,
        extra={
            "study_file": str(spec.path),
            "loss_meaning": loss_meaning(
                data, spec.model.entry_point.text if spec.model.entry_point else None
            ),
            "edge_warnings": range_edge_warnings(study),
            "mlflow_link": mlflow_link(tracker.tracking_uri, tracker.experiment_id) if tracker else None,
        },
    )
