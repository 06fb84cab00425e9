"""The study runner: the one place that talks to Optuna.

One trial reads top to bottom: sample the settings, build model / optimizer / schedule, open the trial's MLflow
run, train (the per-epoch hook reports a thinned learning curve to Optuna and asks the optional pruner), then end
the trial as complete, pruned ("diverged" or "underperforming") or failed, with the full curve sent to MLflow in
one batch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import math
import signal
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from pipeline import config
from pipeline.data import Dataset
from pipeline.errors import ConfigError
from pipeline.experiment import RangeTestReport, TrialRecord, load_study_data, run_range_test, run_settings
from pipeline.spec import StudySpec
from pipeline.training import DIVERGED, EpochRecord, TrainResult

PRUNE_DIVERGED, PRUNE_UNDERPERFORMING = "diverged", "underperforming"


# ----------------------------------------------------------------------------------------------- storage


def _check_journal_file(path: Path) -> None:
    """Refuse to append Optuna's log to a file that is not one (a study file or a database given by mistake):
    the journal backend would write into it and corrupt it."""
    if path.is_dir():
        raise ConfigError("is a folder, not an Optuna journal file.", key="--storage", value=str(path))
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as handle:
            start = handle.read(12)
        if not start.startswith(b'{"op_code"'):
            raise ConfigError(
                "is not an Optuna journal file (it does not start with a journal record); refusing to write to it. "
                "Give a new path, or a database URL such as sqlite:///study.db.",
                key="--storage",
                value=str(path),
            )


def open_storage(url: str | None = None) -> BaseStorage:
    """An Optuna storage from a URL: ``scheme://...`` is a database (postgresql://, mysql://, sqlite:///...),
    ``redis://`` a journal in Redis, anything else a journal file path (several processes on one machine may share it).
    """
    url = url or config.DEFAULT_STORAGE
    try:
        if url.startswith("redis://"):
            from optuna.storages.journal import JournalRedisBackend

            return optuna.storages.JournalStorage(JournalRedisBackend(url))
        if "://" in url:
            return optuna.storages.RDBStorage(url)
        _check_journal_file(Path(url))
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(url))
    except ConfigError:
        raise
    except (
        ImportError,
        ValueError,
        OSError,
    ) as exc:  # bad scheme, missing driver, unreachable server, bad path
        raise ConfigError(f"cannot open the Optuna storage ({exc}).", key="--storage", value=url) from exc
    except Exception as exc:  # SQLAlchemy's OperationalError and friends: keep the message, drop the trace
        raise ConfigError(
            f"cannot open the Optuna storage ({type(exc).__name__}: {str(exc).splitlines()[0]}).",
            key="--storage",
            value=url,
        ) from exc


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


# ----------------------------------------------------------------------------------------------- the objective


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

    def __call__(self, trial: optuna.Trial) -> float:
        spec = self.spec
        settings = spec.search.sample(_OptunaSuggester(trial))
        run_id = None
        if self.tracker is not None:
            run_id = self.tracker.start_trial(trial.number, settings.as_params(), {"study": spec.name})
            trial.set_user_attr("mlflow_run_id", run_id)
        try:
            reported = report_epochs(spec.training.epochs, spec.tracking.report_points)
            pruned_by_pruner = False

            def hook(record: EpochRecord) -> bool:
                nonlocal pruned_by_pruner
                if record.epoch in reported:
                    value = record.val_loss if self.data.X_val.shape[0] else record.train_loss
                    trial.report(value, record.epoch)
                    if self.prune_underperforming and trial.should_prune():
                        pruned_by_pruner = True
                        return True
                return False

            result = run_settings(settings, spec, self.data, hook=hook)
        except Exception as exc:
            self._finish(trial, run_id, None, "FAIL", {"error": f"{type(exc).__name__}: {exc}"[:5000]})
            raise

        if result.status == DIVERGED:
            # Report the loss that diverged (inf when non-finite; Optuna keeps it, and TPE ranks every pruned
            # trial below every complete one), then prune: returning NaN would make the trial FAIL instead.
            trial.report(
                float(result.monitored[-1]) if not np.isnan(result.monitored[-1]) else math.inf,
                result.diverged_epoch,
            )
            tags = {
                "prune_reason": PRUNE_DIVERGED,
                "diverged_epoch": result.diverged_epoch,
                "stop": result.reason,
            }
            self._finish(trial, run_id, result, "PRUNED", tags)
            raise optuna.TrialPruned(f"diverged at epoch {result.diverged_epoch}: {result.reason}")
        if pruned_by_pruner:
            tags = {"prune_reason": PRUNE_UNDERPERFORMING, "stop": f"pruned by {spec.pruner.name} pruner"}
            self._finish(trial, run_id, result, "PRUNED", tags)
            raise optuna.TrialPruned(f"underperforming at epoch {result.epochs_run - 1}")
        self._finish(trial, run_id, result, "COMPLETE", {"stop": result.reason})
        return result.final_loss

    def _finish(self, trial, run_id, result: TrainResult | None, state: str, tags: dict) -> None:
        attrs = {k: v for k, v in tags.items() if k in ("prune_reason", "diverged_epoch", "error")}
        if result is not None:
            attrs["epochs_run"] = result.epochs_run
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        if self.tracker is None:
            return
        curves, final = {}, {}
        if result is not None:
            curves = {"train_loss": result.train_loss, "lr": result.lr}
            if result.has_validation:
                curves["val_loss"] = result.val_loss
            if result.val_accuracy is not None:
                curves["val_accuracy"] = result.val_accuracy
            final = {
                "final_train_loss": float(result.train_loss[-1]),
                "final_loss": result.final_loss,
                "best_loss": result.best_loss,
                "epochs_run": result.epochs_run,
            }
            if result.has_validation:
                final["final_val_loss"] = float(result.val_loss[-1])
            if result.val_accuracy is not None and len(result.val_accuracy):
                final["final_val_accuracy"] = float(result.val_accuracy[-1])
        all_tags = {"study": self.spec.name, "trial_number": trial.number, "state": state, **tags}
        self.tracker.finish_trial(run_id, curves, final, state, {k: str(v) for k, v in all_tags.items()})


# ----------------------------------------------------------------------------------------------- the study


@dataclass
class StudySummary:
    study_name: str
    storage: str
    tracking_uri: str | None
    new_trials: int
    elapsed: float
    counts: dict[str, int]  # complete, pruned_diverged, pruned_underperforming, failed, running (whole study)
    best: dict | None
    first_error: str | None = None
    stopped_by_signal: int | None = None
    stale_failed: int = 0


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


def count_trials(study: optuna.Study) -> dict[str, int]:
    counts = dict.fromkeys(("complete", "pruned_diverged", "pruned_underperforming", "failed", "running"), 0)
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            counts["complete"] += 1
        elif t.state == TrialState.PRUNED:
            reason = t.user_attrs.get("prune_reason", PRUNE_UNDERPERFORMING)
            counts["pruned_diverged" if reason == PRUNE_DIVERGED else "pruned_underperforming"] += 1
        elif t.state == TrialState.FAIL:
            counts["failed"] += 1
        elif t.state == TrialState.RUNNING:
            counts["running"] += 1
    return counts


def best_trial_info(study: optuna.Study) -> dict | None:
    """The best complete trial as plain data, or None when the study has none."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    best = study.best_trial
    return {
        "study": study.study_name,
        "trial": best.number,
        "value": best.value,
        "params": best.params,
        "mlflow_run_id": best.user_attrs.get("mlflow_run_id"),
    }


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
) -> StudySummary:
    """Create the study, or load it when it exists (resume: new trials add to it), and run its budget.

    ``worker``: this process's index when several processes share the study (same storage URL, on one machine
    or several); it only offsets the sampler's seed so that workers started together do not propose the same
    trials. A seeded study is reproducible with one worker only.
    ``fail_stale_after``: seconds after which a trial still RUNNING is taken for one a killed worker left behind
    (a journal file has no heartbeat) and marked FAIL, with its MLflow run, before new trials start.
    """
    from pipeline.tracking import Tracker  # the only MLflow contact, imported only when tracking

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Everything that can be wrong with the input is found before anything is written: the data, the warmup
    # against the real number of updates, the MLflow store; only then the Optuna storage.
    data = load_study_data(spec)
    spec.check_steps(data.n_train)
    storage_url = storage or config.DEFAULT_STORAGE
    if "://" not in storage_url:
        _check_journal_file(Path(storage_url))
    tracker = None
    if track:
        tracker = Tracker(spec.name, tracking_uri=tracking_uri, tags={"study_file": str(spec.path)})
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
    study.sampler = _sampler(spec, sampler_seed(spec.seed, existing, worker))
    study.set_user_attr("study_file", str(spec.path))
    study.set_user_attr("dataset", data.source)
    study.set_user_attr("model", spec.model.name)

    n_trials = spec.budget.trials
    if spec.sampler.name == "grid":
        grid_size = math.prod(len(v) for v in spec.search.grid().values())
        done = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
        n_trials = max(0, grid_size - done) if n_trials is None else min(n_trials, max(0, grid_size - done))

    stale = fail_stale_trials(study, fail_stale_after, tracker) if fail_stale_after else 0
    if tracker is not None:
        study.set_user_attr("mlflow_experiment", spec.name)
        study.set_user_attr("mlflow_tracking_uri", tracker.tracking_uri)
    if spec.search.lr_auto is not None:
        spec = resolve_auto_lr(spec, data, study, tracker, storage_url)
    objective = Objective(spec, data, tracker, prune_underperforming=spec.pruner.name != "none")
    first_error: list[str] = []
    stopped: list[int] = []  # the signal that asked the study to stop, if any
    finished_here = 0  # this process's trials: other workers may add to the study meanwhile

    def on_trial_end(_study, trial):
        nonlocal finished_here
        finished_here += 1
        if trial.state == TrialState.FAIL and not first_error:
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
    finally:
        if tracker is not None:
            tracker.close()
    elapsed = time.perf_counter() - start
    return StudySummary(
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
    )


def attach_artifact(study: optuna.Study, path: Path, storage: str | None) -> None:
    """Attach a file to the study in Optuna's artifact store (beside a journal file, else studies/artifacts),
    where optuna-dashboard started with ``--artifact-dir`` shows it.

    A file of the same name attached earlier (the previous report) is overwritten in place, so re-running
    ``report`` updates the study's pictures instead of piling up copies.
    """
    from optuna.artifacts import FileSystemArtifactStore, get_all_artifact_meta, upload_artifact

    base = config.optuna_artifact_dir(storage)
    base.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(base_path=str(base))
    for meta in get_all_artifact_meta(study):
        if meta.filename == path.name:
            with open(path, "rb") as content:
                store.write(meta.artifact_id, content)
            return
    upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study)


def lr_find(
    spec: StudySpec, study: optuna.Study, data: Dataset, tracker, storage: str | None
) -> tuple[RangeTestReport, Path]:
    """Run the LR range test for the study, save its plot under reports/<study>/ and attach it to both stores."""
    from pipeline.plots import plot_lr_range_test, save

    report = run_range_test(spec, data)
    found = report.as_dict()
    out = config.REPORTS_DIR / spec.name / "lr-find.png"
    save(plot_lr_range_test(report, title=f"LR range test: {spec.name} ({report.optimizer})"), out)
    study.set_user_attr("lr_find", found)
    attach_artifact(study, out, storage)
    if tracker is not None:
        tracker.set_experiment_tags({f"lr_find.{k}": v for k, v in found.items() if v is not None})
        tracker.log_artifact(out, artifact_path="lr-find")
    return report, out


def resolve_auto_lr(
    spec: StudySpec, data: Dataset, study: optuna.Study, tracker, storage: str | None
) -> StudySpec:
    """``lr: auto``: search the range the LR range test recommends (recorded on the study and in MLflow).

    A resumed study keeps the range it was first given, so that its trials stay comparable.
    """
    recorded = study.user_attrs.get("lr_range")
    if recorded is None:
        report, _ = lr_find(spec, study, data, tracker, storage)
        low, high = report.suggestions.low, report.suggestions.high
        study.set_user_attr("lr_range", [low, high])
        if tracker is not None:
            tracker.set_experiment_tags({"lr_range.low": low, "lr_range.high": high})
    else:
        low, high = recorded
    return dataclasses.replace(spec, search=spec.search.with_lr_range(low, high))


def load_existing_study(spec: StudySpec, storage: str | None = None) -> optuna.Study:
    """Load a study that must already exist; ConfigError naming the study and the storage when it does not."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = storage or config.DEFAULT_STORAGE
    if "://" not in url and not Path(url).exists():
        raise ConfigError(
            f"no study named {spec.name!r}: there is no such Optuna journal file; run `tune` first.",
            key="--storage",
            value=url,
        )
    backend = open_storage(url)
    names = optuna.get_all_study_names(backend)
    if spec.name not in names:
        raise ConfigError(
            f"no study named {spec.name!r} in this storage (studies there: {', '.join(names) or 'none'}); "
            "run `tune` first.",
            key="--storage",
            value=url,
        )
    return optuna.load_study(study_name=spec.name, storage=backend)


def trial_records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of the study as plain data (reports must not need Optuna)."""
    return [
        TrialRecord(
            number=t.number,
            state=t.state.name,
            params=dict(t.params),
            value=t.value,
            prune_reason=t.user_attrs.get("prune_reason"),
            diverged_epoch=t.user_attrs.get("diverged_epoch"),
            intermediate=dict(t.intermediate_values),
            mlflow_run_id=t.user_attrs.get("mlflow_run_id"),
        )
        for t in study.get_trials(deepcopy=False)
    ]


def spec_as_run(spec: StudySpec, study: optuna.Study) -> StudySpec:
    """The spec with ``lr: auto`` replaced by the range the study actually searched (for replays)."""
    if spec.search.lr_auto is None:
        return spec
    recorded = study.user_attrs.get("lr_range")
    if recorded is None:
        raise ConfigError(
            f"study {spec.name!r} has lr: auto but no recorded lr_range; run `tune` (or `lr-find`) first.",
            file=str(spec.path),
            key="search.lr",
        )
    return dataclasses.replace(spec, search=spec.search.with_lr_range(*recorded))


def param_importances(study: optuna.Study) -> dict[str, float]:
    """Optuna's parameter importances over complete trials; {} when they cannot be computed (too few trials,
    a single distinct value, ...): a report without that picture beats no report."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2 or len({name for t in complete for name in t.params}) < 2:
        return {}  # one parameter is trivially 100% important: no picture rather than a meaningless one
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}


def study_report(
    spec: StudySpec,
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    out_dir: Path | None = None,
) -> list[Path]:
    """Write the study's plots under reports/<study>/, log them to MLflow and attach them to the Optuna study."""
    from pipeline.report import write_report
    from pipeline.tracking import Tracker

    study = load_existing_study(spec, storage)
    spec = spec_as_run(spec, study)
    out_dir = out_dir or config.REPORTS_DIR / spec.name
    paths = write_report(spec, trial_records(study), out_dir, importances=param_importances(study))
    if not paths:
        return []
    with Tracker(spec.name, tracking_uri=tracking_uri) as tracker:
        for path in paths:
            tracker.log_artifact(path, artifact_path="report")
    for path in paths:
        attach_artifact(study, path, storage)
    return paths


def lr_find_for(
    spec: StudySpec, *, storage: str | None = None, tracking_uri: str | None = None
) -> tuple[RangeTestReport, Path]:
    """``lr-find STUDY``: the range test on its own; the study is created (empty) when it does not exist yet,
    so that the plot can be attached to it."""
    from pipeline.tracking import Tracker

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load_study_data(spec)
    study = optuna.create_study(
        storage=open_storage(storage), study_name=spec.name, direction="minimize", load_if_exists=True
    )
    with Tracker(spec.name, tracking_uri=tracking_uri, tags={"study_file": str(spec.path)}) as tracker:
        return lr_find(spec, study, data, tracker, storage)
