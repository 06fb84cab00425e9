"""`train-best`: train the best trial's complete settings again, save them with the parameters, log an MLflow model.

Everything is checked before anything is written: the study exists and has a complete trial, the data loads, the
model passes its check and can predict, and the training reproduces the trial's stored value (a study file,
data or model edited since the study ran is refused, not exported).
"""

from __future__ import annotations

import datetime
import math
from pathlib import Path

from pipeline.errors import ConfigError, NoCompleteTrial
from pipeline.study.experiment import build_model_for, load_study_data, run_settings
from pipeline.study.settings import ReplaySuggester, complete_settings
from pipeline.study.spec import StudySpec
from pipeline.study.trained import TrainedModel
from pipeline.tuning.commands import spec_as_run
from pipeline.tuning.storage import best_trial_info, load_existing_study

# Training is deterministic from the seed; a different BLAS or CPU may move the last bits of a long run.
REPRODUCE_RTOL = 1e-6
EXAMPLE_ROWS = 5


def check_registry_name(name) -> str:
    """MLflow's rule for a registered model's name (no '/' or ':', not empty), checked before anything runs."""
    if not isinstance(name, str) or not name.strip() or name != name.strip() or name in (".", ".."):
        raise ConfigError(
            "must be a non-empty name without leading or trailing spaces.", key="--register", value=name
        )
    if any(c in name for c in "/:"):
        raise ConfigError(
            "must not contain '/' or ':' (MLflow's rule for model names).", key="--register", value=name
        )
    return name


def model_recipe(spec: StudySpec, data, model) -> dict:
    """How to build the model again where it is loaded: a built-in by name, a user's from its code, or an
    in-memory object from a pickle (``pipeline.study.trained.build``)."""
    m = spec.model
    recipe = {
        "n_features": data.n_features,
        "task": data.task,
        "n_classes": data.n_classes,
        "n_params": int(model.n_params),
        "params": dict(m.params),
    }
    entry = m.entry_point
    if entry is None:
        return {"kind": "builtin", "name": m.name, **recipe}
    common = {"entry_point": entry.text, "function": entry.function, **recipe}
    if entry.obj is not None:
        return {"kind": "object", **common}
    if entry.path is not None:
        return {"kind": "file", "file": entry.path.name, "source": str(entry.path), **common}
    return {"kind": "module", "module": entry.module, "source": str(entry.source), **common}


def train_best_trial(
    spec: StudySpec,
    *,
    storage: str | None,
    tracking_uri: str | None,
    folder: Path,
    register: str | None = None,
    log: bool = True,
) -> dict:
    """Train, check, save to ``folder``, log (and register) the best trial's model; the fields of ``api.TrainBest``.

    Raises:
        NoCompleteTrial: the study has no complete trial.
        ConfigError: the model cannot predict, or the training does not reproduce the stored value.
    """
    if register is not None:
        check_registry_name(register)
    study = load_existing_study(spec, storage)
    best = best_trial_info(study)
    if best is None:
        raise NoCompleteTrial(f"study {spec.name!r} has no complete trial yet: nothing to train.")
    spec = spec_as_run(spec, study)
    settings = spec.search.sample(ReplaySuggester(best["params"]))
    data = load_study_data(spec)
    model = build_model_for(spec, data)
    if getattr(model, "has_predict", True) is False:
        raise ConfigError(
            "the model has no predict(params, X) method; train-best needs one to turn rows into predictions.",
            file=str(spec.path),
            key="model.entry_point",
            value=spec.model.entry_point.text,
        )
    result = run_settings(settings, spec, data)
    if not math.isclose(result.final_loss, best["value"], rel_tol=REPRODUCE_RTOL, abs_tol=1e-12):
        raise ConfigError(
            f"training trial {best['trial']}'s settings again gives the loss {result.final_loss!r}, not the stored "
            f"{best['value']!r}: the study file, its data or its model changed since the study ran. Tune it "
            "under a new name (or restore what changed) before exporting.",
            file=str(spec.path),
        )
    info = {
        "study": spec.name,
        "trial": best["trial"],
        "value": best["value"],
        "mlflow_trial_run_id": best.get("mlflow_run_id"),
        "settings": complete_settings(spec, best["params"]),
        "final_train_loss": float(result.train_loss[-1]),
        "final_val_loss": float(result.val_loss[-1]) if result.has_validation else None,
        "epochs_run": result.epochs_run,
        "trained_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    trained = TrainedModel.from_training(model, result.params, data, model_recipe(spec, data, model), info)
    trained.save(folder)
    out = {"model": trained, "folder": folder}
    if not log:
        return out
    import pandas as pd

    from pipeline.tracking import Tracker
    from pipeline.tracking_model import log_trained_model

    rows = data.X_val if data.n_val else data.X_train
    raw = rows[:EXAMPLE_ROWS] * trained.feature_scale + trained.feature_mean
    example = pd.DataFrame(raw, columns=list(trained.feature_names))
    with Tracker(spec.name, tracking_uri=tracking_uri) as tracker:
        logged = log_trained_model(trained, folder, tracker=tracker, input_example=example, register=register)
    return {
        **out,
        "model_uri": logged["model_uri"],
        "run_id": logged["run_id"],
        "registered_name": logged["registered_name"],
        "registered_version": None
        if logged["registered_version"] is None
        else str(logged["registered_version"]),
    }
