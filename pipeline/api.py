"""The Python API: what the command line does, from a notebook or a script.

Every function takes a study as a path to a study file, or as a dict with the same keys (``name`` required;
relative paths are taken from the current directory or ``base_dir``); ``model=`` replaces the study's model with a
model object, a function or class that returns one, or an entry-point string (see README, "Your own model")::

    from pipeline import api

    summary = api.tune("studies/poly-ridge.yaml", trials=20)
    print(api.best("studies/poly-ridge.yaml")["settings"])
    trained = api.train_best("studies/poly-ridge.yaml").model
    trained.predict(rows)

The CLI (``python -m pipeline``) is a thin layer over these functions. Errors a user can fix raise
:class:`pipeline.errors.PipelineError` (the CLI's exit 2), naming the file or ``<study dict>``, the key and the value.
Nothing heavy is imported before a function is called.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import config

Study = str | Path | Mapping[str, Any]  # or an already loaded pipeline.study.spec.StudySpec


def load(
    study: Study,
    *,
    model=None,
    model_params: Mapping[str, Any] | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    base_dir: str | Path | None = None,
):
    """The validated study (``pipeline.study.spec.StudySpec``).

    Args:
        study: a study file's path, or a dict with a study file's keys.
        model: replaces the study's ``model``: a model object (``task``, ``init_params``, ``loss``,
            ``loss_and_grad``), a function or class returning one, or an entry-point string.
        model_params: keyword arguments for ``model`` when it is a function, class or entry point.
        trials, timeout: replace the study's per-run budget (as ``--trials`` / ``--timeout``).
        base_dir: where a dict study's relative paths start (default: the current directory).
    """
    from pipeline.study.loader import load_study, load_study_mapping
    from pipeline.study.spec import StudySpec

    if isinstance(study, StudySpec):  # already loaded (the CLI loads once, then calls the command)
        if model is not None or trials is not None or timeout is not None:
            raise TypeError("model, trials and timeout apply when the study is loaded, not to a StudySpec.")
        return study
    overrides = {k: v for k, v in (("trials", trials), ("timeout", timeout)) if v is not None} or None
    sections = None
    if model is not None:
        sections = {
            "model": {"entry_point": model, **({"params": dict(model_params)} if model_params else {})}
        }
    if isinstance(study, Mapping):
        return load_study_mapping({**study, **(sections or {})}, base_dir=base_dir, overrides=overrides)
    return load_study(Path(study), overrides=overrides, sections=sections)


def tune(
    study: Study,
    *,
    model=None,
    model_params: Mapping[str, Any] | None = None,
    trials: int | None = None,
    timeout: float | None = None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    track: bool = True,
    progress: bool = False,
    **run_options,
):
    """Run (or resume) the study; returns its ``pipeline.summary.RunSummary`` (``.best``, ``.counts``, ...).

    ``storage``: an Optuna storage URL or journal path (default ``studies/optuna.journal``); ``tracking_uri``:
    MLflow's (default sqlite in ``mlruns/``); ``track=False`` skips MLflow; ``run_options`` go to
    ``pipeline.tuning.run.run_study`` as the CLI's options do (``worker``, ``fail_stale_after`` in seconds,
    ``exclusive``, ``new_version`` to start ``<name>.v2`` from the latest version's best settings, ...).
    """
    from pipeline.tuning.run import run_study

    spec = load(study, model=model, model_params=model_params, trials=trials, timeout=timeout)
    return run_study(
        spec,
        storage=storage,
        tracking_uri=tracking_uri,
        track=track,
        progress=progress,
        **run_options,
    )


def _current(spec, storage: str | None):
    """The study file's study as `tune` now resumes it: its latest version (``<name>.v2`` after ``--new-version``)."""
    from pipeline.tuning.identity import current_version

    return current_version(spec, storage)


def best(study: Study, *, model=None, storage: str | None = None) -> dict | None:
    """The best complete trial as plain data (what ``best`` prints), or None when there is none.

    Keys: ``study``, ``trial``, ``value``, ``params`` (the searched values, as Optuna records them),
    ``mlflow_run_id`` and ``settings``: everything that trains the trial again (lr, batch size, optimizer and
    schedule with all their parameters, epochs, divergence factor, seed, model, data); None, with
    ``settings_error`` saying why, when the study file no longer describes the trial.
    """
    from pipeline.study.settings import complete_settings, spec_with_lr_range
    from pipeline.tuning.storage import best_trial_info, load_existing_study

    spec = _current(load(study, model=model), storage)
    optuna_study = load_existing_study(spec, storage)
    info = best_trial_info(optuna_study)
    if info is None:
        return None
    try:
        spec = spec_with_lr_range(spec, optuna_study.user_attrs.get("lr_range"))
        return {**info, "settings": complete_settings(spec, info["params"])}
    except (KeyError, ValueError) as exc:  # the trial does not fit the study file (edited since): say so
        reason = exc.args[0] if exc.args else exc
        return {
            **info,
            "settings": None,
            "settings_error": f"the study file no longer describes this trial: {reason}",
        }


def studies(*, storage: str | None = None) -> list[dict]:
    """Every study in the storage (what ``studies`` prints), sorted by name, as plain data.

    Keys: ``name``, ``version`` (its ``version`` user attribute, else N of a ``<name>.vN`` name, else 1),
    ``previous_version``, ``trials`` (counts: ``complete``, ``pruned``, ``failed``, ``running``, ``waiting``),
    ``total``, ``best_value``, ``best_trial``, ``created`` (the first trial's start) and ``last_activity`` (the
    latest start or end of a trial), in ISO 8601 UTC or None. A journal or sqlite file that does not exist raises
    ConfigError (naming ``--storage``); an existing empty storage gives []. Imports neither MLflow nor
    scikit-learn.
    """
    from pipeline.tuning.manage import list_studies

    return list_studies(storage)


def delete(
    study: str | Path,
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
    confirm=None,
):
    """Delete a study from both stores: its MLflow experiment (runs, logged models, artifacts; for good on a
    sqlite or database store, so that the name can be tuned again from trial 0), the files it attached to Optuna's
    artifact store, then the Optuna study. ``study``: a study file (``.yaml``/``.yml``, its ``name``) or a study
    name. ``confirm(name, n_trials) -> bool`` is asked once everything is checked and before anything is deleted
    (default: yes). Returns ``pipeline.tuning.manage.Deleted`` (``.lines()`` says what went), None when declined.
    """
    from pipeline.tuning.manage import delete_study

    kwargs = {} if confirm is None else {"confirm": confirm}
    return delete_study(str(study), storage=storage, tracking_uri=tracking_uri, **kwargs)


def lr_find(study: Study, *, model=None, storage: str | None = None, tracking_uri: str | None = None):
    """The LR range test (Smith 2015): ``(RangeTestReport, plot path)``; the plot is logged and attached."""
    from pipeline.tuning.commands import lr_find_for

    return lr_find_for(
        _current(load(study, model=model), storage), storage=storage, tracking_uri=tracking_uri
    )


def report(
    study: Study,
    *,
    model=None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    out_dir: str | Path | None = None,
    notes: list[str] | None = None,
) -> list[Path]:
    """Write the study's plots (default under ``reports/<study>/``), log and attach them; their paths.
    ``notes``, when given, receives one line per picture left out and why."""
    from pipeline.tuning.commands import study_report

    return study_report(
        _current(load(study, model=model), storage),
        storage=storage,
        tracking_uri=tracking_uri,
        out_dir=Path(out_dir) if out_dir else None,
        notes=notes,
    )


@dataclass(frozen=True)
class TrainBest:
    """What ``train_best`` did: the trained model, where it was saved, and where MLflow keeps it."""

    model: Any  # pipeline.study.trained.TrainedModel: .predict(raw rows), .params, .info["settings"]
    folder: Path
    model_uri: str | None = None
    run_id: str | None = None
    registered_name: str | None = None
    registered_version: str | None = None


def train_best(
    study: Study,
    *,
    model=None,
    storage: str | None = None,
    tracking_uri: str | None = None,
    out_dir: str | Path | None = None,
    register: str | None = None,
    log: bool = True,
) -> TrainBest:
    """Train the best trial's complete settings again, save the parameters and settings, log an MLflow pyfunc
    model (signature, input example) under the study's run, and register it as ``register`` when given.

    The training is checked to reproduce the trial's stored value (training is deterministic from the seed): a
    study file, data or model changed since the study ran is refused rather than exported.

    Args:
        out_dir: the folder for ``params.npy`` and ``settings.json`` (default ``trained/<study>/``).
        log: False saves the folder only (no MLflow).
    """
    from pipeline.tuning.export import train_best_trial

    spec = _current(load(study, model=model), storage)
    folder = Path(out_dir) if out_dir else config.TRAINED_DIR / spec.name
    return TrainBest(**train_best_trial(spec, storage=storage, tracking_uri=tracking_uri, folder=folder,
                                        register=register, log=log))  # fmt: skip
