"""pipeline/config.py: paths and defaults in one place, relative to the repository, with the environment's say."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

from pipeline import config

REPO = Path(__file__).resolve().parents[1]


def test_paths_are_relative_to_the_repository_not_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert config.ROOT == REPO
    assert config.DEFAULT_STUDY == REPO / "studies" / "diabetes-reference.yaml"
    assert config.DEFAULT_STUDY.is_file()
    assert Path(config.DEFAULT_STORAGE) == REPO / "studies" / "optuna.journal"


def test_study_artifacts_sit_beside_a_journal_file_else_in_studies(tmp_path):
    assert config.optuna_artifact_dir(str(tmp_path / "x.journal")) == tmp_path / "artifacts"
    assert config.optuna_artifact_dir("postgresql://u@h/db") == config.OPTUNA_ARTIFACTS_DIR


def test_the_tracking_uri_is_a_sqlite_store_in_mlruns_unless_the_environment_says(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert config.default_tracking_uri() == f"sqlite:///{REPO / 'mlruns' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert config.default_tracking_uri() == "http://127.0.0.1:5000"


def test_the_dataset_cache_is_per_scikit_learn_version_under_the_users_cache(tmp_path, monkeypatch):
    monkeypatch.delenv("LR_PIPELINE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    expected = tmp_path / "xdg" / "lr-pipeline" / f"sklearn-{version('scikit-learn')}-iris.npz"
    assert config.dataset_cache_file("iris") == expected
    monkeypatch.setenv("LR_PIPELINE_CACHE", str(tmp_path / "mine"))
    assert config.dataset_cache_file("iris").parent == tmp_path / "mine"
