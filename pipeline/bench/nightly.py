"""A month of nights: ``python -m pipeline.bench.nightly [--nights 30] [--seconds 2]`` (``make bench-nightly``).

Runs the reference study (studies/diabetes-reference.yaml) as a nightly job would: one real ``bin/tune`` process
per night with ``--timeout SECONDS``, every night resuming the same Optuna journal and MLflow sqlite store (fresh
ones in a temporary folder). Prints, per night, the trials it finished and the median trial's time (from Optuna's
own start/complete stamps), then the last night's per-trial time against the first's (goal <= 1.5x) and the two
stores' sizes with MLflow's growth per trial. The ratio is taken within this one run, so it holds on any machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from pipeline.bench.__main__ import machine
from pipeline.config import DEFAULT_STUDY, ROOT


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def _trial_seconds(journal: Path, study: str, night_trials: set[int]) -> list[float]:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = JournalStorage(JournalFileBackend(str(journal)))
    trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    return [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in trials
        if t.number in night_trials and t.datetime_complete is not None and t.datetime_start is not None
    ]


def run(nights: int, seconds: float, study: Path = DEFAULT_STUDY) -> dict:
    import yaml

    name = yaml.safe_load(study.read_text(encoding="utf-8"))["name"]
    with tempfile.TemporaryDirectory(prefix="bench-nightly-") as tmp:
        root = Path(tmp)
        journal, mlruns = root / "optuna.journal", root / "mlruns"
        summaries = root / "tune.jsonl"
        env = {
            **os.environ,
            "LR_PIPELINE_STORAGE": str(journal),
            "MLFLOW_TRACKING_URI": f"sqlite:///{mlruns / 'mlflow.db'}",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
        rows, seen = [], 0
        print(f"{nights} nights of {study.name}, {seconds:g} s each ({machine()})")
        print(f"{'night':>5} {'trials':>6} {'in all':>6} {'median trial ms':>15} {'trials/s':>8}")
        for night in range(1, nights + 1):
            argv = [str(ROOT / "bin" / "tune"), str(study), "--timeout", str(seconds), "--no-progress"]
            argv += ["--summary-json", str(summaries)]
            done = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"night {night}: tune exited {done.returncode}:\n{done.stderr[-3000:]}")
            summary = json.loads(summaries.read_text().splitlines()[-1])
            total = sum(summary["counts"].values())
            new = set(range(seen, total))
            seen = total
            times = _trial_seconds(journal, name, new)
            row = {
                "night": night,
                "trials": summary["new_trials"],
                "total": total,
                "median_trial_s": statistics.median(times) if times else float("nan"),
                "trials_per_s": summary["new_trials"] / summary["elapsed"] if summary["elapsed"] else 0.0,
                "journal_bytes": _size(journal),
                "mlflow_bytes": _size(mlruns),
            }
            rows.append(row)
            print(
                f"{night:>5} {row['trials']:>6} {total:>6} {row['median_trial_s'] * 1000:>15.1f} "
                f"{row['trials_per_s']:>8.1f}"
            )
    # A night of a few seconds on a shared machine is noisy: compare the first and the last few nights' medians.
    k = max(1, min(3, len(rows) // 3))
    head, tail = rows[:k], rows[-k:]
    first, last = rows[0], rows[-1]
    grown = max(1, last["total"] - first["total"])
    result = {
        "nights": rows,
        "last_over_first_median_trial": statistics.median(r["median_trial_s"] for r in tail)
        / statistics.median(r["median_trial_s"] for r in head),
        "first_over_last_throughput": statistics.median(r["trials_per_s"] for r in head)
        / statistics.median(r["trials_per_s"] for r in tail),
        "journal_bytes": last["journal_bytes"],
        "mlflow_bytes": last["mlflow_bytes"],
        "journal_bytes_per_trial": (last["journal_bytes"] - first["journal_bytes"]) / grown,
        "mlflow_bytes_per_trial": (last["mlflow_bytes"] - first["mlflow_bytes"]) / grown,
        "trials": last["total"],
    }
    print(
        f"last {k} nights / first {k} (medians): median trial {result['last_over_first_median_trial']:.2f}x, "
        f"time per trial (1 / throughput) {result['first_over_last_throughput']:.2f}x  (goal <= 1.5x)"
    )
    print(
        f"stores after {result['trials']} trials: Optuna journal {result['journal_bytes'] / 1e6:.2f} MB, "
        f"MLflow {result['mlflow_bytes'] / 1e6:.2f} MB (sqlite + artifacts); growth per trial after night 1: "
        f"journal {result['journal_bytes_per_trial'] / 1e3:.1f} KB, MLflow {result['mlflow_bytes_per_trial'] / 1e3:.1f} KB"
    )
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.bench.nightly", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=2.0, help="each night's --timeout")
    parser.add_argument("--study", type=Path, default=DEFAULT_STUDY)
    args = parser.parse_args(argv)
    run(args.nights, args.seconds, args.study)


if __name__ == "__main__":
    main()
