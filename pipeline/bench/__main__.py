"""Benchmarks: ``python -m pipeline.bench [core|pipeline|all]`` (``make bench``).

Every figure is printed as a ratio against a baseline run in the same process, with medians and the machine, so
the numbers mean something on any machine; nothing here is a pass/fail test.

core      300-epoch full-batch linear regression on diabetes through ``train`` against the same gradient descent
          written inline in NumPy (what the abstractions cost), and against a per-sample Python loop.
pipeline  studies/diabetes-reference.yaml, 100 trials: (a) this pipeline (journal file storage, every trial's full
          curve in MLflow), (b) the same study written as the libraries' docs suggest (Optuna on SQLite with
          trial.report every epoch, mlflow.log_metric every epoch, one MLflow run per trial), (c) Optuna in memory
          with no tracking. Prints trials/s and the ratios a/b and a/c.
commands  `best` against `python -c "import optuna"`, and `tune` from start to its first trial on warm stores
          (pipeline/bench/commands.py).
workers   the reference study's per-trial time on SQLite and PostgreSQL against a journal file, and 1 against 2
          workers on the MLP study (pipeline/bench/workers.py).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, NumPy {np.__version__}"


def _interleaved(fns, repeats: int) -> list[list[float]]:
    """Time each of ``fns`` once per round, ``repeats`` rounds: a noisy neighbour slows every contender of a round
    alike, so per-round ratios are steadier than ratios of separately measured medians."""
    for fn in fns:
        fn()  # warm-up
    rounds = []
    for _ in range(repeats):
        times = []
        for fn in fns:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        rounds.append(times)
    return rounds


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ----------------------------------------------------------------------------------------------- core


def bench_core(repeats: int = 100) -> dict[str, float]:
    from pipeline.core.models import LinearRegression
    from pipeline.core.optimizers import SGD
    from pipeline.core.schedules import constant
    from pipeline.core.training import train
    from pipeline.datasets import load_dataset

    data = load_dataset("diabetes", seed=0)
    X, y, Xv, yv = data.X_train, data.y_train, data.X_val, data.y_val
    epochs, lr = 300, 0.05

    def pipeline_loop():
        train(LinearRegression(data.n_features), SGD(), constant(lr), data, epochs=epochs)

    def bare_numpy():
        # The same work written inline, the way a tutorial would: loss + gradient, update, validation loss.
        n, w, b = len(y), np.zeros(X.shape[1]), 0.0
        for _ in range(epochs):
            r = X @ w + b - y
            _loss = r @ r / n
            w -= lr * (2 / n) * (X.T @ r)
            b -= lr * 2 * r.mean()
            rv = Xv @ w + b - yv
            _val = rv @ rv / len(yv)

    def per_sample_python():
        # What "no Python loop over samples" avoids: the full-batch gradient accumulated one row at a time.
        n, w, b = len(y), [0.0] * X.shape[1], 0.0
        rows, d = X.tolist(), X.shape[1]
        for _ in range(epochs // 10):  # 10x fewer epochs, scaled back below: it is that slow
            gw, gb = [0.0] * d, 0.0
            for xi, yi in zip(rows, y.tolist(), strict=True):
                r = sum(wj * xj for wj, xj in zip(w, xi, strict=True)) + b - yi
                for j in range(d):
                    gw[j] += 2 * r * xi[j] / n
                gb += 2 * r / n
            w = [wj - lr * g for wj, g in zip(w, gw, strict=True)]
            b -= lr * gb

    rounds = _interleaved([pipeline_loop, bare_numpy], repeats)
    t_pipe = statistics.median(r[0] for r in rounds)
    t_bare = statistics.median(r[1] for r in rounds)
    ratio = statistics.median(r[0] / r[1] for r in rounds)
    t_slow = _median_time(per_sample_python, max(3, repeats // 10)) * 10
    print(
        f"core: 300-epoch full-batch linear regression on diabetes ({len(y)} x {X.shape[1]}), "
        f"median of {repeats} interleaved rounds"
    )
    print(f"  train() (this pipeline)          {t_pipe * 1e3:8.2f} ms")
    print(
        f"  hand-written NumPy GD loop       {t_bare * 1e3:8.2f} ms   train() / hand-written = {ratio:.2f}x"
    )
    print(
        f"  per-sample Python loop           {t_slow * 1e3:8.2f} ms   per-sample / train() = {t_slow / t_pipe:.0f}x"
    )
    return {
        "pipeline_ms": t_pipe * 1e3,
        "inline_ms": t_bare * 1e3,
        "ratio": ratio,
        "per_sample_ms": t_slow * 1e3,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "what", nargs="?", default="all", choices=["core", "pipeline", "commands", "workers", "all"]
    )
    parser.add_argument("--trials", type=int, default=100, help="trials for (a) and (c) (default 100)")
    parser.add_argument(
        "--baseline-trials",
        type=int,
        default=10,
        help="trials for (b), the slow docs-style baseline (default 10)",
    )
    args = parser.parse_args(argv)
    print(f"machine: {machine()}")
    if args.what in ("core", "all"):
        bench_core()
    if args.what in ("commands", "all"):
        from pipeline.bench.commands import bench_best, bench_first_trial, warm_stores

        with tempfile.TemporaryDirectory(prefix="lr-bench-") as tmp:
            storage, tracking = warm_stores(Path(tmp))
            bench_best(storage)
            bench_first_trial(storage, tracking)
    if args.what in ("workers", "all"):
        from pipeline.bench.workers import bench_scaling, bench_storages

        with tempfile.TemporaryDirectory(prefix="lr-bench-") as tmp:
            bench_storages(Path(tmp))
            bench_scaling(Path(tmp))
    if args.what in ("pipeline", "all"):
        from pipeline.bench.pipeline import bench_pipeline

        with tempfile.TemporaryDirectory(prefix="lr-bench-") as tmp:
            bench_pipeline(Path(tmp), trials=args.trials, baseline_trials=args.baseline_trials)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
