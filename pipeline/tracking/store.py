"""The local MLflow sqlite store: where its artifacts go, and its creation (migrated aside, renamed into place)."""

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


@contextlib.contextmanager
def _creation_lock(artifact_root: Path | None):
    """Serialise opening a local sqlite store across processes: the first open runs MLflow's schema migrations,
    and two workers starting together would race on them (alembic's "expected to match one row" error)."""
    if artifact_root is None:
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
