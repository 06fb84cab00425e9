"""`make bench`'s workers part: the steady-state throughput it compares (worked out by hand on a study of known
trials), and both benchmarks end to end on a short run."""

from __future__ import annotations

import datetime
import math

import optuna
import pytest
from optuna.distributions import FloatDistribution

from pipeline.bench.workers import _steady_rate, bench_scaling, bench_storages
from pipeline.tuning.repair import OWNER_ATTR
from pipeline.tuning.storage import open_storage


def _trial(owner: str, start: float, end: float, epochs: int) -> optuna.trial.FrozenTrial:
    t0 = datetime.datetime(2026, 12, 4, 22, 0, 0)
    return optuna.trial.FrozenTrial(
        number=0,
        state=optuna.trial.TrialState.COMPLETE,
        value=1.0,
        values=None,
        datetime_start=t0 + datetime.timedelta(seconds=start),
        datetime_complete=t0 + datetime.timedelta(seconds=end),
        params={"x": 0.5},
        distributions={"x": FloatDistribution(0, 1)},
        user_attrs={OWNER_ATTR: owner, "epochs_run": epochs},
        system_attrs={},
        intermediate_values={},
        trial_id=0,
    )


def test_the_steady_rate_counts_only_the_window_where_every_worker_trains(tmp_path):
    """Worker a trains 0-10 s (two trials of 100 epochs, 5 s each); b starts late, 4-12 s (one trial of 80
    epochs in 8 s). Window 4-10 s (6 s): a contributes 100 * 1/5 + 100 = 120 epochs, b 80 * 6/8 = 60; 180 / 6."""
    storage = str(tmp_path / "rate.journal")
    study = optuna.create_study(storage=open_storage(storage), study_name="rate")
    for t in (_trial("a", 0, 5, 100), _trial("a", 5, 10, 100), _trial("b", 4, 12, 80)):
        study.add_trial(t)
    assert _steady_rate(storage, "rate") == pytest.approx(180 / 6)
    alone = optuna.create_study(storage=open_storage(storage), study_name="alone")
    for t in (_trial("a", 0, 5, 100), _trial("a", 5, 10, 50)):
        alone.add_trial(t)
    assert _steady_rate(storage, "alone") == pytest.approx(150 / 10)  # one worker: its whole loop


@pytest.mark.slow
def test_both_benchmarks_run_short_and_print_their_ratios(tmp_path, capsys):
    storages = bench_storages(tmp_path / "s", rounds=2, trials=1)
    assert storages["journal_ms"] > 0
    assert all(math.isfinite(storages[f"{k}_ratio"]) and storages[f"{k}_ratio"] > 0 for k in ("sqlite",))
    scaling = bench_scaling(tmp_path / "w", rounds=1, seconds=2.0)
    assert set(scaling) == {"own-steady", "own", "shared-steady", "shared", "numpy"}
    assert all(x > 0 for x in scaling.values())
    printed = capsys.readouterr().out
    assert "sqlite / journal" in printed and "(goal >= 1.7x)" in printed and "ceiling" in printed
