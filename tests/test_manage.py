"""`studies` and `delete` (issue 8, part 4) against real stores: a journal file and an MLflow sqlite store.

The studies are tuned in process (as tests/conftest.py does); `studies` and `delete` run as real processes
(`python -m pipeline ...`), off a terminal and on one (a pseudo-terminal answering the question). The oracle for the
listing is Optuna's own view of the same journal.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import json
import os
import pty
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
from conftest import study_yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from pipeline import cli
from pipeline.config import ROOT
from pipeline.tuning.manage import iso_utc, render_studies, study_version

PY = sys.executable


# -- without stores --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "attrs", "version"),
    [
        ("foo", {}, 1),
        ("foo.v2", {}, 2),
        ("foo.v12", {}, 12),
        ("foo.v0", {}, 1),  # not a version suffix
        ("foo.vx", {}, 1),
        ("foo.v2", {"version": 3, "previous_version": "foo"}, 3),  # the recorded attribute wins
        ("foo", {"version": "2"}, 2),
    ],
)
def test_study_version(name, attrs, version):
    assert study_version(name, attrs) == version


def test_iso_utc_reads_naive_times_as_local_and_aware_ones_as_they_are():
    aware = datetime.datetime(2024, 5, 1, 9, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert iso_utc(aware) == "2024-05-01T07:30:00Z"
    naive = datetime.datetime(2024, 5, 1, 9, 30)
    assert iso_utc(naive) == naive.astimezone().astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert iso_utc(None) is None


def cli_run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def test_studies_on_an_empty_storage_says_so(tmp_path):
    journal = tmp_path / "optuna.journal"
    JournalStorage(JournalFileBackend(str(journal)))  # an existing journal with no study
    code, out, _ = cli_run("studies", "--storage", str(journal))
    assert (code, out.strip()) == (0, f"no study in {journal}")
    code, out, _ = cli_run("studies", "--storage", str(journal), "--json")
    assert (code, json.loads(out)) == (0, [])


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_studies_on_a_missing_storage_file_is_an_error_naming_storage(tmp_path, kind):
    url = str(tmp_path / "nope.journal") if kind == "journal" else f"sqlite:///{tmp_path / 'nope.db'}"
    code, out, err = cli_run("studies", "--storage", url)
    assert code == 2 and out == ""
    assert "'--storage'" in err and "no such" in err and "nope" in err
    assert list(tmp_path.iterdir()) == []  # not created by looking


def row(name, waiting=0, best=None):
    trials = {"complete": 2, "pruned": 1, "failed": 0, "running": 0, "waiting": waiting}
    return {
        "name": name,
        "version": 1,
        "trials": trials,
        "best_value": best,
        "created": None,
        "last_activity": None,
    }


def test_the_table_shows_waiting_trials_only_when_there_are_some():
    plain = render_studies([row("a", best=0.5)], "j").splitlines()
    assert (
        plain[1].split()
        == "study version complete pruned failed running best value created (UTC) last activity (UTC)".split()
    )
    assert plain[2].split() == ["a", "1", "2", "1", "0", "0", "0.5", "-", "-"]
    queued = render_studies([row("a"), row("a.v2", waiting=5)], "j").splitlines()
    assert queued[0] == "2 studies in j"
    assert "waiting" in queued[1].split() and queued[3].split()[6] == "5"


def test_the_table_masks_a_password_in_the_storage():
    text = render_studies([], "postgresql://tuner:s3cret@db/optuna")
    assert "s3cret" not in text and "***" in text


# -- real stores -----------------------------------------------------------------------------------------------


@dataclass
class Stores:
    root: Path
    journal: Path
    tracking: str
    files: dict

    def tune(self, name: str, *extra: str) -> None:
        argv = ["tune", str(self.files[name]), *self.args(), "--no-progress", *extra]
        code, _, err = cli_run(*argv)
        assert code == 0, err

    def run(self, *argv: str, **kwargs) -> subprocess.CompletedProcess:
        """`python -m pipeline ...` in a real process, stdin not a terminal."""
        args = [PY, "-m", "pipeline", *argv]
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120, **kwargs)

    def args(self) -> list[str]:
        return ["--storage", str(self.journal), "--tracking-uri", self.tracking]

    def storage(self):
        return JournalStorage(JournalFileBackend(str(self.journal)))

    def names(self) -> list[str]:
        return sorted(optuna.get_all_study_names(self.storage()))

    def trials(self, name: str):
        return optuna.load_study(study_name=name, storage=self.storage()).get_trials()

    def experiment(self, name: str):
        """The MLflow experiment ``name`` (any lifecycle stage) and all its runs, or (None, [])."""
        from mlflow import MlflowClient
        from mlflow.entities import ViewType

        client = MlflowClient(tracking_uri=self.tracking)
        found = client.get_experiment_by_name(name)
        if found is None:
            return None, []
        return found, client.search_runs([found.experiment_id], run_view_type=ViewType.ALL)

    def fingerprint(self) -> dict[str, str]:
        """Every file under the root by content: a store that nothing wrote to has the same fingerprint."""
        return {
            str(p.relative_to(self.root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(self.root.rglob("*"))
            if p.is_file()
        }


def make_stores(root: Path, studies: dict[str, dict]) -> Stores:
    stores = Stores(root, root / "optuna.journal", f"sqlite:///{root / 'mlruns' / 'mlflow.db'}", {})
    for name, sections in studies.items():
        stores.files[name] = study_yaml(
            "diabetes-reference.yaml", root / f"{name}.yaml", name=name, **sections
        )
        stores.tune(name)
    return stores


# alpha: random lrs up to 10 with a median pruner: complete and pruned trials (diverged or underperforming)
ALPHA = {
    "training": {"epochs": 20},
    "search": {"lr": {"low": 1.0e-4, "high": 10}},
    "budget": {"trials": 8},
    "sampler": {"name": "random"},
    "pruner": {"name": "median", "n_startup_trials": 2, "n_warmup_steps": 2},
}
BETA = {"training": {"epochs": 10}, "search": {"lr": {"low": 1.0e-3, "high": 0.1}}, "budget": {"trials": 3}}


@pytest.fixture(scope="module")
def listed(tmp_path_factory) -> Stores:
    """Two tuned studies that the tests only read (or fail to delete)."""
    return make_stores(tmp_path_factory.mktemp("listed"), {"alpha": ALPHA, "beta": BETA})


def oracle(stores: Stores, name: str) -> dict:
    """What `studies` must say about ``name``, counted from Optuna's own trials."""
    trials = stores.trials(name)
    by_state = {s: sum(t.state == s for t in trials) for s in TrialState}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = min(complete, key=lambda t: t.value) if complete else None
    started = [t.datetime_start for t in trials if t.datetime_start]  # an enqueued (WAITING) trial has none
    stamp = started + [t.datetime_complete for t in trials if t.datetime_complete]
    return {
        "name": name,
        "version": 1,
        "previous_version": None,
        "trials": {
            "complete": by_state[TrialState.COMPLETE],
            "pruned": by_state[TrialState.PRUNED],
            "failed": by_state[TrialState.FAIL],
            "running": by_state[TrialState.RUNNING],
            "waiting": by_state[TrialState.WAITING],
        },
        "total": len(trials),
        "best_value": best.value if best else None,
        "best_trial": best.number if best else None,
        "created": iso_utc(min(started, default=None)),
        "last_activity": iso_utc(max((s.astimezone() for s in stamp), default=None)),
    }


@pytest.mark.slow
def test_studies_lists_each_study_with_its_trials_by_state_best_value_and_times(listed):
    started = time.time()
    done = listed.run("studies", "--storage", str(listed.journal), "--json")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown == [oracle(listed, "alpha"), oracle(listed, "beta")]
    alpha = shown[0]
    assert alpha["trials"]["complete"] and alpha["trials"]["pruned"]  # the study exercises two states
    assert alpha["total"] == ALPHA["budget"]["trials"]
    # the times are real UTC instants of this test session
    for row in shown:
        for key in ("created", "last_activity"):
            moment = datetime.datetime.strptime(row[key], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
            assert started - 600 < moment.timestamp() <= time.time() + 1, (key, row[key])

    table = listed.run("studies", "--storage", str(listed.journal))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == f"2 studies in {listed.journal}"
    assert lines[1].split()[:6] == ["study", "version", "complete", "pruned", "failed", "running"]
    cells = lines[2].split()
    a = oracle(listed, "alpha")
    assert cells[:6] == [
        "alpha",
        "1",
        *(str(a["trials"][k]) for k in ("complete", "pruned", "failed", "running")),
    ]
    assert float(cells[6]) == pytest.approx(a["best_value"], rel=1e-5)
    assert cells[7:] == [a["created"], a["last_activity"]]
    assert lines[3].split()[0] == "beta"


@pytest.mark.slow
def test_delete_off_a_terminal_without_yes_refuses_and_changes_nothing(listed):
    before = listed.fingerprint()
    done = listed.run("delete", "alpha", *listed.args())
    assert done.returncode == 2, done.stderr
    assert "--yes" in done.stderr and "'alpha'" in done.stderr and "Traceback" not in done.stderr
    assert listed.fingerprint() == before
    assert listed.names() == ["alpha", "beta"]

    # --yes but not the MLflow store the study was tracked in: refused, or its experiment would be left behind
    done = listed.run("delete", "alpha", "--storage", str(listed.journal), "--yes")
    assert done.returncode == 2
    assert "'--tracking-uri'" in done.stderr and listed.tracking in done.stderr
    assert listed.fingerprint() == before


@pytest.mark.slow
def test_delete_of_a_study_that_does_not_exist_names_it_and_the_studies_there(listed):
    before = listed.fingerprint()
    done = listed.run("delete", "gamma", *listed.args(), "--yes")
    assert done.returncode == 2
    assert "no study named 'gamma'" in done.stderr and "alpha, beta" in done.stderr
    assert listed.fingerprint() == before


@pytest.fixture(scope="module")
def deleting(tmp_path_factory) -> Stores:
    return make_stores(tmp_path_factory.mktemp("deleting"), {"gamma": BETA, "delta": BETA, "epsilon": BETA})


@pytest.mark.slow
def test_delete_yes_removes_both_stores_entries_and_tune_then_starts_at_trial_0(deleting):
    _, runs = deleting.experiment("delta")
    assert len(runs) == BETA["budget"]["trials"] + 1  # the trials' runs and the study's run
    done = deleting.run("delete", str(deleting.files["delta"]), *deleting.args(), "--yes")  # by its file
    assert done.returncode == 0, done.stderr
    assert "deleted study 'delta' (3 trials)" in done.stdout
    assert "deleted MLflow experiment 'delta'" in done.stdout and "4 runs" in done.stdout
    assert "delta" not in deleting.names() and "gamma" in deleting.names()
    assert deleting.experiment("delta") == (None, [])  # gone for good, not only marked deleted
    assert (
        len(deleting.experiment("gamma")[1]) == BETA["budget"]["trials"] + 1
    )  # the other study is untouched

    deleting.tune("delta")
    trials = deleting.trials("delta")
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    experiment, runs = deleting.experiment("delta")
    assert experiment.lifecycle_stage == "active"
    numbers = sorted(int(r.data.tags["trial_number"]) for r in runs if "trial_number" in r.data.tags)
    assert numbers == [0, 1, 2]  # a fresh experiment: no run of the deleted study


def read_until(fd: int, marker: bytes, timeout: float = 60) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} within {timeout} s; got {seen!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
    return seen


def delete_on_a_terminal(stores: Stores, name: str, answer: str) -> tuple[int, str]:
    """`delete NAME` with a pseudo-terminal as stdin/stdout/stderr, answering ``answer`` to its question."""
    master, slave = pty.openpty()
    try:
        process = subprocess.Popen(
            [PY, "-m", "pipeline", "delete", name, *stores.args()],
            cwd=ROOT,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            close_fds=True,
        )
        os.close(slave)
        shown = read_until(master, b"[y/N]")
        os.write(master, answer.encode() + b"\n")
        shown += read_until(master, b"\x00", timeout=120)  # everything until the child exits
        code = process.wait(timeout=60)
    finally:
        os.close(master)
    return code, shown.decode(errors="replace")


@pytest.mark.slow
def test_delete_on_a_terminal_asks_and_deletes_only_on_yes(deleting):
    trials = len(deleting.trials("gamma"))
    code, shown = delete_on_a_terminal(deleting, "gamma", "n")
    assert f"delete study gamma ({trials} trials) and its MLflow experiment? [y/N]" in shown
    assert code == 1 and "nothing deleted" in shown
    assert "gamma" in deleting.names() and deleting.experiment("gamma")[0] is not None

    code, shown = delete_on_a_terminal(deleting, "gamma", "y")
    assert code == 0, shown
    assert "deleted study 'gamma'" in shown
    assert "gamma" not in deleting.names()
    assert deleting.experiment("gamma") == (None, [])


@pytest.mark.slow
def test_a_new_version_is_listed_as_version_2_and_deleting_it_keeps_version_1(deleting):
    deleting.tune("epsilon", "--new-version", "--trials", "1")
    done = deleting.run("studies", "--storage", str(deleting.journal), "--json")
    assert done.returncode == 0, done.stderr
    rows = {row["name"]: row for row in json.loads(done.stdout)}
    assert rows["epsilon"]["version"] == 1
    v2 = rows["epsilon.v2"]
    assert (v2["version"], v2["previous_version"]) == (2, "epsilon")
    assert v2["trials"]["waiting"] > 0  # the warm start's enqueued trials beyond this run's one trial
    assert v2 == oracle(deleting, "epsilon.v2") | {"version": 2, "previous_version": "epsilon"}

    done = deleting.run("delete", "epsilon.v2", *deleting.args(), "--yes")
    assert done.returncode == 0, done.stderr
    assert "other versions of this study are kept: epsilon" in done.stdout
    assert "epsilon" in deleting.names() and "epsilon.v2" not in deleting.names()
    assert deleting.experiment("epsilon.v2") == (None, [])
    assert deleting.experiment("epsilon")[0].lifecycle_stage == "active"
