"""``tune --exclusive``: one run of a study at a time, with a lock that dies with its holder.

Without ``--exclusive`` runs of a study cooperate as workers; only ``--exclusive`` runs take this lock (a plain run
beside an exclusive one still joins it as a worker). The lock is never a file or a row that outlives its holder,
so a crashed holder never blocks the next night:

- a journal file or ``sqlite:///`` file: ``flock`` on ``<storage>.<study>.exclusive.lock`` beside it (not Optuna's
  own ``<journal>.lock``), holding the holder's JSON; the kernel drops the lock when the holder's process ends,
  SIGKILL included. One machine (``flock`` over NFS is not a cross-machine lock: use a database there).
- PostgreSQL: a session advisory lock (``pg_try_advisory_lock``) with a 64-bit key from the study name, on a
  dedicated connection held for the run; the holder is named by that connection's ``application_name`` and
  ``backend_start`` (read through ``pg_locks`` and ``pg_stat_activity``). A holder that dies closes its
  connection and the server drops the lock; a machine that vanishes without closing TCP holds it until the
  server's TCP keepalive notices (set to about 2 minutes on that connection). Needs a session, not a pooler in
  transaction mode.
- MySQL / MariaDB: ``GET_LOCK(name, 0)`` on a dedicated connection; the holder is named from the process list
  (client host, time connected) and, where ``performance_schema`` is on, the client's pid.
- Redis: ``SET key NX PX 30000`` refreshed every 10 s by a thread; a holder that dies lets it expire within 30 s.

A refused run writes nothing: the refusal comes before the MLflow store or the Optuna study is touched.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import hashlib
import json
import os
import re
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ConfigError, StudyLocked
from pipeline.secrets import mask_url
from pipeline.tuning import owner

# Server-side keepalive on the lock's PostgreSQL session: a holder whose machine vanished without closing TCP is
# noticed after about idle + interval * count = 60 + 10 * 6 = 120 s, and its lock dropped.
PG_KEEPALIVE = {"tcp_keepalives_idle": 60, "tcp_keepalives_interval": 10, "tcp_keepalives_count": 6}
REDIS_TTL_MS, REDIS_REFRESH_S = 30_000, 10.0
_HOLDER_WAIT_S = (
    2.0  # a holder that has the file lock but has not written its name yet: how long to wait for it
)
_SAFE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


@dataclass(frozen=True)
class Holder:
    """Who holds a study's lock; any part may be unknown (None)."""

    host: str | None
    pid: int | None
    started: str | None  # ISO 8601, UTC

    def line(self) -> str:
        parts = [f"host={self.host or '?'}", f"pid={self.pid if self.pid is not None else '?'}"]
        if self.started:
            parts.append(f"since {self.started}")
        return " ".join(parts)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()


def _iso(moment: datetime.datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC).replace(microsecond=0).isoformat()


def _me() -> Holder:
    return Holder(owner.host(), os.getpid(), _now())


def lock_key(study_name: str) -> int:
    """The study's 64-bit signed advisory-lock key (PostgreSQL's bigint): the first 8 bytes of a SHA-256."""
    digest = hashlib.sha256(f"lr-pipeline exclusive:{study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_path(storage: str, study_name: str) -> Path:
    """The lock file beside a journal or sqlite file: ``<storage>.<study>.exclusive.lock``."""
    name = (
        study_name if _SAFE_NAME.match(study_name) else hashlib.sha256(study_name.encode()).hexdigest()[:16]
    )
    return Path(f"{storage}.{name}.exclusive.lock")


def _sqlite_path(url: str) -> str | None:
    """The file of a ``sqlite:///`` URL; None for an in-memory database (no other process can share it)."""
    path = url[len("sqlite:///") :].split("?", 1)[0] if url.startswith("sqlite:///") else ""
    return None if path in ("", ":memory:") else path


@contextlib.contextmanager
def exclusive_lock(storage_url: str, study_name: str):
    """Hold the study's exclusive lock for the block, or raise :class:`StudyLocked` naming the holder.

    Released on every way out of the block (return, exception, Ctrl-C); by the kernel or the server when the
    process dies."""
    scheme = storage_url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in storage_url else ""
    if not scheme:
        holding = _file_lock(lock_path(storage_url, study_name), study_name)
    elif scheme == "sqlite":
        path = _sqlite_path(storage_url)
        holding = _file_lock(lock_path(path, study_name), study_name) if path else contextlib.nullcontext()
    elif scheme in ("postgresql", "postgres"):
        holding = _postgres_lock(storage_url, study_name)
    elif scheme in ("mysql", "mariadb"):
        holding = _mysql_lock(storage_url, study_name)
    elif scheme in ("redis", "rediss"):
        holding = _redis_lock(storage_url, study_name)
    else:
        raise ConfigError(
            f"--exclusive has no lock for '{scheme}://' storages (journal file, sqlite, postgresql, mysql, redis).",
            key="--storage",
            value=storage_url,
        )
    with holding:
        yield


# --- a file beside the storage: flock ----------------------------------------------------------------------------


def _read_holder(fd: int) -> Holder | None:
    try:
        raw = os.pread(fd, 4096, 0)
        data = json.loads(raw.decode("utf-8"))
        return Holder(str(data["host"]), int(data["pid"]), str(data["started"]))
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None  # not written yet, or being rewritten


@contextlib.contextmanager
def _file_lock(path: Path, study_name: str):
    deadline = time.monotonic() + _HOLDER_WAIT_S
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(
                f"cannot open the --exclusive lock file ({exc.strerror}).", key="--storage", value=str(path)
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            holder = _read_holder(fd)
            os.close(fd)
            if holder is None and time.monotonic() < deadline:
                time.sleep(0.02)  # the holder took the lock an instant ago and is writing its name
                continue
            raise StudyLocked(study_name, (holder or Holder(None, None, None)).line()) from None
        # The previous holder unlinks the file on release; a lock taken on a file unlinked meanwhile is no lock.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        me = _me()
        data = json.dumps({"host": me.host, "pid": me.pid, "started": me.started}).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still holding it: the next run creates a fresh file
        os.close(fd)  # drops the flock


# --- databases: a dedicated connection, a lock the server drops with the session ---------------------------------


def _engine(url: str, connect_args: dict):
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    from pipeline.tuning.preflight import rdb_engine_kwargs

    kwargs = rdb_engine_kwargs(url)
    kwargs["connect_args"] = {**kwargs.get("connect_args", {}), **connect_args}
    kwargs.pop("pool_pre_ping", None)
    return sqlalchemy.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT", **kwargs)


def _connect(url: str, connect_args: dict):
    """A connection of its own for the lock (not one of Optuna's pool), within the preflight's connect timeout."""
    from pipeline.tuning.preflight import TIMEOUT, _first_line

    try:
        engine = _engine(url, connect_args)
        return engine, engine.connect()
    except Exception as exc:
        raise ConfigError(
            f"cannot open a connection for the --exclusive lock within {TIMEOUT} s ({mask_url(_first_line(exc))}).",
            key="--storage",
            value=url,
        ) from None


def _application_name() -> str:
    # PostgreSQL keeps 63 bytes of it: the pid first, so that only a long host name is cut.
    return f"lr-pipeline pid={os.getpid()} host={owner.host()}"[:63]


_PG_HOLDER = """
SELECT a.application_name, host(a.client_addr), a.pid, a.backend_start
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid::bigint = :high AND l.objid::bigint = :low
"""
_APP = re.compile(r"^lr-pipeline pid=(?P<pid>\d+) host=(?P<host>.*)$")


def _pg_holder(connection, key: int) -> Holder:
    import sqlalchemy

    unsigned = key & 0xFFFF_FFFF_FFFF_FFFF
    row = connection.execute(
        sqlalchemy.text(_PG_HOLDER), {"high": unsigned >> 32, "low": unsigned & 0xFFFF_FFFF}
    ).first()
    if row is None:
        return Holder(None, None, None)
    app, client, backend_pid, backend_start = row
    match = _APP.match(app or "")
    if match:
        return Holder(match["host"], int(match["pid"]), _iso(backend_start))
    # Not one of ours, or a server that hides other users' sessions: name the server-side session.
    return (
        Holder(client or "server-local", None, _iso(backend_start))
        if backend_pid
        else Holder(None, None, None)
    )


@contextlib.contextmanager
def _postgres_lock(url: str, study_name: str):
    import sqlalchemy

    # A process that dies closes its socket, and the server ends the session and its lock. Client keepalives let
    # the holder notice a dead server; the server's own (set below) notice a holder's machine that vanished.
    engine, connection = _connect(
        url,
        {
            "application_name": _application_name(),
            "keepalives": 1,
            "keepalives_idle": 60,
            "keepalives_interval": 10,
            "keepalives_count": 6,
        },
    )
    key = lock_key(study_name)
    try:
        for name, value in PG_KEEPALIVE.items():
            connection.execute(sqlalchemy.text(f"SET {name} = {int(value)}"))
        with contextlib.suppress(Exception):  # PostgreSQL >= 14; an idle lock session must not be timed out
            connection.execute(sqlalchemy.text("SET idle_session_timeout = 0"))
        if not connection.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            raise StudyLocked(study_name, _pg_holder(connection, key).line())
        try:
            yield
        finally:
            with contextlib.suppress(Exception):  # a dead connection has dropped the lock already
                connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
    finally:
        with contextlib.suppress(Exception):
            connection.close()
        engine.dispose()


def _mysql_lock_name(url: str, study_name: str) -> str:
    """MySQL's named locks are per server, not per database: the name hashes the database with the study."""
    import sqlalchemy

    database = sqlalchemy.engine.make_url(url).database or ""
    return "lr-pipeline:" + hashlib.sha256(f"{database}\0{study_name}".encode()).hexdigest()[:40]


def _mysql_holder(connection, name: str) -> Holder:
    import sqlalchemy

    holder_id = connection.execute(sqlalchemy.text("SELECT IS_USED_LOCK(:n)"), {"n": name}).scalar()
    if holder_id is None:
        return Holder(None, None, None)
    host, since, pid = None, None, None
    with contextlib.suppress(Exception):
        row = connection.execute(
            sqlalchemy.text("SELECT HOST, TIME FROM information_schema.PROCESSLIST WHERE ID = :i"),
            {"i": holder_id},
        ).first()
        if row is not None:
            host = str(row[0]).rsplit(":", 1)[0] if row[0] else None
            moment = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=int(row[1] or 0))
            since = _iso(moment)
    with contextlib.suppress(Exception):  # only where performance_schema is on
        attrs = dict(
            connection.execute(
                sqlalchemy.text(
                    "SELECT ATTR_NAME, ATTR_VALUE FROM performance_schema.session_connect_attrs "
                    "WHERE PROCESSLIST_ID = :i"
                ),
                {"i": holder_id},
            ).all()
        )
        match = _APP.match(attrs.get("program_name", ""))
        if match:
            host, pid = match["host"], int(match["pid"])
        elif attrs.get("_pid", "").isdigit():
            pid = int(attrs["_pid"])
    return Holder(host, pid, since)


@contextlib.contextmanager
def _mysql_lock(url: str, study_name: str):
    import sqlalchemy

    driver = sqlalchemy.engine.make_url(url).get_driver_name()
    engine, connection = _connect(url, {"program_name": _application_name()} if driver == "pymysql" else {})
    name = _mysql_lock_name(url, study_name)
    try:
        if connection.execute(sqlalchemy.text("SELECT GET_LOCK(:n, 0)"), {"n": name}).scalar() != 1:
            raise StudyLocked(study_name, _mysql_holder(connection, name).line())
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                connection.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:n)"), {"n": name})
    finally:
        with contextlib.suppress(Exception):
            connection.close()
        engine.dispose()


# --- Redis: a key with an expiry, refreshed while held -------------------------------------------------------------

_REFRESH = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


@contextlib.contextmanager
def _redis_lock(url: str, study_name: str):
    import redis

    from pipeline.tuning.preflight import TIMEOUT

    client = redis.Redis.from_url(url, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT)
    key = f"lr-pipeline:exclusive:{study_name}"
    me = _me()
    value = json.dumps({"host": me.host, "pid": me.pid, "started": me.started, "token": uuid.uuid4().hex})
    try:
        taken = client.set(key, value, nx=True, px=REDIS_TTL_MS)
        if not taken:
            raw = client.get(key)
            try:
                data = json.loads(raw)
                holder = Holder(data.get("host"), data.get("pid"), data.get("started"))
            except (TypeError, ValueError, AttributeError):
                holder = Holder(None, None, None)
            raise StudyLocked(study_name, holder.line())
    except redis.RedisError as exc:
        client.close()
        raise ConfigError(
            f"cannot take the --exclusive lock in Redis ({type(exc).__name__}: {exc}).",
            key="--storage",
            value=url,
        ) from None
    stop = threading.Event()

    def refresh() -> None:
        while not stop.wait(REDIS_REFRESH_S):
            with contextlib.suppress(redis.RedisError):
                client.eval(_REFRESH, 1, key, value, REDIS_TTL_MS)

    thread = threading.Thread(target=refresh, name="exclusive-lock-refresh", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=TIMEOUT)
        with contextlib.suppress(redis.RedisError):
            client.eval(_RELEASE, 1, key, value)
        client.close()
