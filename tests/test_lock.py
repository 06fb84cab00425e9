"""``tune --exclusive``: one run of a study at a time, a lock that dies with its holder (pipeline/tuning/lock.py).

The holders are real processes (a small Python process holding the lock through the context manager, or a real
``python -m pipeline tune --exclusive``); the oracle is the other process's pid and exit code, and the stores'
bytes for "a refused run writes nothing". PostgreSQL, MariaDB and Redis are the local servers; their tests skip
when a server is not reachable.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import study_yaml
from servers import create_database, drop_database

from pipeline.errors import ConfigError, StudyLocked
from pipeline.tuning import lock, owner
from pipeline.tuning.lock import exclusive_lock, lock_key, lock_path

ROOT = Path(__file__).resolve().parents[1]
PG = "postgresql://postgres@127.0.0.1"
MYSQL = "mysql+pymysql://root@127.0.0.1/test"
REDIS = "redis://127.0.0.1:6379/0"
ENV = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}

# A process that takes the lock, says so, and holds it until its stdin closes (or it is killed).
HOLDER = """
import sys
from pipeline.tuning import lock
lock.REDIS_TTL_MS, lock.REDIS_REFRESH_S = 1500, 0.3  # a killed Redis holder's key expires within 1.5 s
with lock.exclusive_lock(sys.argv[1], sys.argv[2]):
    print("held", flush=True)
    sys.stdin.read()
"""


def _postgres_database() -> str:
    return create_database("lock")


_drop_postgres = drop_database


@pytest.fixture
def postgres():
    name = _postgres_database()
    yield f"{PG}/{name}"
    _drop_postgres(name)


def _reachable_mysql() -> str:
    pymysql = pytest.importorskip("pymysql")
    try:
        pymysql.connect(host="127.0.0.1", user="root", database="test", connect_timeout=3).close()
    except pymysql.err.MySQLError as exc:
        pytest.skip(f"no MariaDB/MySQL server at 127.0.0.1: {exc}")
    return MYSQL


def _reachable_redis() -> str:
    redis = pytest.importorskip("redis")
    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis server at {REDIS}: {exc}")
    return REDIS


@pytest.fixture(params=["journal", "sqlite", "postgresql", "mysql", "redis"])
def storage(request, tmp_path):
    if request.param == "journal":
        yield str(tmp_path / "optuna.journal")
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'optuna.db'}"
    elif request.param == "postgresql":
        name = _postgres_database()
        yield f"{PG}/{name}"
        _drop_postgres(name)
    elif request.param == "mysql":
        yield _reachable_mysql()
    else:
        yield _reachable_redis()


def _hold(storage: str, study: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, storage, study],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if line.strip() != "held":
        proc.kill()
        raise AssertionError(f"the holder did not take the lock: {line!r} {proc.stderr.read()}")
    return proc


def _release(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    assert proc.wait(timeout=30) == 0, proc.stderr.read()


def _acquire_within(storage: str, study: str, seconds: float) -> float:
    """Seconds until this process takes the lock; fails after ``seconds``."""
    start = time.monotonic()
    while True:
        try:
            with exclusive_lock(storage, study):
                return time.monotonic() - start
        except StudyLocked:
            if time.monotonic() - start > seconds:
                raise
            time.sleep(0.1)


# --- the lock module, each backend -------------------------------------------------------------------------------


def test_a_held_lock_refuses_naming_the_holder_and_is_free_after_release(storage):
    study = f"locked-{uuid.uuid4().hex[:6]}"
    holder = _hold(storage, study)
    try:
        with pytest.raises(StudyLocked) as caught:
            with exclusive_lock(storage, study):
                pass
        text = str(caught.value)
        assert text.startswith(f"study {study!r} is being tuned by host=")
        assert " since 20" in text and "+00:00" in text
        if not storage.startswith("mysql"):  # MariaDB without performance_schema cannot tell the client's pid
            assert f"pid={holder.pid} " in text
        with exclusive_lock(storage, f"{study}-other"):  # another study of the same storage is not locked
            pass
    finally:
        _release(holder)
    with exclusive_lock(storage, study):  # released by its holder: free at once
        pass


@pytest.mark.slow  # seconds of waiting or drawing: `make test-fast` stays in seconds
def test_a_killed_holder_never_blocks(storage):
    study = f"killed-{uuid.uuid4().hex[:6]}"
    holder = _hold(storage, study)
    if storage.startswith("redis"):
        time.sleep(2.0)  # longer than the key's expiry: the holder's refresh keeps it
        with pytest.raises(StudyLocked):
            with exclusive_lock(storage, study):
                pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=10)
    # flock and database sessions go with the process; a Redis key with its expiry (1.5 s here).
    waited = _acquire_within(storage, study, seconds=5.0)
    assert waited < (3.0 if storage.startswith("redis") else 1.0)


def test_released_on_an_exception_in_the_block(storage):
    study = f"raised-{uuid.uuid4().hex[:6]}"
    with pytest.raises(RuntimeError):
        with exclusive_lock(storage, study):
            raise RuntimeError("boom")
    holder = _hold(storage, study)  # another process takes it at once
    _release(holder)


def test_the_lock_file_sits_beside_the_storage_and_is_not_optunas(tmp_path):
    journal = tmp_path / "optuna.journal"
    path = lock_path(str(journal), "diabetes-reference")
    assert path == tmp_path / "optuna.journal.diabetes-reference.exclusive.lock"
    assert path != Path(f"{journal}.lock")  # Optuna's own journal lock
    with exclusive_lock(str(journal), "diabetes-reference"):
        assert path.exists()
    assert not path.exists()  # removed by its holder; a killed holder's file is taken over at once
    assert lock_path(str(journal), "a b/../c").parent == tmp_path  # a name unfit for a file name is hashed
    assert lock_path("/data/o.db", "x") == Path("/data/o.db.x.exclusive.lock")


def test_the_advisory_key_is_a_signed_64_bit_hash_of_the_study_name():
    keys = {lock_key(f"study-{i}") for i in range(1000)}
    assert len(keys) == 1000
    assert all(-(2**63) <= key < 2**63 for key in keys)
    assert lock_key("diabetes-reference") == lock_key("diabetes-reference")


def test_the_same_study_in_two_postgres_databases_is_two_locks(postgres):
    other = _postgres_database()
    try:
        holder = _hold(postgres, "shared-name")
        try:
            with exclusive_lock(f"{PG}/{other}", "shared-name"):  # advisory locks are per database
                pass
        finally:
            _release(holder)
    finally:
        _drop_postgres(other)


def test_the_postgres_holder_session_names_this_process(postgres):
    import psycopg

    database = postgres.rsplit("/", 1)[1]
    with exclusive_lock(postgres, "named"):
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            names = [
                row[0]
                for row in conn.execute(
                    "SELECT application_name FROM pg_stat_activity WHERE datname = %s", (database,)
                ).fetchall()
            ]
    assert names == [f"lr-pipeline pid={os.getpid()} host={owner.host()}"[:63]]


def test_an_unreachable_database_is_bad_input_with_the_password_masked():
    with pytest.raises(ConfigError, match=r"--exclusive lock") as caught:
        with exclusive_lock("postgresql://tuner:s3cretpw@127.0.0.1:1/optuna", "x"):
            pass
    assert "s3cretpw" not in str(caught.value) and "***" in str(caught.value)


def test_a_storage_without_a_lock_is_refused():
    with pytest.raises(ConfigError, match=r"--exclusive has no lock for 'mssql://' storages"):
        with exclusive_lock("mssql+pyodbc://u@h/db", "x"):
            pass


def test_an_in_memory_sqlite_needs_no_lock():
    with exclusive_lock("sqlite:///:memory:", "x"), exclusive_lock("sqlite:///:memory:", "x"):
        pass


@pytest.mark.slow  # seconds of waiting or drawing: `make test-fast` stays in seconds
def test_redis_refreshes_its_key_while_held(monkeypatch):
    url = _reachable_redis()
    monkeypatch.setattr(lock, "REDIS_TTL_MS", 800)
    monkeypatch.setattr(lock, "REDIS_REFRESH_S", 0.2)
    with exclusive_lock(url, "refreshed"):
        time.sleep(1.5)
        with pytest.raises(StudyLocked, match=f"pid={os.getpid()} "):
            with exclusive_lock(url, "refreshed"):
                pass
    with exclusive_lock(url, "refreshed"):
        pass


# --- the run: before anything is written ---------------------------------------------------------------------------


def _small_study(tmp_path: Path, name: str, **budget) -> Path:
    return study_yaml(
        "diabetes-reference.yaml",
        tmp_path / f"{name}.yaml",
        name=name,
        training={"epochs": 30},
        budget=budget or {"trials": 2},
    )


def test_run_study_refused_writes_no_journal_and_releases_after_a_run(tmp_path):
    from pipeline import api

    journal = str(tmp_path / "optuna.journal")
    study = _small_study(tmp_path, "inproc")
    holder = _hold(journal, "inproc")
    try:
        with pytest.raises(StudyLocked, match=f"pid={holder.pid} "):
            api.tune(study, storage=journal, track=False, exclusive=True)
        assert not Path(journal).exists()
    finally:
        _release(holder)
    summary = api.tune(study, storage=journal, track=False, exclusive=True)
    assert summary.new_trials == 2
    holder = _hold(journal, "inproc")  # released when the run returned
    _release(holder)


# --- end to end: real `tune --exclusive` processes ---------------------------------------------------------------


def _tune(study: Path, storage: str, tracking: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "tune",
            str(study),
            "--storage",
            storage,
            "--tracking-uri",
            tracking,
            "--exclusive",
            "--no-progress",
            *extra,
        ],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _locked_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("locked:")]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["journal", "postgresql"])
def test_two_exclusive_runs_started_at_once_one_exits_75(backend, tmp_path):
    database = _postgres_database() if backend == "postgresql" else None
    storage = f"{PG}/{database}" if database else str(tmp_path / "optuna.journal")
    try:
        # A time budget long enough that the first to take the lock still holds it when the other arrives.
        study = _small_study(tmp_path, "overlap", trials=10_000)
        tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
        procs = [_tune(study, storage, tracking, "--timeout", "8") for _ in range(2)]
        results = [(p, *p.communicate(timeout=180)) for p in procs]
    finally:
        if database:
            _drop_postgres(database)
    codes = sorted(p.returncode for p, _, _ in results)
    assert codes == [0, 75], [(p.returncode, err[-2000:]) for p, _, err in results]
    (refused, _, err), (holder, _, _) = sorted(results, key=lambda r: -r[0].returncode)
    lines = _locked_lines(err)
    assert len(lines) == 1, err
    assert lines[0].startswith("locked: study 'overlap' is being tuned by host=")
    assert f" pid={holder.pid} since " in lines[0] and lines[0].endswith("(--exclusive); exit 75")
    assert "Traceback" not in err


@pytest.mark.slow
def test_a_holder_killed_mid_run_does_not_block_the_next_night(tmp_path):
    journal = str(tmp_path / "optuna.journal")
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    study = _small_study(tmp_path, "killed", trials=10_000)
    first = _tune(study, journal, tracking, "--timeout", "120")
    lock_file = lock_path(journal, "killed")
    deadline = time.monotonic() + 60
    while not (lock_file.exists() and f'"pid": {first.pid}' in lock_file.read_text()):
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-2000:]
        time.sleep(0.1)
    time.sleep(1.0)  # into its trials
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=30)
    start = time.monotonic()
    second = _tune(study, journal, tracking, "--trials", "2")
    _, err = second.communicate(timeout=120)
    elapsed = time.monotonic() - start
    assert second.returncode == 0, err[-2000:]
    assert not _locked_lines(err)
    # No stall on the dead holder's locks: a stall is Optuna's 30 s lock grace period, so the night after the
    # kill must take about as long as a plain night on the same stores (measured now, on this machine's load).
    start = time.monotonic()
    third = _tune(study, journal, tracking, "--trials", "2")
    third.communicate(timeout=120)
    plain = time.monotonic() - start
    assert third.returncode == 0
    assert elapsed < plain + 15, f"the night after the kill took {elapsed:.1f} s, a plain one {plain:.1f} s"


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


@pytest.mark.slow
def test_a_refused_run_writes_nothing(tmp_path):
    stores = tmp_path / "stores"
    stores.mkdir()
    journal = str(stores / "optuna.journal")
    tracking = f"sqlite:///{stores / 'mlflow.db'}"
    study = _small_study(tmp_path, "untouched")
    made = _tune(study, journal, tracking)
    _, err = made.communicate(timeout=180)
    assert made.returncode == 0, err[-2000:]
    holder = _hold(journal, "untouched")
    try:
        before = _tree_digest(stores)
        refused = _tune(study, journal, tracking)
        _, err = refused.communicate(timeout=120)
        after = _tree_digest(stores)
    finally:
        _release(holder)
    assert refused.returncode == 75, err[-2000:]
    assert f" pid={holder.pid} since " in _locked_lines(err)[0]
    assert after == before  # the journal, the MLflow db and every file beside them: same bytes, no new file
    assert {"optuna.journal", "mlflow.db"} <= set(before)
