"""`make bench-nightly` on a short month: real `bin/tune` nights resume one study, and the figures it prints are
the ones its rows add up to."""

from __future__ import annotations

import pytest

from pipeline.bench.nightly import run

pytestmark = pytest.mark.slow


def test_nights_resume_one_study_and_the_figures_follow_from_the_rows(capsys):
    result = run(nights=3, seconds=1.0)
    rows = result["nights"]
    assert [r["night"] for r in rows] == [1, 2, 3]
    assert all(r["trials"] >= 1 for r in rows)  # every night tuned for its whole second
    assert [r["total"] for r in rows] == [
        sum(r["trials"] for r in rows[: k + 1]) for k in range(3)
    ]  # resumed
    assert result["trials"] == rows[-1]["total"]
    assert (
        rows[0]["journal_bytes"] < rows[-1]["journal_bytes"]
        and rows[0]["mlflow_bytes"] < rows[-1]["mlflow_bytes"]
    )
    growth = (rows[-1]["mlflow_bytes"] - rows[0]["mlflow_bytes"]) / (rows[-1]["total"] - rows[0]["total"])
    assert result["mlflow_bytes_per_trial"] == pytest.approx(growth)
    first, last = rows[0]["median_trial_s"], rows[-1]["median_trial_s"]  # k = 1 night each side for 3 nights
    assert result["last_over_first_median_trial"] == pytest.approx(last / first)
    printed = capsys.readouterr().out
    assert "last 1 nights / first 1" in printed and "(goal <= 1.5x)" in printed
