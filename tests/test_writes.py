"""pipeline/tuning/writes.py: a store that cannot be written stops the run at once. Write errors are recognised by
errno anywhere in an exception chain, or by the texts drivers use; real ones come from /dev/full (ENOSPC) and a
file-size limit (EFBIG) in a child process."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from pipeline.tuning.writes import StoreWriteError, describe, guard, write_error

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "number", [errno.ENOSPC, errno.EFBIG, errno.EIO, errno.EDQUOT, errno.EROFS], ids=errno.errorcode.get
)
def test_write_errnos_are_recognised(number):
    exc = OSError(number, os.strerror(number))
    assert write_error(exc) is exc


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOENT, "No such file or directory"),
        PermissionError(errno.EACCES, "denied"),
        ValueError("x"),
    ],
    ids=["ENOENT", "EACCES", "ValueError"],
)
def test_other_errors_are_not_write_errors(exc):
    assert write_error(exc) is None
    assert write_error(None) is None


def test_a_write_error_is_found_as_the_cause_of_a_wrapper():
    root = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise root
        except OSError as exc:
            raise RuntimeError("Optuna could not append to the journal") from exc
    except RuntimeError as wrapper:
        assert write_error(wrapper) is root


def test_a_write_error_is_found_as_the_context_of_a_later_error():
    root = OSError(errno.EIO, "Input/output error")
    try:
        try:
            raise root
        except OSError:
            raise AssertionError("Should not reach.")  # noqa: B904 (Optuna's own bookkeeping failing next)
    except AssertionError as later:
        assert write_error(later) is root


@pytest.mark.parametrize(
    "exc",
    [
        sqlite3.OperationalError("database or disk is full"),
        sqlite3.OperationalError("disk I/O error"),
        RuntimeError("(psycopg.errors.DiskFull) could not extend file: No space left on device"),
        RuntimeError("ERROR 1114 (HY000): The table is full; disk full"),
        RuntimeError("Quota exceeded"),
    ],
    ids=["sqlite-full", "sqlite-io", "postgres", "mysql", "quota"],
)
def test_drivers_texts_are_recognised(exc):
    assert write_error(exc) is exc


def test_a_cycle_in_the_chain_ends_the_search():
    a, b = RuntimeError("a"), RuntimeError("b")
    a.__context__, b.__context__ = b, a
    assert write_error(a) is None


def test_writing_to_dev_full_is_a_write_error():
    with pytest.raises(OSError) as info:
        with open("/dev/full", "w") as handle:
            handle.write("x" * 10)
    assert info.value.errno == errno.ENOSPC
    assert write_error(info.value) is info.value


def test_a_file_size_limit_is_a_write_error(tmp_path):
    code = textwrap.dedent(
        """
        import resource, signal, sys
        from pipeline.tuning.writes import write_error
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the writer
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
        try:
            with open(sys.argv[1], "wb") as handle:
                handle.write(b"x" * 5000)
        except OSError as exc:
            print(exc.errno, write_error(exc) is exc)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "big")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.stdout.split() == [str(errno.EFBIG), "True"], done.stderr


def test_describe_names_the_file_and_says_what_to_do():
    text = describe(OSError(errno.ENOSPC, "No space left on device", "/data/optuna.journal"))
    assert text.startswith("a store could not be written (No space left on device: /data/optuna.journal); ")
    assert "the run stopped" in text and "run again" in text


def test_describe_masks_a_password_and_keeps_one_line():
    text = describe(RuntimeError("disk full at postgresql://u:desc-pw@db/x\ntraceback line"))
    assert "desc-pw" not in text and "postgresql://u:***@db/x" in text
    assert "\n" not in text


def test_guard_stops_the_study_at_the_first_write_error_and_fails_that_trial():
    calls = []

    def objective(trial):
        calls.append(trial.number)
        raise OSError(errno.ENOSPC, "No space left on device")

    study = optuna.create_study()
    # catch=(Exception,) is how the run calls optimize: a StoreWriteError (a BaseException) still gets through
    with pytest.raises(StoreWriteError, match=r"^a store could not be written \(No space left on device\)"):
        study.optimize(guard(objective), n_trials=5, catch=(Exception,))
    assert calls == [0]
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL]
    assert not issubclass(StoreWriteError, Exception)


def test_guard_lets_other_errors_through_unchanged():
    def objective(trial):
        raise ValueError("a bug in a user's model")

    with pytest.raises(ValueError, match="a bug in a user's model"):
        guard(objective)(optuna.create_study().ask())
    assert guard(lambda trial: 0.5)(optuna.create_study().ask()) == 0.5
