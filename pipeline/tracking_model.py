"""A trained model as an MLflow pyfunc model: logged under the study's run, optionally registered.

With :mod:`pipeline.tracking` (runs, curves, artifacts) this is the only module that imports MLflow; it is kept
apart so that commands that never export a model do not load MLflow's model machinery.

The pyfunc model is the folder :meth:`pipeline.study.trained.TrainedModel.save` writes (``params.npy``,
``settings.json`` and, for a user's model, its code) as an artifact, plus this package as code (``code_paths``),
so ``mlflow.pyfunc.load_model(uri).predict(rows)`` rebuilds the model and gives the same predictions as
``TrainedModel.predict``: raw rows in, values in the target's units (or original labels) out.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# A progress bar for copying three local files is noise in a command's output.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from pipeline.study.trained import TrainedModel  # noqa: E402

PACKAGE_DIR = Path(__file__).resolve().parent
MODEL_NAME = "model"


class PipelineModel(mlflow.pyfunc.PythonModel):
    """The pyfunc wrapper: all state is in the ``trained`` artifact, read when the model is loaded."""

    def load_context(self, context):
        self.trained = TrainedModel.load(context.artifacts["trained"])

    # A DataFrame hint: MLflow then takes the schema from the signature (no type-hint inference, no warning).
    def predict(self, context, model_input: pd.DataFrame, params=None):
        return self.trained.predict(model_input)


def _requirements() -> list[str]:
    import cloudpickle
    import scipy

    return [
        f"numpy=={np.__version__}",
        f"scipy=={scipy.__version__}",
        f"cloudpickle=={cloudpickle.__version__}",
    ]


@contextlib.contextmanager
def _no_active_experiment():
    """Without the process's fluent "active experiment" for the block. ``mlflow.start_run(run_id=...)`` refuses a
    run of another experiment than the one a notebook (or an earlier call in the same process) chose with
    ``mlflow.set_experiment``; the study's run is named by its id, so that choice is put aside, then restored."""
    from mlflow.tracking import fluent

    previous, env = fluent._active_experiment_id, os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    fluent._active_experiment_id = None
    try:
        yield
    finally:
        fluent._active_experiment_id = previous
        if env is not None:
            os.environ["MLFLOW_EXPERIMENT_ID"] = env


def log_trained_model(
    trained: TrainedModel,
    folder: Path,
    *,
    tracker,
    input_example,
    register: str | None = None,
) -> dict:
    """Log the saved model in ``folder`` as a pyfunc model under the study's run of ``tracker``'s experiment.

    Args:
        trained: the model (its predictions on ``input_example`` make the signature).
        folder: where ``trained.save`` wrote it.
        tracker: a ``pipeline.tracking.Tracker`` on the study's experiment.
        input_example: a few raw rows (a DataFrame with the training columns).
        register: a model registry name: the logged model becomes its next version.

    Returns:
        {"model_uri", "run_id", "model_id", "registered_name", "registered_version"}.
    """
    from mlflow.models import infer_signature

    run_id = tracker.study_run_id()
    signature = infer_signature(input_example, trained.predict(input_example))
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracker.tracking_uri)
    quiet = logging.getLogger("mlflow.pyfunc")
    level = quiet.level
    # It warns that a Python object is pickled: ours holds no state (it is loaded from the `trained` artifact).
    quiet.setLevel(logging.ERROR)
    try:
        active = mlflow.active_run()
        if active is not None and active.info.run_id != run_id:
            raise RuntimeError(f"another MLflow run ({active.info.run_id}) is active in this process.")
        with _no_active_experiment(), mlflow.start_run(run_id=run_id, nested=False):
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=PipelineModel(),
                artifacts={"trained": str(folder)},
                code_paths=[str(PACKAGE_DIR)],
                signature=signature,
                input_example=input_example,
                pip_requirements=_requirements(),
                registered_model_name=register,
                tags={
                    "study": trained.info.get("study", ""),
                    "trial_number": str(trained.info.get("trial", "")),
                },
            )
    finally:
        quiet.setLevel(level)
        mlflow.set_tracking_uri(previous)
    return {
        "model_uri": info.model_uri,
        "run_id": run_id,
        "model_id": getattr(info, "model_id", None),
        "registered_name": register,
        "registered_version": getattr(info, "registered_model_version", None),
    }
