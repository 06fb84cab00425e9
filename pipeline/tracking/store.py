"""The MLflow store: where a local sqlite store's artifacts go, its creation (migrated aside, renamed into place), and
the lock that serialises a store's first open (its migrations) across workers: a file lock, or the database's own."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def local_artifact_root(tracking_uri: str) -> Path | None:
    """``<directory of the sqlite file>/artifacts`` for a local sqlite store, else None (the server decides).

    ``sqlite:////abs/mlflow.db`` is absolute, ``sqlite:///rel/mlflow.db`` is relative to the current directory
    (SQLAlchemy's rule); an in-memory database has no directory.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = tracking_uri[len("sqlite:///") :].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path).resolve().parent / "artifacts"


# The lock that serialises opening a database tracking store (PostgreSQL's advisory-lock key space is shared by
# the whole server; MySQL's lock names by the server): 64 bits of sha256("lr_pipeline.mlflow_store").
STORE_LOCK_KEY = 0x2C1EE349FAC89C5C
STORE_LOCK_NAME = "lr_pipeline.mlflow_store"
STORE_LOCK_WAIT = 120  # seconds a worker waits for another's migrations (MLflow's take 3-5 s here)


@contextlib.contextmanager
def _creation_lock(artifact_root: Path | None, tracking_uri: str = ""):
    """Serialise opening a store across processes: the first open runs MLflow's schema migrations, and two
    workers starting together race on them. A local sqlite store: alembic's "expected to match one row" error
    (a file lock next to it). A PostgreSQL or MySQL store: the loser's CREATE TABLE fails on a unique key, 7 of 8
    workers started at once on an empty database (a lock held by the database for this session)."""
    if artifact_root is None:
        with _database_lock(tracking_uri):
            yield
        return
    import fcntl

    with open(artifact_root.parent / ".mlflow-store.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sqlite_path(tracking_uri: str) -> Path | None:
    """The file of a local ``sqlite:///`` tracking URI, None for anything else (a server, in-memory)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = tracking_uri[len("sqlite:///") :].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


_CREATING = ".creating-"


def _create_store_atomically(path: Path, artifact_root: Path) -> None:
    """Create and migrate a new sqlite store under a temporary name, then rename it into place.

    MLflow's first open runs ~70 schema migrations over 3-5 s; a process killed among them leaves a store that
    no later open can repair (``duplicate column name``, ``_alembic_tmp_runs already exists``). Built aside and
    renamed (atomic on one filesystem), a kill at any instant leaves either no store or a whole one. The caller
    holds the creation lock, so a temporary file found here was left by a killed process and is removed.
    """
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    for stale in path.parent.glob(f"{path.name}{_CREATING}*"):
        with contextlib.suppress(OSError):
            stale.unlink()
    temp = path.with_name(f"{path.name}{_CREATING}{os.getpid()}")
    store = SqlAlchemyStore(f"sqlite:///{temp}", artifact_root.as_uri())
    store.engine.dispose()
    with open(temp, "rb") as handle:  # the migrations are committed; make them durable before the rename
        os.fsync(handle.fileno())
    os.replace(temp, path)
    with contextlib.suppress(OSError):  # the rename itself durable too
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


@contextlib.contextmanager
def _database_lock(tracking_uri: str):
    """A session-level lock on a PostgreSQL (``pg_advisory_lock``) or MySQL/MariaDB (``GET_LOCK``) tracking store,
    on a connection of its own, released when the block ends or the process dies; nothing for other stores. When
    the connection or the lock cannot be had (within ``STORE_LOCK_WAIT``), the block runs without it: MLflow's
    own open then reports what is wrong, or races as it did before."""
    scheme = tracking_uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme not in ("postgresql", "postgres", "mysql", "mariadb"):
        yield
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    if scheme.startswith("postgres"):
        statements = [
            (f"SET lock_timeout = '{STORE_LOCK_WAIT}s'", {}),
            ("SELECT pg_advisory_lock(:k)", {"k": STORE_LOCK_KEY}),
        ]
        unlock = ("SELECT pg_advisory_unlock(:k)", {"k": STORE_LOCK_KEY})
    else:
        statements = [("SELECT GET_LOCK(:n, :w)", {"n": STORE_LOCK_NAME, "w": STORE_LOCK_WAIT})]
        unlock = ("SELECT RELEASE_LOCK(:n)", {"n": STORE_LOCK_NAME})
    engine = connection = None
    try:
        engine = sqlalchemy.create_engine(tracking_uri, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        connection = engine.connect()
        for sql, params in statements:
            connection.execute(sqlalchemy.text(sql), params)
    except Exception:  # noqa: BLE001 - no lock; see above
        if connection is not None:
            connection.close()
        connection = None
    try:
        yield
        if connection is not None:
            connection.execute(sqlalchemy.text(unlock[0]), unlock[1])
    finally:
        if connection is not None:
            connection.close()
        if engine is not None:
            engine.dispose()
