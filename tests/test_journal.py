"""pipeline/tuning/journal.py and owner.py: the holder lock and the repair of torn journal records, on real files
and real (dead and live) processes."""

from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from pipeline.tuning import journal, owner
from pipeline.tuning.storage import open_storage


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def make_journal(path, trials: int = 3) -> list[float]:
    storage = JournalStorage(JournalFileBackend(str(path)))
    study = optuna.create_study(study_name="s", storage=storage)
    values = []
    for i in range(trials):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        study.tell(trial, float(i))
        values.append(float(i))
    return values


def values_of(path) -> list[float]:
    storage = JournalStorage(JournalFileBackend(str(path)))
    return [t.value for t in optuna.load_study(study_name="s", storage=storage).trials]


def test_owner_of_this_process_is_alive_and_a_finished_process_is_not():
    assert owner.is_alive(owner.me()) is True
    host, pid, start = owner.parse(owner.me())
    assert pid == os.getpid() and host == owner.host()
    assert owner.is_alive(f"{owner.host()}:{dead_pid()}:1") is False
    # Same pid, another start time: the pid was reused by a later process.
    assert owner.is_alive(f"{owner.host()}:{os.getpid()}:{start + 1}") is False
    assert owner.is_alive(f"another-host:{os.getpid()}:{start}") is None  # cannot tell from here
    assert owner.is_alive("") is None


def test_a_dead_holders_lock_is_cleared_with_a_message(tmp_path):
    path = str(tmp_path / "j.journal")
    make_journal(path)
    lock_file = path + ".lock"
    os.symlink(f"{path}#holder={owner.host()}:{dead_pid()}:1", lock_file)  # what a SIGKILL leaves
    said = []
    lock = journal.HolderLock(path, say=said.append)
    assert lock.acquire()
    assert len(said) == 1 and "cleared the journal lock" in said[0] and "no longer running" in said[0]
    assert lock.holder() == owner.me()  # the new lock names this process
    lock.release()
    assert not os.path.lexists(lock_file)


def test_a_live_holders_lock_is_not_cleared(tmp_path):
    path = str(tmp_path / "j.journal")
    make_journal(path)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        ticks = owner.start_ticks(live.pid)
        os.symlink(f"{path}#holder={owner.host()}:{live.pid}:{ticks}", path + ".lock")
        said = []
        assert journal.HolderLock(path, say=said.append).clear_if_dead() is False
        assert os.path.lexists(path + ".lock") and not said
    finally:
        live.kill()
        live.wait()
    # Once it is gone, the next opening of the storage clears it.
    said = []
    assert journal.HolderLock(path, say=said.append).clear_if_dead() is True


def test_a_torn_tail_goes_to_a_side_file_and_every_complete_record_is_kept(tmp_path, capsys):
    path = tmp_path / "j.journal"
    values = make_journal(path)
    whole = path.read_bytes()
    torn = b'{"op_code":4,"worker_id":"x","study_id":0,"datetime_st'
    with open(path, "ab") as handle:
        handle.write(torn)  # a write cut by a crash or a full disk
    open_storage(str(path))
    err = capsys.readouterr().err
    assert "repaired the Optuna journal" in err and "torn" in err
    assert path.read_bytes() == whole
    (side,) = tmp_path.glob("j.journal.torn-*")
    assert side.read_bytes() == torn
    assert values_of(path) == values
    # And the journal goes on: a new trial is appended after the last complete record.
    study = optuna.load_study(study_name="s", storage=open_storage(str(path)))
    study.enqueue_trial({"x": 0.5})
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert values_of(path) == [*values, 0.5]


def test_a_torn_record_with_a_whole_one_glued_after_it_is_split(tmp_path, capsys):
    """What an append after a torn record leaves (the journal then unreadable by Optuna): the torn part goes to
    the side file, the whole record glued to it is kept."""
    path = tmp_path / "j.journal"
    make_journal(path, trials=2)
    lines = path.read_bytes().splitlines(keepends=True)
    torn = lines[-2][: len(lines[-2]) // 2]
    path.write_bytes(b"".join(lines[:-2]) + torn + lines[-2] + lines[-1])
    with pytest.raises(ValueError):
        values_of(path)  # plain Optuna cannot read it
    open_storage(str(path))
    assert "torn record" in capsys.readouterr().err
    assert values_of(path) == [0.0, 1.0]
    (side,) = tmp_path.glob("j.journal.torn-*")
    assert side.read_bytes() == torn + b"\n"


def test_repair_leaves_a_whole_journal_alone(tmp_path):
    path = tmp_path / "j.journal"
    make_journal(path)
    before = path.read_bytes()
    assert journal.repair(str(path)) == 0 and journal.repair(str(path), full=True) == 0
    assert path.read_bytes() == before and not list(tmp_path.glob("*.torn-*"))
