"""How fast the commands answer (see pipeline.bench), each in a fresh interpreter as a user starts it.

best         ``python -m pipeline best STUDY`` (and ``studies``) against ``python -c "import optuna"``, interleaved
             round by round: the ratio says what the pipeline adds to the one library the command needs (goal
             <= 1.5x).
first trial  ``python -m pipeline tune STUDY --trials 1`` on warm stores (the Optuna journal, the MLflow sqlite
             store and the study exist): seconds from starting the process to its first trial being created in
             the journal (goal <= 3 s), to that trial finished, and to the process's exit.

One function per command, so that another command's figure (``studies``...) is one more function beside these.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from pipeline.config import ROOT, STUDIES_DIR

REFERENCE = STUDIES_DIR / "diabetes-reference.yaml"
# Optuna's journal operations (optuna.storages.journal._storage.JournalOperation) that the first-trial clock reads.
_CREATE_TRIAL, _SET_TRIAL_STATE = 4, 6
_RUNNING = 0


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline", *args]


def _run(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def warm_stores(tmp: Path) -> tuple[str, str]:
    """A journal and an MLflow store holding the reference study with one trial, as after a first night."""
    storage, tracking = str(tmp / "optuna.journal"), f"sqlite:///{tmp / 'mlflow.db'}"
    tune = _cli("tune", str(REFERENCE), "--trials", "1", "--no-progress")
    subprocess.run(
        [*tune, "--storage", storage, "--tracking-uri", tracking],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return storage, tracking


def _against_import_optuna(label: str, argv: list[str], repeats: int) -> dict[str, float]:
    """Median of per-round ratios command / `import optuna`, both in fresh interpreters."""
    optuna_only = [sys.executable, "-c", "import optuna"]
    _run(argv), _run(optuna_only)  # warm the OS file cache
    rounds = [(_run(argv), _run(optuna_only)) for _ in range(repeats)]
    t_command = statistics.median(r[0] for r in rounds)
    t_optuna = statistics.median(r[1] for r in rounds)
    ratio = statistics.median(r[0] / r[1] for r in rounds)
    print(f"  python -c 'import optuna'          {t_optuna * 1e3:8.0f} ms")
    print(f"  {label:<34} {t_command * 1e3:8.0f} ms   / import optuna = {ratio:.2f}x  (goal <= 1.5x)")
    return {"command_s": t_command, "import_optuna_s": t_optuna, "ratio": ratio}


def bench_best(storage: str, repeats: int = 9) -> dict[str, float]:
    """`best` against `import optuna` (what the one library it needs costs), then `studies` the same way."""
    print(f"commands: fresh interpreters, median of {repeats} interleaved rounds")
    best = _against_import_optuna(
        "python -m pipeline best STUDY", _cli("best", str(REFERENCE), "--storage", storage), repeats
    )
    studies = _against_import_optuna(
        "python -m pipeline studies", _cli("studies", "--storage", storage), repeats
    )
    return {"best_s": best["command_s"], "import_optuna_s": best["import_optuna_s"], "ratio": best["ratio"],
            "studies_s": studies["command_s"], "studies_ratio": studies["ratio"]}  # fmt: skip


def _journal_events(path: Path, offset: int) -> list[dict]:
    with open(path, "rb") as handle:
        handle.seek(offset)
        lines = handle.read().split(b"\n")
    events = []
    for line in lines[:-1]:  # the last piece may be a record still being written
        try:
            events.append(json.loads(line))
        except ValueError:
            pass
    return events


def _one_tune(storage: str, tracking: str) -> tuple[float, float, float]:
    """Seconds from starting `tune --trials 1` to the trial's creation, to its end, and to the process's exit."""
    journal = Path(storage)
    offset = journal.stat().st_size
    argv = _cli("tune", str(REFERENCE), "--trials", "1", "--no-progress", "--storage", storage)
    start = time.perf_counter()
    process = subprocess.Popen(
        [*argv, "--tracking-uri", tracking], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    created = finished = None
    while finished is None:
        events = _journal_events(journal, offset)
        now = time.perf_counter()
        if created is None and any(e.get("op_code") == _CREATE_TRIAL for e in events):
            created = now
        if any(e.get("op_code") == _SET_TRIAL_STATE and e.get("state") != _RUNNING for e in events):
            finished = now
        if process.poll() is not None and finished is None:
            raise RuntimeError(f"tune exited with {process.returncode} before finishing a trial")
        time.sleep(0.005)
    process.wait()
    return created - start, finished - start, time.perf_counter() - start


def bench_first_trial(storage: str, tracking: str, repeats: int = 5) -> dict[str, float]:
    """Medians of :func:`_one_tune` over ``repeats`` runs on warm stores."""
    runs = [_one_tune(storage, tracking) for _ in range(repeats)]
    created, finished, exited = (statistics.median(r[i] for r in runs) for i in range(3))
    print(f"  tune --trials 1 on warm stores, median of {repeats} runs (goal: first trial <= 3 s)")
    print(f"    start -> first trial created     {created:8.2f} s")
    print(f"    start -> first trial finished    {finished:8.2f} s")
    print(f"    start -> exit                    {exited:8.2f} s")
    return {"created_s": created, "finished_s": finished, "exit_s": exited}
