"""Commands that only read answer fast: they import neither MLflow, scikit-learn, matplotlib nor pandas.

Each command runs in a fresh interpreter (``python -m pipeline ...``) whose imported modules are listed at exit.
A command added later that must stay fast (``studies``, ...) gets one line in ``LIGHT_COMMANDS``.
(How fast is measured by ``make bench``, not asserted here.)
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from pipeline.config import STUDIES_DIR

pytestmark = pytest.mark.slow  # fresh interpreters importing Optuna: seconds

HEAVY = ("mlflow", "sklearn", "matplotlib", "pandas", "scipy")
STUDY = str(STUDIES_DIR / "diabetes-reference.yaml")

# id -> argv after `python -m pipeline`; {storage} is a journal holding one complete trial of STUDY.
LIGHT_COMMANDS = {
    "--help": ["--help"],
    "tune --help": ["tune", "--help"],
    "best": ["best", STUDY, "--storage", "{storage}"],
    "studies": ["studies", "--storage", "{storage}"],
    "studies --json": ["studies", "--storage", "{storage}", "--json"],
}

# Runs the CLI as `python -m pipeline` does, then prints the top-level names of every imported module.
RUNNER = (
    "import atexit, json, runpy, sys\n"
    "atexit.register(lambda: print('MODULES=' + json.dumps(sorted({m.split('.')[0] for m in sys.modules}))))\n"
    "sys.argv = ['pipeline', *json.loads(sys.argv[1])]\n"
    "runpy.run_module('pipeline', run_name='__main__', alter_sys=True)\n"
)


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("light") / "optuna.journal"
    backend = optuna.storages.journal.JournalFileBackend(str(path))
    study = optuna.create_study(
        study_name="diabetes-reference", storage=optuna.storages.JournalStorage(backend)
    )
    study.add_trial(
        optuna.trial.create_trial(
            params={"lr": 0.01},
            distributions={"lr": optuna.distributions.FloatDistribution(1e-5, 10, log=True)},
            value=0.5,
        )
    )
    return str(path)


def imported_by(argv: list[str]) -> tuple[int, str, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, json.dumps(argv)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        check=False,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("MODULES="))
    return done.returncode, done.stdout, set(json.loads(line.removeprefix("MODULES=")))


@pytest.mark.parametrize("name", LIGHT_COMMANDS)
def test_reading_commands_import_no_tracking_plotting_or_data_library(name, storage):
    argv = [a.format(storage=storage) for a in LIGHT_COMMANDS[name]]
    code, out, modules = imported_by(argv)
    assert code == 0, out
    assert "pipeline" in modules  # the listing is real
    assert sorted(modules & set(HEAVY)) == []


def test_best_answers_from_the_stored_trial(storage):
    code, out, _ = imported_by(["best", STUDY, "--storage", storage])
    assert code == 0
    shown = json.loads(out.split("MODULES=")[0])
    assert (shown["trial"], shown["value"], shown["params"]) == (0, 0.5, {"lr": 0.01})


def test_the_listing_sees_a_heavy_import():
    # The control: the same runner, with scikit-learn imported before the command, lists it.
    runner = RUNNER.replace("runpy.run_module", "import sklearn\nrunpy.run_module")
    done = subprocess.run(
        [sys.executable, "-c", runner, '["--help"]'], capture_output=True, text=True, check=False
    )
    assert "sklearn" in json.loads(done.stdout.split("MODULES=")[1])
