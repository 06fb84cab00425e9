"""Shared fixtures of the end-to-end tests (tests/test_run.py, tests/test_cli.py).

Importing MLflow (~2 s) and creating a sqlite store (~3-5 s of migrations) dominate an end-to-end test, so the
whole session uses ONE Optuna journal and ONE MLflow sqlite store under a temporary directory (never the
repository's studies/optuna.journal or mlruns/), and each study is tuned once, through the CLI, by a
session-scoped fixture that the tests then only read.
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import pytest
import yaml

from pipeline import cli
from pipeline.config import STUDIES_DIR

# Trials per `tune` run of the divergence study (run twice: resume) and epochs of its trials.
DIVERGE_TRIALS = 12
DIVERGE_EPOCHS = 100
MEDIAN_TRIALS = 12
MEDIAN_PRUNER = {"name": "median", "n_startup_trials": 3, "n_warmup_steps": 5}
BREAST_TRIALS, BREAST_EPOCHS = 3, 5
GRID_EPOCHS = 30
GRID_LRS = [0.001, 0.01, 0.1, 1, 10]  # studies/compare.yaml


def study_yaml(source: str, path: Path, **sections) -> Path:
    """Write ``studies/<source>`` to ``path`` with top-level ``sections`` replaced or updated (dicts merge one
    level deep, other values replace; None removes the key)."""
    raw = yaml.safe_load((STUDIES_DIR / source).read_text(encoding="utf-8"))
    for key, value in sections.items():
        if value is None:
            raw.pop(key, None)
        elif isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


@dataclass(frozen=True)
class Run:
    """One call of the CLI: exit code and what it printed."""

    code: int
    out: str
    err: str


@dataclass
class Store:
    """The session's Optuna journal and MLflow sqlite store."""

    root: Path
    storage: str
    tracking_uri: str
    files: dict[str, Path] = field(default_factory=dict)

    def cli(self, *args: str) -> Run:
        """``python -m pipeline COMMAND STUDY ...`` in process against this store."""
        command, study, *rest = args
        argv = [command, study, "--storage", self.storage, "--tracking-uri", self.tracking_uri, *rest]
        if command == "tune":
            argv.append("--no-progress")
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(argv)
        return Run(code, out.getvalue(), err.getvalue())

    def study(self, name: str) -> optuna.Study:
        backend = optuna.storages.journal.JournalFileBackend(self.storage)
        return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(backend))

    def study_names(self) -> list[str]:
        backend = optuna.storages.journal.JournalFileBackend(self.storage)
        return optuna.get_all_study_names(optuna.storages.JournalStorage(backend))


@pytest.fixture(scope="session", autouse=True)
def _keep_the_repository_clean(tmp_path_factory):
    """Plots and study artifacts that commands write by default under reports/ and studies/ go to a temporary
    folder during the tests."""
    from pipeline import config

    root = tmp_path_factory.mktemp("repo-outputs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(config, "REPORTS_DIR", root / "reports")
        mp.setattr(config, "OPTUNA_ARTIFACTS_DIR", root / "studies-artifacts")
        yield


@pytest.fixture(scope="session")
def e2e_store(tmp_path_factory) -> Store:
    root = tmp_path_factory.mktemp("e2e")
    return Store(root, str(root / "optuna.journal"), f"sqlite:///{root / 'mlflow.db'}")


@dataclass(frozen=True)
class Resumed:
    """The divergence study after two `tune` runs of ``trials`` trials of ``epochs`` epochs: the runs' output
    and the trials after the first one."""

    name: str
    path: Path
    trials: int
    epochs: int
    first: Run
    second: Run
    first_trials: list[optuna.trial.FrozenTrial]


@pytest.fixture(scope="session")
def diverge(e2e_store) -> Resumed:
    """diabetes-reference with a random sampler over lr in [1e-5, 10]: roughly a third of the lrs are above the
    stability limit of gradient descent on this data, so the study has diverged and complete trials. Tuned twice
    against the same storage (the second run resumes)."""
    path = study_yaml(
        "diabetes-reference.yaml",
        e2e_store.root / "diverge.yaml",
        name="diverge",
        training={"epochs": DIVERGE_EPOCHS},
        budget={"trials": DIVERGE_TRIALS},
        sampler={"name": "random"},
        tracking={"report_points": 20},
    )
    first = e2e_store.cli("tune", str(path))
    first_trials = e2e_store.study("diverge").get_trials()
    second = e2e_store.cli("tune", str(path))
    return Resumed("diverge", path, DIVERGE_TRIALS, DIVERGE_EPOCHS, first, second, first_trials)


@dataclass(frozen=True)
class Tuned:
    """A study tuned once, the epochs of its trials and its pruner's settings."""

    study: optuna.Study
    epochs: int
    pruner: dict = field(default_factory=dict)


@pytest.fixture(scope="session")
def median(e2e_store) -> Tuned:
    """lr in [1e-5, 0.3] (none diverges) with a median pruner: the tiny rates barely move the loss from its start
    in the first epochs and are pruned as underperforming."""
    path = study_yaml(
        "diabetes-reference.yaml",
        e2e_store.root / "median.yaml",
        name="median",
        training={"epochs": DIVERGE_EPOCHS},
        search={"lr": {"low": 1.0e-5, "high": 0.3}},
        budget={"trials": MEDIAN_TRIALS},
        sampler={"name": "random"},
        pruner=MEDIAN_PRUNER,
        tracking={"report_points": 20},
    )
    run = e2e_store.cli("tune", str(path))
    assert run.code == 0, run.err
    return Tuned(e2e_store.study("median"), DIVERGE_EPOCHS, MEDIAN_PRUNER)


@pytest.fixture(scope="session")
def all_diverge(e2e_store) -> Path:
    """lr fixed at 10: every trial diverges, the study has no complete trial."""
    path = study_yaml(
        "diabetes-reference.yaml",
        e2e_store.root / "all-diverge.yaml",
        name="all-diverge",
        training={"epochs": 20},
        search={"lr": 10},
        budget={"trials": 2},
    )
    run = e2e_store.cli("tune", str(path))
    assert run.code == 1, run.err  # exit 1: the study has no complete trial
    return path


@pytest.fixture(scope="session")
def breast(e2e_store) -> Tuned:
    """The classification study, cut to a few trials and epochs."""
    path = study_yaml(
        "breast-cancer-logistic.yaml",
        e2e_store.root / "breast.yaml",
        name="breast",
        training={"epochs": BREAST_EPOCHS},
        budget={"trials": BREAST_TRIALS},
        pruner=None,
    )
    run = e2e_store.cli("tune", str(path))
    assert run.code == 0, run.err
    return Tuned(e2e_store.study("breast"), BREAST_EPOCHS)


@dataclass(frozen=True)
class GridRuns:
    """compare.yaml (grid over ``lrs``, ``epochs`` epochs) tuned twice."""

    lrs: list[float]
    epochs: int
    first: Run
    second: Run
    trials_after_first: list[optuna.trial.FrozenTrial]


@pytest.fixture(scope="session")
def grid(e2e_store) -> GridRuns:
    """studies/compare.yaml with fewer epochs, tuned twice: the second run finds the grid exhausted."""
    path = study_yaml("compare.yaml", e2e_store.root / "compare.yaml", training={"epochs": GRID_EPOCHS})
    first = e2e_store.cli("tune", str(path))
    trials = e2e_store.study("compare").get_trials()
    second = e2e_store.cli("tune", str(path))
    return GridRuns(GRID_LRS, GRID_EPOCHS, first, second, trials)


def load_in_a_fresh_process(tracking_uri, model_uri, frame, cwd):
    """``mlflow.pyfunc.load_model(uri).predict(frame)`` in a new Python process; the predictions as a list."""
    code = textwrap.dedent(
        f"""
        import json, sys
        import mlflow, pandas as pd
        mlflow.set_tracking_uri({tracking_uri!r})
        frame = pd.read_json(sys.stdin, orient="split")
        out = mlflow.pyfunc.load_model({model_uri!r}).predict(frame)
        print(json.dumps([v.item() if hasattr(v, "item") else v for v in out]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        input=frame.to_json(orient="split", double_precision=15),
        capture_output=True,
        text=True,
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "MLFLOW_DISABLE_TELEMETRY": "true", "HOME": str(cwd)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])
