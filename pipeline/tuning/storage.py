"""Optuna storages: open one from a URL (journal file, database, Redis) and read what a study holds."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from pipeline import config
from pipeline.core.names import PRUNE_DEADLINE, PRUNE_DIVERGED, PRUNE_UNDERPERFORMING
from pipeline.errors import ConfigError
from pipeline.study.experiment import (
    TrialRecord,
)
from pipeline.study.spec import StudySpec


def _check_journal_file(path: Path) -> None:
    """Refuse to append Optuna's log to a file that is not one (a study file or a database given by mistake):
    the journal backend would write into it and corrupt it."""
    if path.is_dir():
        raise ConfigError("is a folder, not an Optuna journal file.", key="--storage", value=str(path))
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as handle:
            start = handle.read(12)
        if not start.startswith(b'{"op_code"'):
            raise ConfigError(
                "is not an Optuna journal file (it does not start with a journal record); refusing to write to it. "
                "Give a new path, or a database URL such as sqlite:///study.db.",
                key="--storage",
                value=str(path),
            )


def open_storage(url: str | None = None) -> BaseStorage:
    """An Optuna storage from a URL: ``scheme://...`` is a database (postgresql://, mysql://, sqlite:///...),
    ``redis://`` a journal in Redis, anything else a journal file path (several processes on one machine may share it).
    """
    from pipeline.tuning import journal
    from pipeline.tuning.preflight import check_storage_url, rdb_engine_kwargs
    from pipeline.tuning.repair import OwnedJournalStorage

    url = config.storage_url(url)
    check_storage_url(url)
    try:
        if url.startswith("redis://"):
            from optuna.storages.journal import JournalRedisBackend

            return OwnedJournalStorage(JournalRedisBackend(url))
        if "://" in url:
            from pipeline.tuning.rdb import open_database, pool_kwargs

            return open_database(url, {**rdb_engine_kwargs(url), **pool_kwargs(url)})
        _check_journal_file(Path(url))
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        try:
            return OwnedJournalStorage(journal.backend(url))
        except (
            ValueError
        ):  # a torn record inside the journal (an append after a torn one): keep the whole ones
            journal.repair(url, full=True)
            return OwnedJournalStorage(journal.backend(url))
    except ConfigError:
        raise
    except (
        ImportError,
        ValueError,
        OSError,
    ) as exc:  # bad scheme, missing driver, unreachable server, bad path
        raise ConfigError(f"cannot open the Optuna storage ({exc}).", key="--storage", value=url) from exc
    except Exception as exc:  # SQLAlchemy's OperationalError and friends: keep the message, drop the trace
        raise ConfigError(
            f"cannot open the Optuna storage ({type(exc).__name__}: {str(exc).splitlines()[0]}).",
            key="--storage",
            value=url,
        ) from exc


def load_existing_study(spec: StudySpec, storage: str | None = None) -> optuna.Study:
    """Load a study that must already exist; ConfigError naming the study and the storage when it does not."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = config.storage_url(storage)
    from pipeline.tuning.preflight import check_storage_url

    check_storage_url(url)
    if "://" not in url and not Path(url).exists():
        raise ConfigError(
            f"no study named {spec.name!r}: there is no such Optuna journal file; run `tune` first.",
            key="--storage",
            value=url,
        )
    backend = open_storage(url)
    names = optuna.get_all_study_names(backend)
    if spec.name not in names:
        raise ConfigError(
            f"no study named {spec.name!r} in this storage (studies there: {', '.join(names) or 'none'}); "
            "run `tune` first.",
            key="--storage",
            value=url,
        )
    return optuna.load_study(study_name=spec.name, storage=backend)


def count_trials(study: optuna.Study) -> dict[str, int]:
    """The study's trials by state, pruned ones by reason (diverged, underperforming, cut by a run's deadline)."""
    keys = ("complete", "pruned_diverged", "pruned_underperforming", "pruned_deadline", "failed", "running")
    counts = dict.fromkeys(keys, 0)
    pruned_key = {PRUNE_DIVERGED: "pruned_diverged", PRUNE_DEADLINE: "pruned_deadline"}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.COMPLETE:
            counts["complete"] += 1
        elif t.state == TrialState.PRUNED:
            reason = t.user_attrs.get("prune_reason", PRUNE_UNDERPERFORMING)
            counts[pruned_key.get(reason, "pruned_underperforming")] += 1
        elif t.state == TrialState.FAIL:
            counts["failed"] += 1
        elif t.state == TrialState.RUNNING:
            counts["running"] += 1
    return counts


def best_trial_info(study: optuna.Study) -> dict | None:
    """The best complete trial as plain data, or None when the study has none."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    best = study.best_trial
    return {
        "study": study.study_name,
        "trial": best.number,
        "value": best.value,
        "params": best.params,
        "mlflow_run_id": best.user_attrs.get("mlflow_run_id"),
    }


def trial_records(study: optuna.Study) -> list[TrialRecord]:
    """Every trial of the study as plain data (reports must not need Optuna)."""
    return [
        TrialRecord(
            number=t.number,
            state=t.state.name,
            params=dict(t.params),
            value=t.value,
            prune_reason=t.user_attrs.get("prune_reason"),
            diverged_epoch=t.user_attrs.get("diverged_epoch"),
            intermediate=dict(t.intermediate_values),
            mlflow_run_id=t.user_attrs.get("mlflow_run_id"),
        )
        for t in study.get_trials(deepcopy=False)
    ]
