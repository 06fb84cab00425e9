"""The commands beside `tune` that read or decorate a study: the LR range test, `lr: auto`, the report."""

from __future__ import annotations

import dataclasses
import datetime
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from pipeline import config
from pipeline.core.arrays import Dataset
from pipeline.paths import inside, writable_folder
from pipeline.study.experiment import (
    RangeTestReport,
    build_model_for,
    load_study_data,
    run_range_test,
)
from pipeline.study.settings import spec_with_lr_range
from pipeline.study.spec import StudySpec
from pipeline.tuning.storage import load_existing_study, open_storage, trial_records


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
    from pipeline.reports.plots import plot_lr_range_test, save, stamp

    report = run_range_test(spec, data)
    found = report.as_dict()
    out = inside(config.REPORTS_DIR, config.REPORTS_DIR / spec.name / "lr-find.png")
    fig = plot_lr_range_test(report, title=f"LR range test: {spec.name} ({report.optimizer})")
    made = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    save(stamp(fig, f"{spec.name}: {len(study.get_trials(deepcopy=False))} trials in the study, {made}"), out)
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
        low, high = report.search_range
        study.set_user_attr("lr_range", [low, high])
        if tracker is not None:
            tracker.set_experiment_tags({"lr_range.low": low, "lr_range.high": high})
    else:
        low, high = recorded
    return dataclasses.replace(spec, search=spec.search.with_lr_range(low, high))


def spec_as_run(spec: StudySpec, study: optuna.Study) -> StudySpec:
    """The spec with ``lr: auto`` replaced by the range the study actually searched (for replays)."""
    return spec_with_lr_range(spec, study.user_attrs.get("lr_range"))


MIN_TRIALS_PER_PARAM = 10  # complete trials that sampled a parameter before its importance means anything


def importance_caveat(study: optuna.Study) -> str | None:
    """Why parameter importances would mislead here, or None when there are enough complete trials.

    Importance is a property of the complete trials: each parameter must have been sampled by at least
    :data:`MIN_TRIALS_PER_PARAM` of them. In a conditional space a branch's parameters (``cosine.min_lr_ratio``)
    exist only in the trials that chose the branch, so 15 complete trials over five schedules give each branch's
    parameters about three: the importances computed from that (lr 0.003, say) are noise.
    """
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    names = sorted({name for t in complete for name in t.params})
    if len(names) < 2:
        return None  # one parameter is trivially 100% important: no picture, nothing to explain
    counts = {name: sum(name in t.params for t in complete) for name in names}
    short = {name: n for name, n in counts.items() if n < MIN_TRIALS_PER_PARAM}
    if not short:
        return None
    shown = ", ".join(f"{name} {n}" for name, n in sorted(short.items(), key=lambda kv: kv[1])[:4])
    more = f" and {len(short) - 4} more" if len(short) > 4 else ""
    return (
        f"importance left out: it needs {MIN_TRIALS_PER_PARAM} complete trials per parameter (per branch of a "
        f"conditional space); complete trials that sampled {shown}{more}"
    )


def param_importances(study: optuna.Study) -> dict[str, float]:
    """Optuna's parameter importances over complete trials; {} when they cannot be computed or would mislead
    (:func:`importance_caveat`): a report without that picture beats a report with a meaningless one."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(complete) < 2 or len({name for t in complete for name in t.params}) < 2:
        return {}  # one parameter is trivially 100% important: no picture rather than a meaningless one
    if importance_caveat(study) is not None:
        return {}
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
    notes: list[str] | None = None,
) -> list[Path]:
    """Write the study's plots under reports/<study>/, log them to MLflow and attach them to the Optuna study.

    ``notes``, when given, receives one line per picture left out and why (importance with too few trials)."""
    from pipeline.reports.report import write_report
    from pipeline.tracking import Tracker

    if out_dir is None:
        out_dir = inside(config.REPORTS_DIR, config.REPORTS_DIR / spec.name)
    else:
        out_dir = writable_folder(out_dir, key="--out")
    study = load_existing_study(spec, storage)
    spec = spec_as_run(spec, study)
    caveat = importance_caveat(study)
    if caveat and notes is not None:
        notes.append(caveat)
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
    from pipeline.tuning import preflight

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = load_study_data(spec)
    build_model_for(spec, data)  # a user's model is checked before the study and the experiment are created
    preflight.check_storage(config.storage_url(storage))
    preflight.check_tracking(tracking_uri or config.default_tracking_uri())
    study = optuna.create_study(
        storage=open_storage(storage), study_name=spec.name, direction="minimize", load_if_exists=True
    )
    with Tracker(spec.name, tracking_uri=tracking_uri, tags={"study_file": str(spec.path)}) as tracker:
        return lr_find(spec, study, data, tracker, storage)
