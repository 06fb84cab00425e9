"""Logs a person and a monitor can read (issue 8): every `tune` run is framed by two stamped lines, and
``--summary-json`` appends one JSON object per run, also for a run that ends before it can tune."""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.config import ROOT

pytestmark = pytest.mark.slow

PY = sys.executable
STUDY = {
    "name": "logged",
    "seed": 0,
    "data": {"dataset": "diabetes"},
    "model": {"name": "linear"},
    "training": {"epochs": 20, "batch_size": "full"},
    "search": {"lr": {"low": 1.0e-3, "high": 0.5}},
    "budget": {"trials": 3},
}
LINE = re.compile(
    r"^(?P<at>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00) tune (?P<what>start|end) study=(?P<study>\S+)( file=\S+)? "
    r"host=(?P<host>\S+) pid=(?P<pid>\d+) worker=(?P<worker>\d+) storage=(?P<storage>\S+)(?P<rest>.*)$"
)


def tune(root: Path, study: Path, *extra: str) -> subprocess.CompletedProcess:
    argv = [PY, "-m", "pipeline", "tune", str(study), "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}"]
    argv += ["--no-progress", "--summary-json", str(root / "logs" / "tune.jsonl"), *extra]
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)


def framing(stderr: str) -> tuple[dict, dict]:
    lines = stderr.strip().splitlines()
    first, last = LINE.match(lines[0]), LINE.match(lines[-1])
    assert first and last, stderr[-3000:]
    assert (first["what"], last["what"]) == ("start", "end")
    return first.groupdict(), last.groupdict()


def test_each_run_is_framed_by_stamped_lines_and_appends_one_json_object(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(STUDY), encoding="utf-8")
    journal = str(tmp_path / "optuna.journal")
    nights = [tune(tmp_path, study, "--storage", journal, "--worker", str(k)) for k in (0, 1)]
    records = [json.loads(line) for line in (tmp_path / "logs" / "tune.jsonl").read_text().splitlines()]
    assert len(records) == 2
    for done, record, worker in zip(nights, records, (0, 1), strict=True):
        assert done.returncode == 0, done.stderr[-3000:]
        start, end = framing(done.stderr)
        for line in (start, end):
            assert (line["study"], line["worker"], line["storage"]) == ("logged", str(worker), journal)
            assert int(line["pid"]) == record["pid"]
        assert re.search(r"exit=0 reason=trials new_trials=3 best=\S+ new_best=(yes|no)", end["rest"])
        began = datetime.datetime.fromisoformat(start["at"])
        ended = datetime.datetime.fromisoformat(end["at"])
        assert began <= datetime.datetime.fromisoformat(record["ended_at"]) <= ended
        assert record["exit_code"] == 0 and record["stop_reason"] == "trials" and record["new_trials"] == 3
        assert record["counts"]["complete"] + record["counts"]["pruned_diverged"] >= 3 * (worker + 1) - 3
    assert records[0]["pid"] != records[1]["pid"]
    assert records[0]["best_before"] is None and records[0]["new_best"] is True
    assert records[1]["best_before"] == records[0]["best"]["value"]  # what changed this night is measurable
    assert records[1]["new_best"] == (records[1]["best"]["value"] < records[0]["best"]["value"])


def test_a_run_that_cannot_start_still_logs_both_lines_and_its_json_with_the_password_masked(tmp_path):
    study = tmp_path / "study.yaml"
    study.write_text(yaml.safe_dump(STUDY), encoding="utf-8")
    url = "postgresql://tuner:S3cretPassw0rd@127.0.0.1:1/optuna"  # nothing listens on port 1
    done = tune(tmp_path, study, "--storage", url)
    assert done.returncode == 2, done.stderr[-3000:]
    start, end = framing(done.stderr)
    assert start["storage"] == end["storage"] == "postgresql://tuner:***@127.0.0.1:1/optuna"
    assert "exit=2" in end["rest"] and "S3cretPassw0rd" not in done.stderr + done.stdout
    text = (tmp_path / "logs" / "tune.jsonl").read_text()
    assert "S3cretPassw0rd" not in text
    (record,) = [json.loads(line) for line in text.splitlines()]
    assert record["exit_code"] == 2 and record["study_name"] == "logged" and "--storage" in record["error"]


def test_a_study_file_that_does_not_load_is_logged_by_its_path(tmp_path):
    study = tmp_path / "broken.yaml"
    study.write_text(yaml.safe_dump({**STUDY, "budget": {"trials": 0}}), encoding="utf-8")
    done = tune(tmp_path, study, "--storage", str(tmp_path / "optuna.journal"))
    assert done.returncode == 2
    start, end = framing(done.stderr)
    assert start["study"] == "?" and str(study) in done.stderr.splitlines()[0]
    (record,) = [json.loads(line) for line in (tmp_path / "logs" / "tune.jsonl").read_text().splitlines()]
    assert record["exit_code"] == 2 and "budget.trials" in record["error"]
    assert not (tmp_path / "optuna.journal").exists() and not (tmp_path / "mlflow.db").exists()
