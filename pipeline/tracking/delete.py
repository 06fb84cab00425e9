"""``delete``'s MLflow side: an experiment removed for good from a database store (a deleted experiment keeps its
name in MLflow and would block a new study of that name), renamed and marked deleted on a server."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.config import default_tracking_uri
from pipeline.errors import ConfigError
from pipeline.tracking.store import sqlite_path


@dataclass(frozen=True)
class DeletedExperiment:
    """What :func:`delete_experiment` removed."""

    experiment_id: str
    runs: int  # the trials' runs and the study's run
    models: int  # logged models (train-best)
    permanent: bool  # rows and artifacts gone; False: a server keeps it, marked deleted, under ``renamed_to``
    renamed_to: str | None = None


def delete_experiment(name: str, *, tracking_uri: str | None = None) -> DeletedExperiment | None:
    """Delete the experiment ``name`` with its runs, logged models and their artifacts; None when there is none.

    MLflow's ``delete_experiment`` only marks an experiment deleted, and a deleted experiment keeps its name:
    MLflow then refuses to create another of that name, so a study tuned again after ``delete`` could not be
    tracked. On a store this process opens itself (sqlite, or another database) the experiment is therefore
    deleted permanently, as ``mlflow gc`` does: runs, logged models and the experiment's rows, and the artifacts of
    each. A tracking server offers no permanent deletion to its clients: there the experiment is renamed
    ``<name> (deleted <UTC time>)`` and then marked deleted, which frees the name (``mlflow gc`` on the server's
    machine removes it for good). A missing local sqlite file is no experiment, and is not created.
    """
    uri = tracking_uri or default_tracking_uri()
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        return None
    try:
        client = MlflowClient(tracking_uri=uri)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            return None
        return _delete_experiment(client, experiment)
    except MlflowException as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"cannot delete the MLflow experiment {name!r} ({first}).", key="--tracking-uri", value=uri
        ) from exc


def _paged(search, **kwargs) -> list:
    found, token = [], None
    while True:
        page = search(max_results=1000, page_token=token, **kwargs)
        found.extend(page)
        token = page.token
        if not token:
            return found


def _delete_experiment(client: MlflowClient, experiment) -> DeletedExperiment:
    from mlflow.entities import ViewType

    eid = experiment.experiment_id
    runs = _paged(client.search_runs, experiment_ids=[eid], run_view_type=ViewType.ALL)
    models = _paged(client.search_logged_models, experiment_ids=[eid])
    store = client._tracking_client.store  # what `mlflow gc` uses; a REST store (a server) has no hard delete
    hard = ("_hard_delete_run", "_hard_delete_logged_model", "_hard_delete_experiment")
    if not all(hasattr(store, method) for method in hard):
        if experiment.lifecycle_stage != "active":  # only an active experiment can be renamed
            client.restore_experiment(eid)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        renamed = f"{experiment.name} (deleted {stamp})"
        client.rename_experiment(eid, renamed)
        client.delete_experiment(eid)
        return DeletedExperiment(eid, len(runs), len(models), permanent=False, renamed_to=renamed)
    for model in models:
        client.delete_logged_model(model.model_id)
    if experiment.lifecycle_stage == "active":
        client.delete_experiment(eid)  # marks its runs deleted too; the hard deletes below require it
    for run in runs:
        _delete_artifacts(run.info.artifact_uri)
        store._hard_delete_run(run.info.run_id)
    for model in models:
        _delete_artifacts(model.artifact_location)
        store._hard_delete_logged_model(model.model_id)
    store._hard_delete_experiment(eid)
    _remove_empty_folders(experiment.artifact_location)
    return DeletedExperiment(eid, len(runs), len(models), permanent=True)


def _local_folder(uri: str | None) -> Path | None:
    from urllib.parse import urlparse
    from urllib.request import url2pathname

    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(url2pathname(parsed.path))
    return Path(uri) if not parsed.scheme else None


def _delete_artifacts(uri: str | None) -> None:
    """A run's or a model's artifacts (as ``mlflow gc`` deletes them), then its folder when left empty."""
    if not uri:
        return
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    get_artifact_repository(uri).delete_artifacts()
    folder = _local_folder(uri)
    if folder is not None and folder.name == "artifacts":  # <experiment>/<run id>/artifacts
        with contextlib.suppress(OSError):
            folder.parent.rmdir()


def _remove_empty_folders(uri: str | None) -> None:
    """The experiment's local artifact folder (and its ``models/``) once nothing is left in them; a folder another
    experiment still uses (two names can share a folder name) is not empty and stays."""
    folder = _local_folder(uri)
    if folder is None:
        return
    for path in (folder / "models", folder):
        with contextlib.suppress(OSError):
            path.rmdir()
