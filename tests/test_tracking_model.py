"""pipeline/tracking_model.py: the MLflow pyfunc model is the saved TrainedModel folder plus a thin wrapper, so it
predicts what TrainedModel.predict does, which test_trained.py checks against the model's formula."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from pipeline.core.models import build_model
from pipeline.study.trained import TrainedModel

NAMES = ("x0", "x1")


@pytest.fixture
def saved(tmp_path):
    model = build_model("linear", n_features=2, task="regression")
    spec = {"kind": "builtin", "name": "linear", "n_features": 2, "task": "regression", "n_classes": 0}
    trained = TrainedModel(
        model=model,
        params=np.array([2.0, -1.0, 0.5]),
        task="regression",
        feature_names=NAMES,
        feature_mean=np.array([1.0, 2.0]),
        feature_scale=np.array([2.0, 4.0]),
        target_mean=10.0,
        target_scale=3.0,
        model_spec={**spec, "params": {}, "n_params": 3},
        info={"study": "tm", "trial": 0},
    )
    rows = pd.DataFrame({"x0": [1.0, 3.0, -1.0], "x1": [2.0, 6.0, 10.0]})
    # by hand: z = 2 (x0 - 1)/2 - (x1 - 2)/4 + 0.5, y = 3 z + 10
    expected = [11.5, 14.5, -0.5]
    return trained, trained.save(tmp_path / "trained"), rows, expected


def test_the_pyfunc_wrapper_loads_the_folder_and_predicts_raw_rows(saved):
    from pipeline.tracking_model import PipelineModel

    _trained, folder, rows, expected = saved
    wrapper = PipelineModel()
    wrapper.load_context(SimpleNamespace(artifacts={"trained": str(folder)}))
    assert list(wrapper.predict(None, rows)) == pytest.approx(expected, rel=1e-15)


def test_the_requirements_pin_the_installed_versions():
    import cloudpickle
    import scipy

    from pipeline.tracking_model import _requirements

    assert _requirements() == [
        f"numpy=={np.__version__}",
        f"scipy=={scipy.__version__}",
        f"cloudpickle=={cloudpickle.__version__}",
    ]


@pytest.mark.slow
def test_a_logged_model_loads_through_mlflow_and_predicts_the_same(saved, tmp_path):
    import mlflow

    from pipeline.tracking import Tracker
    from pipeline.tracking_model import log_trained_model

    trained, folder, rows, expected = saved
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with Tracker("tm", tracking_uri=uri) as tracker:
        info = log_trained_model(trained, folder, tracker=tracker, input_example=rows.iloc[:2])
        assert info["run_id"] == tracker.study_run_id()
    assert info["registered_name"] is None and info["model_uri"]
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        loaded = mlflow.pyfunc.load_model(info["model_uri"])
        assert list(loaded.predict(rows)) == pytest.approx(expected, rel=1e-15)
        run = mlflow.get_run(info["run_id"])
    finally:
        mlflow.set_tracking_uri(previous)
    assert run.info.experiment_id == mlflow.MlflowClient(uri).get_experiment_by_name("tm").experiment_id


@pytest.mark.slow
def test_a_notebooks_own_active_experiment_neither_blocks_the_export_nor_is_lost(saved, tmp_path):
    """A notebook that chose an experiment with ``mlflow.set_experiment`` (as the tutorials do) can still export a
    study's model, which goes under the study's run, and keeps its own choice afterwards."""
    import mlflow
    from mlflow.tracking import fluent

    from pipeline.tracking import Tracker
    from pipeline.tracking_model import log_trained_model

    trained, folder, rows, _ = saved
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        mine = mlflow.set_experiment("my-notebook").experiment_id
    finally:
        mlflow.set_tracking_uri(previous)
    try:
        with Tracker("tm-notebook", tracking_uri=uri) as tracker:
            info = log_trained_model(trained, folder, tracker=tracker, input_example=rows.iloc[:2])
            assert info["run_id"] == tracker.study_run_id()
        assert fluent._active_experiment_id == mine  # the notebook's choice is back
    finally:
        fluent._active_experiment_id = None
        os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
