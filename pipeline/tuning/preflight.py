"""Checks made before anything is written: the stores can be reached (within 10 s), the numbers fit, the disk has room.

A nightly job that finds its database down must say so in seconds and leave nothing half-made: both stores are
probed read-only first, the Optuna storage and the MLflow tracking store alike, and only then created or opened.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pipeline import config
from pipeline.errors import ConfigError
from pipeline.paths import writable_folder
from pipeline.secrets import mask_url

TIMEOUT = 10  # seconds: a database driver's connect timeout, an HTTP request's timeout
SEED_LIMIT = 2**32  # NumPy's and Optuna's samplers take seeds in [0, 2**32)
WORKER_STRIDE = 1_000_003  # pipeline.tuning.run.sampler_seed's offset per worker
MIN_FREE_MB_DEFAULT = 50.0
_SQLITE_MAGIC = b"SQLite format 3\x00"


def check_storage_url(url: str) -> None:
    """An empty ``--storage`` is refused rather than read as "the default"."""
    if not url or not url.strip():
        raise ConfigError(
            f"must not be empty: leave --storage out for the default ({config.DEFAULT_STORAGE}).",
            key="--storage",
            value=url,
        )


def rdb_engine_kwargs(url: str) -> dict:
    """SQLAlchemy engine options for a database storage: a bounded connect timeout (PostgreSQL, MySQL)."""
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme in ("postgresql", "postgres", "mysql", "mariadb"):
        return {"connect_args": {"connect_timeout": TIMEOUT}, "pool_pre_ping": True}
    return {}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _probe_database(url: str, key: str) -> None:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, **rdb_engine_kwargs(url))
    except Exception as exc:  # bad scheme, missing driver, unparseable URL
        raise ConfigError(f"is not a usable database URL ({_first_line(exc)}).", key=key, value=url) from None
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text("SELECT 1"))
    except Exception as exc:
        raise ConfigError(
            f"cannot reach the database within {TIMEOUT} s ({_first_line(exc)}).", key=key, value=url
        ) from None
    finally:
        engine.dispose()


def _check_local_file(path: Path, key: str, what: str, magic: bytes | None) -> None:
    """A file the run will create or append to: no parent is a file, the folder can be written, and an existing
    file is of the right kind."""
    writable_folder(path.parent, key=key, shown=path)
    if path.is_dir():
        raise ConfigError(f"is a folder, not {what}.", key=key, value=str(path))
    if magic is not None and path.is_file() and path.stat().st_size:
        with open(path, "rb") as handle:
            start = handle.read(len(magic))
        if start != magic:
            raise ConfigError(f"exists and is not {what}; refusing to write to it.", key=key, value=str(path))


def check_storage(url: str) -> None:
    """The Optuna storage can be used: a journal file's folder can be written, a database or Redis answers."""
    check_storage_url(url)
    if url.startswith("redis://"):
        try:
            import redis

            redis.Redis.from_url(url, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT).ping()
        except Exception as exc:
            raise ConfigError(
                f"cannot reach Redis within {TIMEOUT} s ({_first_line(exc)}).", key="--storage", value=url
            ) from None
        return
    if "://" in url:
        if url.startswith("sqlite:"):  # a local file: probing by connecting would create it
            path = url[len("sqlite:///") :].split("?", 1)[0] if url.startswith("sqlite:///") else ""
            if path and path != ":memory:":
                _check_local_file(Path(path), "--storage", "a SQLite database", _SQLITE_MAGIC)
            return
        _probe_database(url, "--storage")
        return
    from pipeline.tuning.storage import _check_journal_file

    _check_local_file(Path(url), "--storage", "an Optuna journal file", None)
    _check_journal_file(Path(url))


def check_tracking(uri: str) -> None:
    """The MLflow tracking store can be used: a sqlite file's folder, a server answering /health, a database."""
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///") :].split("?", 1)[0]
        if path and path != ":memory:":
            _check_local_file(Path(path), "--tracking-uri", "an MLflow sqlite store", _SQLITE_MAGIC)
        return
    if uri.startswith(("http://", "https://")):
        _probe_http(uri)
        return
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme in ("postgresql", "postgres", "mysql", "mariadb", "mssql"):
        _probe_database(uri, "--tracking-uri")


def _probe_http(uri: str) -> None:
    import base64
    import urllib.error
    import urllib.request

    request = urllib.request.Request(uri.rstrip("/") + "/health")
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            response.read(64)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise ConfigError(
                f"the MLflow server refuses the credentials (HTTP {exc.code}); set MLFLOW_TRACKING_USERNAME "
                "and MLFLOW_TRACKING_PASSWORD.",
                key="--tracking-uri",
                value=uri,
            ) from None
        if exc.code >= 500:
            raise ConfigError(
                f"the MLflow server answers with an error (HTTP {exc.code}).", key="--tracking-uri", value=uri
            ) from None
        # 404 and the like: a server that has no /health but answers; MLflow itself will say more.
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConfigError(
            f"cannot reach the MLflow tracking server within {TIMEOUT} s ({reason}).",
            key="--tracking-uri",
            value=uri,
        ) from None


def check_seed(seed: int, worker: int, existing_trials: int = 0, *, file: str | None = None) -> None:
    """The sampler's seed (study seed + trials stored + worker offset) must fit the samplers' range."""
    top = seed + existing_trials + WORKER_STRIDE * worker
    if top < SEED_LIMIT:
        return
    if seed >= SEED_LIMIT:
        raise ConfigError(f"must be an int in [0, {SEED_LIMIT - 1}].", file=file, key="seed", value=seed)
    largest = (SEED_LIMIT - 1 - seed - existing_trials) // WORKER_STRIDE
    raise ConfigError(
        f"is too large with this study's seed {seed}: the sampler's seed must stay below 2**32, so --worker can be "
        f"at most {max(largest, 0)} here.",
        key="--worker",
        value=worker,
    )


def free_space_problem(paths: list[Path], min_free_mb: float) -> str | None:
    """None when every path's filesystem has at least ``min_free_mb`` MiB free; else one line naming the path."""
    seen = set()
    for path in paths:
        folder = path if path.is_dir() else path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        try:
            device = folder.stat().st_dev
            if device in seen:
                continue
            seen.add(device)
            free = shutil.disk_usage(folder).free
        except OSError:
            continue
        if free < min_free_mb * 2**20:
            return (
                f"only {free / 2**20:.1f} MiB free on the filesystem of {mask_url(str(folder))} "
                f"(below --min-free-mb {min_free_mb:g}): stopped before starting a trial; free some space and run "
                "again (finished trials are stored)"
            )
    return None
