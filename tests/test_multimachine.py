"""Many workers on several machines: PostgreSQL for the study and for MLflow's store, an MLflow server in front of
it, heartbeats that retry a SIGKILLed worker's trial, bounded connections, one write per curve.

The topology tests start real servers (tests/servers.py) and real `python -m pipeline tune` workers, each in its
own working directory with its own copy of the study file, sharing nothing but the two URLs. The three-machine test
puts each worker in a network namespace of its own (as root, with `ip netns` and socat): only a loopback, on which
the two servers' ports are forwarded through Unix sockets, so the workers use the same URLs as outside.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from conftest import study_yaml
from optuna.trial import TrialState
from servers import PG, application, connections, databases, mlflow_server, namespaces

from pipeline import cli
from pipeline.errors import ConfigError
from pipeline.study.loader import load_study_mapping
from pipeline.tuning import rdb

ENV = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(Path(__file__).parent.parent)}


def _env(tmp_path: Path) -> dict:
    """The workers' environment: the study artifacts of `report` go to the test's folder, not the checkout's."""
    return {**ENV, "LR_PIPELINE_OPTUNA_ARTIFACTS": str(tmp_path / "optuna-artifacts")}


# ----------------------------------------------------------------------------------------- the study file


def _study(**workers):
    return {
        "name": "w",
        "data": {"dataset": "diabetes"},
        "model": {"name": "linear"},
        "training": {"epochs": 10},
        "search": {"lr": {"low": 1e-3, "high": 1}},
        "workers": workers,
    }


def test_workers_section_is_read_and_defaults_to_no_heartbeat():
    spec = load_study_mapping(_study(heartbeat_interval=10, grace_period=30, max_retry=2))
    assert (spec.workers.heartbeat_interval, spec.workers.grace_period, spec.workers.max_retry) == (10, 30, 2)
    plain = load_study_mapping({k: v for k, v in _study().items() if k != "workers"})
    assert plain.workers.heartbeat_interval is None and plain.workers.max_retry == 1
    assert rdb.Heartbeat(10).grace == 20  # Optuna's default: twice the interval


@pytest.mark.parametrize(
    "workers, key, message",
    [
        ({"heartbeat_interval": 0}, "workers.heartbeat_interval", "must be an int >= 1"),
        ({"heartbeat_interval": 1.5}, "workers.heartbeat_interval", "must be an int"),
        (
            {"heartbeat_interval": 10, "grace_period": 10},
            "workers.grace_period",
            r"must be > workers.heartbeat",
        ),
        ({"grace_period": 30}, "workers.grace_period", "needs workers.heartbeat_interval"),
        ({"heartbeat_interval": 10, "max_retry": -1}, "workers.max_retry", "must be an int >= 0"),
        ({"heartbeat": 10}, "workers", "heartbeat"),
    ],
)
def test_workers_section_is_refused_with_the_key_and_the_value(workers, key, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load_study_mapping(_study(**workers))
    assert key in str(caught.value)


def test_heartbeat_flags_override_the_file_and_are_refused_on_a_journal(tmp_path):
    spec = load_study_mapping(_study(heartbeat_interval=10, grace_period=30))
    url = "postgresql://postgres@127.0.0.1/x"
    assert rdb.with_flags(spec, url, 5, None).workers.grace_period == 30  # the file's grace still fits
    assert rdb.with_flags(spec, url, 40, None).workers.grace_period is None  # it does not: 2 x 40
    assert rdb.with_flags(spec, url, 2, 5).workers.heartbeat_interval == 2
    with pytest.raises(ConfigError, match=r"--grace-period.*must be > the heartbeat interval \(10 s\)"):
        rdb.with_flags(spec, url, None, 10)
    with pytest.raises(ConfigError, match="--heartbeat-interval.*needs a database storage"):
        rdb.with_flags(spec, str(tmp_path / "s.journal"), 5, None)
    # From the study file, on a journal: noted, and the run goes on without a heartbeat.
    lines = []
    assert rdb.heartbeat_for(spec, str(tmp_path / "s.journal"), log=lines.append) is None
    assert "ignored" in lines[0] and "journal file" in lines[0]
    assert rdb.heartbeat_for(spec, url) == rdb.Heartbeat(10, 30, 1)


def test_tune_with_a_heartbeat_flag_on_a_journal_exits_2(tmp_path, capsys):
    study = study_yaml("diabetes-reference.yaml", tmp_path / "s.yaml", name="hb", budget={"trials": 1})
    code = cli.main(
        ["tune", str(study), "--storage", str(tmp_path / "s.journal"), "--heartbeat-interval", "5"]
    )
    assert code == 2
    assert "--heartbeat-interval" in capsys.readouterr().err
    assert not (tmp_path / "s.journal").exists()  # refused before anything was written


# ----------------------------------------------------------------------------------------- one write per curve


def test_a_curve_is_one_transaction_on_a_database_and_reads_back_as_reported(tmp_path):
    """What the dashboard draws (intermediate values) is the same whether reported live or written at the end."""
    url = f"sqlite:///{tmp_path / 'o.db'}"
    storage = optuna.storages.RDBStorage(url)
    study = optuna.create_study(storage=storage, study_name="c")
    trial = study.ask()
    commits = []
    sqlalchemy.event.listen(storage.engine, "commit", lambda conn: commits.append(1))
    buffer = rdb.CurveBuffer(trial)
    curve = {0: 1.0, 3: 0.5, 7: float("inf"), 9: 0.25}
    for step, value in curve.items():
        buffer(value, step)
    assert not commits  # kept, not written
    rdb.write_trial_end(trial, {"epochs_run": 10, "prune_reason": None}, buffer.take())
    assert len(commits) == 1  # the attributes and the whole curve
    study.tell(trial, 0.25)
    (stored,) = optuna.load_study(study_name="c", storage=url).trials
    assert stored.intermediate_values == curve and stored.user_attrs == {
        "epochs_run": 10,
        "prune_reason": None,
    }
    # a journal file: one report each, same values
    journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "j")))
    other = optuna.create_study(storage=journal, study_name="c")
    t = other.ask()
    rdb.report_curve(t, curve)
    other.tell(t, 0.25)
    assert other.trials[0].intermediate_values == curve


# ----------------------------------------------------------------------------------------- the topology


def _tune(
    study: Path, storage: str, tracking: str, worker: int, env: dict, prefix: list[str] | None = None
) -> subprocess.Popen:
    return subprocess.Popen(
        [
            *(prefix or []),  # ip netns exec NAME: the worker in a network namespace of its own
            sys.executable,
            "-m",
            "pipeline",
            "tune",
            study.name,
            "--storage",
            storage,
            "--tracking-uri",
            tracking,
            "--worker",
            str(worker),
            "--no-progress",
        ],
        cwd=study.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _worker_dirs(tmp_path: Path, n: int, **sections) -> list[Path]:
    """One folder per worker, each with its own copy of the study file (and nothing shared)."""
    first = study_yaml("moons-mlp.yaml", tmp_path / "study.yaml", **sections)
    dirs = []
    for k in range(n):
        folder = tmp_path / f"machine-{k}"
        folder.mkdir()
        shutil.copy(first, folder / "study.yaml")
        dirs.append(folder / "study.yaml")
    first.unlink()
    return dirs


@pytest.mark.slow
def test_three_machines_share_a_study_and_a_killed_workers_trial_is_retried(tmp_path):
    from mlflow import MlflowClient

    workers, cap = 3, 18
    with contextlib.ExitStack() as stack, databases("optuna", "mlflow") as (optuna_db, mlflow_db):
        storage = f"{PG}/{optuna_db}"
        with mlflow_server(
            f"{PG}/{mlflow_db}", tmp_path / "server-artifacts", log=tmp_path / "server.log"
        ) as url:
            studies = _worker_dirs(
                tmp_path,
                workers,
                name="topology",
                training={"epochs": 120},
                budget={"trials": None, "max_trials": cap},
                workers={"heartbeat_interval": 1, "grace_period": 3, "max_retry": 1},
            )
            port = int(url.rsplit(":", 1)[1])
            prefixes = stack.enter_context(namespaces(workers, mlflow_port=port, folder=tmp_path))
            if prefixes is None:
                print("\nno network namespaces here (root, ip netns, socat): the workers share this one")
            else:  # a namespace is its own network: this machine's Redis (127.0.0.1:6379) is not in it
                probe = "import socket; socket.create_connection(('127.0.0.1', 6379), 2)"
                assert subprocess.run(
                    [*prefixes[0], sys.executable, "-c", probe], capture_output=True
                ).returncode
            procs = [
                _tune(s, storage, url, k, _env(tmp_path), prefixes[k] if prefixes else None)
                for k, s in enumerate(studies)
            ]
            backend = optuna.storages.RDBStorage(storage)
            victim = procs[1]
            killed = None
            deadline = time.monotonic() + 240
            while killed is None and time.monotonic() < deadline:  # mid-trial: its run exists, the trial runs
                try:
                    trials = optuna.load_study(study_name="topology", storage=backend).trials
                except KeyError:
                    trials = []
                finished = sum(t.state.is_finished() for t in trials)
                for t in trials:
                    owner = str(t.user_attrs.get("owner", ""))
                    if (
                        finished >= 3
                        and t.state == TrialState.RUNNING
                        and owner.split(":")[1:2] == [str(victim.pid)]
                        and "mlflow_run_id" in t.user_attrs
                    ):
                        victim.send_signal(signal.SIGKILL)
                        killed = t.number
                        break
                time.sleep(0.05)
            assert killed is not None, "worker 1 never got mid-trial"
            outputs = {k: p.communicate(timeout=300) for k, p in enumerate(procs) if p is not victim}
            victim.wait(timeout=30)
            for k, (_out, err) in outputs.items():
                assert procs[k].returncode == 0, err[-3000:]
            noticed = "".join(err for _out, err in outputs.values())
            assert f"heartbeat: trial {killed} heartbeat-stale" in noticed

            trials = optuna.load_study(study_name="topology", storage=backend).trials
            done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
            # finished trials: the study-wide cap, overshot by at most N - 1 (workers mid-trial when it is reached)
            assert cap <= len(done) <= cap + workers - 1, len(done)
            print(
                f"\ntopology: {len(trials)} trials, {len(done)} finished (cap {cap}), trial {killed} killed"
            )
            assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
            (dead,) = [t for t in trials if t.state == TrialState.FAIL]
            assert dead.number == killed
            (retry,) = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
            assert retry.state.is_finished() and retry.params == dead.params
            assert retry.system_attrs["retry_history"] == [killed]
            params = [json.dumps(t.params, sort_keys=True) for t in trials if t.state != TrialState.FAIL]
            assert len(set(params)) == len(params)  # no duplicates (the retry repeats only the dead trial's)

            client = MlflowClient(url)
            (experiment,) = [e for e in client.search_experiments() if e.name == "topology"]
            runs = client.search_runs(
                [experiment.experiment_id], "attributes.run_name != 'study'", max_results=500
            )
            by_trial = {}
            for run in runs:
                by_trial.setdefault(int(run.data.tags["trial_number"]), []).append(run)
            assert sorted(by_trial) == sorted(t.number for t in trials)
            assert all(len(v) == 1 for v in by_trial.values())
            assert {r.info.status for r in runs} <= {"FINISHED", "KILLED", "FAILED"}
            dead_run = by_trial[killed][0]
            assert dead_run.info.status == "FAILED"  # terminated by the live worker that noticed
            assert (
                rdb.HEARTBEAT_STALE in dead_run.data.tags["fail_reason"]
                and "reconciled" in dead_run.data.tags
            )
            retry_run = by_trial[retry.number][0]
            assert retry_run.data.tags[rdb.RETRY_OF_TAG] == str(killed)
            assert retry_run.data.tags[rdb.RETRY_RUN_TAG] == dead_run.info.run_id
            assert retry_run.info.artifact_uri.startswith("mlflow-artifacts:")  # uploaded through the server

            # best, report and optuna-dashboard's loader read the study, from another "machine"'s folder
            reader = studies[0].parent
            best = subprocess.run(
                [sys.executable, "-m", "pipeline", "best", "study.yaml", "--storage", storage],
                cwd=reader,
                capture_output=True,
                text=True,
                env=_env(tmp_path),
                timeout=120,
            )
            assert best.returncode == 0, best.stderr
            assert json.loads(best.stdout)["study"] == "topology"
            report = subprocess.run(
                [sys.executable, "-m", "pipeline", "report", "study.yaml", "--storage", storage]
                + ["--tracking-uri", url, "--out", str(reader.parent / "report")],
                cwd=reader,
                capture_output=True,
                text=True,
                env=_env(tmp_path),
                timeout=300,
            )
            assert report.returncode == 0, report.stderr
            assert list((reader.parent / "report").glob("*.png"))
            (summary,) = dashboard_get(storage, "/api/studies")["study_summaries"]
            shown = dashboard_get(storage, f"/api/studies/{summary['study_id']}")
            assert len(shown["trials"]) == len(trials)
            assert server_artifacts(
                tmp_path / "server-artifacts"
            )  # report's plots, uploaded through the server
            assert list(
                (tmp_path / "optuna-artifacts").iterdir()
            )  # the dashboard's copies, on report's machine


def dashboard_get(storage: str, path: str):
    """optuna-dashboard's own WSGI app on ``storage``, asked for ``path`` in process (its loader, for real)."""
    import io

    from optuna_dashboard import wsgi

    status = []
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "0",
        "wsgi.input": io.BytesIO(),
        "wsgi.url_scheme": "http",
        "QUERY_STRING": "",
    }
    body = b"".join(wsgi(storage)(environ, lambda s, h, *a: status.append(s)))
    assert status[0].startswith("200"), (path, status, body[:300])
    return json.loads(body)


def server_artifacts(folder: Path) -> list[Path]:
    """Files the MLflow server stored under its --artifacts-destination (report's plots, uploaded by a worker)."""
    return [p for p in folder.rglob("*") if p.is_file()]


def _set_tags_at_once(uri: str, barrier, keys: list[str], errors) -> None:
    """One worker's start: its Tracker (which tags the experiment), then each key set as the others set it."""
    from pipeline.tracking import Tracker

    try:
        tracker = Tracker("together", tracking_uri=uri)
        for key in keys:
            barrier.wait(timeout=60)
            tracker.set_experiment_tags({key: os.getpid()})
    except Exception as exc:  # noqa: BLE001 - reported to the test, which names it
        errors.put(f"{type(exc).__name__}: {str(exc)[:300]}")
        barrier.abort()


@pytest.mark.slow
@pytest.mark.parametrize("store", ["made first", "made by the workers"])
def test_workers_opening_one_mlflow_database_and_tagging_it_at_once_all_succeed(tmp_path, store):
    """8 workers start together on one PostgreSQL tracking store, real processes. MLflow's store reads an
    experiment tag, then inserts it when missing: some got PostgreSQL's unique-key error and died (2 of 7 runs of
    the eight-worker test with other files). On an empty database, the first open runs MLflow's migrations: 7 of 8
    workers started at once failed on a unique key of the tables they all created. Each key here is set by all 8
    at one instant."""
    import multiprocessing

    from mlflow import MlflowClient

    workers, keys = 8, [f"k{i}" for i in range(6)]
    with databases("tags") as (db,):
        uri = f"{PG}/{db}"
        if store == "made first":
            # By another process: the parent never opens this store (forked children would share its connections).
            made = [
                sys.executable,
                "-c",
                "import sys, mlflow; mlflow.MlflowClient(sys.argv[1]).search_experiments()",
                uri,
            ]
            subprocess.run(made, check=True, env=ENV, capture_output=True)
        context = multiprocessing.get_context("fork")
        barrier, errors = context.Barrier(workers), context.Queue()
        procs = [
            context.Process(target=_set_tags_at_once, args=(uri, barrier, keys, errors))
            for _ in range(workers)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(timeout=300)
        found = [errors.get() for _ in range(errors.qsize())] if not errors.empty() else []
        assert not found, found
        assert [p.exitcode for p in procs] == [0] * workers
        pids = {str(p.pid) for p in procs}
        client = MlflowClient(uri)
        tags = client.get_experiment_by_name("together").tags
        assert all(tags[key] in pids for key in keys), tags


@pytest.mark.slow
def test_eight_workers_stay_within_k_n_plus_c_connections(tmp_path):
    """8 workers on the local PostgreSQL through one MLflow server: none refused, connections counted."""
    workers, cap = 8, 16
    with databases("optuna8", "mlflow8") as names:
        optuna_db, mlflow_db = names
        with mlflow_server(f"{PG}/{mlflow_db}", tmp_path / "art", log=tmp_path / "server.log") as url:
            studies = _worker_dirs(
                tmp_path,
                workers,
                name="eight",
                training={"epochs": 60},
                budget={"trials": None, "max_trials": cap},
                workers={"heartbeat_interval": 2},
            )
            peak: dict[str, int] = {}
            total_peak = [0]
            stop = threading.Event()

            def watch():
                while not stop.is_set():
                    seen = connections(names)
                    total_peak[0] = max(total_peak[0], len(seen))
                    for app in {a for _d, a in seen}:
                        peak[app] = max(peak.get(app, 0), sum(a == app for _d, a in seen))
                    time.sleep(0.05)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            procs = [
                _tune(s, application(f"{PG}/{optuna_db}", f"worker{k}"), url, k, _env(tmp_path))
                for k, s in enumerate(studies)
            ]
            outputs = [p.communicate(timeout=600) for p in procs]
            stop.set()
            watcher.join()
            for p, (_out, err) in zip(procs, outputs, strict=True):
                assert p.returncode == 0, err[-3000:]
                assert "too many" not in err and "refused" not in err
            trials = optuna.load_study(study_name="eight", storage=f"{PG}/{optuna_db}").trials
            done = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
            assert cap <= len(done) <= cap + workers - 1, len(done)  # max_trials with N workers
            per_worker = [peak.get(f"worker{k}", 0) for k in range(workers)]
            server = peak.get("mlflow-server", 0)
            print(
                f"\nconnections: peak per worker {per_worker}, MLflow server {server}, total {total_peak[0]}"
            )
            pool, overflow = _server_pool()
            k, c = rdb.POOL_SIZE, 2 * (pool + overflow)  # README: a worker's pool; the server's two pools
            assert max(per_worker) <= k + rdb.POOL_OVERFLOW
            assert server <= c
            assert total_peak[0] <= k * workers + c


def _server_pool() -> tuple[int, int]:
    """`make mlflow-server`'s MLFLOW_POOL and MLFLOW_POOL_OVERFLOW defaults, read from the Makefile."""
    import re

    from servers import REPO

    text = (REPO / "Makefile").read_text()
    return tuple(
        int(re.search(rf"^{name} \?= (\d+)$", text, re.M).group(1))
        for name in ("MLFLOW_POOL", "MLFLOW_POOL_OVERFLOW")
    )


@pytest.mark.slow
def test_the_mlflow_server_takes_as_many_curves_at_once_as_its_pool_allows(tmp_path, monkeypatch):
    """MLflow's log-batch holds one pooled connection while it takes a second: P requests at once on a pool of P
    deadlock it until SQLAlchemy's 30 s pool timeout (a pool of 2 + 2 failed 9 of 12 such requests here; the
    CI failure of a stalled log-batch). `make mlflow-server`'s default pool takes the 15 workers README promises
    it, all finishing a trial at once, every curve answered at the first try (MLflow's client retries off)."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "120")
    at_once = 15  # README: "for up to 15 workers"
    with (
        databases("mlflowpool") as (db,),
        mlflow_server(f"{PG}/{db}", tmp_path / "art", log=tmp_path / "s.log") as url,
    ):
        client = MlflowClient(url)
        experiment = client.create_experiment("pool")
        runs = [client.create_run(experiment).info.run_id for _ in range(at_once)]
        barrier, errors = threading.Barrier(at_once), []

        def curve(run_id: str) -> None:
            barrier.wait()
            try:
                client.log_batch(run_id, metrics=[Metric("loss", 1.0 / (i + 1), 0, i) for i in range(900)])
            except Exception as exc:  # the pool's timeout comes back as an MLflow error
                errors.append(str(exc)[:300])

        threads = [threading.Thread(target=curve, args=(r,)) for r in runs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert all(len(client.get_metric_history(r, "loss")) == 900 for r in runs)


def test_a_new_trial_on_a_database_names_its_owner_in_the_write_that_creates_it(tmp_path):
    from pipeline.tuning import owner
    from pipeline.tuning.repair import OWNER_ATTR, claim
    from pipeline.tuning.storage import open_storage

    storage = open_storage(f"sqlite:///{tmp_path / 'o.db'}")
    study = optuna.create_study(storage=storage, study_name="owned")
    commits = []
    sqlalchemy.event.listen(rdb.unwrap(storage).engine, "commit", lambda conn: commits.append(1))
    trial = study.ask()
    asked = len(commits)
    claim(trial)  # already the owner, from the trial's creation: no write
    assert len(commits) == asked
    assert study.trials[0].user_attrs[OWNER_ATTR] == owner.me()


def _open_and_create(url: str) -> int:
    from pipeline.tuning.storage import open_storage

    return optuna.create_study(storage=open_storage(url), study_name="race", load_if_exists=True)._study_id


@pytest.mark.slow
def test_workers_opening_a_new_database_together_all_get_the_study():
    """Plain Optuna fails all but one of them here (PostgreSQL: duplicate key in pg_type_typname_nsp_index, 6 of
    6 tries with 4 processes); open_storage opens again and finds the tables the winner made."""
    import multiprocessing

    for _ in range(3):
        with databases("race") as (name,), multiprocessing.get_context("fork").Pool(4) as pool:
            ids = pool.map(_open_and_create, [f"{PG}/{name}"] * 4, chunksize=1)
            assert len(set(ids)) == 1


def test_a_storage_that_fails_to_open_leaves_no_connection_behind():
    """The 8-worker count above once found 4 connections of one worker: a lost table-creation race whose engine
    kept its 2 pooled connections until a garbage collection, while the retry opened 2 more. A schema Optuna
    cannot read fails every one of open_database's 4 attempts; none may leave a connection on the server."""
    import gc

    import psycopg

    from pipeline.tuning.storage import open_storage

    with databases("broken") as (name,):
        with psycopg.connect(f"{PG}/{name}", autocommit=True) as conn:
            conn.execute(
                "CREATE TABLE version_info (nonsense integer)"
            )  # Optuna's table name, not its columns
        gc.disable()  # what would close them otherwise: the collector, at a moment nobody chooses
        try:
            with pytest.raises(ConfigError, match="cannot open the Optuna storage"):
                open_storage(application(f"{PG}/{name}", "broken-open"))
            left = [a for _d, a in connections([name]) if a == "broken-open"]
        finally:
            gc.enable()
        assert left == []


def test_make_mlflow_server_refuses_an_open_host_without_allowed_hosts():
    from servers import REPO

    done = subprocess.run(
        ["make", "-s", "-o", ".venv/.installed", "mlflow-server", "MLFLOW_HOST=0.0.0.0"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "set MLFLOW_ALLOWED_HOSTS too" in done.stderr
