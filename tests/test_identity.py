"""Study identity (issue 8, part 3): what is fingerprinted, the refusal of an edited study file before anything is
written, `--new-version` with its warm start, the resume of the latest version, the adoption of an older study.

The end-to-end tests run `tune` through the CLI (in process, and once as a real process) against a journal file and
an MLflow sqlite store of their own under a temporary folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import study_yaml
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from pipeline import cli
from pipeline.config import ROOT
from pipeline.errors import ConfigError
from pipeline.study.identity import (
    CSV_KEY,
    describe_differences,
    differences,
    fitting_params,
    identity_sha256,
    study_identity,
)
from pipeline.study.loader import load_study
from pipeline.tuning.identity import (
    IDENTITY_ATTR,
    IDENTITY_SHA256_ATTR,
    PREVIOUS_ATTR,
    VERSION_ATTR,
    WARM_START_TRIALS,
    plan_study,
    record,
    version_name,
    versions,
)

REFERENCE = "diabetes-reference.yaml"


def identity_of(tmp_path: Path, file: str = "s.yaml", **sections) -> dict:
    return study_identity(load_study(study_yaml(REFERENCE, tmp_path / file, **sections)))


# ----------------------------------------------------------------------------------------------- what is in it


def test_the_identity_names_data_model_training_search_and_seed(tmp_path):
    identity = identity_of(tmp_path)
    assert identity["data.source"] == "diabetes"
    assert identity["model.name"] == "linear"
    assert identity["training.epochs"] == 300
    assert identity["training.batch_size"] == "full"
    assert identity["search.lr.low"] == 1e-5 and identity["search.lr.high"] == 10
    assert identity["search.schedule.name"] == "exponential"
    assert identity["search.schedule.decay_rate.high"] == 0.1
    assert identity["seed"] == 0
    assert not [k for k in identity if k.split(".")[0] in ("budget", "sampler", "pruner", "tracking", "name")]


@pytest.mark.parametrize(
    "sections",
    [
        {"budget": {"trials": 3, "timeout": 60}},
        {"sampler": {"name": "random"}},
        {"pruner": {"name": "median", "n_startup_trials": 2}},
        {"tracking": {"report_points": 7}},
        {"description": "another text"},
        {"name": "renamed"},
        {"search": {"lr": {"low": 1.0e-5, "high": 10.0}}},  # 10 and 10.0 are the same value
        {"training": {"divergence_factor": 10.0}},  # the default, written out
    ],
)
def test_what_does_not_change_a_trials_result_leaves_the_identity_alone(tmp_path, sections):
    before = identity_of(tmp_path, "a.yaml")
    after = identity_of(tmp_path, "b.yaml", **sections)
    assert differences(before, after) == []
    assert identity_sha256(before) == identity_sha256(after)


@pytest.mark.parametrize(
    ("sections", "key", "old", "new"),
    [
        ({"training": {"epochs": 200}}, "training.epochs", 300, 200),
        ({"training": {"batch_size": 32}}, "training.batch_size", "full", 32),
        ({"search": {"lr": {"low": 1.0e-5, "high": 1}}}, "search.lr.high", 10, 1),
        ({"seed": 3}, "seed", 0, 3),
        ({"data": {"dataset": "diabetes", "val_fraction": 0.3}}, "data.val_fraction", 0.2, 0.3),
        ({"model": {"name": "mlp", "hidden": 8}}, "model.name", "linear", "mlp"),
    ],
)
def test_what_changes_a_trials_result_changes_the_identity(tmp_path, sections, key, old, new):
    before = identity_of(tmp_path, "a.yaml")
    after = identity_of(tmp_path, "b.yaml", **sections)
    assert (key, old, new) in differences(before, after)
    assert identity_sha256(before) != identity_sha256(after)


def test_a_csv_is_named_by_its_path_and_its_content(tmp_path):
    csv = tmp_path / "data.csv"
    csv.write_text("x1,x2,y\n" + "".join(f"{i},{i % 3},{2 * i}\n" for i in range(30)), encoding="utf-8")
    data = {"dataset": "csv", "path": "data.csv", "target": "y"}
    before = identity_of(tmp_path, data=data)
    assert before["data.source"] == "data.csv"  # relative to the study file: a moved checkout is the same
    assert before[CSV_KEY] == hashlib.sha256(csv.read_bytes()).hexdigest()
    with open(csv, "a", encoding="utf-8") as handle:
        handle.write("30,0,60\n")
    after = identity_of(tmp_path, data=data)
    diffs = differences(before, after)
    assert [k for k, _, _ in diffs] == [CSV_KEY]
    (line,) = describe_differences(diffs, csv)
    assert line.startswith(
        f"the CSV file {csv} changed since the study was created (sha256 {before[CSV_KEY][:12]}"
    )


def test_the_differences_name_the_key_with_its_old_and_new_value():
    lines = describe_differences(differences({"a": 1, "gone": "x"}, {"a": 2, "new": True}), None)
    assert lines == ["a: 1 -> 2", "new: (absent) -> true", "gone: 'x' -> (absent)"]


# ----------------------------------------------------------------------------------------------- versions, warm start


def test_versions_are_the_name_then_dot_v_n():
    names = ["foo", "foo.v2", "foo.v3", "foo.v03", "foo.v1", "foobar.v4", "foo.v2.v2", "other"]
    assert versions("foo", names) == {1: "foo", 2: "foo.v2", 3: "foo.v3"}
    assert versions("foo", ["foo.v2"]) == {2: "foo.v2"}
    assert [version_name("foo", n) for n in (1, 2, 7)] == ["foo", "foo.v2", "foo.v7"]


def test_a_warm_start_keeps_only_what_fits_the_new_search_space(tmp_path):
    search = load_study(
        study_yaml(REFERENCE, tmp_path / "s.yaml", search={"lr": {"low": 1.0e-4, "high": 1}})
    ).search
    kept, dropped = fitting_params(search, {"lr": 0.5, "exponential.decay_rate": 0.01})
    assert kept == {"lr": 0.5, "exponential.decay_rate": 0.01} and dropped == []
    kept, dropped = fitting_params(
        search, {"lr": 3.0, "exponential.decay_rate": 0.01, "cosine.min_lr_ratio": 0.1}
    )
    assert kept == {"exponential.decay_rate": 0.01}
    assert dropped == ["lr = 3 is outside the range [0.0001, 1]", "cosine.min_lr_ratio is no longer searched"]


def test_a_worker_that_lost_the_creation_race_checks_the_identity_it_finds(tmp_path):
    storage = optuna.storages.InMemoryStorage()
    a = load_study(study_yaml(REFERENCE, tmp_path / "a.yaml", name="race"))
    b = load_study(study_yaml(REFERENCE, tmp_path / "b.yaml", name="race", seed=5))
    plan_a, plan_b = plan_study(a, storage), plan_study(b, storage)  # both find no study, then both create it
    study = optuna.create_study(study_name="race", storage=storage)
    assert record(study, plan_a, a) == []
    with pytest.raises(ConfigError, match=r"seed: 0 -> 5(.|\n)*Only the MLflow experiment was written"):
        record(study, plan_b, b)
    assert record(study, plan_a, a) == []  # the same file: nothing to say
    assert study.user_attrs[IDENTITY_ATTR]["seed"] == 0


# ----------------------------------------------------------------------------------------------- end to end

STUDY = {
    "seed": 0,
    "training": {"epochs": 20},
    "search": {
        "lr": {"low": 1.0e-3, "high": 0.3},
        "schedule": {"name": "exponential", "decay_rate": {"low": 1.0e-4, "high": 1.0e-1}},
    },
    "budget": {"trials": 6},
    "sampler": {"name": "random"},
}


class Stores:
    """A journal file and an MLflow sqlite store of this module's own."""

    def __init__(self, root: Path):
        self.root = root
        self.journal = root / "optuna.journal"
        self.db = root / "mlruns" / "mlflow.db"
        self.tracking = f"sqlite:///{self.db}"

    def argv(self, study: Path, *extra: str) -> list[str]:
        return [
            "tune",
            str(study),
            "--storage",
            str(self.journal),
            "--tracking-uri",
            self.tracking,
            "--no-progress",
            *extra,
        ]

    def tune(self, study: Path, *extra: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(self.argv(study, *extra))
        return code, out.getvalue(), err.getvalue()

    def storage(self) -> JournalStorage:
        return JournalStorage(JournalFileBackend(str(self.journal)))

    def study(self, name: str) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=self.storage())

    def names(self) -> list[str]:
        return optuna.get_all_study_names(self.storage())

    def experiments(self) -> list[str]:
        from mlflow import MlflowClient

        return [e.name for e in MlflowClient(tracking_uri=self.tracking).search_experiments()]

    def digests(self) -> dict[str, str]:
        return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (self.journal, self.db)}


@pytest.fixture(scope="module")
def stores(tmp_path_factory) -> Stores:
    return Stores(tmp_path_factory.mktemp("identity"))


def tuned(stores: Stores, name: str, **sections) -> Path:
    """A study file ``name`` (diabetes, 20 epochs, random sampler) tuned once."""
    path = study_yaml(REFERENCE, stores.root / f"{name}.yaml", name=name, **{**STUDY, **sections})
    code, _, err = stores.tune(path)
    assert code == 0, err
    return path


@pytest.mark.slow
def test_an_edited_study_file_is_refused_before_anything_is_written(stores):
    path = tuned(stores, "edited")
    study_yaml(
        REFERENCE,
        path,
        name="edited",
        **{
            **STUDY,
            "training": {"epochs": 15},
            "search": {**STUDY["search"], "lr": {"low": 1.0e-3, "high": 0.1}},
        },
    )
    before, names, experiments = stores.digests(), stores.names(), stores.experiments()
    code, out, err = stores.tune(path)
    assert code == 2, err
    assert "training.epochs: 20 -> 15" in err
    assert "search.lr.high: 0.3 -> 0.1" in err
    assert "give the study file a new `name:`" in err and "--new-version" in err and "'edited.v2'" in err
    assert "Traceback" not in err and out == ""
    assert stores.digests() == before
    assert stores.names() == names and stores.experiments() == experiments


@pytest.mark.slow
def test_a_refusal_in_a_real_process_exits_2(stores):
    path = tuned(stores, "process")
    study_yaml(REFERENCE, path, name="process", **{**STUDY, "seed": 1})
    before = stores.digests()
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *stores.argv(path)], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 2, done.stderr[-3000:]
    assert "seed: 0 -> 1" in done.stderr and "Traceback" not in done.stderr
    assert stores.digests() == before


@pytest.mark.slow
def test_a_changed_csv_is_said_plainly(stores):
    csv = stores.root / "rows.csv"
    csv.write_text(
        "a,b,y\n" + "".join(f"{i},{(i * 7) % 11},{i + (i % 5)}\n" for i in range(60)), encoding="utf-8"
    )
    data = {"dataset": "csv", "path": "rows.csv", "target": "y", "task": "regression"}
    path = tuned(stores, "csv", data=data)
    old = hashlib.sha256(csv.read_bytes()).hexdigest()
    with open(csv, "a", encoding="utf-8") as handle:  # last night's export, one row longer
        handle.write("60,2,61\n")
    before = stores.digests()
    code, _, err = stores.tune(path)
    assert code == 2, err
    assert f"the CSV file {csv} changed since the study was created (sha256 {old[:12]}" in err
    assert "data.csv_sha256" not in err  # said in words, not as a key
    assert stores.digests() == before


@pytest.mark.slow
def test_budget_sampler_and_pruner_edits_resume_the_study(stores):
    path = tuned(stores, "budget")
    study_yaml(
        REFERENCE,
        path,
        name="budget",
        **{
            **STUDY,
            "budget": {"trials": 2, "timeout": 600},
            "sampler": {"name": "tpe"},
            "pruner": {"name": "median"},
        },
    )
    code, _, err = stores.tune(path)
    assert code == 0, err
    assert len(stores.study("budget").get_trials()) == STUDY["budget"]["trials"] + 2
    assert "budget.v2" not in stores.names()


@pytest.mark.slow
def test_new_version_warm_starts_from_the_best_and_later_runs_resume_it(stores):
    path = tuned(stores, "versioned", budget={"trials": 8})
    first = stores.study("versioned")
    best = sorted(
        (t for t in first.get_trials() if t.state == TrialState.COMPLETE), key=lambda t: (t.value, t.number)
    )[:WARM_START_TRIALS]
    assert len(best) == WARM_START_TRIALS
    study_yaml(
        REFERENCE, path, name="versioned", **{**STUDY, "training": {"epochs": 15}, "budget": {"trials": 7}}
    )
    assert stores.tune(path)[0] == 2

    code, out, err = stores.tune(path, "--new-version")
    assert code == 0, err
    assert "study versioned.v2 (version 2)" in out
    assert (
        f"warm start: {WARM_START_TRIALS} of the {WARM_START_TRIALS} best complete trials of 'versioned'"
        in err
    )
    assert "versioned.v2" in stores.names() and "versioned.v2" in stores.experiments()
    v2 = stores.study("versioned.v2")
    assert v2.user_attrs[VERSION_ATTR] == 2 and v2.user_attrs[PREVIOUS_ATTR] == "versioned"
    assert v2.user_attrs[IDENTITY_ATTR]["training.epochs"] == 15
    assert v2.user_attrs[IDENTITY_SHA256_ATTR] == identity_sha256(v2.user_attrs[IDENTITY_ATTR])
    trials = v2.get_trials()
    assert len(trials) == 7
    assert [t.params for t in trials[:WARM_START_TRIALS]] == [t.params for t in best]
    assert [t.user_attrs["warm_start_from"] for t in trials[:WARM_START_TRIALS]] == [
        f"versioned#{t.number}" for t in best
    ]
    assert len(first.get_trials()) == 8  # the first version is left as it was

    code, out, err = stores.tune(
        path, "--trials", "2"
    )  # a plain run: the latest version, checked and resumed
    assert code == 0, err
    assert "study versioned.v2 (version 2)" in out
    assert len(stores.study("versioned.v2").get_trials()) == 9
    assert not [n for n in stores.names() if n.startswith("versioned.v3")]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # `best` reads the version `tune` resumes, not version 1
        assert cli.main(["best", str(path), "--storage", str(stores.journal)]) == 0
    shown = json.loads(out.getvalue())
    v2_best = stores.study("versioned.v2").best_trial
    assert (shown["study"], shown["trial"], shown["value"]) == ("versioned.v2", v2_best.number, v2_best.value)

    study_yaml(
        REFERENCE, path, name="versioned", **{**STUDY, "training": {"epochs": 12}, "budget": {"trials": 2}}
    )
    code, _, err = stores.tune(path)  # checked against the latest version, not the first
    assert code == 2
    assert (
        "'versioned.v2' (version 2)" in err and "training.epochs: 15 -> 12" in err and "'versioned.v3'" in err
    )
    code, out, err = stores.tune(path, "--new-version")
    assert code == 0, err
    assert "study versioned.v3 (version 3)" in out
    assert stores.study("versioned.v3").user_attrs[PREVIOUS_ATTR] == "versioned.v2"


@pytest.mark.slow
def test_a_new_version_leaves_out_what_no_longer_fits(stores):
    path = tuned(stores, "narrowed", search={**STUDY["search"], "lr": {"low": 1.0e-3, "high": 0.3}})
    first = stores.study("narrowed")
    study_yaml(
        REFERENCE,
        path,
        name="narrowed",
        **{**STUDY, "search": {**STUDY["search"], "lr": {"low": 1.0e-3, "high": 2.0e-3}}},
    )
    code, _, err = stores.tune(path, "--new-version", "--trials", str(WARM_START_TRIALS))
    assert code == 0, err
    best = sorted(
        (t for t in first.get_trials() if t.state == TrialState.COMPLETE), key=lambda t: (t.value, t.number)
    )[:WARM_START_TRIALS]
    outside = [t for t in best if t.params["lr"] > 2.0e-3]
    assert outside, "the test needs a best trial whose lr is outside the narrowed range"
    for t in outside:
        assert (
            f"trial {t.number}: lr = {t.params['lr']:.4g} is outside the range [0.001, 0.002]; left to the sampler"
            in err
        )
    trials = stores.study("narrowed.v2").get_trials()
    by_origin = {t.user_attrs.get("warm_start_from"): t for t in trials}
    for t in best:
        got = by_origin[f"narrowed#{t.number}"]
        assert got.params["exponential.decay_rate"] == t.params["exponential.decay_rate"]
        assert 1.0e-3 <= got.params["lr"] <= 2.0e-3


@pytest.mark.slow
def test_a_study_made_before_identities_is_adopted(stores):
    path = study_yaml(REFERENCE, stores.root / "old.yaml", name="old", **STUDY)
    old = optuna.create_study(study_name="old", storage=stores.storage(), direction="minimize")
    old.enqueue_trial({"lr": 0.01, "exponential.decay_rate": 0.01})
    assert IDENTITY_ATTR not in old.user_attrs
    code, _, err = stores.tune(path, "--trials", "2")
    assert code == 0, err
    assert "study 'old' had no recorded identity" in err
    adopted = stores.study("old")
    assert adopted.user_attrs[IDENTITY_ATTR] == study_identity(load_study(path))
    assert adopted.user_attrs[VERSION_ATTR] == 1
    assert adopted.get_trials()[0].params == {"lr": 0.01, "exponential.decay_rate": 0.01}
    study_yaml(REFERENCE, path, name="old", **{**STUDY, "training": {"epochs": 10}})
    assert stores.tune(path)[0] == 2  # from now on it is checked
