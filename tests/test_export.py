"""`train-best`: the best trial trained again, saved, logged as an MLflow pyfunc model, registered; `best`'s
complete settings.

Oracles: the predictions a loaded pyfunc model gives for raw rows are compared (to 1e-12) with predictions
computed here from the saved parameters and the data's own statistics, written out by hand: standardise with
the training mean and std, apply the model's formula (w.x + b; PolynomialFeatures for the polynomial example;
the logit's sign for classes), undo the target's standardisation. The raw rows come from the dataset loaded
without standardisation, not from the model's files.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import load_in_a_fresh_process

from pipeline.config import STUDIES_DIR
from pipeline.datasets import load_dataset
from pipeline.study.experiment import load_study_data
from pipeline.study.loader import load_study

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


def copy_example(root, name):
    """studies/poly-ridge.yaml and its model file in ``root`` (so that the model file can be taken away)."""
    (root / "models").mkdir(parents=True, exist_ok=True)
    shutil.copy(STUDIES_DIR / "models" / "poly_ridge.py", root / "models" / "poly_ridge.py")
    raw = yaml.safe_load((STUDIES_DIR / "poly-ridge.yaml").read_text(encoding="utf-8"))
    raw.update(name=name, budget={"trials": 6}, training={**raw["training"], "epochs": 100})
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def poly(e2e_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("poly-export")
    path = copy_example(root, "poly-export")
    run = e2e_store.cli("tune", str(path))
    assert run.code == 0, run.err
    out = root / "trained"
    run = e2e_store.cli("train-best", str(path), "--out", str(out), "--register", "t12-poly")
    return path, out, run


def test_train_best_saves_params_and_complete_settings(e2e_store, poly):
    path, out, run = poly
    assert run.code == 0, run.err
    settings = json.loads((out / "settings.json").read_text())
    best = e2e_store.study("poly-export").best_trial
    assert settings["trial"] == best.number and settings["value"] == best.value
    s = settings["settings"]
    assert s["lr"] == best.params["lr"]
    assert s["schedule"] == {"name": "exponential", "decay_rate": best.params["exponential.decay_rate"]}
    assert s["optimizer"] == {"name": "sgd"} and s["batch_size"] == "full" and s["epochs"] == 100
    assert s["seed"] == 0 and s["model"] == {
        "entry_point": "models/poly_ridge.py:build",
        "degree": 3,
        "l2": 0.01,
    }
    assert np.load(out / "params.npy").shape == (10,)
    assert (out / "code" / "poly_ridge.py").read_bytes() == (
        path.parent / "models" / "poly_ridge.py"
    ).read_bytes()
    # `best` prints the same complete settings.
    shown = e2e_store.cli("best", str(path))
    assert json.loads(shown.out)["settings"] == s


def test_the_pyfunc_model_carries_the_users_code_and_reproduces_predictions(e2e_store, poly, tmp_path):
    from sklearn.preprocessing import PolynomialFeatures

    path, out, run = poly
    assert "models:/t12-poly/1" in run.out
    spec = load_study(path)
    # Raw rows from the data's range; the training statistics from the same data loaded unscaled.
    rng = np.random.default_rng(11)
    raw = rng.uniform(-2.0, 2.0, size=(25, 2))
    frame = pd.DataFrame(raw, columns=["x0", "x1"])
    params = np.load(out / "params.npy")
    unscaled = load_study_data(
        dataclasses.replace(spec, data=dataclasses.replace(spec.data, standardize=False))
    )
    mean, std = unscaled.X_train.mean(axis=0), unscaled.X_train.std(axis=0)
    y_mean, y_std = unscaled.y_train.mean(), unscaled.y_train.std()
    Z = (raw - mean) / std
    Phi = PolynomialFeatures(3, include_bias=False).fit_transform(Z)
    expected = (Phi @ params[:-1] + params[-1]) * y_std + y_mean
    # The project's own prediction (the saved model, as train-best left it), before the model file goes.
    from pipeline.study.trained import TrainedModel

    own = TrainedModel.load(out).predict(frame)
    # The model file is gone: the loaded model runs the copy it carries.
    shutil.rmtree(path.parent / "models")
    got = load_in_a_fresh_process(e2e_store.tracking_uri, "models:/t12-poly/1", frame, tmp_path)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got, own, rtol=1e-12, atol=1e-12)
    # And against the true surface the data came from (noise 0.1): the model learnt it.
    truth = raw[:, 0] ** 3 - 2 * raw[:, 0] * raw[:, 1] + 0.5 * raw[:, 1] ** 2
    assert np.sqrt(np.mean((np.asarray(got) - truth) ** 2)) < 0.5


def test_the_model_is_logged_under_the_study_run_with_signature_and_example(e2e_store, poly):
    from mlflow import MlflowClient

    client = MlflowClient(e2e_store.tracking_uri)
    experiment = client.get_experiment_by_name("poly-export")
    models = client.search_logged_models(experiment_ids=[experiment.experiment_id])
    assert len(models) == 1
    run = client.get_run(models[0].source_run_id)
    assert run.info.run_name == "study"
    # The study's run is the parent of every trial's run.
    children = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'"
    )
    assert len(children) == len(e2e_store.study("poly-export").trials) == 6
    version = client.get_model_version("t12-poly", "1")
    assert version.source == models[0].model_uri and version.run_id == run.info.run_id
    import mlflow

    mlflow.set_tracking_uri(e2e_store.tracking_uri)
    info = mlflow.models.get_model_info(models[0].model_uri)
    assert [c.name for c in info.signature.inputs.inputs] == ["x0", "x1"]
    assert info.saved_input_example_info is not None


def test_builtin_regression_predictions_in_the_targets_units(e2e_store, diverge, tmp_path):
    """diabetes-reference (linear regression): pyfunc predictions on the raw validation rows equal
    ((x - mean) / std) . w + b, times the target's std plus its mean, from the raw dataset."""
    out = tmp_path / "trained"
    run = e2e_store.cli("train-best", str(diverge.path), "--out", str(out))
    assert run.code == 0, run.err
    spec = load_study(diverge.path)
    raw = load_dataset("diabetes", seed=spec.seed, standardize=False)
    scaled = load_study_data(spec)
    X_raw = raw.X_val
    mean, std = raw.X_train.mean(axis=0), raw.X_train.std(axis=0)
    w = np.load(out / "params.npy")
    y_mean, y_std = raw.y_train.mean(), raw.y_train.std()
    expected = ((X_raw - mean) / std @ w[:-1] + w[-1]) * y_std + y_mean
    uri = run.out.split("mlflow model ")[1].split()[0]
    frame = pd.DataFrame(X_raw, columns=list(raw.feature_names))
    got = load_in_a_fresh_process(e2e_store.tracking_uri, uri, frame, tmp_path)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-9)
    # The project's own prediction: the model on the standardised rows it trained with, unscaled.
    from pipeline.study.trained import TrainedModel

    trained = TrainedModel.load(out)
    own = trained.model.predict(trained.params, scaled.X_val) * scaled.target_scale + scaled.target_mean
    np.testing.assert_allclose(got, own, rtol=1e-12, atol=1e-12)


def test_builtin_classifier_predicts_the_original_labels(e2e_store, breast, tmp_path):
    out = tmp_path / "trained"
    path = next(e2e_store.root.glob("breast.yaml"))
    run = e2e_store.cli("train-best", str(path), "--out", str(out))
    assert run.code == 0, run.err
    spec = load_study(path)
    raw = load_dataset("breast_cancer", seed=spec.seed, standardize=False)
    mean, std = raw.X_train.mean(axis=0), raw.X_train.std(axis=0)
    w = np.load(out / "params.npy")
    logit = (raw.X_val - mean) / std @ w[:-1] + w[-1]
    expected = np.where(logit > 0, "benign", "malignant")  # code 1 is sklearn's target_names[1]
    uri = run.out.split("mlflow model ")[1].split()[0]
    got = load_in_a_fresh_process(
        e2e_store.tracking_uri, uri, pd.DataFrame(raw.X_val, columns=list(raw.feature_names)), tmp_path
    )
    assert got == expected.tolist()


def test_train_best_refuses_a_changed_study_and_writes_nothing(e2e_store, diverge, tmp_path):
    raw = yaml.safe_load(diverge.path.read_text())
    raw["training"]["epochs"] += 7
    changed = tmp_path / "diverge.yaml"
    changed.write_text(yaml.safe_dump(raw))
    out = tmp_path / "trained"
    run = e2e_store.cli("train-best", str(changed), "--out", str(out))
    assert run.code == 2
    assert "changed since the study ran" in run.err and "Traceback" not in run.err
    assert not out.exists()


def test_train_best_exits_1_without_a_complete_trial(e2e_store, all_diverge, tmp_path):
    run = e2e_store.cli("train-best", str(all_diverge), "--out", str(tmp_path / "t"))
    assert run.code == 1 and "no complete trial" in run.err
    assert not (tmp_path / "t").exists()


class NoPredict:
    """Logistic regression without predict: it can be tuned, not exported."""

    task = "binary"

    def __init__(self, n_features):
        from pipeline.core.models import LogisticRegression

        self.inner = LogisticRegression(n_features)

    def init_params(self, rng):
        return self.inner.init_params(rng)

    def loss(self, p, X, y):
        return self.inner.loss(p, X, y)

    def loss_and_grad(self, p, X, y):
        return self.inner.loss_and_grad(p, X, y)


def test_a_model_without_predict_is_tuned_but_not_exported(tmp_path):
    from pipeline import api
    from pipeline.errors import ConfigError

    study = {
        "name": "no-predict",
        "data": {"dataset": "breast_cancer"},
        "training": {"epochs": 5},
        "search": {"lr": {"low": 0.01, "high": 1.0}},
        "budget": {"trials": 2},
    }
    storage = str(tmp_path / "j.journal")
    summary = api.tune(study, model=NoPredict, storage=storage, track=False)
    assert summary.best is not None
    with pytest.raises(
        ConfigError, match=r"'model.entry_point': the model has no predict\(params, X\) method"
    ):
        api.train_best(study, model=NoPredict, storage=storage, out_dir=tmp_path / "out", log=False)
    assert not (tmp_path / "out").exists()


def test_a_module_entry_point_ships_its_package(tmp_path, monkeypatch):
    """``package.module:function``: the saved model carries the top-level package and loads without it."""
    from pipeline import api

    package = tmp_path / "src" / "shipped12"
    (package / "models").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "models" / "__init__.py").write_text("from .helpers import SCALE\n")
    (package / "models" / "helpers.py").write_text("SCALE = 1.0\n")
    (package / "models" / "ridge.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            from .helpers import SCALE

            class Ridge:
                task = "regression"

                def __init__(self, n_features, l2=0.01):
                    self.d, self.l2 = n_features, l2

                def init_params(self, rng):
                    return np.zeros(self.d + 1)

                def predict(self, p, X):
                    return SCALE * (X @ p[:-1] + p[-1])

                def loss(self, p, X, y):
                    r = self.predict(p, X) - y
                    return float(r @ r) / len(y) + self.l2 * float(p[:-1] @ p[:-1])

                def loss_and_grad(self, p, X, y):
                    r = self.predict(p, X) - y
                    g = np.append(2 / len(y) * X.T @ r + 2 * self.l2 * p[:-1], 2 * r.mean())
                    return self.loss(p, X, y), g

            def build(n_features, l2=0.01):
                return Ridge(n_features, l2)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    study = {
        "name": "shipped",
        "data": {"dataset": "diabetes"},
        "model": {"entry_point": "shipped12.models.ridge:build", "params": {"l2": 0.01}},
        "training": {"epochs": 30},
        "search": {"lr": {"low": 0.01, "high": 0.2}},
        "budget": {"trials": 3},
    }
    storage = str(tmp_path / "j.journal")
    api.tune(study, storage=storage, track=False)
    done = api.train_best(study, storage=storage, out_dir=tmp_path / "out", log=False)
    assert (tmp_path / "out" / "code" / "shipped12" / "models" / "helpers.py").is_file()
    raw = load_dataset("diabetes", seed=0, standardize=False)
    expected = done.model.predict(raw.X_val)
    shutil.rmtree(tmp_path / "src")
    code = textwrap.dedent(
        f"""
        import json, numpy as np
        from pipeline.study.trained import TrainedModel
        rows = np.array(json.loads(input()))
        print(json.dumps(TrainedModel.load({str(tmp_path / "out")!r}).predict(rows).tolist()))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps(raw.X_val.tolist()),
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    np.testing.assert_allclose(json.loads(out.stdout), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["", " x", "a/b", "models:x"])
def test_a_bad_registry_name_is_refused_first(e2e_store, diverge, tmp_path, name):
    run = e2e_store.cli("train-best", str(diverge.path), "--out", str(tmp_path / "t"), "--register", name)
    assert run.code == 2 and "'--register'" in run.err and repr(name) in run.err
    assert not (tmp_path / "t").exists()
