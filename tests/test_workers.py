"""Several worker processes sharing one study: a journal file on one machine, PostgreSQL across machines.

Each worker is a real `python -m pipeline tune` process started at the same time as the others; the oracle is
the storage read back with Optuna and the MLflow store read back with MlflowClient.
"""

from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pytest
from conftest import study_yaml
from mlflow import MlflowClient
from servers import create_database, drop_database

pytestmark = pytest.mark.slow  # real processes, Optuna and MLflow end to end

WORKERS, TRIALS_EACH, EPOCHS = 2, 6, 40
PG = "postgresql://postgres@127.0.0.1"


def _postgres_database():
    """A fresh database on the local PostgreSQL server, or skip when there is none."""
    return create_database("test")


_drop = drop_database


@pytest.fixture(params=["journal", "postgresql"])
def storage(request, tmp_path):
    if request.param == "journal":
        yield str(tmp_path / "shared.journal")
        return
    name = _postgres_database()
    yield f"{PG}/{name}"
    _drop(name)


def test_parallel_workers_share_one_study_without_duplicates(storage, tmp_path):
    study_file = study_yaml(
        "diabetes-reference.yaml",
        tmp_path / "shared.yaml",
        name="shared",
        training={"epochs": EPOCHS},
        budget={"trials": TRIALS_EACH},
    )
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline",
                "tune",
                str(study_file),
                "--storage",
                storage,
                "--tracking-uri",
                tracking,
                "--worker",
                str(k),
                "--no-progress",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for k in range(WORKERS)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err
        assert f"{TRIALS_EACH} new trial(s)" in out  # each counts its own trials, not its neighbour's

    if "://" in storage:
        backend = optuna.storages.RDBStorage(storage)
    else:
        backend = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
    assert optuna.get_all_study_names(backend) == ["shared"]
    trials = optuna.load_study(study_name="shared", storage=backend).trials
    assert len(trials) == WORKERS * TRIALS_EACH
    assert sorted(t.number for t in trials) == list(range(WORKERS * TRIALS_EACH))
    assert all(t.state.is_finished() and t.state != optuna.trial.TrialState.FAIL for t in trials)
    # workers started together must not propose the same trials (their sampler seeds differ by worker index)
    proposals = {(t.params["lr"], t.params["exponential.decay_rate"]) for t in trials}
    assert len(proposals) == len(trials)

    client = MlflowClient(tracking)
    (experiment,) = [e for e in client.search_experiments() if e.name == "shared"]
    runs = client.search_runs([experiment.experiment_id], "attributes.run_name != 'study'", max_results=100)
    assert sorted(r.info.run_id for r in runs) == sorted(t.user_attrs["mlflow_run_id"] for t in trials)
    # Workers starting together still nest every trial under one study run.
    (parent,) = client.search_runs([experiment.experiment_id], "attributes.run_name = 'study'")
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parent.info.run_id}


def test_workers_that_start_together_sample_different_trials_and_worker_0_is_reproducible():
    from pipeline.tuning.run import sampler_seed

    def first_lrs(seed):
        sampler = optuna.samplers.TPESampler(seed=seed)
        study = optuna.create_study(sampler=sampler)
        return [
            study.ask({"lr": optuna.distributions.FloatDistribution(1e-5, 10, log=True)}).params["lr"]
            for _ in range(5)
        ]

    # two workers that both find an empty study
    a, b = first_lrs(sampler_seed(0, 0, worker=0)), first_lrs(sampler_seed(0, 0, worker=1))
    assert not set(a) & set(b)
    assert first_lrs(sampler_seed(0, 0)) == a  # one worker, same study file: same trials
    assert sampler_seed(0, 40) != sampler_seed(0, 0)  # a resumed study does not replay its first night


def test_a_killed_nightly_job_leaves_no_running_trial_or_run(tmp_path):
    """A scheduler that stops `tune` (SIGTERM) must not leave a trial RUNNING in Optuna or a run RUNNING in
    MLflow: the next night's resume would count it as in progress forever. The running trial finishes."""
    import signal
    import time

    study_file = study_yaml(
        "moons-mlp.yaml", tmp_path / "night.yaml", name="night", budget={"trials": 10_000}, pruner=None
    )
    journal, tracking = tmp_path / "night.journal", f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline",
            "tune",
            str(study_file),
            "--storage",
            str(journal),
            "--tracking-uri",
            tracking,
            "--no-progress",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    backend = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until the job is mid-study: two trials done, a third started
        if journal.exists() and "night" in optuna.get_all_study_names(backend):
            trials = optuna.load_study(study_name="night", storage=backend).trials
            if sum(t.state.is_finished() for t in trials) >= 2:
                break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the study never got going")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)

    assert proc.returncode == 128 + signal.SIGTERM, err
    assert f"stopped       by signal {int(signal.SIGTERM)}" in out
    trials = optuna.load_study(study_name="night", storage=backend).trials
    assert trials and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    client = MlflowClient(tracking)
    (experiment,) = [e for e in client.search_experiments() if e.name == "night"]
    runs = client.search_runs([experiment.experiment_id], "attributes.run_name != 'study'")
    assert len(runs) == len(trials) and {r.info.status for r in runs} == {"FINISHED"}


def test_resuming_with_fail_stale_after_fails_what_a_killed_worker_left_running(tmp_path):
    """A worker killed by SIGKILL or a reboot leaves its trial RUNNING (a journal file has no heartbeat); the
    next night's `tune --fail-stale-after H` marks it FAIL, with its MLflow run, and leaves fresh ones alone."""
    import time

    from pipeline import cli
    from pipeline.tracking import Tracker

    study_file = study_yaml(
        "diabetes-reference.yaml",
        tmp_path / "s.yaml",
        name="stale",
        training={"epochs": 20},
        budget={"trials": 2},
    )
    journal, tracking = str(tmp_path / "s.journal"), f"sqlite:///{tmp_path / 'mlflow.db'}"
    backend = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal))
    # What a killed worker leaves: a RUNNING trial whose MLflow run is RUNNING too.
    study = optuna.create_study(storage=backend, study_name="stale")
    orphan = study.ask()
    with Tracker("stale", tracking_uri=tracking) as tracker:
        run_id = tracker.start_trial(orphan.number, {"lr": 0.1}, {})
    client = MlflowClient(tracking)
    client.update_run(run_id, status="RUNNING")  # the tracker's close() failed it: undo that
    assert client.get_run(run_id).info.status == "RUNNING"
    orphan.set_user_attr("mlflow_run_id", run_id)
    time.sleep(1.0)

    argv = ["tune", str(study_file), "--storage", journal, "--tracking-uri", tracking, "--no-progress"]
    assert cli.main([*argv, "--fail-stale-after", "1000"]) == 0  # an hour-scale threshold: not stale yet
    assert optuna.load_study(study_name="stale", storage=backend).trials[0].state.name == "RUNNING"
    assert client.get_run(run_id).info.status == "RUNNING"

    assert cli.main([*argv, "--fail-stale-after", str(0.5 / 3600)]) == 0  # half a second
    trials = optuna.load_study(study_name="stale", storage=backend).trials
    assert trials[0].state == optuna.trial.TrialState.FAIL
    assert len(trials) == 1 + 2 + 2 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials[1:])
    assert client.get_run(run_id).info.status == "FAILED"
