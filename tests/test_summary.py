"""The run summary (pipeline.summary): its text for people and its JSON Lines for monitors."""

from __future__ import annotations

import datetime
import json
import math

from pipeline.summary import RunSummary, StopReason, append_json, render, to_json

COUNTS = {"complete": 3, "pruned_diverged": 1, "pruned_underperforming": 0, "failed": 0, "running": 0}
START = datetime.datetime(2026, 11, 22, 1, 0, 3, tzinfo=datetime.UTC)


def summary(**changes) -> RunSummary:
    fields = dict(
        study_name="night",
        storage="/tmp/x.journal",
        tracking_uri=None,
        new_trials=4,
        elapsed=12.5,
        counts=COUNTS,
        best={"study": "night", "trial": 2, "value": 0.4, "params": {"lr": 0.01}, "mlflow_run_id": None},
        stop_reason=StopReason.DEADLINE,
        best_before=0.5,
        started_at=START,
        ended_at=START + datetime.timedelta(seconds=12.5),
    )
    fields.update(changes)
    return RunSummary(**fields)


def test_text_is_dated_and_says_why_the_run_stopped_and_what_changed():
    text = render(summary())
    assert "2026-11-22T01:00:03+00:00 -> 2026-11-22T01:00:15+00:00" in text
    assert "stopped       deadline" in text
    # 0.5 -> 0.4 is a gain of 0.1, 20% of the previous best
    assert "new best: 0.5 -> 0.4 (-0.1, 20.00%)" in text


def test_text_says_when_the_best_did_not_improve_and_when_it_is_the_first():
    assert "no new best (still 0.4)" in render(summary(best_before=0.4))
    assert "first best: 0.4" in render(summary(best_before=None))
    assert "best          none" in render(summary(best=None, best_before=None))


def test_json_lines_append_one_parseable_object_per_run(tmp_path):
    path = tmp_path / "sub" / "runs.jsonl"
    append_json(summary(), path)
    append_json(summary(best_before=None, stop_reason=StopReason.CONVERGED), path)
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["stop_reason"] == "deadline" and first["new_best"] is True
    assert math.isclose(first["improvement"], 0.1)
    assert first["started_at"] == "2026-11-22T01:00:03+00:00"
    # first best of a study: a new best, with no finite improvement to quote
    assert (
        second["stop_reason"] == "converged" and second["new_best"] is True and second["improvement"] is None
    )


def test_json_has_no_infinity():
    data = to_json(summary(best_before=None))
    assert data["improvement"] is None
