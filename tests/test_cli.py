"""The command line (pipeline.cli.main): exit codes, the one-line error messages and the `best` command.

Bad study files are written to tmp_path from studies/diabetes-reference.yaml with one thing broken; the storage
and the MLflow store point into tmp_path too, so "nothing written" is checked by listing the directory. The
`best` command reads the studies tuned once per session by the fixtures in conftest.py.
"""

from __future__ import annotations

import copy
import json
import math
import re

import pytest
import yaml

from pipeline import cli
from pipeline.config import STUDIES_DIR

pytestmark = pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy is deprecated")

REFERENCE = yaml.safe_load((STUDIES_DIR / "diabetes-reference.yaml").read_text(encoding="utf-8"))
GOOD_CSV = "a,b,y\n1,2,3\n4,5,6\n7,8,9\n1,1,1\n2,2,2\n"
BAD_CSV = "a,b,y\n1,2,3\n4,x,6\n7,8,9\n1,1,1\n2,2,2\n"  # 'x' in column b, data row 1


def broken(change) -> dict:
    raw = copy.deepcopy(REFERENCE)
    change(raw)
    return raw


def csv_data(target: str, file: str = "data.csv"):
    return lambda s: s.update(data={"dataset": "csv", "path": file, "target": target})


# (id, how the reference study is broken, key path in the message, bad value in the message or None)
CONFIG_ERRORS = [
    ("unknown key", lambda s: s["training"].update(epoch=300), "training.epoch", None),
    ("unknown nested key", lambda s: s["search"].update(lr={"low": 1e-5, "hgh": 10}), "search.lr.hgh", None),
    ("unknown top-level key", lambda s: s.update(trials=5), "trials", None),
    ("wrong type", lambda s: s["training"].update(epochs="ten"), "training.epochs", "ten"),
    ("float epochs", lambda s: s["training"].update(epochs=2.5), "training.epochs", 2.5),
    ("bool where a number", lambda s: s["search"].update(lr=True), "search.lr", True),
    ("low > high", lambda s: s["search"].update(lr={"low": 1.0, "high": 0.1}), "search.lr.high", 0.1),
    (
        "low == high",
        lambda s: s["search"]["schedule"].update(decay_rate={"low": 0.01, "high": 0.01}),
        "search.schedule.decay_rate.high",
        0.01,
    ),
    ("log range low = 0", lambda s: s["search"].update(lr={"low": 0.0, "high": 1.0}), "search.lr.low", 0.0),
    (
        "log range low < 0",
        lambda s: s["search"]["schedule"].update(decay_rate={"low": -0.1, "high": 0.1}),
        "search.schedule.decay_rate.low",
        -0.1,
    ),
    ("nan bound", lambda s: s["search"].update(lr={"low": math.nan, "high": 1.0}), "search.lr.low", math.nan),
    (
        "unknown schedule",
        lambda s: s["search"].update(schedule="exponentail"),
        "search.schedule.name",
        "exponentail",
    ),
    ("unknown optimizer", lambda s: s["search"].update(optimizer="adamw"), "search.optimizer.name", "adamw"),
    ("missing dataset", lambda s: s["data"].pop("dataset"), "data.dataset", None),
    ("unknown dataset", lambda s: s["data"].update(dataset="diabetis"), "data.dataset", "diabetis"),
    ("missing csv file", csv_data("y", file="nope.csv"), "data.path", "nope.csv"),
    ("missing csv column", csv_data("price"), "data.target", "price"),
    ("trials < 1 in the file", lambda s: s["budget"].update(trials=0), "budget.trials", 0),
    ("negative timeout in the file", lambda s: s["budget"].update(timeout=-5), "budget.timeout", -5),
]


def tune(tmp_path, study, *extra):
    """`tune` with the storage and the MLflow store inside tmp_path."""
    return cli.main(
        [
            "tune",
            str(study),
            "--storage",
            str(tmp_path / "optuna.journal"),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--no-progress",
            *extra,
        ]
    )


def write(tmp_path, raw: dict):
    (tmp_path / "data.csv").write_text(GOOD_CSV, encoding="utf-8")
    (tmp_path / "bad.csv").write_text(BAD_CSV, encoding="utf-8")
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


RUN_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00 tune (start|end) ")


def assert_one_error_line(err: str, *parts: str) -> None:
    """One error line, besides `tune`'s stamped start and end lines (tests/test_runlog.py checks those)."""
    lines = [line for line in err.strip().splitlines() if not RUN_LOG_LINE.match(line)]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    for part in parts:
        assert part in lines[0], f"{part!r} not in {lines[0]!r}"


def test_a_valid_study_file_passes_the_checks_that_the_broken_ones_fail(tmp_path):
    # The baseline of the table below: the reference study, unbroken, loads, so each error comes from its one
    # change (running a valid study end to end is test_runner.py's job).
    from pipeline.study.loader import load_study

    assert load_study(write(tmp_path, REFERENCE)).name == "diabetes-reference"


@pytest.mark.parametrize(
    ("change", "key", "value"), [c[1:] for c in CONFIG_ERRORS], ids=[c[0] for c in CONFIG_ERRORS]
)
def test_config_error_exits_2_with_one_message_and_writes_nothing(tmp_path, capsys, change, key, value):
    study = write(tmp_path, broken(change))
    before = sorted(tmp_path.iterdir())

    assert tune(tmp_path, study) == 2

    out, err = capsys.readouterr()
    assert out == ""
    parts = [study.as_posix(), f"'{key}'"]
    if value is not None:
        parts.append(f"Got {value!r} instead.")
    assert_one_error_line(err, *parts)
    assert sorted(tmp_path.iterdir()) == before  # neither optuna.journal nor mlflow.db


def test_missing_study_file_exits_2(tmp_path, capsys):
    assert tune(tmp_path, tmp_path / "nope.yaml") == 2
    assert_one_error_line(capsys.readouterr().err, (tmp_path / "nope.yaml").as_posix(), "not found")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("change", "parts"),
    [
        (csv_data("y", file="bad.csv"), ["bad.csv", "column 'b'", "'x'"]),
        (
            # warmup (50) >= 2 epochs x ceil(353 / 100) updates: only known once the data is loaded
            lambda s: (
                s["training"].update(epochs=2, batch_size=100),
                s["search"]["schedule"].update(warmup_steps=50),
            ),
            ["study.yaml", "'search.schedule.warmup_steps'", "Got 50 instead."],
        ),
    ],
    ids=["non-numeric csv cell", "warmup longer than the mini-batch run"],
)
def test_errors_found_when_the_data_is_loaded_write_nothing(tmp_path, capsys, change, parts):
    study = write(tmp_path, broken(change))
    before = sorted(tmp_path.iterdir())

    code = tune(tmp_path, study)

    assert code == 2
    assert_one_error_line(capsys.readouterr().err, *parts)
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.slow
def test_bad_tracking_uri_exits_2_and_writes_nothing(tmp_path, capsys):
    study = write(tmp_path, REFERENCE)
    before = sorted(tmp_path.iterdir())
    argv = ["tune", str(study), "--storage", str(tmp_path / "optuna.journal"), "--tracking-uri", "foo://x"]

    try:
        code = cli.main([*argv, "--no-progress"])
    except Exception as exc:  # the bug: a traceback instead of an exit code
        code = f"{type(exc).__name__} escaped"

    assert code == 2
    assert_one_error_line(capsys.readouterr().err, "'--tracking-uri'", "'foo://x'")
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    ("args", "parts"),
    [
        (["--trials", "0"], ["--trials", "'0'"]),
        (["--trials", "-3"], ["--trials", "'-3'"]),
        (["--trials", "2.5"], ["--trials", "'2.5'"]),
        (["--trials", "many"], ["--trials", "'many'"]),
        (["--timeout", "0"], ["--timeout", "'0'"]),
        (["--timeout", "-1"], ["--timeout", "'-1'"]),
        (["--timeout", "nan"], ["--timeout", "'nan'"]),
        (["--timeout", "inf"], ["--timeout", "'inf'"]),
        (["--timeout", "soon"], ["--timeout", "'soon'"]),
        (["--trails", "5"], ["unrecognized arguments", "--trails"]),
    ],
)
def test_bad_option_exits_2_through_argparse(tmp_path, capsys, args, parts):
    study = write(tmp_path, REFERENCE)
    before = sorted(tmp_path.iterdir())

    with pytest.raises(SystemExit) as exit_info:
        tune(tmp_path, study, *args)

    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    last = err.strip().splitlines()[-1]  # argparse prints the usage, then one error line
    assert "error:" in last
    for part in parts:
        assert part in last
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize(
    "argv",
    [[], ["tunes", "studies/compare.yaml"], ["tune"], ["best"], ["best", "a.yaml", "--trials", "3"]],
    ids=["no command", "unknown command", "tune without study", "best without study", "best --trials"],
)
def test_bad_command_line_exits_2_through_argparse(capsys, argv):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- best


@pytest.mark.slow
def test_best_prints_the_best_complete_trial(e2e_store, diverge):
    run = e2e_store.cli("best", str(diverge.path))

    assert run.code == 0, run.err
    best = e2e_store.study(diverge.name).best_trial
    shown = json.loads(run.out)
    assert shown["trial"] == best.number
    assert shown["value"] == best.value
    assert shown["params"] == best.params
    assert shown["mlflow_run_id"] == best.user_attrs["mlflow_run_id"]


@pytest.mark.slow
def test_tune_summary_names_the_best_trial_and_its_run(e2e_store, diverge):
    best = e2e_store.study(diverge.name).best_trial
    assert f"best          trial {best.number}:" in diverge.second.out
    assert best.user_attrs["mlflow_run_id"] in diverge.second.out


@pytest.mark.slow
def test_best_exits_1_when_no_trial_completed(e2e_store, all_diverge):
    run = e2e_store.cli("best", str(all_diverge))

    assert run.code == 1
    assert run.out == ""
    assert "all-diverge" in run.err and "no complete trial" in run.err
    assert all(
        t.user_attrs["prune_reason"] == "diverged" for t in e2e_store.study("all-diverge").get_trials()
    )


@pytest.mark.slow
def test_best_exits_2_for_a_study_not_in_the_storage(e2e_store, tmp_path, capsys, diverge):
    # `diverge` only makes sure the storage exists and holds other studies.
    study = tmp_path / "never.yaml"
    study.write_text(yaml.safe_dump({**REFERENCE, "name": "never-tuned"}), encoding="utf-8")

    run = e2e_store.cli("best", str(study))

    assert run.code == 2
    assert run.out == ""
    assert_one_error_line(run.err, "'never-tuned'", "'--storage'", e2e_store.storage)
    assert "never-tuned" not in e2e_store.study_names()


def test_best_on_a_missing_storage_file_creates_nothing(tmp_path, capsys):
    study = write(tmp_path, REFERENCE)
    before = sorted(tmp_path.iterdir())

    code = cli.main(["best", str(study), "--storage", str(tmp_path / "typo.journal")])

    assert code == 2
    assert_one_error_line(capsys.readouterr().err, "'diabetes-reference'", "typo.journal")
    assert sorted(tmp_path.iterdir()) == before


@pytest.mark.parametrize("mistake", ["the study file itself", "a folder"])
def test_a_storage_path_that_is_not_a_journal_is_refused_and_left_untouched(tmp_path, capsys, mistake):
    study = write(tmp_path, REFERENCE)
    target = study if mistake == "the study file itself" else tmp_path
    before = study.read_bytes()
    listing = sorted(tmp_path.iterdir())

    code = cli.main(
        ["tune", str(study), "--storage", str(target), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    )

    assert code == 2
    assert_one_error_line(capsys.readouterr().err, "'--storage'", f"Got {str(target)!r} instead.")
    assert study.read_bytes() == before  # the journal backend would have appended to it
    assert sorted(tmp_path.iterdir()) == listing
