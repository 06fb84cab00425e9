"""A study run: create or resume the study, run its budget, stop cleanly on SIGTERM, summarise."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import os
import signal
import socket
import sys
import threading
import time
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from pipeline import config
from pipeline.errors import ConfigError
from pipeline.secrets import mask_url
from pipeline.study.experiment import build_model_for, load_study_data
from pipeline.study.spec import StudySpec
from pipeline.summary import RunSummary, StopReason, now_utc
from pipeline.tuning import identity, interrupt, preflight
from pipeline.tuning.budgets import StudyBudget, settle
from pipeline.tuning.commands import resolve_auto_lr
from pipeline.tuning.objective import Objective
from pipeline.tuning.repair import repair_study
from pipeline.tuning.storage import best_trial_info, count_trials, open_storage
from pipeline.tuning.ui import (
    describe_study,
    loss_meaning,
    mlflow_link,
    range_edge_warnings,
    set_mlflow_view,
)
from pipeline.tuning.writes import StoreWriteError, describe, guard, write_error


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
def _startup_heap_frozen():
    """The objects alive when the trials start (the imported MLflow, SQLAlchemy, Optuna and NumPy, the data, the
    stores) kept out of the garbage collector's full passes for the run (``gc.freeze``). A full pass otherwise
    walks them all, about 150 ms here every 10 or so trials of the reference study: 59-61 instead of 67-73 ms a
    trial over 100 trials on a journal file. What the trials make is collected as before; unfrozen at the end,
    so a process that runs several studies (a notebook, ``make bench``) leaks nothing."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


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


class DiskFull(StoreWriteError):
    """Less free space than the threshold where a store lives: stopped before starting a trial."""


def _store_paths(storage: str, tracking_uri: str | None, track: bool) -> list[Path]:
    """The local folders the run writes to: the journal file's (or sqlite file's), the MLflow store's."""
    from pipeline.tracking import local_artifact_root

    paths = []
    if "://" not in storage:
        paths.append(Path(storage).resolve().parent)
    elif storage.startswith("sqlite:///"):
        paths.append(Path(storage[len("sqlite:///") :].split("?", 1)[0]).resolve().parent)
    if track:
        root = local_artifact_root(tracking_uri or config.default_tracking_uri())
        if root is not None:
            paths.append(root.parent)
    return paths


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
    min_free_mb: float = preflight.MIN_FREE_MB_DEFAULT,
    exclusive: bool = False,
    new_version: bool = False,
) -> RunSummary:
    """Create the study, or load it when it exists (resume: new trials add to it), and run its budget.

    ``worker``: this process's index when several processes share the study (same storage URL, on one machine
    or several); it only offsets the sampler's seed so that workers started together do not propose the same
    trials. A seeded study is reproducible with one worker only.
    ``fail_stale_after``: seconds after which a trial still RUNNING is taken for one a killed worker left behind
    (a journal file has no heartbeat) and marked FAIL, with its MLflow run, before new trials start.
    ``exclusive``: hold the study's lock (:mod:`pipeline.tuning.lock`) for the run, or raise
    ``pipeline.errors.StudyLocked`` naming the run that holds it, before anything is written.
    ``new_version``: start ``<name>.v2`` (the next version after the latest) warm-started from the latest
    version's best trials, instead of resuming the latest; without it, a study file that no longer matches the
    latest version's identity is refused (ConfigError) before anything is written (:mod:`pipeline.tuning.identity`).
    """
    # The lock (when --exclusive) is held until the run returns or raises, on every path out of it.
    with interrupt.catching_sigint() as interrupted, contextlib.ExitStack() as held:
        return _run_study(
            spec,
            storage=storage,
            tracking_uri=tracking_uri,
            track=track,
            progress=progress,
            worker=worker,
            fail_stale_after=fail_stale_after,
            min_free_mb=min_free_mb,
            interrupted=interrupted,
            hold=held.enter_context if exclusive else None,
            new_version=new_version,
        )


def _run_study(
    spec: StudySpec,
    *,
    storage: str | None,
    tracking_uri: str | None,
    track: bool,
    progress: bool,
    worker: int,
    fail_stale_after: float | None,
    min_free_mb: float,
    interrupted: interrupt.Interrupt,
    hold=None,
    new_version: bool = False,
) -> RunSummary:
    from pipeline.tracking import NOTE_TAG, Tracker  # the only MLflow contact, imported only when tracking

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started_at = now_utc()
    # Everything that can be wrong with the input is found before anything is written: the data, the warmup
    # against the real number of updates, the MLflow store; only then the Optuna storage.
    data = load_study_data(spec)
    spec.check_steps(data.n_train)
    build_model_for(spec, data)  # the model against the data; a user's model against finite differences
    storage_url = config.storage_url(storage)
    preflight.check_seed(spec.seed, worker, file=str(spec.path))
    preflight.check_storage(storage_url)
    if track:
        preflight.check_tracking(tracking_uri or config.default_tracking_uri())
    store_paths = _store_paths(storage_url, tracking_uri, track)
    low_space = [preflight.free_space_problem(store_paths, min_free_mb)] if min_free_mb > 0 else []
    if low_space and low_space[0]:
        raise DiskFull(low_space[0])
    low_space.clear()
    if hold is not None:  # after every check, before the first write: a refused run writes nothing
        from pipeline.tuning.lock import exclusive_lock

        hold(exclusive_lock(storage_url, spec.name))
    # Which stored study this run works on (the latest version of spec.name, or a new one) and whether the study
    # file still matches it: read only, before the MLflow experiment and the Optuna study are written (a journal
    # or sqlite file that does not exist yet holds no study, and is created only once the tracking store is).
    backend = identity.stored_backend(storage_url)
    plan = identity.plan_study(spec, backend, new_version=new_version)
    if plan.name != spec.name:  # a version: its own Optuna study and MLflow experiment
        spec = dataclasses.replace(spec, name=plan.name)
    tracker = None
    if track:
        tracker = Tracker(
            spec.name,
            tracking_uri=tracking_uri,
            tags={
                "study_file": str(spec.path),
                NOTE_TAG: spec.description or None,
                "study_version": str(plan.version),
            },
        )
    if backend is None:
        try:
            backend = open_storage(storage_url)
        except ConfigError:
            if tracker is not None:
                tracker.close()
            raise

    # Heartbeats (database storages): a worker that stops beating has its trial failed, retried with the same
    # params and its MLflow run terminated by whichever live worker notices (pipeline.tuning.rdb).
    from pipeline.tuning import rdb

    heartbeat = rdb.heartbeat_for(spec, storage_url)
    if heartbeat is not None:
        rdb.with_heartbeat(backend, heartbeat, rdb.StaleTrialRetry(heartbeat, tracker))

    # A resumed study continues from a different seed: the same seed would replay the first night's startup
    # trials. The offset is the number of trials already stored, so one worker stays reproducible; parallel
    # workers also differ by their index.
    study = optuna.create_study(
        storage=backend, study_name=spec.name, direction="minimize", pruner=_pruner(spec), load_if_exists=True
    )
    for line in identity.record(study, plan, spec):
        print(line, file=sys.stderr, flush=True)
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

    # Repair on every start: trials whose process is gone, runs left RUNNING (one query per store).
    repaired = repair_study(study, tracker, stale_after=fail_stale_after)
    for line in repaired.lines():
        print(line, file=sys.stderr, flush=True)
    stale = len(repaired.failed_trials)
    if tracker is not None:
        study.set_user_attr("mlflow_experiment", spec.name)
        study.set_user_attr("mlflow_tracking_uri", mask_url(tracker.tracking_uri))
    if spec.search.lr_auto is not None:
        spec = resolve_auto_lr(spec, data, study, tracker, storage_url)
    if plan.previous is not None:  # a new version starts from the previous one's best settings that still fit
        if spec.sampler.name == "grid":
            warm = ["warm start: none for a grid study (it runs every point of its grid anyway)"]
        else:
            warm = identity.warm_start(study, backend, plan.previous, spec.search)
        for line in warm:
            print(line, file=sys.stderr, flush=True)
    objective = Objective(
        spec, data, tracker, prune_underperforming=spec.pruner.name != "none", should_stop=interrupted
    )
    # The study-wide budget (budget.max_trials, budget.patience), read from the storage: at the start (a study
    # capped or converged on an earlier night starts no trial) and after each trial (other workers count too).
    study_budget = StudyBudget.of(spec.budget)
    budget_stop = study_budget.reached(study)
    poll = heartbeat.interval if heartbeat is not None else 1.0

    first_error: list[str] = []
    failed_here = 0
    stopped: list[int] = []  # the signal that asked the study to stop, if any
    finished_here = 0  # this process's trials: other workers may add to the study meanwhile

    def give_up() -> bool:  # stop waiting at the cap (budgets.settle): a signal, the run's deadline
        late = objective.deadline is not None and time.monotonic() >= objective.deadline
        return bool(stopped) or interrupted() or late

    def on_trial_end(_study, trial):
        nonlocal finished_here, failed_here, budget_stop
        finished_here += 1
        if trial.state == TrialState.FAIL:
            failed_here += 1
            if not first_error:
                first_error.append(str(trial.user_attrs.get("error", "see the log above")))
        if stopped or interrupted():  # a SIGTERM or Ctrl-C that came between two trials
            _study.stop()
            return
        if budget_stop is None:
            reached = settle(_study, study_budget, poll=poll, give_up=give_up)
            if reached is not None:
                budget_stop = reached
                _study.stop()
                return
        if min_free_mb > 0:
            problem = preflight.free_space_problem(store_paths, min_free_mb)
            if problem:
                low_space.append(problem)
                _study.stop()

    start = time.perf_counter()
    try:
        with _stop_gracefully_on_sigterm(study, stopped), _startup_heap_frozen():
            if (n_trials is None or n_trials > 0) and not interrupted() and budget_stop is None:
                if spec.budget.timeout is not None:
                    objective.deadline = time.monotonic() + spec.budget.timeout
                study.optimize(
                    guard(objective),
                    n_trials=n_trials,
                    timeout=spec.budget.timeout,
                    catch=(Exception,),
                    callbacks=[on_trial_end],
                    show_progress_bar=progress,
                )
        if tracker is not None:
            set_mlflow_view(study, tracker)
    except (
        Exception
    ) as exc:  # Optuna's own writes (ask, tell) failing: one message, not a traceback per trial
        found = write_error(exc)
        if found is None:
            raise
        raise StoreWriteError(describe(found)) from exc
    finally:
        if tracker is not None:
            try:
                tracker.close()
            except Exception as exc:
                if write_error(exc) is None:
                    raise
    elapsed = time.perf_counter() - start
    stop_detail = ""
    if low_space:
        print(f"error: {low_space[0]}", file=sys.stderr, flush=True)
        reason = StopReason.LOW_DISK
    elif interrupted():
        reason = StopReason.INTERRUPTED
        stopped.insert(0, int(signal.SIGINT))
    elif stopped:
        reason = StopReason.SIGNAL
    elif budget_stop is not None:
        reason, stop_detail = budget_stop
    elif spec.sampler.name == "grid" and _grid_left(spec, study) == 0:
        reason = StopReason.EXHAUSTED
    elif n_trials is not None and finished_here >= n_trials:
        reason = StopReason.TRIALS
    else:
        reason = StopReason.DEADLINE
        stop_detail = f"{spec.budget.timeout:g} s"
        if objective.cut_by_deadline:
            stop_detail += ", the running trial cut at an epoch boundary and pruned (deadline)"
    return RunSummary(
        study_name=spec.name,
        storage=mask_url(storage_url),
        tracking_uri=mask_url(tracker.tracking_uri) if tracker else None,
        new_trials=finished_here,
        elapsed=elapsed,
        counts=count_trials(study),
        best=best_trial_info(study),
        first_error=first_error[0] if first_error else None,
        stopped_by_signal=stopped[0] if stopped else None,
        stale_failed=stale,
        stop_reason=reason,
        stop_detail=stop_detail,
        new_pruned_deadline=objective.cut_by_deadline,
        best_before=before["value"] if before else None,
        new_failed=failed_here,
        started_at=started_at,
        ended_at=now_utc(),
        host=socket.gethostname(),
        pid=os.getpid(),
        worker=worker,
        version=plan.version,
        extra={
            "study_file": str(spec.path),
            "loss_meaning": loss_meaning(
                data, spec.model.entry_point.text if spec.model.entry_point else None
            ),
            "edge_warnings": range_edge_warnings(study),
            "mlflow_link": mlflow_link(tracker.tracking_uri, tracker.experiment_id) if tracker else None,
        },
    )
