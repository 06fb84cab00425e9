"""A trained model out of a study: the parameters, the complete settings, and what turns raw rows into predictions.

``TrainedModel.predict(X)`` takes rows in the data's original units, standardises them with the training rows'
statistics, applies the model, and undoes the target's standardisation (regression) or maps class codes back to
the original labels (classification). ``save(folder)`` writes ``params.npy`` and ``settings.json`` (and the user's
code for an entry-point model); ``load(folder)`` rebuilds the same predictions exactly (JSON keeps float64 exactly).
MLflow's pyfunc model (:mod:`pipeline.tracking_model`) is this folder plus a thin wrapper.

No Optuna, no MLflow, no scikit-learn: a loaded model needs NumPy, SciPy and this package.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1
PARAMS_FILE, SETTINGS_FILE, CODE_DIR, PICKLE_FILE = "params.npy", "settings.json", "code", "model.pkl"


def _plain(value):
    """JSON-ready: NumPy scalars and arrays to Python numbers and lists (float64 -> float is exact)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass
class TrainedModel:
    """A model with its trained parameters and the data's scaling; ``predict`` works on raw rows."""

    model: Any  # a core model or pipeline.core.usermodel.UserModel
    params: np.ndarray
    task: str
    feature_names: tuple[str, ...]
    feature_mean: np.ndarray
    feature_scale: np.ndarray
    target_mean: float = 0.0
    target_scale: float = 1.0
    classes: tuple = ()
    target_name: str = "y"
    model_spec: dict = field(default_factory=dict)  # how to build the model again (see ``build``)
    info: dict = field(default_factory=dict)  # study, trial, value, complete settings, metrics

    @classmethod
    def from_training(cls, model, params, data, model_spec: dict, info: dict) -> TrainedModel:
        d = data.n_features
        mean = np.zeros(d) if data.feature_mean is None else np.asarray(data.feature_mean, dtype=np.float64)
        scale = np.ones(d) if data.feature_scale is None else np.asarray(data.feature_scale, dtype=np.float64)
        return cls(
            model=model,
            params=np.array(params, dtype=np.float64),
            task=data.task,
            feature_names=tuple(data.feature_names),
            feature_mean=mean,
            feature_scale=scale,
            target_mean=float(data.target_mean),
            target_scale=float(data.target_scale),
            classes=tuple(_plain(list(data.classes))),
            target_name=data.target_name,
            model_spec=model_spec,
            info=info,
        )

    # --- predictions ------------------------------------------------------------------------------------------

    def standardize(self, X) -> np.ndarray:
        """Raw rows (n, d) as the model saw them in training: ``(x - mean_train) / std_train``."""
        X = _rows(X, self.feature_names)
        return (X - self.feature_mean) / self.feature_scale

    def predict(self, X) -> np.ndarray:
        """Predictions for raw rows (an array (n, d), or a DataFrame with the training columns): values in the
        target's units for regression (``z * target_scale + target_mean``), original labels for classes."""
        out = self.model.predict(self.params, self.standardize(X))
        if self.task == "regression":
            return np.asarray(out, dtype=np.float64) * self.target_scale + self.target_mean
        codes = np.asarray(out).astype(np.intp)
        return np.asarray(list(self.classes))[codes] if self.classes else codes

    # --- files ------------------------------------------------------------------------------------------------

    def save(self, folder: str | Path) -> Path:
        """Write ``params.npy``, ``settings.json`` and the user's code (or a pickle of an in-memory model)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        spec = dict(self.model_spec)
        code = folder / CODE_DIR
        if code.exists():
            shutil.rmtree(code)
        kind = spec.get("kind")
        if kind == "file":
            code.mkdir()
            shutil.copy2(spec.pop("source"), code / spec["file"])
        elif kind == "module":
            source = Path(spec.pop("source"))
            top = spec["module"].split(".")[0]
            root = source.parent
            for _ in spec["module"].split(".")[1:]:
                root = root.parent
            package = root / top
            code.mkdir()
            if {"site-packages", "dist-packages"} & set(root.parts):
                pass  # an installed package: the environment that loads the model installs it too
            elif package.is_dir():
                shutil.copytree(package, code / top, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(source, code / source.name)
        elif kind == "object":
            import sys

            import cloudpickle

            name = type(self.model.obj).__module__
            # __main__ (a script, a notebook) is pickled by value anyway, and this package travels as code; any
            # other module of the user's is pickled by value, so the code travels inside the pickle.
            by_value = name not in ("builtins", "__main__") and name.split(".")[0] != "pipeline"
            module = sys.modules[name]
            if by_value:
                cloudpickle.register_pickle_by_value(module)
            try:
                (folder / PICKLE_FILE).write_bytes(cloudpickle.dumps(self.model.obj))
            finally:
                if by_value:
                    cloudpickle.unregister_pickle_by_value(module)
        np.save(folder / PARAMS_FILE, self.params, allow_pickle=False)
        settings = {
            "format": FORMAT,
            "task": self.task,
            "feature_names": list(self.feature_names),
            "feature_mean": self.feature_mean,
            "feature_scale": self.feature_scale,
            "target_mean": self.target_mean,
            "target_scale": self.target_scale,
            "target_name": self.target_name,
            "classes": list(self.classes),
            "model": spec,
            **self.info,
        }
        (folder / SETTINGS_FILE).write_text(json.dumps(_plain(settings), indent=2) + "\n", encoding="utf-8")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> TrainedModel:
        folder = Path(folder)
        s = json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))
        if s.get("format") != FORMAT:
            raise ValueError(
                f"{folder / SETTINGS_FILE}: unknown format {s.get('format')!r} (expected {FORMAT})."
            )
        info = {k: v for k, v in s.items() if k not in _FIELDS}
        return cls(
            model=build(s["model"], folder),
            params=np.load(folder / PARAMS_FILE, allow_pickle=False),
            task=s["task"],
            feature_names=tuple(s["feature_names"]),
            feature_mean=np.asarray(s["feature_mean"], dtype=np.float64),
            feature_scale=np.asarray(s["feature_scale"], dtype=np.float64),
            target_mean=float(s["target_mean"]),
            target_scale=float(s["target_scale"]),
            classes=tuple(s["classes"]),
            target_name=s["target_name"],
            model_spec=s["model"],
            info=info,
        )


_FIELDS = {
    "format", "task", "feature_names", "feature_mean", "feature_scale", "target_mean", "target_scale",
    "target_name", "classes", "model",
}  # fmt: skip


def build(spec: dict, folder: Path):
    """The model described by a saved ``model`` entry: a built-in one by name, a user's one from the code saved
    beside it (this runs that code), or an in-memory one from its pickle."""
    from pipeline.core.usermodel import UserModel

    shape = {"n_features": spec["n_features"], "task": spec["task"], "n_classes": spec["n_classes"]}
    kind = spec["kind"]
    if kind == "builtin":
        from pipeline.core.models import build_model

        return build_model(spec["name"], **shape, **spec["params"])
    if kind == "object":
        import cloudpickle

        obj = cloudpickle.loads((folder / PICKLE_FILE).read_bytes())
    else:
        from pipeline.study import entry_points

        code = folder / CODE_DIR
        if kind == "file":
            module = entry_points.import_file(code / spec["file"])
        else:
            import importlib
            import sys

            if str(code) not in sys.path:
                sys.path.insert(0, str(code))
            module = importlib.import_module(spec["module"])
        obj = entry_points.call_with(getattr(module, spec["function"]), spec["params"], shape)
    return UserModel(obj, spec["n_params"], spec.get("entry_point", "model"))


def _rows(X, names: tuple[str, ...]) -> np.ndarray:
    """A float64 (n, d) array from an array or a DataFrame (whose columns are picked by name, in training order)."""
    columns = getattr(X, "columns", None)
    if columns is not None:
        missing = [n for n in names if n not in set(map(str, columns))]
        if missing:
            raise ValueError(f"the input has no column(s) {missing}; the model was trained on {list(names)}.")
        X = X[list(names)].to_numpy(dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    if X.ndim == 1:
        X = X.reshape(1, -1)
    if X.ndim != 2 or X.shape[1] != len(names):
        raise ValueError(
            f"the input must have {len(names)} columns ({', '.join(names)}). Got shape {X.shape}."
        )
    return X
