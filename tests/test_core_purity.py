"""The arithmetic in pipeline/core/ stays pure NumPy: no Optuna, MLflow, matplotlib or pandas, and no files.

Three independent checks, so that no way around one of them goes unnoticed:
- the source: every ``import`` statement of every module under core/ (at any depth, functions included), and every
  call that reads or writes a file (``open``, ``np.load``, ``Path.read_text``...);
- the interpreter: a fresh process imports every core module and runs training through every model, optimizer
  and schedule, the LR range test and the finite-difference gradients, then lists ``sys.modules``;
- the operating system's view, through the interpreter's audit hooks: the same run, done a second time (the first
  imports what the core imports on first use), must raise no ``open`` event (``builtins.open``, ``io.open``,
  ``os.open``, NumPy's file readers all raise it).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[1] / "pipeline" / "core"
# scikit-learn too: it imports pandas and reads every installed package's metadata when it splits.
FORBIDDEN = ("optuna", "mlflow", "matplotlib", "pandas", "sklearn")
# Modules that exist to reach files, processes or the network: the core has no use for them.
IO_MODULES = (
    "io",
    "os",
    "pathlib",
    "shutil",
    "tempfile",
    "glob",
    "pickle",
    "csv",
    "sqlite3",
    "socket",
    "subprocess",
)
# Calls that read or write files, by the name of the function or method called.
IO_CALLS = {
    "open",
    "read_text",
    "write_text",
    "read_bytes",
    "write_bytes",
    "load",
    "loadtxt",
    "genfromtxt",
    "fromfile",
    "tofile",
    "save",
    "savez",
    "savez_compressed",
    "savetxt",
    "memmap",
}


def core_files() -> list[Path]:
    files = sorted(CORE.rglob("*.py"))
    assert len(files) >= 8, files  # the test walks the real package, not an empty folder
    return files


def imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level module name) of every import in the tree, nested ones included."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def file_calls(tree: ast.AST) -> list[tuple[int, str]]:
    calls = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            if name in IO_CALLS:
                calls.append((node.lineno, name))
    return calls


@pytest.mark.parametrize("path", core_files(), ids=lambda p: p.name)
def test_core_source_imports_no_tracking_plotting_or_io_module(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    bad = [(line, mod) for line, mod in imported_modules(tree) if mod in FORBIDDEN + IO_MODULES]
    assert bad == [], f"{path.name} imports {bad}"


@pytest.mark.parametrize("path", core_files(), ids=lambda p: p.name)
def test_core_source_calls_nothing_that_reads_or_writes_a_file(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert file_calls(tree) == [], f"{path.name} calls {file_calls(tree)}"


def test_the_source_checks_catch_what_they_are_meant_to_catch():
    # The oracle for the two tests above: they must fail on code that does what they forbid.
    tree = ast.parse(
        textwrap.dedent(
            """
            import numpy as np
            def f(p):
                import optuna.trial
                from mlflow import log_metric
                from pathlib import Path
                with open(p) as fh:
                    pass
                np.load(p)
                Path(p).read_text()
            """
        )
    )
    assert sorted(m for _, m in imported_modules(tree)) == ["mlflow", "numpy", "optuna", "pathlib"]
    assert sorted(c for _, c in file_calls(tree)) == ["load", "open", "read_text"]


# A fresh interpreter: import every core module, train through every model, optimizer and schedule, run the LR
# range test and the finite-difference gradients; record every file opened after the imports and every module
# loaded at any time.
PROBE = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys

    import numpy as np

    import pipeline.core
    modules = [m.name for m in pkgutil.iter_modules(pipeline.core.__path__, "pipeline.core.")]
    for name in modules:
        importlib.import_module(name)

    from pipeline.core import lrfind, schedules
    from pipeline.core.arrays import prepare
    from pipeline.core.models import build_model
    from pipeline.core.numgrad import FiniteDifference
    from pipeline.core.optimizers import build_optimizer
    from pipeline.core.training import train

    def workload():
        rng = np.random.default_rng(0)
        X = rng.normal(size=(60, 3))
        sets = {
            "regression": X @ np.array([1.0, -2.0, 0.5]) + rng.normal(scale=0.1, size=60),
            "binary": (X[:, 0] > 0).astype(int),
            "multiclass": np.digitize(X[:, 0], [-0.5, 0.5]),
        }
        data = {
            task: prepare(name=task, task=task, X=X, y=y, classes=tuple(np.unique(y)) if task != "regression" else (),
                          feature_names=("a", "b", "c"), target_name="y", source="probe", val_fraction=0.25, seed=0,
                          standardize=True, standardize_target=task == "regression")
            for task, y in sets.items()
        }
        runs = 0
        for name, task in [("linear", "regression"), ("logistic", "binary"), ("softmax", "multiclass"),
                           ("mlp", "multiclass"), ("mlp", "regression")]:
            d = data[task]
            params = {"hidden": 4} if name == "mlp" else {}
            model = build_model(name, n_features=d.n_features, task=task, n_classes=d.n_classes, **params)
            for opt in ["sgd", "momentum", "nesterov", "adagrad", "rmsprop", "adam"]:
                for sched in [schedules.constant(0.01), schedules.exponential_decay(0.05, 0.9),
                              schedules.cosine_decay(0.05, 20)]:
                    train(model, build_optimizer(opt), sched, d, epochs=5, batch_size=16, seed=0)
                    runs += 1
        d = data["regression"]
        model = build_model("linear", n_features=d.n_features, task="regression")
        train(FiniteDifference(model), build_optimizer("sgd"), schedules.constant(0.1), d, epochs=3, seed=0)
        result = lrfind.range_test(model, build_optimizer("sgd"), d, seed=0, steps=200)
        lrfind.suggest(result)
        lrfind.least_squares_bound(d.X_train)
        return runs

    opened = []
    def audit(event, args):
        if event == "open":
            opened.append(repr(args[0]))

    workload()  # first pass: whatever the core imports on first use (SciPy's expit...) is imported
    sys.addaudithook(audit)
    runs = workload()  # second pass, watched
    during_run = list(opened)
    open("/dev/null").close()  # the control: the hook does see an open
    out = {"modules": modules, "loaded": sorted(sys.modules), "opened": during_run, "runs": runs,
           "control": opened[len(during_run):]}
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def probe() -> dict:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_and_running_the_core_loads_no_tracking_or_plotting_library(probe):
    assert len(probe["modules"]) >= 8 and probe["runs"] == 5 * 6 * 3
    loaded = {name.split(".")[0] for name in probe["loaded"]}
    assert "numpy" in loaded  # the listing is real
    assert sorted(loaded & set(FORBIDDEN)) == []


def test_a_training_run_in_the_core_opens_no_file(probe):
    assert probe["control"] == ["'/dev/null'"]
    assert probe["opened"] == []
