"""pipeline/bench/pipeline.py: the tuning benchmark, (a) this pipeline, (b) the docs' way, (c) in memory, on a tiny
study (3 trials of 5 epochs): it returns per-trial milliseconds and the a/b ratio, consistent with each other, and
leaves every store in its temporary folder."""

from __future__ import annotations

import pytest
import yaml

from pipeline.bench.pipeline import bench_pipeline


@pytest.mark.slow
def test_the_three_ways_return_per_trial_costs_and_their_ratio(tmp_path, capsys):
    study = tmp_path / "tiny.yaml"
    study.write_text(
        yaml.safe_dump(
            {
                "name": "tiny",
                "data": {"dataset": "diabetes"},
                "model": {"name": "linear"},
                "training": {"epochs": 5},
                "search": {"lr": {"low": 1.0e-3, "high": 0.1}},
                "budget": {"trials": 3},
                "sampler": {"name": "random"},
            }
        )
    )
    figures = bench_pipeline(tmp_path, trials=3, baseline_trials=2, study_file=study)
    assert set(figures) == {"a_ms", "b_ms", "c_ms", "a_over_b"}
    assert all(v > 0 for v in figures.values())
    assert figures["a_over_b"] == pytest.approx(figures["b_ms"] / figures["a_ms"])
    assert {p.name for p in tmp_path.iterdir()} >= {"a.journal", "a-mlflow.db", "b-mlflow.db", "b-optuna.db"}
    out = capsys.readouterr().out
    assert "(a) this pipeline" in out and "a/b throughput" in out
