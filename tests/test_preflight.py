"""Everything is checked before anything is written (issue 9): every key of the study-file schema broken in turn,
bad stores and unreachable servers, names and paths, extreme numbers. Each bad input exits 2 with the file, the key
and the value in one message, no traceback, and both stores byte-identical."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import cli
from pipeline.config import ROOT
from pipeline.errors import ConfigError, shown
from pipeline.secrets import mask_url

BASE = {
    "name": "pre",
    "description": "a valid study",
    "seed": 0,
    "data": {"dataset": "diabetes", "val_fraction": 0.2, "standardize": True},
    "model": {"name": "linear"},
    "training": {"epochs": 5, "batch_size": "full", "divergence_factor": 10},
    "search": {
        "lr": {"low": 1.0e-3, "high": 0.1},
        "optimizer": "sgd",
        "schedule": {"name": "exponential", "decay_rate": {"low": 1.0e-4, "high": 1.0e-1}},
    },
    "budget": {"trials": 2, "timeout": 600},
    "sampler": {"name": "tpe", "n_startup_trials": 5},
    "pruner": {"name": "median", "n_startup_trials": 2},
    "tracking": {"report_points": 5},
}

_SPARE = object()


def edit(path: str, value):
    """BASE with the value at dotted ``path`` replaced (``_SPARE`` deletes it)."""
    study = yaml.safe_load(yaml.safe_dump(BASE))
    *parents, last = path.split(".")
    node = study
    for part in parents:
        node = node[part]
    if value is _SPARE:
        del node[last]
    else:
        node[last] = value
    return study


# A YAML alias bomb as a value: 9**9 strings once expanded, a few hundred bytes on disk.
BOMB = "description:\n  a: &a ['x','x','x','x','x','x','x','x','x']\n" + "".join(
    f"  {b}: &{b} [*{a},*{a},*{a},*{a},*{a},*{a},*{a},*{a},*{a}]\n"
    for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)

# (id, study as a dict or YAML text, the key named in the message, the value shown in it)
CASES = [
    ("name.traversal", edit("name", "../../x"), "name", "'../../x'"),
    ("name.absolute", edit("name", "/tmp/x"), "name", "'/tmp/x'"),
    ("name.dotdot", edit("name", ".."), "name", "'..'"),
    ("name.too-long", edit("name", "n" * 300), "name", "nnnn"),
    ("name.type", edit("name", 5), "name", "5"),
    ("description", edit("description", ["a"]), "description", "['a']"),
    ("seed.negative", edit("seed", -1), "seed", "-1"),
    ("seed.too-large", edit("seed", 4294967296), "seed", "4294967296"),
    ("seed.type", edit("seed", "zero"), "seed", "'zero'"),
    ("unknown-top-key", edit("budgett", 1), "budgett", None),
    ("data.missing", edit("data", _SPARE), "data", None),
    ("data.dataset", edit("data.dataset", "diabetis"), "data.dataset", "'diabetis'"),
    ("data.val_fraction", edit("data.val_fraction", 1.5), "data.val_fraction", "1.5"),
    ("data.standardize", edit("data.standardize", "yes"), "data.standardize", "'yes'"),
    ("data.path", edit("data.path", "x.csv"), "data.path", "'x.csv'"),
    ("data.params", edit("data.params", {"n_samples": 10}), "data.params.n_samples", None),
    ("model.missing", edit("model", _SPARE), "model", None),
    ("model.name", edit("model.name", "linearr"), "model.name", "'linearr'"),
    ("model.param", edit("model.hidden", 3), "model.hidden", None),
    ("training.epochs", edit("training.epochs", 0), "training.epochs", "0"),
    ("training.batch_size", edit("training.batch_size", -2), "training.batch_size", "-2"),
    ("training.divergence_factor", edit("training.divergence_factor", 1), "training.divergence_factor", "1"),
    ("training.unknown", edit("training.epoch", 3), "training.epoch", None),
    ("search.lr.low", edit("search.lr", {"low": 0, "high": 1}), "search.lr.low", "0"),
    ("search.lr.order", edit("search.lr", {"low": 1, "high": 0.1}), "search.lr.high", "0.1"),
    ("search.optimizer", edit("search.optimizer", "sgdd"), "search.optimizer.name", "'sgdd'"),
    ("search.schedule.name", edit("search.schedule.name", "expo"), "search.schedule.name", "'expo'"),
    (
        "search.schedule.param",
        edit("search.schedule.decay_rate", {"low": 0, "high": 0.1}),
        "search.schedule.decay_rate.low",
        "0",
    ),
    ("budget.trials", edit("budget.trials", 0), "budget.trials", "0"),
    ("budget.timeout", edit("budget.timeout", -5), "budget.timeout", "-5"),
    ("sampler.name", edit("sampler.name", "cmaes2"), "sampler.name", "'cmaes2'"),
    ("sampler.param", edit("sampler.n_startup_trials", "many"), "sampler.n_startup_trials", "'many'"),
    ("pruner.name", edit("pruner.name", "medium"), "pruner.name", "'medium'"),
    ("pruner.param", edit("pruner.n_startup_trials", -1), "pruner.n_startup_trials", "-1"),
    ("tracking.report_points", edit("tracking.report_points", 0), "tracking.report_points", "0"),
    (
        "data.params.n_samples.huge",
        {**edit("data", {"dataset": "regression", "params": {"n_samples": 10**12}})},
        "data.params.n_samples",
        "1000000000000",
    ),
    ("model.task.logistic-on-regression", edit("model.name", "logistic"), "model.name", "'logistic'"),
    ("model.task.softmax-on-regression", edit("model.name", "softmax"), "model.name", "'softmax'"),
    (
        "model.task.softmax-on-binary",
        {**edit("data", {"dataset": "breast_cancer"}), "model": {"name": "softmax"}},
        "model.name",
        "'softmax'",
    ),
    (
        "alias-bomb",
        "name: bomb\n"
        + BOMB
        + "data: {dataset: diabetes}\nmodel: linear\ntraining: {epochs: 1}\nsearch: {lr: 0.1}\n",
        "description",
        "{'a'",
    ),
    ("value.too-long", edit("data.dataset", "d" * 5000), "data.dataset", "(5000 characters)"),
]


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A journal and an MLflow store holding one finished study, to check that bad input leaves them alone."""
    root = tmp_path_factory.mktemp("preflight")
    good = root / "good.yaml"
    good.write_text(yaml.safe_dump(BASE), encoding="utf-8")
    journal, db = root / "optuna.journal", root / "mlruns" / "mlflow.db"
    args = ["--storage", str(journal), "--tracking-uri", f"sqlite:///{db}"]
    assert cli.main(["tune", str(good), *args, "--no-progress"]) == 0
    return root, journal, db, args


def run_cli(capsys, argv) -> tuple[int, str]:
    capsys.readouterr()
    code = cli.main(argv)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.slow
@pytest.mark.parametrize(("study", "key", "value"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_broken_key_exits_2_naming_file_key_value_and_writes_nothing(stores, capsys, study, key, value):
    root, journal, db, args = stores
    path = root / "bad.yaml"
    path.write_text(study if isinstance(study, str) else yaml.safe_dump(study), encoding="utf-8")
    before = digest(journal), digest(db)
    code, text = run_cli(capsys, ["tune", str(path), *args, "--no-progress"])
    assert code == 2, text
    assert "Traceback" not in text
    (line,) = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert str(path.as_posix()) in line and f"'{key}'" in line, line
    if value is not None:
        assert value in line, line
    assert len(line) < 1500, f"message of {len(line)} characters"
    assert (digest(journal), digest(db)) == before


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "key", "shown_value"),
    [
        (["--storage", ""], "--storage", "''"),
        (["--worker", "4295"], "--worker", "4295"),
        (["--tracking-uri", "http://127.0.0.1:1"], "--tracking-uri", "http://127.0.0.1:1"),
        (["--storage", "postgresql://u:hunter22@127.0.0.1:1/db"], "--storage", "u:***@127.0.0.1:1"),
        (["--tracking-uri", "sqlite:////etc/hostname/mlflow.db"], "--tracking-uri", "/etc/hostname"),
        (["--tracking-uri", "sqlite:///{root}/good.yaml"], "--tracking-uri", "good.yaml"),
        (["--storage", "{root}/good.yaml"], "--storage", "good.yaml"),
    ],
    ids=[
        "empty-storage",
        "worker",
        "tracking-unreachable",
        "storage-unreachable",
        "tracking-under-a-file",
        "tracking-not-sqlite",
        "storage-not-a-journal",
    ],
)
def test_bad_stores_and_arguments_exit_2_before_anything_is_written(stores, capsys, extra, key, shown_value):
    root, journal, db, args = stores
    extra = [e.replace("{root}", str(root)) for e in extra]
    argv = ["tune", str(root / "good.yaml"), *args, *extra, "--no-progress"]
    before = digest(journal), digest(db), digest(root / "good.yaml")
    code, text = run_cli(capsys, argv)
    assert code == 2, text
    assert f"'{key}'" in text and shown_value in text, text
    assert "Traceback" not in text and "hunter22" not in text
    assert (digest(journal), digest(db), digest(root / "good.yaml")) == before


def test_report_out_under_a_file_and_best_with_an_empty_storage_exit_2(stores, capsys):
    root, journal, db, args = stores
    code, text = run_cli(
        capsys, ["report", str(root / "good.yaml"), *args, "--out", str(root / "good.yaml/x")]
    )
    assert code == 2 and "'--out'" in text and "which is a file" in text, text
    code, text = run_cli(capsys, ["best", str(root / "good.yaml"), "--storage", ""])
    assert code == 2 and "'--storage'" in text and "must not be empty" in text, text


@pytest.mark.slow
def test_a_server_that_accepts_and_never_answers_is_given_up_within_the_timeout(tmp_path):
    """A tracking server that accepts connections and never answers: exit 2 with a message, not a hang."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])  # accept, never answer
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump(BASE), encoding="utf-8")
    uri = f"http://127.0.0.1:{server.getsockname()[1]}"
    try:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline",
                "tune",
                str(study),
                "--storage",
                str(tmp_path / "j"),
                "--tracking-uri",
                uri,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()
    assert done.returncode == 2, done.stderr
    assert "cannot reach the MLflow tracking server within 10 s" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "j").exists()


def test_messages_are_bounded_and_masked():
    assert mask_url("postgresql://user:s3cr3t@db:5432/x") == "postgresql://user:***@db:5432/x"
    assert mask_url("http://u:p%40ss@h/") == "http://u:***@h/"
    assert mask_url("mysql+pymysql://root@db/x") == "mysql+pymysql://root@db/x"  # nothing to hide
    assert mask_url("sqlite:///x.db?password=abc&x=1") == "sqlite:///x.db?password=***&x=1"
    error = ConfigError("cannot open.", key="--storage", value="postgresql://a:topsecret@h/d")
    assert "topsecret" not in str(error) and "a:***@h" in str(error)
    nested: list = ["x"] * 9
    for _ in range(8):
        nested = [nested] * 9  # 9**9 leaves, shared: the YAML alias bomb's shape
    assert len(shown(nested)) <= 220
    assert shown("v" * 10_000).endswith("(10000 characters)")


def test_standardising_values_near_the_float_limit_does_not_overflow():
    """Standardisation is scale-invariant: data near 1e308 must standardise to exactly what the same data
    scaled down to ~1 give (the oracle), with no overflow warning."""
    from pipeline.core.arrays import prepare

    rng = np.random.default_rng(0)
    small = rng.normal(size=(50, 3)) * [1.0, 2.0, 0.5] + [0.1, -0.3, 0.0]
    y = rng.normal(size=50)
    common = dict(
        name="x",
        task="regression",
        y=y,
        classes=(),
        feature_names=("a", "b", "c"),
        target_name="y",
        source="test",
        val_fraction=0.2,
        seed=0,
        standardize=True,
        standardize_target=True,
    )
    with np.errstate(all="raise"):
        huge = prepare(X=small * 1e307, **common)
    reference = prepare(X=small, **common)
    assert np.isfinite(huge.X_train).all() and np.isfinite(huge.X_val).all()
    np.testing.assert_allclose(huge.X_train, reference.X_train, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(huge.X_val, reference.X_val, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_lr_range_test_on_unstandardised_data_restarts_lower_and_finds_the_theory_bound(tmp_path, capsys):
    """Features ~1e5 and not standardised: the ramp's first rate (1e-7) is already past divergence. The test
    restarts lower by itself, and its divergence point lands within 3x of 2/lambda_max (least-squares theory)."""
    rng = np.random.default_rng(0)
    x = rng.uniform(1e5, 2e5, (200, 3))
    rows = ["a,b,c,y"] + [f"{a},{b},{c},{a + 2 * b + 3 * c}" for a, b, c in x]
    (tmp_path / "big.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    study = {
        "name": "big",
        "data": {"dataset": "csv", "path": "big.csv", "target": "y", "standardize": False},
        "model": "linear",
        "training": {"epochs": 5},
        "search": {"lr": "auto"},
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study), encoding="utf-8")
    args = ["--storage", str(tmp_path / "j"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    code, text = run_cli(capsys, ["lr-find", str(tmp_path / "s.yaml"), *args])
    assert code == 0, text
    assert "ramp restarted" in text
    diverged = float(text.split("divergence point")[1].split()[0])
    theory = float(text.split("2/lambda_max")[1].split()[0])
    assert theory / 3 < diverged < theory * 3
    # A segments ramp cannot restart itself: exit 2 and the fix in one line.
    study["search"]["lr"] = {
        "auto": {
            "ramp": "segments",
            "start_lr": 0.01,
            "step_lr": 0.01,
            "iterations_per_value": 2,
            "end_lr": 0.1,
        }
    }
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(study), encoding="utf-8")
    code, text = run_cli(capsys, ["lr-find", str(tmp_path / "s.yaml"), *args])
    assert code == 2 and "'search.lr'" in text and "data.standardize: true" in text, text
