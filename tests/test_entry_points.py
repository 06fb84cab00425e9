"""A user's own model and data from a study file (pipeline.study.entry_points), end to end.

The example is studies/poly-ridge.yaml: polynomial ridge regression and a cubic surface, both written in
studies/models/poly_ridge.py as a user would. Its oracle is the closed-form ridge solution computed here with
scikit-learn's PolynomialFeatures and the normal equations, independently of the model file.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import textwrap

import numpy as np
import pytest
import yaml

from pipeline import cli
from pipeline.config import STUDIES_DIR
from pipeline.errors import ConfigError
from pipeline.study.experiment import build_model_for, load_study_data, replay
from pipeline.study.loader import load_study

EXAMPLE = STUDIES_DIR / "poly-ridge.yaml"
WRONG = STUDIES_DIR / "poly-ridge-wrong.yaml"
RAW = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
L2 = RAW["model"]["params"]["l2"]


def write_study(tmp_path, name="s.yaml", model_file=True, **sections):
    """The example study in tmp_path (with a copy of its model file unless told not to), sections replaced."""
    if model_file:
        (tmp_path / "models").mkdir(exist_ok=True)
        shutil.copy(STUDIES_DIR / "models" / "poly_ridge.py", tmp_path / "models" / "poly_ridge.py")
    raw = {**RAW, **sections}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def ridge_optimum(data, degree=3, l2=L2):
    """argmin mean((Phi w + b - y)^2) + l2 |w|^2 on the training rows, from the normal equations."""
    from sklearn.preprocessing import PolynomialFeatures

    poly = PolynomialFeatures(degree, include_bias=False)
    Phi = poly.fit_transform(data.X_train)
    n, m = Phi.shape
    A = np.empty((m + 1, m + 1))
    A[:m, :m] = Phi.T @ Phi / n + l2 * np.eye(m)
    A[:m, m] = A[m, :m] = Phi.mean(axis=0)
    A[m, m] = 1.0
    wb = np.linalg.solve(A, np.r_[Phi.T @ data.y_train / n, data.y_train.mean()])

    def objective(params, X, y):
        r = poly.transform(X) @ params[:-1] + params[-1] - y
        return float(r @ r) / len(y) + l2 * float(params[:-1] @ params[:-1])

    return wb, objective


def test_the_example_model_matches_the_closed_form_ridge():
    spec = load_study(EXAMPLE)
    data = load_study_data(spec)
    assert (data.task, data.n_features, data.n_train, data.n_val) == ("regression", 2, 240, 60)
    model = build_model_for(spec, data)
    assert model.n_params == 10  # 9 monomials of degree <= 3 in 2 inputs, and the bias
    wb, objective = ridge_optimum(data)
    # The model file orders monomials like PolynomialFeatures: its loss at the optimum is the oracle's, and its
    # gradient vanishes there.
    assert model.loss(wb, data.X_train, data.y_train) == pytest.approx(
        objective(wb, data.X_train, data.y_train), rel=1e-12
    )
    assert np.abs(model.loss_and_grad(wb, data.X_train, data.y_train)[1]).max() < 1e-12


def test_loss_curve_epoch_zero_is_the_loss_at_init():
    spec = load_study(EXAMPLE)
    data = load_study_data(spec)
    model = build_model_for(spec, data)
    p0 = model.init_params(np.random.default_rng(spec.seed))
    _, result = replay(spec, data, {"lr": 0.05, "exponential.decay_rate": 0.05})
    assert result.train_loss[0] == pytest.approx(model.loss(p0, data.X_train, data.y_train), rel=1e-12)


def test_the_loop_trains_a_users_model_exactly_as_gradient_descent_by_hand():
    """Five epochs of full-batch SGD at a constant rate through the training loop equal the update
    w <- w - lr (2/n Phi^T r + 2 l2 w), b <- b - lr 2 mean(r) written here with scikit-learn's features."""
    from sklearn.preprocessing import PolynomialFeatures

    from pipeline.core.optimizers import build_optimizer
    from pipeline.core.training import train

    spec = load_study(EXAMPLE)
    data = load_study_data(spec)
    model = build_model_for(spec, data)
    lr, epochs = 0.05, 5
    result = train(model, build_optimizer("sgd"), lambda step: lr, data, epochs=epochs, seed=spec.seed)
    Phi = PolynomialFeatures(3, include_bias=False).fit_transform(data.X_train)
    p = np.random.default_rng(spec.seed).normal(0.0, 0.01, size=10)  # the model's init from the study's seed
    for _ in range(epochs):
        r = Phi @ p[:-1] + p[-1] - data.y_train
        p = p - lr * np.append(2 / len(r) * Phi.T @ r + 2 * L2 * p[:-1], 2 * r.mean())
    np.testing.assert_allclose(result.params, p, rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_the_example_is_tuned_end_to_end(e2e_store):
    run = e2e_store.cli("tune", str(EXAMPLE), "--trials", "10")
    assert run.code == 0, run.err
    study = e2e_store.study("poly-ridge")
    assert "loss as models/poly_ridge.py:build's loss() defines it" in run.out
    assert "make train-best STUDY=" in run.out  # the next step the summary suggests
    assert study.user_attrs["model"] == "models/poly_ridge.py:build"
    complete = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert len(complete) >= 5
    spec = load_study(EXAMPLE)
    data = load_study_data(spec)
    wb, objective = ridge_optimum(data)
    best_objective = objective(wb, data.X_train, data.y_train)
    _, result = replay(spec, data, study.best_trial.params)
    assert result.final_loss == pytest.approx(
        study.best_value, rel=1e-12
    )  # replay reproduces the stored trial
    found = objective(result.params, data.X_train, data.y_train)
    # Gradient descent with the tuned rate gets within 30% of the ridge optimum (the mean predictor scores 1).
    assert best_objective <= found <= 1.3 * best_objective
    assert "poly-ridge" in e2e_store.study_names()


@pytest.mark.parametrize("command", ["tune", "lr-find"])
def test_a_wrong_gradient_is_refused_before_anything_is_written(tmp_path, capsys, command):
    storage, mlflow_db = tmp_path / "optuna.journal", tmp_path / "mlflow.db"
    code = cli.main(
        [command, str(WRONG), "--storage", str(storage), "--tracking-uri", f"sqlite:///{mlflow_db}"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "'model.entry_point'" in err and "models/poly_ridge.py:build_wrong" in err
    assert "coordinate " in err and "analytic " in err and "numerical " in err and "tolerance " in err
    assert "Traceback" not in err
    assert not storage.exists() and not mlflow_db.exists()


def test_the_wrong_variant_is_wrong_by_the_missing_half_of_the_l2_gradient():
    """The reported values are the analytic gradient and the true one: their difference is l2 * w_i exactly."""
    spec = load_study(WRONG)
    data = load_study_data(spec)
    with pytest.raises(ConfigError) as caught:
        build_model_for(spec, data)
    text = str(caught.value)

    coordinate = int(re.search(r"coordinate (\d+)", text)[1])
    analytic = float(re.search(r"analytic (\S+),", text)[1])
    numerical = float(re.search(r"numerical (\S+),", text)[1])
    p0 = np.random.default_rng(spec.seed).normal(0.0, 0.01, size=10)  # the model's init, first check point
    assert analytic - numerical == pytest.approx(-L2 * p0[coordinate], rel=1e-4)


LOADER_ERRORS = [
    (
        "no colon",
        {"model": {"entry_point": "models/poly_ridge.py"}},
        "model.entry_point",
        "path/to/file.py:function",
    ),
    (
        "missing file",
        {"model": {"entry_point": "models/nope.py:build"}},
        "model.entry_point",
        "file not found",
    ),
    (
        "unknown module",
        {"model": {"entry_point": "no_such_pkg_12.mod:build"}},
        "model.entry_point",
        "cannot find module",
    ),
    (
        "unknown key",
        {"model": {"entry_point": "models/poly_ridge.py:build", "hidden": 3}},
        "model.hidden",
        "unknown key",
    ),
    (
        "injected param",
        {"model": {"entry_point": "models/poly_ridge.py:build", "params": {"n_features": 3}}},
        "model.params.n_features",
        "given by the data",
    ),
    (
        "bad tolerance",
        {"model": {"entry_point": "models/poly_ridge.py:build", "gradient_check": {"rtol": 0}}},
        "model.gradient_check.rtol",
        "> 0",
    ),
    (
        "data seed",
        {"data": {"entry_point": "models/poly_ridge.py:make_data", "params": {"seed": 1}}},
        "data.params.seed",
        "study's seed",
    ),
    (
        "data unknown key",
        {"data": {"entry_point": "models/poly_ridge.py:make_data", "target": "z"}},
        "data.target",
        "unknown key",
    ),
]


@pytest.mark.parametrize(
    "sections, key, match", [e[1:] for e in LOADER_ERRORS], ids=[e[0] for e in LOADER_ERRORS]
)
def test_loader_errors_name_the_key(tmp_path, sections, key, match):
    with pytest.raises(ConfigError, match=match) as caught:
        load_study(write_study(tmp_path, **sections))
    assert f"'{key}'" in str(caught.value) and str(tmp_path) in str(caught.value)


BUILD_ERRORS = [
    (
        "no such function",
        {"model": {"entry_point": "models/poly_ridge.py:nope"}},
        "model.entry_point",
        "no attribute 'nope'",
    ),
    (
        "unknown param",
        {"model": {"entry_point": "models/poly_ridge.py:build", "params": {"degre": 2}}},
        "model.params",
        "does not fit the signature",
    ),
    (
        "factory raises",
        {"model": {"entry_point": "models/poly_ridge.py:build", "params": {"degree": "x"}}},
        "model.entry_point",
        "raised TypeError",
    ),
    (
        "data not arrays",
        {"data": {"entry_point": "models/poly_ridge.py:build", "params": {"n_features": 2}}},
        "data.entry_point",
        "must return \\(X, y\\)",
    ),
]


@pytest.mark.parametrize(
    "sections, key, match", [e[1:] for e in BUILD_ERRORS], ids=[e[0] for e in BUILD_ERRORS]
)
def test_build_errors_name_the_key(tmp_path, sections, key, match):
    spec = load_study(write_study(tmp_path, **sections))
    with pytest.raises(ConfigError, match=match) as caught:
        build_model_for(spec, load_study_data(spec))
    assert f"'{key}'" in str(caught.value)


def test_a_module_entry_point_and_class_labels(tmp_path, monkeypatch):
    """``package.module:function`` form, a classification target given as strings, and a model whose task the
    data decides: labels are encoded 0..k-1 as for any dataset, and the model's task must match."""
    package = tmp_path / "pkg12"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mine.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            from pipeline.core.models import LogisticRegression

            def data(seed, n=80):
                rng = np.random.default_rng(seed)
                X = rng.normal(size=(n, 2))
                return X, np.where(X[:, 0] + X[:, 1] > 0, "yes", "no")

            def model(n_features, task):
                assert task == "binary"
                return LogisticRegression(n_features)
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = write_study(
        tmp_path,
        model_file=False,
        data={"entry_point": "pkg12.mine:data", "params": {"n": 100}},
        model={"entry_point": "pkg12.mine:model"},
    )
    spec = load_study(path)
    assert spec.model.entry_point.source == (package / "mine.py").resolve()
    assert (
        spec.model.entry_point.source_sha256 == hashlib.sha256((package / "mine.py").read_bytes()).hexdigest()
    )
    data = load_study_data(spec)
    assert data.task == "binary" and data.classes == ("no", "yes") and data.n_train + data.n_val == 100
    model = build_model_for(spec, data)
    assert model.accuracy is not None and model.n_params == 3


def test_a_studys_identity_follows_its_model_code(tmp_path):
    """The spec (which a study's fingerprint is made of: every compared field) changes when the model file's
    content changes, not when the same file is loaded again or when an API object is given again."""
    path = write_study(tmp_path)
    first, again = load_study(path), load_study(path)
    assert first == again
    assert first.model.entry_point.identity() == {
        "entry_point": "models/poly_ridge.py:build",
        "source_sha256": hashlib.sha256((tmp_path / "models" / "poly_ridge.py").read_bytes()).hexdigest(),
    }
    model_file = tmp_path / "models" / "poly_ridge.py"
    model_file.write_text(model_file.read_text() + "\n# edited\n")
    edited = load_study(path)
    assert edited.model != first.model and edited.data != first.data  # both entry points live in that file
    assert edited.model.entry_point.source_sha256 != first.model.entry_point.source_sha256

    from pipeline import api

    def factory(n_features):
        raise AssertionError("not called by load")

    assert api.load(path, model=factory) == api.load(path, model=factory)
