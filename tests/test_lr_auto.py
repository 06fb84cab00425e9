"""The LR range test through the CLI: `lr-find`, `lr: auto` in `tune`, and `report` (issue: range test, bounds, plots).

Oracles: 2/lambda_max of the least-squares Hessian computed here with numpy.linalg; the recorded range read
back from Optuna and MLflow; PNG signatures of the files written.
"""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from conftest import study_yaml
from mlflow import MlflowClient

from pipeline import config
from pipeline.datasets import load_dataset

pytestmark = pytest.mark.slow  # real processes, Optuna and MLflow end to end

PNG = b"\x89PNG\r\n\x1a\n"
AUTO_TRIALS, AUTO_EPOCHS = 6, 60


def two_over_lambda_max() -> float:
    data = load_dataset("diabetes", seed=0)
    Xb = np.hstack([data.X_train, np.ones((data.n_train, 1))])
    return 2 / np.linalg.eigvalsh(2 / data.n_train * Xb.T @ Xb).max()


@pytest.fixture(scope="module")
def auto(e2e_store):
    path = study_yaml(
        "diabetes-reference.yaml",
        e2e_store.root / "auto.yaml",
        name="auto",
        training={"epochs": AUTO_EPOCHS},
        search={"lr": "auto"},
        budget={"trials": AUTO_TRIALS},
    )
    first = e2e_store.cli("tune", str(path))
    assert first.code == 0, first.err
    recorded = e2e_store.study("auto").user_attrs["lr_range"]
    second = e2e_store.cli("tune", str(path))  # resume: must keep the recorded range
    assert second.code == 0, second.err
    return path, recorded


def test_lr_find_prints_the_divergence_point_beside_2_over_lambda_max(e2e_store):
    path = study_yaml("diabetes-reference.yaml", e2e_store.root / "find.yaml", name="find")
    run = e2e_store.cli("lr-find", str(path))
    assert run.code == 0, run.err
    line = next(x for x in run.out.splitlines() if "divergence point" in x)
    diverged = float(line.split()[-1])
    theory = two_over_lambda_max()
    assert f"{theory:.4g}" in run.out  # the bound is printed beside it
    assert theory <= diverged <= 2 * theory  # GD cannot diverge below the bound; the test finds it within 2x
    png = config.REPORTS_DIR / "find" / "lr-find.png"
    assert png.read_bytes()[:8] == PNG


def test_lr_find_attaches_its_plot_to_the_optuna_study_and_to_mlflow(e2e_store):
    path = study_yaml("diabetes-reference.yaml", e2e_store.root / "find2.yaml", name="find2")
    assert e2e_store.cli("lr-find", str(path)).code == 0
    study = e2e_store.study("find2")
    metas = optuna.artifacts.get_all_artifact_meta(study)
    assert [m.filename for m in metas] == ["lr-find.png"]
    assert (
        study.user_attrs["lr_find"]["recommended_high"] > study.user_attrs["lr_find"]["recommended_low"] > 0
    )
    client = MlflowClient(e2e_store.tracking_uri)
    experiment = client.get_experiment_by_name("find2")
    (study_run,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'study'")
    assert [a.path for a in client.list_artifacts(study_run.info.run_id, "lr-find")] == [
        "lr-find/lr-find.png"
    ]


def test_auto_lr_searches_the_recommended_range_and_records_it(e2e_store, auto):
    _, (low, high) = auto
    theory = two_over_lambda_max()
    assert 0 < low < high <= 2 * theory  # the upper end is the test's divergence point
    study = e2e_store.study("auto")
    lrs = [t.params["lr"] for t in study.trials]
    assert len(lrs) == 2 * AUTO_TRIALS
    assert all(low <= lr <= high for lr in lrs)
    tags = MlflowClient(e2e_store.tracking_uri).get_experiment_by_name("auto").tags
    assert float(tags["lr_range.low"]) == pytest.approx(low)
    assert float(tags["lr_range.high"]) == pytest.approx(high)


def test_a_resumed_auto_study_keeps_its_first_range(e2e_store, auto):
    _, recorded = auto
    study = e2e_store.study("auto")
    assert study.user_attrs["lr_range"] == recorded
    # the range test ran once: one plot attached, not one per `tune`
    assert len(optuna.artifacts.get_all_artifact_meta(study)) == 1


def test_report_writes_the_plots_of_a_finished_study_and_logs_them(e2e_store, auto, tmp_path):
    path, _ = auto
    run = e2e_store.cli("report", str(path), "--out", str(tmp_path / "r"))
    assert run.code == 0, run.err
    written = sorted(p.name for p in (tmp_path / "r").iterdir())
    assert written == ["curves.png", "history.png", "importance.png", "loss-vs-lr.png", "lr-schedules.png"]
    assert all((tmp_path / "r" / name).read_bytes()[:8] == PNG for name in written)
    client = MlflowClient(e2e_store.tracking_uri)
    experiment = client.get_experiment_by_name("auto")
    (study_run,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'study'")
    logged = sorted(a.path for a in client.list_artifacts(study_run.info.run_id, "report"))
    assert logged == [f"report/{name}" for name in written]


def test_report_on_an_unknown_study_exits_2(e2e_store, tmp_path):
    path = study_yaml("diabetes-reference.yaml", e2e_store.root / "never.yaml", name="never-run")
    run = e2e_store.cli("report", str(path), "--out", str(tmp_path / "r"))
    assert run.code == 2
    assert "never-run" in run.err
    assert not (tmp_path / "r").exists()


def test_running_report_again_updates_the_studys_pictures_instead_of_adding_copies(e2e_store, auto, tmp_path):
    path, _ = auto
    assert e2e_store.cli("report", str(path), "--out", str(tmp_path / "a")).code == 0
    assert e2e_store.cli("report", str(path), "--out", str(tmp_path / "b")).code == 0
    names = [m.filename for m in optuna.artifacts.get_all_artifact_meta(e2e_store.study("auto"))]
    assert sorted(names) == sorted(set(names))  # one lr-find.png, one curves.png, ...
    assert "curves.png" in names and "lr-find.png" in names
