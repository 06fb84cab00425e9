"""Paths and defaults in one place. Everything is relative to the repository root, not the current directory."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUDIES_DIR = ROOT / "studies"
MLRUNS_DIR = ROOT / "mlruns"
REPORTS_DIR = ROOT / "reports"
TRAINED_DIR = ROOT / "trained"  # `train-best`: trained/<study>/params.npy + settings.json
DEFAULT_STUDY = STUDIES_DIR / "diabetes-reference.yaml"
# One journal file for every study: optuna-dashboard opens it as is, several processes on one machine may share it.
DEFAULT_STORAGE = str(STUDIES_DIR / "optuna.journal")
OPTUNA_ARTIFACTS_DIR = STUDIES_DIR / "artifacts"
# A deployment (a crontab, a systemd unit) can name its storage once in the environment instead of on every line.
STORAGE_ENV = "LR_PIPELINE_STORAGE"


def storage_url(storage: str | None = None) -> str:
    """The Optuna storage a command uses: ``--storage`` when given, else $LR_PIPELINE_STORAGE, else the journal
    file studies/optuna.journal."""
    if storage is not None:
        return storage
    return os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


# The MLflow experiment's shared view (experiment tag mlflow.sharedViewState.<key>) that the printed link opens.
MLFLOW_VIEW_KEY = "trials"


def optuna_artifact_dir(storage: str | None) -> Path:
    """Where a study's artifacts (plots) go: beside a journal file, else studies/artifacts. optuna-dashboard shows
    them when started with ``--artifact-dir`` pointing there (``make dashboard`` does for the default storage)."""
    if storage and "://" not in storage:
        return Path(storage).resolve().parent / "artifacts"
    # A database shared by several machines: the plots stay on the machine that runs `report` / `lr-find` (and
    # its dashboard); every machine reaches the same plots in MLflow, through the tracking server.
    return Path(os.environ.get("LR_PIPELINE_OPTUNA_ARTIFACTS") or OPTUNA_ARTIFACTS_DIR)


def default_tracking_uri() -> str:
    """MLflow's store: a sqlite database inside mlruns/ (not the deprecated file store); $MLFLOW_TRACKING_URI wins."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{MLRUNS_DIR / 'mlflow.db'}"


def default_artifact_root() -> Path:
    return MLRUNS_DIR / "artifacts"


def dataset_cache_file(name: str) -> Path:
    """Where the arrays of scikit-learn's bundled dataset ``name`` are cached (read without importing
    scikit-learn): ``$XDG_CACHE_HOME/lr-pipeline`` (default ``~/.cache/lr-pipeline``), one file per scikit-learn
    version; ``$LR_PIPELINE_CACHE`` replaces the folder."""
    from importlib.metadata import version

    root = os.environ.get("LR_PIPELINE_CACHE")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lr-pipeline"
    return Path(root) / f"sklearn-{version('scikit-learn')}-{name}.npz"
