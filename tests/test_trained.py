"""pipeline/study/trained.py: a trained model takes raw rows and answers in the target's units (or the original
labels), and ``save`` + ``load`` reproduce its predictions bit for bit. The oracle is the models' formula written
out here: standardise with the training statistics, ``z = x.w + b``, undo the target's scaling; ``z > 0`` is the
positive class of a logistic model."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.core.models import build_model
from pipeline.study.trained import PARAMS_FILE, SETTINGS_FILE, TrainedModel

NAMES = ("age", "bmi", "bp")


def builtin(name: str, task: str, n_classes: int = 0, d: int = 3) -> tuple[object, dict]:
    spec = {
        "kind": "builtin",
        "name": name,
        "n_features": d,
        "task": task,
        "n_classes": n_classes,
        "params": {},
    }
    model = build_model(name, n_features=d, task=task, n_classes=n_classes)
    return model, {**spec, "n_params": int(model.n_params)}


@pytest.fixture
def regression():
    rng = np.random.default_rng(0)
    model, spec = builtin("linear", "regression")
    params = rng.normal(size=4)  # w (3), b
    mean = np.array([48.5, 26.4 + 0.1 + 0.2, 94.6])  # 0.1 + 0.2: a float that is not its shortest decimal
    scale = np.array([13.1, 4.4, 13.8])
    trained = TrainedModel(
        model=model,
        params=params,
        task="regression",
        feature_names=NAMES,
        feature_mean=mean,
        feature_scale=scale,
        target_mean=152.1,
        target_scale=77.1,
        target_name="progression",
        model_spec=spec,
        info={"study": "diabetes-reference", "trial": 7, "value": 0.48},
    )
    rows = rng.normal(loc=mean, scale=scale, size=(25, 3))
    return trained, rows


def by_hand(trained, rows):
    z = ((rows - trained.feature_mean) / trained.feature_scale) @ trained.params[:-1] + trained.params[-1]
    return z * trained.target_scale + trained.target_mean


def test_regression_predictions_are_in_the_targets_units(regression):
    trained, rows = regression
    np.testing.assert_allclose(trained.predict(rows), by_hand(trained, rows), rtol=1e-12)


def test_save_and_load_reproduce_the_predictions_exactly(regression, tmp_path):
    trained, rows = regression
    before = trained.predict(rows)
    folder = trained.save(tmp_path / "trained" / "diabetes-reference")
    assert sorted(p.name for p in folder.iterdir()) == [PARAMS_FILE, SETTINGS_FILE]
    loaded = TrainedModel.load(folder)
    np.testing.assert_array_equal(loaded.predict(rows), before)  # bit for bit, not approximately
    np.testing.assert_array_equal(loaded.params, trained.params)
    np.testing.assert_array_equal(loaded.feature_mean, trained.feature_mean)
    assert (loaded.target_mean, loaded.target_scale) == (trained.target_mean, trained.target_scale)
    assert (loaded.feature_names, loaded.target_name, loaded.task) == (NAMES, "progression", "regression")
    assert loaded.info == {"study": "diabetes-reference", "trial": 7, "value": 0.48}


def test_the_settings_file_is_plain_json_with_the_format(regression, tmp_path):
    trained, _ = regression
    settings = json.loads((trained.save(tmp_path) / SETTINGS_FILE).read_text())
    assert settings["format"] == 1
    assert settings["feature_names"] == list(NAMES)
    assert settings["model"]["kind"] == "builtin" and settings["trial"] == 7


def test_a_dataframe_is_read_by_column_name_in_any_order(regression):
    trained, rows = regression
    frame = pd.DataFrame(rows, columns=list(NAMES))[["bp", "age", "bmi"]]
    np.testing.assert_array_equal(trained.predict(frame), trained.predict(rows))
    with pytest.raises(ValueError, match=r"the input has no column\(s\) \['bp'\]; the model was trained on"):
        trained.predict(frame.drop(columns=["bp"]))


def test_one_row_may_be_given_flat_and_a_wrong_width_is_refused(regression):
    trained, rows = regression
    np.testing.assert_array_equal(trained.predict(rows[0]), trained.predict(rows[:1]))
    with pytest.raises(ValueError, match=r"must have 3 columns \(age, bmi, bp\)\. Got shape \(2, 2\)\."):
        trained.predict(rows[:2, :2])


def test_a_classifier_answers_with_the_original_labels_after_a_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    model, spec = builtin("logistic", "binary", n_classes=2)
    trained = TrainedModel(
        model=model,
        params=np.array([1.5, -2.0, 0.5, 0.25]),
        task="binary",
        feature_names=NAMES,
        feature_mean=np.array([1.0, 2.0, 3.0]),
        feature_scale=np.array([2.0, 0.5, 1.0]),
        classes=("benign", "malignant"),
        model_spec=spec,
    )
    rows = rng.normal(size=(40, 3)) * 3 + 2
    z = ((rows - trained.feature_mean) / trained.feature_scale) @ trained.params[:-1] + trained.params[-1]
    expected = np.where(z > 0, "malignant", "benign")
    assert list(trained.predict(rows)) == list(expected)
    assert 0 < (expected == "malignant").sum() < 40  # both labels occur: the check can fail
    loaded = TrainedModel.load(trained.save(tmp_path))
    assert list(loaded.predict(rows)) == list(expected)
    assert loaded.classes == ("benign", "malignant")


def test_an_unknown_format_is_refused(regression, tmp_path):
    trained, _ = regression
    folder = trained.save(tmp_path)
    settings = json.loads((folder / SETTINGS_FILE).read_text())
    (folder / SETTINGS_FILE).write_text(json.dumps({**settings, "format": 2}))
    with pytest.raises(ValueError, match=r"settings\.json: unknown format 2 \(expected 1\)\."):
        TrainedModel.load(folder)
