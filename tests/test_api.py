"""The Python API (pipeline.api): README's example run as written, studies as dicts, model objects.

The example's oracle is the function its data come from: y = x . (1, -2, 0.5) + 3 + N(0, 0.1^2), so the trained
model predicts about 4 at x = (1, 0, 0) (a little less: the L2 term shrinks the weights).
"""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import load_in_a_fresh_process

from pipeline import api
from pipeline.config import ROOT, STUDIES_DIR
from pipeline.errors import ConfigError


def readme_example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## From Python (notebooks, scripts)", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S)[1]


@pytest.mark.slow
def test_readme_example_runs_as_written(tmp_path):
    (tmp_path / "example.py").write_text(readme_example(), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "example.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    best_value, best_lr = map(float, lines[-2].split())
    prediction = float(lines[-1].strip("[] "))
    assert 0 < best_value < 0.05  # validation MSE on a standardised target with noise 0.1 / std ~ 2.3
    assert 1e-3 <= best_lr <= 1.0
    assert prediction == pytest.approx(4.0, abs=0.1)
    assert sorted(p.name for p in (tmp_path / "trained-ridge").iterdir()) == [
        "model.pkl",
        "params.npy",
        "settings.json",
    ]
    # The same study, read back through the API in this process: best() agrees with what the example printed.
    import optuna

    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "notebook.journal"))
    )
    study = optuna.load_study(study_name="notebook-ridge", storage=storage)
    assert len(study.trials) == 10 and study.best_value == best_value
    # The MLflow model it logged, loaded in a fresh process: the class defined in the script travels inside it.
    from mlflow import MlflowClient

    tracking = f"sqlite:///{tmp_path / 'notebook-mlflow.db'}"
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("notebook-ridge")
    (logged,) = client.search_logged_models(experiment_ids=[experiment.experiment_id])
    (tmp_path / "example.py").unlink()
    frame = pd.DataFrame([[1.0, 0.0, 0.0]], columns=["x0", "x1", "x2"])
    got = load_in_a_fresh_process(tracking, logged.model_uri, frame, tmp_path)
    assert got[0] == pytest.approx(prediction, rel=1e-8)  # printed with numpy's 8 significant digits
    from pipeline.study.trained import TrainedModel

    saved = TrainedModel.load(tmp_path / "trained-ridge")
    np.testing.assert_allclose(got, saved.predict(frame), rtol=1e-12, atol=1e-12)


def test_a_dict_study_needs_a_name_and_reads_relative_paths_from_base_dir(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,y\n" + "\n".join(f"{i},{i % 3},{2 * i}" for i in range(20)) + "\n")
    study = {
        "data": {"dataset": "csv", "path": "d.csv", "target": "y"},
        "model": "linear",
        "training": {"epochs": 5},
        "search": {"lr": 0.1},
    }
    with pytest.raises(ConfigError, match=r"<study dict>: 'name': missing required key"):
        api.load(study, base_dir=tmp_path)
    spec = api.load({**study, "name": "d"}, base_dir=tmp_path, trials=3)
    assert spec.data.path == (tmp_path / "d.csv").resolve() and spec.budget.trials == 3
    with pytest.raises(ConfigError, match=r"<study dict>: 'data.path': file not found"):
        api.load({**study, "name": "d"}, base_dir=tmp_path / "elsewhere")


class Wrong:
    """Least squares with the gradient's factor 2 forgotten."""

    task = "regression"

    def __init__(self, n_features):
        self.d = n_features

    def init_params(self, rng):
        return rng.normal(size=self.d + 1)

    def loss(self, p, X, y):
        r = X @ p[:-1] + p[-1] - y
        return float(r @ r) / len(y)

    def loss_and_grad(self, p, X, y):
        r = X @ p[:-1] + p[-1] - y
        return self.loss(p, X, y), np.append(X.T @ r, r.sum()) / len(y)


def test_a_model_object_replaces_a_study_files_model_and_is_checked():
    from pipeline.study.experiment import build_model_for, load_study_data

    spec = api.load(STUDIES_DIR / "diabetes-reference.yaml", model=Wrong)
    assert spec.model.entry_point.obj is Wrong and "Wrong" in spec.model.entry_point.text
    with pytest.raises(
        ConfigError, match=r"'model.entry_point': the gradient .* coordinate \d+, .* analytic .* numerical"
    ):
        build_model_for(spec, load_study_data(spec))
    # An instance works too, and a correct one passes.
    from pipeline.core.models import LinearRegression

    spec = api.load(STUDIES_DIR / "diabetes-reference.yaml", model=LinearRegression(10))
    model = build_model_for(spec, load_study_data(spec))
    assert model.n_params == 11


def test_the_cli_and_the_api_load_the_same_study():
    from pipeline import cli

    parsed = cli._parser().parse_args(["tune", str(STUDIES_DIR / "poly-ridge.yaml"), "--trials", "4"])
    assert cli._load(parsed, trials=parsed.trials) == api.load(STUDIES_DIR / "poly-ridge.yaml", trials=4)
