"""pipeline/tuning/storage.py: opening Optuna storages from what a user types, and reading a study back as plain
data. Real journal files and SQLite databases in a temporary folder."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from pipeline.errors import ConfigError
from pipeline.study.loader import load_study
from pipeline.tuning.storage import (
    best_trial_info,
    count_trials,
    load_existing_study,
    open_storage,
    trial_records,
)

STUDY = Path(__file__).resolve().parents[1] / "studies" / "diabetes-reference.yaml"
LR = {"lr": FloatDistribution(1e-5, 10, log=True)}


def filled(storage) -> optuna.Study:
    """diabetes-reference with a complete, a diverged, an underperforming, a failed and a running trial."""
    study = optuna.create_study(study_name="diabetes-reference", storage=storage)
    for lr, value, state, attrs in [
        (0.01, 0.5, TrialState.COMPLETE, {"mlflow_run_id": "r0"}),
        (0.1, 0.3, TrialState.COMPLETE, {"mlflow_run_id": "r1"}),
        (9.0, 1e6, TrialState.PRUNED, {"prune_reason": "diverged", "diverged_epoch": 3}),
        (1e-5, 0.9, TrialState.PRUNED, {"prune_reason": "underperforming"}),
        (0.05, 0.4, TrialState.PRUNED, {"prune_reason": "deadline"}),
        (0.2, None, TrialState.FAIL, {}),
        (0.3, None, TrialState.RUNNING, {}),
    ]:
        study.add_trial(
            create_trial(
                params={"lr": lr},
                distributions=LR,
                value=value,
                state=state,
                user_attrs=attrs,
                intermediate_values={0: 2.0, 5: value} if value is not None else {},
            )
        )
    return study


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_study_reads_back_as_plain_data(tmp_path, kind):
    url = str(tmp_path / "optuna.journal") if kind == "journal" else f"sqlite:///{tmp_path / 'o.db'}"
    filled(open_storage(url))
    study = load_existing_study(load_study(STUDY), url)

    assert count_trials(study) == {
        "complete": 2,
        "pruned_diverged": 1,
        "pruned_underperforming": 1,
        "pruned_deadline": 1,
        "failed": 1,
        "running": 1,
    }
    best = best_trial_info(study)
    assert (best["trial"], best["value"], best["params"], best["mlflow_run_id"]) == (
        1,
        0.3,
        {"lr": 0.1},
        "r1",
    )
    records = trial_records(study)
    assert [r.state for r in records] == [
        "COMPLETE",
        "COMPLETE",
        "PRUNED",
        "PRUNED",
        "PRUNED",
        "FAIL",
        "RUNNING",
    ]
    assert (records[2].prune_reason, records[2].diverged_epoch) == ("diverged", 3)
    assert records[0].intermediate == {0: 2.0, 5: 0.5}


def test_no_complete_trial_means_no_best(tmp_path):
    study = optuna.create_study(storage=open_storage(str(tmp_path / "j")))
    assert best_trial_info(study) is None


def test_a_missing_journal_is_not_created_by_reading(tmp_path):
    with pytest.raises(ConfigError, match="no such Optuna journal file") as info:
        load_existing_study(load_study(STUDY), str(tmp_path / "typo.journal"))
    assert info.value.key == "--storage"
    assert list(tmp_path.iterdir()) == []


def test_a_study_not_in_the_storage_lists_those_that_are(tmp_path):
    url = str(tmp_path / "optuna.journal")
    optuna.create_study(study_name="other", storage=open_storage(url))
    with pytest.raises(ConfigError, match=r"no study named 'diabetes-reference' .*studies there: other"):
        load_existing_study(load_study(STUDY), url)


def text_file(folder: Path) -> Path:
    path = folder / "study.yaml"
    path.write_text("name: x\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("make", "match"),
    [(text_file, "not an Optuna journal file"), (lambda d: d, "is a folder")],
    ids=["a text file", "a folder"],
)
def test_a_path_that_is_not_a_journal_is_refused_untouched(tmp_path, make, match):
    target = make(tmp_path)
    before = target.read_bytes() if target.is_file() else None
    with pytest.raises(ConfigError, match=match):
        open_storage(str(target))
    if before is not None:
        assert target.read_bytes() == before


def test_an_unknown_database_scheme_is_a_config_error_naming_the_url():
    with pytest.raises(ConfigError, match=r"cannot open the Optuna storage") as info:
        open_storage("nosuchdb://user@host/db")
    assert info.value.value == "nosuchdb://user@host/db"
