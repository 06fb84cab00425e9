"""Real servers for the multi-machine tests: throwaway databases on the local PostgreSQL, and `make mlflow-server`
(the documented command) on a free loopback port. Started and stopped by the test; nothing is mocked."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

PG = "postgresql://postgres@127.0.0.1"
REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def create_database(label: str) -> str:
    """A fresh database ``lr_pipeline_<label>_<random>`` on the local PostgreSQL; skip the test when there is no
    server."""
    psycopg = pytest.importorskip("psycopg")
    name = f"lr_pipeline_{label}_{uuid.uuid4().hex[:8]}"
    try:
        with psycopg.connect(f"{PG}/postgres", autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL server at {PG}: {exc}")
    return name


def drop_database(name: str) -> None:
    """Drop ``name`` even while connections to it are open (FORCE)."""
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def databases(*labels: str):
    """Fresh databases ``lr_pipeline_<label>_<random>`` on the local PostgreSQL, dropped afterwards (FORCE)."""
    names: list[str] = []
    try:
        for label in labels:
            names.append(create_database(label))
        yield names
    finally:
        for name in names:
            drop_database(name)


def connections(names: list[str]) -> list[tuple[str, str]]:
    """(database, application_name) of every server connection to ``names`` now (pg_stat_activity)."""
    import psycopg

    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname, application_name FROM pg_stat_activity WHERE datname = ANY(%s)", (names,)
        ).fetchall()
    return [(str(d), str(a)) for d, a in rows]


@contextlib.contextmanager
def mlflow_server(backend: str, artifacts: Path, *, log: Path):
    """`make mlflow-server` with ``backend`` as MLflow's store, on a free 127.0.0.1 port; yields its URL."""
    port = free_port()
    handle = open(log, "w")
    proc = subprocess.Popen(
        [
            "make",
            "-s",
            "-o",
            ".venv/.installed",  # the venv is there: never reinstall from a test
            "mlflow-server",
            f"MLFLOW_BACKEND={application(backend, 'mlflow-server')}",
            f"MLFLOW_ARTIFACTS={artifacts}",
            f"MLFLOW_PORT={port}",
        ],
        cwd=REPO,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the CLI and its uvicorn child stop together
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not answer within 120 s: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
        handle.close()


def application(url: str, name: str) -> str:
    """``url`` with libpq's ``application_name`` set, so pg_stat_activity tells whose connection it is."""
    return f"{url}{'&' if '?' in url else '?'}application_name={name}"


PG_SOCKET = "/var/run/postgresql/.s.PGSQL.5432"


@contextlib.contextmanager
def namespaces(n: int, *, mlflow_port: int, folder: Path):
    """``n`` network namespaces of the test's own, each with nothing but its loopback, in which 127.0.0.1:5432 and
    127.0.0.1:``mlflow_port`` are forwarded (socat) through Unix sockets to this machine's PostgreSQL and MLflow
    server: a worker in one reaches the two servers by the same URLs, and nothing else (no other interface, no
    route). Yields one command prefix per namespace (``ip netns exec NAME``), or None when they cannot be made
    here (not root, no ``ip netns``, no socat, no PostgreSQL socket)."""
    if (
        os.geteuid() != 0
        or not shutil.which("ip")
        or not shutil.which("socat")
        or not Path(PG_SOCKET).exists()
    ):
        yield None
        return
    names = [f"lrw{uuid.uuid4().hex[:6]}{k}" for k in range(n)]
    bridges: list[subprocess.Popen] = []
    made: list[str] = []
    mlflow_socket = folder / "mlflow.sock"

    def forward(prefix: list[str], listen: str, connect: str) -> None:
        bridges.append(
            subprocess.Popen(
                [*prefix, "socat", listen, connect],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # socat forks one child per connection: stopped with its group
            )
        )

    try:
        forward([], f"UNIX-LISTEN:{mlflow_socket},fork", f"TCP:127.0.0.1:{mlflow_port}")
        for name in names:
            if subprocess.run(["ip", "netns", "add", name], capture_output=True).returncode != 0:
                yield None
                return
            made.append(name)
            prefix = ["ip", "netns", "exec", name]
            subprocess.run([*prefix, "ip", "link", "set", "lo", "up"], check=True)
            forward(prefix, "TCP-LISTEN:5432,bind=127.0.0.1,reuseaddr,fork", f"UNIX-CONNECT:{PG_SOCKET}")
            forward(
                prefix,
                f"TCP-LISTEN:{mlflow_port},bind=127.0.0.1,reuseaddr,fork",
                f"UNIX-CONNECT:{mlflow_socket}",
            )
        time.sleep(0.5)  # the listeners bound
        yield [["ip", "netns", "exec", name] for name in names]
    finally:
        for bridge in bridges:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(bridge.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                bridge.wait(timeout=10)
        for name in made:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
