"""The tuning benchmark: the same study three ways, in one process, on one machine (see pipeline.bench).

(a) this pipeline: journal-file Optuna storage, a thinned curve reported to Optuna, every trial's full per-epoch
    curve sent to MLflow (sqlite) in one batch;
(b) the same study as the libraries' docs suggest: Optuna on SQLite with ``trial.report`` + ``should_prune`` every
    epoch, ``mlflow.log_metric`` every epoch for each curve, one ``mlflow.start_run`` per trial;
(c) Optuna in memory, no tracking: the cost of sampling and training alone.
Stores are created before the clock starts (a store is created once per machine, not once per study), and (b) runs
fewer trials because it is slow; every figure is per trial, so the ratios compare like with like. (b)'s first
trials are TPE's random start-up trials, many of which diverge within a few epochs, so its per-trial cost is, if
anything, underestimated and the ratio a/b conservative.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import optuna

from pipeline import config
from pipeline.core.training import DIVERGED
from pipeline.study.experiment import load_study_data, run_settings
from pipeline.study.loader import load_study
from pipeline.tuning.objective import Objective, _OptunaSuggester
from pipeline.tuning.run import _pruner, _sampler, run_study


def _docs_style(spec, n_trials: int, storage_url: str, tracking_uri: str) -> float:
    """(b): the objective written the way Optuna's and MLflow's tutorials write it. Returns seconds."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(spec.name)
    data = load_study_data(spec)

    def objective(trial: optuna.Trial) -> float:
        settings = spec.search.sample(_OptunaSuggester(trial))
        with mlflow.start_run(run_name=f"trial-{trial.number}"):
            mlflow.log_params(settings.as_params())

            def hook(record) -> bool:
                value = record.val_loss
                trial.report(value, record.epoch)
                mlflow.log_metric("train_loss", record.train_loss, step=record.epoch)
                mlflow.log_metric("val_loss", record.val_loss, step=record.epoch)
                mlflow.log_metric("lr", record.lr, step=record.epoch)
                return trial.should_prune()

            result = run_settings(settings, spec, data, hook=hook)
            if result.status == DIVERGED:
                raise optuna.TrialPruned()
            return result.final_loss

    study = optuna.create_study(
        storage=storage_url, study_name=spec.name, sampler=_sampler(spec, spec.seed), pruner=_pruner(spec)
    )
    start = time.perf_counter()
    study.optimize(objective, n_trials=n_trials)
    return time.perf_counter() - start


def _in_memory(spec, n_trials: int) -> float:
    """(c): the same objective as (a), in-memory storage, no MLflow. Returns seconds."""
    data = load_study_data(spec)
    study = optuna.create_study(study_name=spec.name, sampler=_sampler(spec, spec.seed), pruner=_pruner(spec))
    objective = Objective(spec, data, tracker=None, prune_underperforming=spec.pruner.name != "none")
    start = time.perf_counter()
    study.optimize(objective, n_trials=n_trials, catch=(Exception,))
    return time.perf_counter() - start


def _warm_mlflow_store(uri: str, experiment: str) -> None:
    from pipeline.tracking import Tracker

    Tracker(experiment, tracking_uri=uri).close()  # runs the ~68 schema migrations before the clock starts


def bench_pipeline(tmp: Path, *, trials: int, baseline_trials: int, study_file: Path | None = None) -> dict:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    spec = load_study(study_file or config.STUDIES_DIR / "diabetes-reference.yaml")
    spec = dataclasses.replace(spec, budget=dataclasses.replace(spec.budget, trials=trials, timeout=None))

    uri_a, uri_b = f"sqlite:///{tmp / 'a-mlflow.db'}", f"sqlite:///{tmp / 'b-mlflow.db'}"
    _warm_mlflow_store(uri_a, spec.name)
    _warm_mlflow_store(uri_b, spec.name + "-warm")
    optuna.create_study(storage=f"sqlite:///{tmp / 'b-optuna.db'}", study_name="warm")  # creates the schema

    summary = run_study(spec, storage=str(tmp / "a.journal"), tracking_uri=uri_a, progress=False)
    t_a = summary.elapsed
    t_b = _docs_style(spec, baseline_trials, f"sqlite:///{tmp / 'b-optuna.db'}", uri_b)
    t_c = _in_memory(spec, trials)

    per_a, per_b, per_c = t_a / trials, t_b / baseline_trials, t_c / trials
    print(f"pipeline: {spec.name} ({spec.training.epochs} epochs per trial), one process")
    print(
        f"  (a) this pipeline: journal + full curves in MLflow  {trials:4d} trials  {t_a:7.1f} s"
        f"  {1 / per_a:7.1f} trials/s  {per_a * 1e3:8.1f} ms/trial"
    )
    print(
        f"  (b) docs style: SQLite + report/log every epoch     {baseline_trials:4d} trials  {t_b:7.1f} s"
        f"  {1 / per_b:7.1f} trials/s  {per_b * 1e3:8.1f} ms/trial"
    )
    print(
        f"  (c) in memory, no tracking                          {trials:4d} trials  {t_c:7.1f} s"
        f"  {1 / per_c:7.1f} trials/s  {per_c * 1e3:8.1f} ms/trial"
    )
    print(
        f"  a/b throughput = {per_b / per_a:.1f}x (goal >= 20x);  a/c = {per_c / per_a:.2f}x "
        f"(the price of persistence and tracking)"
    )
    print(f"  (a) outcome: {summary.counts}")
    return {"a_ms": per_a * 1e3, "b_ms": per_b * 1e3, "c_ms": per_c * 1e3, "a_over_b": per_b / per_a}
