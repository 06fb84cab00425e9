"""MLflow tracking: one experiment per study, one run per trial, the whole learning curve in one write.

This package is the only place that imports mlflow (with ``pipeline.tracking_model``, the pyfunc wrapper): the
:class:`Tracker` here; ``store.py`` (the local sqlite store and its creation), ``views.py`` (the default chart
view), ``delete.py`` (``delete``'s MLflow side), ``server.py`` (the lean UI / tracking server). It talks to the store through ``MlflowClient`` with explicit run
ids, never through the fluent ``mlflow.start_run()`` API, whose active run is process-global state and is not
safe when trials run in threads.

Cost model (sqlite store, 2 cores, measured with a throwaway script): ``log_metric`` costs ~7 ms per call, so a
300-epoch trial with 4 curves logged per epoch spends ~8.4 s in MLflow. Here a trial is one ``create_run``,
one ``log_batch`` (params, every curve point with ``step = epoch``, final metrics, tags; the client splits it
into requests of at most 1000 metrics) and one ``set_terminated``: ~0.25 s. A background writer thread was
measured too and not kept: it hides the writes from the caller but finishes no sooner overall, because the
writes are GIL-bound Python (SQLAlchemy) competing with the training loop for the same two cores.

Store layout: ``sqlite:///<repo>/mlruns/mlflow.db`` (the file store is deprecated), artifacts in
``<directory of the db>/artifacts/<experiment>/<run id>/artifacts``. The artifact location is set explicitly
when the experiment is created, because MLflow's default for a sqlite store is ``./mlruns`` relative to the
current directory.

Non-finite values are kept: MLflow stores +/-inf as +/-1.7976931348623157e308 and NaN as NaN, so a diverged
curve visibly ends in the overflow value.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

# Before the import: MLflow reads the variable when it starts its telemetry client.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# A silent tracking server must not hold a run for many minutes: MLflow's defaults (120 s per request, 7 retries
# with exponential backoff) add up to over 4 minutes per call. An unreachable one is refused before the run starts
# (preflight: /health within 10 s). Mid-run, a server that is only slow must not fail a trial that trained: with 8
# workers finishing together on 2 cores, a log-batch once went unanswered for 3 x 10 s (CI). 30 s and 2 retries
# bound a call at about 95 s.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")

import logging  # noqa: E402

from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric, Param, Run, RunTag  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

from pipeline.config import MLFLOW_VIEW_KEY, default_tracking_uri  # noqa: E402
from pipeline.errors import ConfigError  # noqa: E402

# The package's parts, imported after the environment above is set (they import mlflow too).
from pipeline.tracking.delete import DeletedExperiment, delete_experiment  # noqa: E402
from pipeline.tracking.server import serve_ui  # noqa: E402
from pipeline.tracking.store import (  # noqa: E402
    _create_store_atomically,
    _creation_lock,
    local_artifact_root,
    sqlite_path,
)
from pipeline.tracking.views import _bar_chart, _difference_chart, _line_chart  # noqa: E402

# MLflow logs its schema migrations at INFO the first time a store is opened; the user did not ask for that.
for _name in ("mlflow.store.db.utils", "alembic.runtime.migration"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# MLflow logs every SQL error with its whole traceback before raising it; the error is raised anyway, and the
# pipeline reports it in one line (a full disk: one message, not a traceback per write).
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

DEFAULT_TRACKING_URI = default_tracking_uri()

# Optuna trial state -> MLflow run status.
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
STUDY_RUN_NAME = "study"
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag for a nested run
NOTE_TAG = "mlflow.note.content"  # shown as the description of an experiment or a run
_ALREADY_EXISTS = "RESOURCE_ALREADY_EXISTS"


def run_name(trial_number: int) -> str:
    """Name of a trial's run: ``trial-0007``; zero padding keeps the UI's alphabetical sort numeric."""
    return f"trial-{trial_number:04d}"


def _slug(name: str) -> str:
    # Experiment names may hold spaces or slashes; a directory name may not.
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "experiment"


def _str_items(values: Mapping[str, Any] | None) -> dict[str, str]:
    # MLflow stores params and tags as strings; None means "not applicable", so it is left out.
    return {str(k): str(v) for k, v in (values or {}).items() if v is not None}


# The unique-key error of each database MLflow stores in (PostgreSQL, SQLite, MySQL/MariaDB), as MLflow passes it on
# (its SQL store wraps SQLAlchemy's IntegrityError; a tracking server sends its text back).
_DUPLICATE_KEY = ("UniqueViolation", "duplicate key value", "UNIQUE constraint failed", "Duplicate entry")
_TAG_ATTEMPTS = 5


def _is_duplicate_key(error: Exception) -> bool:
    return any(text in str(error) for text in _DUPLICATE_KEY)


class Tracker:
    """Log an Optuna study to MLflow: the study is an experiment, each trial a run.

    Per trial: ``start_trial`` creates the run (one write) and keeps the params in memory;
    ``finish_trial`` writes params, every curve point (step = epoch index), the final metrics and the tags in
    one ``log_batch``, then terminates the run with the status matching the trial state. Safe to call from
    several threads (one run id per trial, no process-global active run).

    Args:
        experiment: MLflow experiment name (one per study). Created if missing, reused otherwise; two processes
            creating it at once both end up with the same experiment.
        tracking_uri: MLflow tracking URI; default ``pipeline.config.default_tracking_uri()``.
        tags: experiment tags, set on creation and updated on reuse.
    """

    def __init__(self, experiment: str, *, tracking_uri: str | None = None, tags: dict | None = None):
        if not isinstance(experiment, str) or not experiment.strip():
            raise ValueError(
                f"The 'experiment' parameter of Tracker must be a non-empty string. Got {experiment!r} instead."
            )
        self.experiment_name = experiment
        self.tracking_uri = tracking_uri or default_tracking_uri()
        root = local_artifact_root(self.tracking_uri)
        if root is not None:
            # sqlite creates the database file but not its directory.
            root.parent.mkdir(parents=True, exist_ok=True)
        artifact_location = (root / _slug(experiment)).as_uri() if root is not None else None
        # MLflow 3's UI opens an experiment of unknown kind as a GenAI (traces) overview; this tag makes it open
        # on "Training runs", where runs' curves overlay in charts and params line up for comparison.
        tags = {"mlflow.experimentKind": "custom_model_development", **(tags or {})}
        try:
            with _creation_lock(root, self.tracking_uri):
                db = sqlite_path(self.tracking_uri)
                if db is not None and (not db.exists() or db.stat().st_size == 0):
                    _create_store_atomically(db, root)
                self.client = MlflowClient(tracking_uri=self.tracking_uri)
                self.experiment_id = self._get_or_create_experiment(artifact_location, _str_items(tags))
        except MlflowException as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"cannot use this MLflow tracking store ({first}).",
                key="--tracking-uri",
                value=self.tracking_uri,
            ) from exc
        self._pending: dict[str, dict[str, str]] = {}  # run_id -> params, until finish_trial
        self._lock = threading.Lock()
        self._study_run_id: str | None = None
        self._closed = False

    def _get_or_create_experiment(self, artifact_location: str | None, tags: dict[str, str]) -> str:
        experiment = self.client.get_experiment_by_name(self.experiment_name)
        if experiment is None:
            try:
                return self.client.create_experiment(
                    self.experiment_name, artifact_location=artifact_location, tags=tags
                )
            except MlflowException as error:
                # Another process created it between our read and our write: use theirs.
                if error.error_code != _ALREADY_EXISTS:
                    raise
                experiment = self.client.get_experiment_by_name(self.experiment_name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage != "active":
            raise ConfigError(
                f"The MLflow experiment {self.experiment_name!r} (id {experiment.experiment_id}) is deleted; "
                f"restore it with `mlflow experiments restore --experiment-id {experiment.experiment_id}` "
                "or choose another experiment name.",
                key="experiment",
                value=self.experiment_name,
            )
        for key, value in tags.items():
            self._set_experiment_tag(experiment.experiment_id, key, value)
        return experiment.experiment_id

    def _set_experiment_tag(self, experiment_id: str, key: str, value: str) -> None:
        """``set_experiment_tag``, safe when workers set the same new tag at once. MLflow's store reads the tag,
        then inserts it when missing: of two processes that both found it missing, one gets the database's
        unique-key error (8 workers starting together hit it). The tag exists then, and trying again updates it."""
        for attempt in range(_TAG_ATTEMPTS):
            try:
                self.client.set_experiment_tag(experiment_id, key, value)
                return
            except MlflowException as error:
                if attempt + 1 == _TAG_ATTEMPTS or not _is_duplicate_key(error):
                    raise
                time.sleep(0.01 * (attempt + 1))

    def _check_open(self, method: str) -> None:
        if self._closed:
            raise RuntimeError(f"Tracker.{method} called after close().")

    def start_trial(self, trial_number: int, params: dict, tags: dict) -> str:
        """Create the run ``trial-{n:04d}`` (status RUNNING, tagged ``trial_number``) and return its id.

        The params are written by ``finish_trial`` together with the curves, to keep a trial at one batch.
        """
        self._check_open("start_trial")
        if (
            isinstance(trial_number, bool)
            or not isinstance(trial_number, int | np.integer)
            or trial_number < 0
        ):
            raise ValueError(
                "The 'trial_number' parameter of Tracker.start_trial must be an int >= 0. "
                f"Got {trial_number!r} instead."
            )
        # Nested under the study's run: the runs table groups a study's trials under one expandable row.
        run_tags = {
            "trial_number": str(int(trial_number)),
            "study": self.experiment_name,
            **_str_items(tags),
            PARENT_TAG: self.study_run_id(),
        }
        run = self.client.create_run(self.experiment_id, tags=run_tags, run_name=run_name(int(trial_number)))
        with self._lock:
            self._pending[run.info.run_id] = _str_items(params)
        return run.info.run_id

    def finish_trial(
        self,
        run_id: str,
        curves: Mapping[str, np.ndarray | None],
        final: Mapping[str, float],
        state: str,
        tags: dict,
    ) -> None:
        """Write the trial's params, curves, final metrics and tags in one batch, then terminate the run.

        Args:
            run_id: id returned by ``start_trial``.
            curves: per-epoch arrays, e.g. ``{"train_loss", "val_loss", "val_accuracy", "lr"}``; point ``i`` is
                logged at ``step = i``. None entries (no accuracy for regression) are skipped. Non-finite
                points are not logged: MLflow would store inf as 1.797e308, which flattens every other run's
                curve in a shared chart; the run's ``diverged_epoch`` tag says where such a curve stopped.
            final: scalar summaries (``final_train_loss``, ``best_val_loss``, ``epochs_run``...), logged at step 0.
            state: Optuna state ``"COMPLETE"`` -> FINISHED, ``"PRUNED"`` -> KILLED, ``"FAIL"`` -> FAILED; also
                written as the tag ``state``.
            tags: run tags; a pruned trial must carry ``prune_reason`` (and ``diverged_epoch`` when it
                diverged). None values are skipped.
        """
        self._check_open("finish_trial")
        if state not in RUN_STATUS:
            raise ValueError(
                f"The 'state' parameter of Tracker.finish_trial must be one of {sorted(RUN_STATUS)}. "
                f"Got {state!r} instead."
            )
        run_tags = {**_str_items(tags), "state": state}
        if state == "PRUNED" and "prune_reason" not in run_tags:
            raise ValueError(
                "The 'tags' parameter of Tracker.finish_trial must contain 'prune_reason' when state is "
                f"'PRUNED'. Got {sorted(run_tags)} instead."
            )
        timestamp = int(time.time() * 1000)
        metrics = []
        for key, values in curves.items():
            if values is None:
                continue
            try:
                array = np.asarray(values, dtype=np.float64)
            except (TypeError, ValueError):
                array = None
            if array is None or array.ndim != 1:
                raise ValueError(
                    f"The 'curves[{key!r}]' parameter of Tracker.finish_trial must be a 1-D array of floats. "
                    f"Got {values!r} instead."
                )
            # tolist() turns the whole curve into Python floats at once; MLflow validates each value as a number.
            metrics.extend(
                Metric(key, value, timestamp, step)
                for step, value in enumerate(array.tolist())
                if math.isfinite(value)
            )
        for key, value in final.items():
            if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
                raise ValueError(
                    f"The 'final[{key!r}]' parameter of Tracker.finish_trial must be a number. "
                    f"Got {value!r} instead."
                )
            if math.isfinite(value):
                metrics.append(Metric(key, float(value), timestamp, 0))
        with self._lock:
            params = self._pending.pop(run_id, {})
        try:
            self.client.log_batch(
                run_id,
                metrics=metrics,
                params=[Param(k, v) for k, v in params.items()],
                tags=[RunTag(k, v) for k, v in run_tags.items()],
                synchronous=True,  # ignore MLFLOW_ENABLE_ASYNC_LOGGING: the batch must be in before terminating
            )
        except Exception:
            # Never leave a run RUNNING forever because its batch was rejected; the batch error is the one to see.
            try:
                self.client.set_terminated(run_id, status="FAILED")
            except MlflowException:
                pass
            raise
        self.client.set_terminated(run_id, status=RUN_STATUS[state])

    def log_artifact(self, path, *, run_id: str | None = None, artifact_path: str | None = None) -> None:
        """Copy a file or a directory into a run's artifacts.

        Args:
            path: local file or directory.
            run_id: target run; None -> the study-level run named ``study`` (created once, then reused), the
                home of study reports and plots.
            artifact_path: sub-directory inside the run's artifacts.
        """
        self._check_open("log_artifact")
        local = Path(path)
        if not local.exists():
            raise ValueError(
                "The 'path' parameter of Tracker.log_artifact must be an existing file or directory. "
                f"Got {str(path)!r} instead."
            )
        target = run_id if run_id is not None else self.study_run_id()
        if local.is_dir():
            self.client.log_artifacts(target, str(local), artifact_path)
        else:
            self.client.log_artifact(target, str(local), artifact_path)

    def study_run_id(self) -> str:
        """Id of the run named ``study`` in this experiment, creating it (status FINISHED) if missing."""
        if self._study_run_id is None:
            with self._lock:
                if self._study_run_id is None:
                    runs = self.client.search_runs(
                        [self.experiment_id],
                        filter_string=f"attributes.run_name = '{STUDY_RUN_NAME}'",
                        order_by=["attributes.start_time ASC"],
                        max_results=1,
                    )
                    if runs:
                        self._study_run_id = runs[0].info.run_id
                    else:
                        self._study_run_id = self._create_study_run()
        return self._study_run_id

    def _create_study_run(self) -> str:
        """Create the study's run (the parent of every trial's run); FINISHED, since it only holds artifacts.

        Two workers starting together may both find none and create one each (a local sqlite store serialises
        this, a server does not): each then keeps the oldest, so their trials still share one parent.
        """
        tags = {"kind": "study", "study": self.experiment_name}
        run = self.client.create_run(self.experiment_id, run_name=STUDY_RUN_NAME, tags=tags)
        self.client.set_terminated(run.info.run_id, status="FINISHED")
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"attributes.run_name = '{STUDY_RUN_NAME}'",
            order_by=["attributes.start_time ASC"],
            max_results=1,
        )
        return runs[0].info.run_id if runs else run.info.run_id

    def set_default_view(
        self,
        params: list[str],
        metrics: list[str],
        *,
        sort_metric: str = "final_loss",
        curves: tuple[str, ...] = ("val_loss", "train_loss", "val_accuracy", "lr"),
    ) -> None:
        """The view the printed link opens (see :meth:`ui_link`): the runs sorted by ``sort_metric`` (best first,
        so the charts, which draw the first 10 runs of the table, show the best 10), with the searched ``params``,
        the final ``metrics`` and the trial's state as the table's columns instead of Source, Models and Dataset.

        The chart view starts with the ``curves`` against the epoch (log y for losses and rates), then one bar
        chart per final metric, in that order: without this MLflow sorts charts by name and the curves come after
        six bar charts.

        It is MLflow's shared view (the experiment tag ``mlflow.sharedViewState.<key>``, which the UI applies when
        the URL carries ``viewStateShareKey=<key>``); a user's own changes to the view are kept in their browser.
        """
        self._check_open("set_default_view")
        # MLflow caps an experiment tag at 20000 characters; 100 columns stay well under it.
        columns = [f"params.`{p}`" for p in params[:100]] + [f"metrics.`{m}`" for m in metrics]
        columns += ["tags.`state`", "tags.`prune_reason`"]
        view = {
            "searchFilter": "",
            "orderByKey": f"metrics.`{sort_metric}`",
            "orderByAsc": True,
            "startTime": "ALL",
            "lifecycleFilter": "Active",
            "modelVersionFilter": "All Runs",
            "datasetsFilter": [],
            "selectedColumns": columns,
            "runsHiddenMode": "FIRST_10_RUNS",
            "viewMaximized": False,
            "runListHidden": False,
            "useGroupedValuesInCharts": True,
            "hideEmptyCharts": True,
            "isAccordionReordered": True,  # charts for other metrics are appended, not sorted in by name
            "compareRunSections": [
                {"uuid": "section-model", "name": "Model metrics", "display": True, "isReordered": True},
                {"uuid": "section-system", "name": "System metrics", "display": True, "isReordered": False},
            ],
            "compareRunCharts": [_line_chart(key) for key in curves]
            + [_difference_chart()]
            + [_bar_chart(key) for key in metrics],
        }
        self._set_experiment_tag(
            self.experiment_id,
            f"mlflow.sharedViewState.{MLFLOW_VIEW_KEY}",
            json.dumps(view, separators=(",", ":")),
        )

    def set_experiment_tags(self, tags: dict) -> None:
        """Set (or overwrite) tags on the study's experiment, e.g. the best trial and its learning rate."""
        self._check_open("set_experiment_tags")
        for key, value in _str_items(tags).items():
            self._set_experiment_tag(self.experiment_id, key, value)

    def fail_run(self, run_id: str, reason: str) -> None:
        """Terminate another process's run as FAILED (a trial its killed worker left RUNNING)."""
        self._check_open("fail_run")
        self.client.log_batch(
            run_id, tags=[RunTag("state", "FAIL"), RunTag("fail_reason", reason)], synchronous=True
        )
        self.client.set_terminated(run_id, status="FAILED")

    def running_trial_runs(self, study: str) -> list[Run]:
        """The runs of ``study`` still RUNNING, found by their tags (``trial_number``, and ``study`` when set) in
        the study's experiment, not through the trials' user attributes: a run whose process died before the trial
        recorded its id is found too. One query; flat or nested (a per-study parent run, which has no
        ``trial_number``) layouts alike."""
        self._check_open("running_trial_runs")
        runs = self.client.search_runs(
            [self.experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=10_000
        )
        return [
            run
            for run in runs
            if "trial_number" in run.data.tags and run.data.tags.get("study", study) == study
        ]

    def trial_runs(self, study: str, number: int) -> list[Run]:
        """The runs of trial ``number`` of ``study``, whatever their status (one query by the ``trial_number`` tag).
        The repair of a trial whose process died reads them: that process may have ended its run before Optuna
        recorded the trial's end."""
        self._check_open("trial_runs")
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.trial_number = '{int(number)}'", max_results=1000
        )
        return [run for run in runs if run.data.tags.get("study", study) == study]

    def reconcile_run(self, run: Run, state: str, reason: str, params: dict | None = None) -> None:
        """Terminate a run another process left RUNNING: status matching the trial's ``state`` (COMPLETE,
        PRUNED, FAIL), tags ``state`` and ``reconciled`` (why), and the trial's params when the run has none (a
        killed trial's params were still waiting for its final batch)."""
        self._check_open("reconcile_run")
        missing = {k: v for k, v in _str_items(params).items() if k not in run.data.params}
        tags = [RunTag("state", state), RunTag("reconciled", reason)]
        if state == "FAIL" and "fail_reason" not in run.data.tags:
            tags.append(RunTag("fail_reason", reason))
        self.client.log_batch(
            run.info.run_id,
            params=[Param(k, v) for k, v in missing.items()],
            tags=tags,
            synchronous=True,
        )
        self.client.set_terminated(run.info.run_id, status=RUN_STATUS[state])

    def close(self) -> None:
        """End the tracker; idempotent. Runs started but never finished are logged with their params and
        terminated FAILED (tag ``state=FAIL``), so an interrupted study leaves no run RUNNING forever."""
        if self._closed:
            return
        self._closed = True
        with self._lock:
            pending, self._pending = self._pending, {}
        for run_id, params in pending.items():
            tags = [
                RunTag("state", "FAIL"),
                RunTag("fail_reason", "tracker closed before the trial finished"),
            ]
            self.client.log_batch(
                run_id, params=[Param(k, v) for k, v in params.items()], tags=tags, synchronous=True
            )
            self.client.set_terminated(run_id, status="FAILED")

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def find_run(tracking_uri: str | None, experiment: str, trial_number: int) -> Run | None:
    """The run of trial ``trial_number`` in experiment ``experiment`` (the latest if there are several), or
    None. Returns the full ``mlflow.entities.Run``: ``.info`` (status, run_id, artifact_uri) and ``.data``
    (params, tags, latest metrics); curves via ``MlflowClient(tracking_uri).get_metric_history``."""
    client = MlflowClient(tracking_uri=tracking_uri or default_tracking_uri())
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    runs = client.search_runs(
        [found.experiment_id],
        filter_string=f"attributes.run_name = '{run_name(trial_number)}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


__all__ = [
    "DEFAULT_TRACKING_URI",
    "DeletedExperiment",
    "RUN_STATUS",
    "STUDY_RUN_NAME",
    "Tracker",
    "delete_experiment",
    "find_run",
    "local_artifact_root",
    "run_name",
    "serve_ui",
    "sqlite_path",
]
