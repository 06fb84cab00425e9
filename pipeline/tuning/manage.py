"""``studies`` and ``delete``: what a storage holds, and deleting a study from both stores.

``studies`` only reads: one pass over each study's trials (``storage.get_all_trials``, the same read
``optuna.get_all_study_summaries`` makes, without copying the trials), no MLflow. ``delete`` checks everything it
can before it asks, then deletes the MLflow experiment first and the Optuna study last: the Optuna study is what
names the study for ``delete``, so a delete cut short at any point is finished by running it again.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import TrialState

from pipeline import config
from pipeline.errors import ConfigError
from pipeline.secrets import mask_url

STATES = {
    "complete": TrialState.COMPLETE,
    "pruned": TrialState.PRUNED,
    "failed": TrialState.FAIL,
    "running": TrialState.RUNNING,
    "waiting": TrialState.WAITING,  # enqueued, not started (a new version's warm start)
}
_VERSION_SUFFIX = re.compile(r"^(?P<base>.+)\.v(?P<n>[1-9][0-9]{0,5})$")
_STUDY_FILE_SUFFIXES = (".yaml", ".yml")


def study_version(name: str, user_attrs: dict) -> int | str:
    """The study's version: its ``version`` user attribute (``tune --new-version`` records it), else the ``N`` of a
    ``<name>.vN`` suffix, else 1."""
    recorded = user_attrs.get("version")
    if recorded is not None:
        try:
            return int(recorded)
        except (TypeError, ValueError):
            return str(recorded)
    match = _VERSION_SUFFIX.match(name)
    return int(match["n"]) if match else 1


def iso_utc(moment: datetime.datetime | None) -> str | None:
    """``2024-05-01T09:30:00Z``; a naive datetime is local time (Optuna stamps trials with ``datetime.now()``)."""
    if moment is None:
        return None
    return _as_utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


def _as_utc(moment: datetime.datetime) -> datetime.datetime:
    return (moment if moment.tzinfo else moment.astimezone()).astimezone(datetime.UTC)


def open_existing_storage(storage: str | None) -> tuple[str, BaseStorage]:
    """The storage's URL and the opened storage; ConfigError naming ``--storage`` when a journal or sqlite file
    does not exist (opening it would create an empty one and answer "no studies")."""
    from pipeline.tuning.preflight import check_storage_url
    from pipeline.tuning.storage import open_storage

    url = config.storage_url(storage)
    check_storage_url(url)
    path = None
    if "://" not in url:
        path, what = Path(url), "Optuna journal file"
    elif url.startswith("sqlite:///"):
        path, what = Path(url[len("sqlite:///") :].split("?", 1)[0]), "sqlite file"
    if path is not None and not path.is_file():
        raise ConfigError(
            f"there is no such {what}: no study is stored there yet.", key="--storage", value=url
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return url, open_storage(url)


def study_row(storage: BaseStorage, name: str, user_attrs: dict) -> dict:
    """One study as plain data: version, trials by state, best value, created, last activity (ISO 8601 UTC)."""
    study_id = storage.get_study_id_from_name(name)
    directions = storage.get_study_directions(study_id)
    trials = storage.get_all_trials(study_id, deepcopy=False)
    counts = {key: 0 for key in STATES}
    by_state = {state: key for key, state in STATES.items()}
    best = None
    starts, moments = [], []
    for trial in trials:
        key = by_state.get(trial.state)
        if key is not None:
            counts[key] += 1
        if trial.state == TrialState.COMPLETE and len(directions) == 1 and trial.value is not None:
            better = best is None or (
                trial.value > best.value
                if directions[0] == StudyDirection.MAXIMIZE
                else trial.value < best.value
            )
            if better and not math.isnan(trial.value):
                best = trial
        if trial.datetime_start is not None:
            starts.append(_as_utc(trial.datetime_start))
        moments += [_as_utc(m) for m in (trial.datetime_start, trial.datetime_complete) if m is not None]
    created = user_attrs.get("created") or iso_utc(min(starts, default=None))
    return {
        "name": name,
        "version": study_version(name, user_attrs),
        "previous_version": user_attrs.get("previous_version"),
        "trials": counts,
        "total": len(trials),
        "best_value": best.value if best is not None else None,
        "best_trial": best.number if best is not None else None,
        "created": created,
        "last_activity": iso_utc(max(moments, default=None)),
    }


def list_studies(storage: str | None = None) -> list[dict]:
    """Every study in the storage (sorted by name) as :func:`study_row` gives it."""
    _, backend = open_existing_storage(storage)
    studies = sorted(backend.get_all_studies(), key=lambda s: s.study_name)
    return [study_row(backend, s.study_name, s.user_attrs) for s in studies]


def render_studies(rows: list[dict], storage: str | None) -> str:
    """The ``studies`` table; timestamps in UTC. A ``waiting`` column only when some study has enqueued trials."""
    where = mask_url(config.storage_url(storage))
    if not rows:
        return f"no study in {where}"
    states = [k for k in STATES if k != "waiting" or any(r["trials"]["waiting"] for r in rows)]
    header = ["study", "version", *states, "best value", "created (UTC)", "last activity (UTC)"]
    table = [header]
    for r in rows:
        best = "-" if r["best_value"] is None else f"{r['best_value']:.6g}"
        table.append(
            [
                r["name"],
                str(r["version"]),
                *(str(r["trials"][k]) for k in states),
                best,
                r["created"] or "-",
                r["last_activity"] or "-",
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    numeric = set(range(1, len(states) + 3))
    lines = [
        "  ".join(
            cell.rjust(w) if i in numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in table
    ]
    return "\n".join([f"{len(rows)} stud{'y' if len(rows) == 1 else 'ies'} in {where}", *lines])


def study_name(target: str) -> str:
    """``delete``'s STUDY: an existing ``.yaml``/``.yml`` file is a study file (the study is its ``name``, as
    ``tune`` names it), anything else is a study name."""
    path = Path(target)
    if path.suffix.lower() in _STUDY_FILE_SUFFIXES and path.is_file():
        from pipeline.study.loader import load_study

        return load_study(path).name
    return target


@dataclass(frozen=True)
class Deleted:
    """What ``delete`` removed."""

    study: str
    storage: str  # masked
    trials: int
    experiment: str  # the MLflow experiment's name
    tracking_uri: str  # masked
    mlflow: object | None  # pipeline.tracking.DeletedExperiment, or None when there was no experiment
    artifacts: int  # files removed from the study's Optuna artifact folder
    other_versions: tuple[str, ...] = ()  # versions of the same study left in the storage (``<name>.vN``)

    def lines(self) -> list[str]:
        out = [f"deleted study {self.study!r} ({self.trials} trials) from {self.storage}"]
        m = self.mlflow
        if m is None:
            out.append(
                f"  no MLflow experiment {self.experiment!r} in {self.tracking_uri}: nothing to delete there"
            )
        elif m.permanent:
            out.append(
                f"  deleted MLflow experiment {self.experiment!r} (id {m.experiment_id}) for good: {m.runs} runs, "
                f"{m.models} logged models and their artifacts, from {self.tracking_uri}"
            )
        else:
            out.append(
                f"  MLflow experiment {self.experiment!r} (id {m.experiment_id}, {m.runs} runs) marked deleted on "
                f"{self.tracking_uri} and renamed {m.renamed_to!r}, so the name is free; `mlflow gc` on the "
                "server removes it for good"
            )
        if self.artifacts:
            out.append(f"  removed {self.artifacts} Optuna artifact file(s) (plots attached by report)")
        if self.other_versions:
            out.append(
                f"  other versions of this study are kept: {', '.join(self.other_versions)} "
                "(`tune` of its study file now resumes the latest of them; delete them by name)"
            )
        return out


def _same_tracking_store(a: str, b: str) -> bool:
    if a.startswith("sqlite:///") and b.startswith("sqlite:///"):
        return Path(a[10:].split("?", 1)[0]).resolve() == Path(b[10:].split("?", 1)[0]).resolve()
    return a.rstrip("/") == b.rstrip("/")


def _artifact_metas(study: optuna.Study, backend: BaseStorage, trials) -> list:
    from optuna.artifacts import get_all_artifact_meta

    metas = list(get_all_artifact_meta(study))
    for trial in trials:
        metas += get_all_artifact_meta(trial, storage=backend)
    return metas


def delete_study(
    target: str,
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    confirm: Callable[[str, int], bool] = lambda name, trials: True,
) -> Deleted | None:
    """Delete the study ``target`` (a study file or a study name): its MLflow experiment (see
    :func:`pipeline.tracking.delete_experiment`), the files it attached to Optuna's artifact store, then the
    Optuna study. None when ``confirm(name, trials)`` says no; nothing is deleted before it says yes.

    ConfigError (nothing deleted) when there is no such study (the message lists the studies there), or when the
    study recorded another MLflow store than the one given (its experiment would be left behind).
    """
    from pipeline.tuning.preflight import check_tracking

    name = study_name(target)
    url, backend = open_existing_storage(storage)
    names = sorted(optuna.get_all_study_names(backend))
    if name not in names:
        raise ConfigError(
            f"no study named {name!r} in this storage (studies there: {', '.join(names) or 'none'}); "
            "nothing deleted.",
            key="--storage",
            value=url,
        )
    study = optuna.load_study(study_name=name, storage=backend)
    trials = study.get_trials(deepcopy=False)
    experiment = str(study.user_attrs.get("mlflow_experiment") or name)
    uri = tracking_uri or config.default_tracking_uri()
    recorded = study.user_attrs.get("mlflow_tracking_uri")
    if tracking_uri is None and recorded and not _same_tracking_store(str(recorded), uri):
        raise ConfigError(
            f"study {name!r} was tracked in MLflow at {recorded}, not the default {uri}: pass "
            "--tracking-uri so that its experiment is deleted with it; nothing deleted.",
            key="--tracking-uri",
        )
    check_tracking(uri)
    if not confirm(name, len(trials)):
        return None
    from pipeline.tracking import delete_experiment

    mlflow = delete_experiment(experiment, tracking_uri=uri)
    removed = 0
    metas = _artifact_metas(study, backend, trials)
    if metas:
        folder = config.optuna_artifact_dir(storage)
        for meta in metas:
            path = folder / meta.artifact_id
            if path.is_file():
                path.unlink()
                removed += 1
    optuna.delete_study(study_name=name, storage=backend)
    others = tuple(n for n in names if n != name and _base(n) == _base(name))
    return Deleted(name, mask_url(url), len(trials), experiment, mask_url(uri), mlflow, removed, others)


def _base(name: str) -> str:
    match = _VERSION_SUFFIX.match(name)
    return match["base"] if match else name
