"""pipeline/bench/commands.py: how fast commands answer, in fresh interpreters. The journal reader that times the
first trial is checked on a hand-written journal; the benchmarks themselves run once each on warm stores (slow:
a real `tune`, `best` and `import optuna`), and return their documented figures, consistent with each other."""

from __future__ import annotations

import json

import pytest

from pipeline.bench import commands


def test_journal_events_read_from_an_offset_and_skip_a_record_being_written(tmp_path):
    journal = tmp_path / "optuna.journal"
    old = json.dumps({"op_code": 0, "worker_id": "w"}) + "\n"
    records = [{"op_code": 4, "study_id": 0}, {"op_code": 6, "trial_id": 0, "state": 1}]
    torn = '{"op_code": 6, "tri'  # a record still being appended: no newline yet
    journal.write_text(old + "".join(json.dumps(r) + "\n" for r in records) + torn)
    assert commands._journal_events(journal, len(old)) == records
    assert commands._journal_events(journal, 0)[0] == {"op_code": 0, "worker_id": "w"}


@pytest.mark.slow
def test_best_and_first_trial_return_their_figures(tmp_path, capsys):
    storage, tracking = commands.warm_stores(tmp_path)
    best = commands.bench_best(storage, repeats=1)
    assert {"best_s", "import_optuna_s", "ratio"} <= set(best)
    assert best["ratio"] == pytest.approx(
        best["best_s"] / best["import_optuna_s"]
    )  # one round: its own ratio
    assert best["best_s"] > 0 and best["import_optuna_s"] > 0
    first = commands.bench_first_trial(storage, tracking, repeats=1)
    assert set(first) == {"created_s", "finished_s", "exit_s"}
    assert 0 < first["created_s"] <= first["finished_s"] <= first["exit_s"]
    out = capsys.readouterr().out
    assert "best / import optuna" in out or "/ import optuna" in out
    assert "start -> first trial created" in out
