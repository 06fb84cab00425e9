"""Workers and database storages (``python -m pipeline.bench workers``; part of ``make bench``).

storages  studies/diabetes-reference.yaml through this pipeline (every trial's full curve in a local MLflow sqlite
          store) on a journal file, SQLite and PostgreSQL, in interleaved rounds of the same number of trials (each
          storage resumes its own study, same seed, so every storage runs the same trials): per-trial time and the
          ratio database / journal per round, median over rounds (each round in a rotated order). PostgreSQL is a throwaway database on
          ``$BENCH_POSTGRES`` (default postgresql://postgres@127.0.0.1), skipped when no server answers.
scaling   studies/moons-mlp.yaml (a CPU-bound MLP), 1 worker against 2 worker processes sharing a journal file and an
          MLflow sqlite store, fresh study each time, alternating; throughput in training epochs per second of wall
          time (pruned and diverged trials run fewer epochs, so trials/s alone would reward pruning luck). The same
          rounds time pure NumPy steps of the MLP's sizes in 1 and 2 processes: the ceiling this machine offers
          two processes at that moment (a shared VM's varies between about 1.7x and 2.3x from minute to minute).
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import statistics
import time
import uuid
from pathlib import Path

import optuna

from pipeline import config
from pipeline.study.loader import load_study

PG_DEFAULT = "postgresql://postgres@127.0.0.1"


def _spec(path: Path, name: str, trials: int, **changes):
    spec = load_study(path)
    return dataclasses.replace(
        spec, name=name, budget=dataclasses.replace(spec.budget, trials=trials, timeout=None), **changes
    )


@dataclasses.dataclass
class _Postgres:
    server: str
    name: str = dataclasses.field(default_factory=lambda: f"lr_bench_{uuid.uuid4().hex[:10]}")

    @property
    def url(self) -> str:
        return f"{self.server}/{self.name}"

    def create(self) -> str | None:
        try:
            import psycopg

            with psycopg.connect(f"{self.server}/postgres", autocommit=True, connect_timeout=3) as conn:
                conn.execute(f'CREATE DATABASE "{self.name}"')
        except Exception as exc:  # no server, no driver: the bench says so and goes on
            return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        return None

    def drop(self) -> None:
        import psycopg

        with psycopg.connect(f"{self.server}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def bench_storages(tmp: Path, *, rounds: int = 12, trials: int = 4) -> dict:
    from pipeline.tracking import Tracker
    from pipeline.tuning.run import run_study
    from pipeline.tuning.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_file = config.STUDIES_DIR / "diabetes-reference.yaml"
    storages = {"journal": str(tmp / "ref.journal"), "sqlite": f"sqlite:///{tmp / 'ref.db'}"}
    pg = _Postgres(os.environ.get("BENCH_POSTGRES", PG_DEFAULT))
    problem = pg.create()
    if problem is None:
        storages["postgresql"] = pg.url
    per_trial: dict[str, list[float]] = {k: [] for k in storages}
    try:
        uri = f"sqlite:///{tmp / 'ref-mlflow.db'}"
        for kind, url in storages.items():  # stores and schemas made before the clock starts
            Tracker(f"ref-{kind}", tracking_uri=uri).close()
            optuna.create_study(storage=open_storage(url), study_name="warm", load_if_exists=True)
        kinds = list(storages)
        for r in range(rounds):
            # Each round in another order: on a shared VM, whichever runs first or last in a round is otherwise
            # always the one a burst of other load lands on.
            for kind in kinds[r % len(kinds) :] + kinds[: r % len(kinds)]:
                url = storages[kind]
                spec = _spec(study_file, f"ref-{kind}", trials)
                summary = run_study(spec, storage=url, tracking_uri=uri, progress=False)
                per_trial[kind].append(summary.elapsed / max(summary.new_trials, 1))
    finally:
        if problem is None:
            pg.drop()
    print(
        f"storages: diabetes-reference ({trials} trials x {rounds} interleaved rounds per storage, full curves "
        "in MLflow sqlite), median per trial"
    )
    journal = per_trial["journal"]
    out = {"journal_ms": statistics.median(journal) * 1e3}
    print(f"  journal file                   {out['journal_ms']:7.1f} ms/trial")
    for kind in storages:
        if kind == "journal":
            continue
        ratio = statistics.median(d / j for d, j in zip(per_trial[kind], journal, strict=True))
        out[f"{kind}_ms"], out[f"{kind}_ratio"] = statistics.median(per_trial[kind]) * 1e3, ratio
        print(
            f"  {kind:<12}                   {out[f'{kind}_ms']:7.1f} ms/trial   {kind} / journal = {ratio:.2f}x "
            "(goal <= 1.2x)"
        )
    if problem is not None:
        print(f"  postgresql                     skipped: no server at {pg.server} ({problem})")
    return out


def _worker(args) -> tuple[float, float, int]:
    """One worker process: (optimize start, optimize end, trials) in wall-clock seconds."""
    study_file, name, seconds, worker, storage, uri, barrier = args
    from pipeline.tuning.run import run_study

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_study(Path(study_file))
    spec = dataclasses.replace(
        spec, name=name, budget=dataclasses.replace(spec.budget, trials=None, timeout=seconds)
    )
    barrier.wait()
    summary = run_study(spec, storage=storage, tracking_uri=uri, progress=False, worker=worker)
    end = time.time()
    return end - summary.elapsed, end, summary.new_trials


def _numpy_work(args) -> int:
    """The machine's own ceiling: small NumPy steps (the MLP's sizes) for ``seconds`` after the barrier; steps done."""
    import numpy as np

    seconds, barrier = args
    rng = np.random.default_rng(0)
    a, w = rng.normal(size=(32, 16)), rng.normal(size=(16, 16)) / 4
    barrier.wait()
    end, steps = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        for _ in range(100):
            a = np.tanh(a @ w) + 0.1
        steps += 100
    return steps


def _steady_rate(storage: str, name: str) -> float:
    """Epochs per second while every worker was in its loop: the window from the last worker's first trial start
    to the first worker's last trial end (workers told apart by their trials' owner attribute), each trial's
    epochs counted in proportion to the part of it inside the window. A short run's staggered start-ups (one
    worker importing and opening its stores while the other already trains alone) are left out, as they are in
    a night-long run."""
    from pipeline.tuning.repair import OWNER_ATTR
    from pipeline.tuning.storage import open_storage

    trials = [
        t
        for t in optuna.load_study(study_name=name, storage=open_storage(storage)).get_trials(deepcopy=False)
        if t.datetime_start is not None and t.datetime_complete is not None
    ]
    by_owner: dict[str, list] = {}
    for t in trials:
        by_owner.setdefault(str(t.user_attrs.get(OWNER_ATTR)), []).append(t)
    start = max(min(t.datetime_start for t in ts) for ts in by_owner.values())
    end = min(max(t.datetime_complete for t in ts) for ts in by_owner.values())
    window = (end - start).total_seconds()
    if window <= 0:
        return float("nan")
    epochs = 0.0
    for t in trials:
        length = (t.datetime_complete - t.datetime_start).total_seconds()
        inside = (min(end, t.datetime_complete) - max(start, t.datetime_start)).total_seconds()
        if inside > 0 and length > 0:
            epochs += int(t.user_attrs.get("epochs_run", 0)) * inside / length
    return epochs / window


def _epochs(storage: str, name: str) -> int:
    from pipeline.tuning.storage import open_storage

    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    return sum(int(t.user_attrs.get("epochs_run", 0)) for t in study.get_trials(deepcopy=False))


def bench_scaling(tmp: Path, *, rounds: int = 3, seconds: float = 6.0) -> dict:
    """Each worker runs for ``seconds`` (the run's deadline cuts the last trial at an epoch), so the workers'
    loops overlap however long their start-up takes. Throughput: epochs per second while all the workers train
    (:func:`_steady_rate`, the goal's measure), and epochs trained / wall time of the whole loops."""
    from pipeline.tracking import Tracker

    study_file = str(config.STUDIES_DIR / "moons-mlp.yaml")
    context = multiprocessing.get_context("spawn")
    layouts = {
        # each worker's MLflow store its own, as when the tracking server runs on another machine
        "own": lambda k: f"sqlite:///{tmp / f'scale-mlflow-{k}.db'}",
        # one sqlite file for both workers on one machine: its write lock serialises their curves
        "shared": lambda k: f"sqlite:///{tmp / 'scale-mlflow-shared.db'}",
    }
    for layout in layouts.values():
        for k in range(2):
            Tracker("warm", tracking_uri=layout(k)).close()
    rates: dict[tuple[str, int], list[float]] = {}
    for r in range(rounds):
        for n in (
            1,
            2,
        ):  # the same alternation for pure NumPy work: what this machine gives two processes now
            with context.Manager() as manager, context.Pool(n) as pool:
                barrier = manager.Barrier(n)
                steps = pool.map(_numpy_work, [(seconds / 2, barrier)] * n)
            rates.setdefault(("numpy", n), []).append(sum(steps) / (seconds / 2))
        for label, layout in layouts.items():
            for n in (1, 2):
                name, storage = f"scale-{label}-{r}-{n}", str(tmp / f"scale-{label}-{r}-{n}.journal")
                with context.Manager() as manager, context.Pool(n) as pool:
                    barrier = manager.Barrier(n)
                    jobs = [(study_file, name, seconds, k, storage, layout(k), barrier) for k in range(n)]
                    done = pool.map(_worker, jobs)
                wall = max(e for _s, e, _n in done) - min(s for s, _e, _n in done)
                rates.setdefault((label, n), []).append(_epochs(storage, name) / wall)
                rates.setdefault((f"{label}-steady", n), []).append(_steady_rate(storage, name))
    print(
        f"scaling: moons-mlp, 1 against 2 worker processes on a shared journal file, {seconds:g} s each, "
        f"{rounds} alternating rounds, {os.cpu_count()} cores"
    )
    out = {}
    lines = (
        ("own-steady", "MLflow store per worker", " (goal >= 1.7x)"),
        ("own", "  whole runs, start-ups in", ""),
        ("shared-steady", "one MLflow sqlite store", ""),
        ("shared", "  whole runs, start-ups in", ""),
    )
    for label, text, goal in lines:
        one, two = (statistics.median(rates[(label, n)]) for n in (1, 2))
        each = [b / a for a, b in zip(rates[(label, 1)], rates[(label, 2)], strict=True)]
        out[label] = ratio = statistics.median(each)
        rounds_text = ", ".join(f"{x:.2f}" for x in each)
        print(
            f"  {text:<26} 1 worker {one:6.0f} epochs/s, 2 workers {two:6.0f} epochs/s: {ratio:.2f}x{goal}"
            f" (rounds {rounds_text})"
        )
    each = [b / a for a, b in zip(rates[("numpy", 1)], rates[("numpy", 2)], strict=True)]
    out["numpy"] = ceiling = statistics.median(each)
    print(
        f"  {'pure NumPy steps':<26} 1 process against 2, same rounds: {ceiling:.2f}x (this machine's ceiling now;"
        f" rounds {', '.join(f'{x:.2f}' for x in each)})"
    )
    return out
