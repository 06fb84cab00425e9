"""The scheduling examples in deploy/ are run, not just shipped (issue 8): the crontab line's command as written
(with the path of a test deployment and a short timeout), two nights in a row and two overlapping starts; the
systemd service and timer checked by ``systemd-analyze verify`` where it exists, else parsed."""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from pipeline.config import ROOT, STUDIES_DIR

DEPLOY = ROOT / "deploy"
CRON_ROOT = "/srv/lr-pipeline"  # where the examples assume the checkout
SECONDS = 3


def cron_command() -> str:
    """The command of the crontab's one job line (after its five time fields)."""
    lines = [
        ln for ln in (DEPLOY / "crontab").read_text().splitlines() if ln.strip() and not ln.startswith("#")
    ]
    (line,) = lines
    fields = line.split(None, 5)
    assert fields[:5] == ["0", "1", "*", "*", "*"], line  # 01:00 every night
    return fields[5]


def deployment(tmp_path: Path) -> tuple[str, dict]:
    """A folder laid out like the checkout the examples name (bin/ from this repository, the study file), the
    crontab's command pointed at it with a short timeout, and the environment that puts both stores in it."""
    site = tmp_path / "site"
    (site / "studies").mkdir(parents=True)
    (site / "bin").symlink_to(ROOT / "bin")
    shutil.copy(STUDIES_DIR / "moons-mlp.yaml", site / "studies")
    command = cron_command().replace(CRON_ROOT, str(site))
    assert "--timeout 7200" in command
    command = command.replace("--timeout 7200", f"--timeout {SECONDS}")
    env = {
        **os.environ,
        "LR_PIPELINE_STORAGE": str(site / "optuna.journal"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{site / 'mlruns' / 'mlflow.db'}",
    }
    return command, env


def records(site: Path) -> list[dict]:
    return [json.loads(line) for line in (site / "logs" / "tune.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_the_cron_line_resumes_the_study_the_next_night_for_its_whole_time_budget(tmp_path):
    command, env = deployment(tmp_path)
    site = tmp_path / "site"
    for _night in range(2):
        done = subprocess.run(["/bin/sh", "-c", command], env=env, capture_output=True, text=True)
        assert done.returncode == 0, (site / "logs" / "tune.log").read_text()[-3000:]
    first, second = records(site)
    for night in (first, second):
        assert night["exit_code"] == 0 and night["stop_reason"] == "deadline"
        assert night["elapsed"] >= SECONDS  # it tuned for the whole budget, not the file's 60 trials
        assert night["new_trials"] > 0
    assert sum(second["counts"].values()) == sum(first["counts"].values()) + second["new_trials"]
    log = (site / "logs" / "tune.log").read_text()
    assert len(re.findall(r"^\S+ tune start study=moons-mlp ", log, re.M)) == 2
    assert len(re.findall(r"^\S+ tune end study=moons-mlp .* exit=0 reason=deadline", log, re.M)) == 2
    assert "Traceback" not in log


@pytest.mark.slow
def test_two_overlapping_starts_of_the_cron_line_one_exits_75_naming_the_other(tmp_path):
    command, env = deployment(tmp_path)
    site = tmp_path / "site"
    procs = [subprocess.Popen(["/bin/sh", "-c", command], env=env) for _ in range(2)]
    codes = sorted(proc.wait(timeout=300) for proc in procs)
    log = (site / "logs" / "tune.log").read_text()
    assert codes == [0, 75], log[-3000:]
    (locked,) = [ln for ln in log.splitlines() if ln.startswith("locked:")]
    holder = next(r for r in records(site) if r["exit_code"] == 0)
    assert f"pid={holder['pid']}" in locked and "moons-mlp" in locked
    assert [r["exit_code"] for r in records(site)].count(75) == 1  # the refused night is on record too


def service_command(text: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.startswith("ExecStart=")]
    return line.split("=", 1)[1]


def test_the_systemd_service_runs_the_same_command_as_the_cron_line():
    service = (DEPLOY / "lr-pipeline-tune.service").read_text()
    words = shlex.split(service_command(service))
    cron = shlex.split(cron_command().split("&&")[-1].split(">>")[0])
    assert words[0] == f"{CRON_ROOT}/bin/tune" and cron[0] == "bin/tune"
    assert words[1:] == cron[1:]
    assert "WorkingDirectory=/srv/lr-pipeline" in service.splitlines()


def test_the_systemd_units_are_valid(tmp_path):
    service = (DEPLOY / "lr-pipeline-tune.service").read_text().replace(CRON_ROOT, str(ROOT))
    service = re.sub(r"^User=.*$", "User=root", service, flags=re.M)
    (tmp_path / "lr-pipeline-tune.service").write_text(service)
    shutil.copy(DEPLOY / "lr-pipeline-tune.timer", tmp_path)
    parsed = {}
    for unit in ("lr-pipeline-tune.service", "lr-pipeline-tune.timer"):
        config = configparser.ConfigParser(strict=False, interpolation=None)
        config.optionxform = str
        config.read(tmp_path / unit)
        parsed[unit] = config
    timer = parsed["lr-pipeline-tune.timer"]
    assert (
        timer["Timer"]["OnCalendar"] == "*-*-* 01:00:00"
        and timer["Timer"]["Unit"] == "lr-pipeline-tune.service"
    )
    assert timer["Install"]["WantedBy"] == "timers.target"
    svc = parsed["lr-pipeline-tune.service"]["Service"]
    assert svc["KillSignal"] == "SIGTERM" and set(svc["SuccessExitStatus"].split()) == {"1", "75", "143"}
    assert os.access(shlex.split(svc["ExecStart"])[0], os.X_OK)
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the units were parsed only")
    done = subprocess.run(
        [analyze, "verify", "lr-pipeline-tune.service", "lr-pipeline-tune.timer"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_bin_tune_passes_the_exit_code_through_and_make_tune_names_it(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((STUDIES_DIR / "moons-mlp.yaml").read_text().replace("epochs: ", "epochs: -"))
    env = {**os.environ, "LR_PIPELINE_STORAGE": str(tmp_path / "optuna.journal")}
    done = subprocess.run([ROOT / "bin" / "tune", str(bad)], env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "'training.epochs'" in done.stderr
    made = subprocess.run(
        ["make", "-s", "-C", str(ROOT), "tune", f"STUDY={bad}"], env=env, capture_output=True, text=True
    )
    assert made.returncode == 2 and "make tune: tune exited 2" in made.stderr
    assert not (tmp_path / "optuna.journal").exists()
