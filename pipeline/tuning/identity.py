"""A study's identity in the Optuna storage: recorded at creation, checked on every resume, and its versions.

A study file edited between nights (``epochs: 300 -> 200``, a wider lr range, a CSV exported again) would mix
trials that cannot be compared in one study. So a study records its identity (:mod:`pipeline.study.identity`) as
user attributes when it is created, and a run whose study file no longer matches is refused before anything is
written (exit 2), naming every differing key and the ways forward:

- a new ``name:`` in the study file: a new study, the stored one stays as it is;
- ``tune --new-version``: a new version ``<name>.v2`` (then ``.v3``, ...: the next after the latest), as the Optuna
  study and the MLflow experiment, whose first trials are the previous version's best
  :data:`WARM_START_TRIALS` complete settings that still fit the search space (a warm start).

Later runs of the same study file (whose ``name`` stays ``<name>``) find the latest version and resume it. A study
created before identities were recorded is adopted: its identity is recorded by the first run that finds it.

Read-only until :func:`record`: :func:`plan_study` only reads study names and attributes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from pipeline.errors import ConfigError
from pipeline.study.identity import (
    describe_differences,
    differences,
    fitting_params,
    identity_sha256,
    study_identity,
)
from pipeline.study.space import SearchSpace
from pipeline.study.spec import StudySpec

IDENTITY_ATTR = "identity"  # study user attribute: the identity, key -> value
IDENTITY_SHA256_ATTR = "identity_sha256"
VERSION_ATTR = "version"  # 1, 2, ...
PREVIOUS_ATTR = "previous_version"  # the study a version was started from (its warm start)
WARM_START_ATTR = "warm_start_from"  # trial user attribute: "<previous study>#<trial number>"
# The previous version's best complete trials enqueued as a new version's first trials: enough to carry the good
# region over, few enough that the sampler soon explores again.
WARM_START_TRIALS = 5


def version_name(base: str, version: int) -> str:
    """``base`` for version 1, ``base.v2``, ``base.v3``, ... after it."""
    return base if version == 1 else f"{base}.v{version}"


def versions(base: str, names: list[str]) -> dict[int, str]:
    """The stored versions of the study named ``base`` in a study file: version -> study name."""
    pattern = re.compile(re.escape(base) + r"\.v([0-9]+)")
    found = {1: base} if base in names else {}
    for name in names:
        match = pattern.fullmatch(name)
        if match and int(match.group(1)) >= 2 and not match.group(1).startswith("0"):
            found[int(match.group(1))] = name
    return found


@dataclass(frozen=True)
class StudyPlan:
    """Which stored study a run works on, decided before anything is written."""

    name: str  # the Optuna study and the MLflow experiment
    base: str  # the study file's name: version 1's, and the stem of the others (``<base>.v2``)
    version: int
    identity: dict[str, Any]
    exists: bool  # resumed (True) or to be created
    adopted: bool = False  # it exists but has no recorded identity (made before identities were recorded)
    previous: str | None = None  # a new version: the study its warm start comes from


def stored_backend(url: str) -> BaseStorage | None:
    """The Optuna storage at ``url`` opened to read its studies, or None when it is a local file (journal or
    sqlite) that does not exist yet: it holds no study, and opening it would create it, which a run refused later
    (a bad tracking URI) must not leave behind."""
    from pipeline.tuning.storage import open_storage

    path = None
    if "://" not in url:
        path = Path(url)
    elif url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :].split("?", 1)[0])
    if path is not None and (not path.is_file() or path.stat().st_size == 0):
        return None
    return open_storage(url)


def _user_attrs(backend: BaseStorage, name: str) -> dict[str, Any]:
    return backend.get_study_user_attrs(backend.get_study_id_from_name(name))


def plan_study(spec: StudySpec, backend: BaseStorage | None, *, new_version: bool = False) -> StudyPlan:
    """The study this run works on: the latest stored version of ``spec.name`` when its identity matches the
    study file (or it has none yet), a new one when there is none or ``new_version`` asks for it. ``backend``
    None: a storage that holds no study yet (:func:`stored_backend`).

    Raises:
        ConfigError: the latest version's recorded identity differs from the study file's (and ``new_version`` is
            not set): each differing key as ``key: old -> new``, then the ways forward. Nothing is written.
    """
    identity = study_identity(spec)
    found = versions(spec.name, optuna.get_all_study_names(backend)) if backend is not None else {}
    if not found:
        return StudyPlan(spec.name, spec.name, 1, identity, exists=False)
    latest = max(found)
    current = found[latest]
    if new_version:
        following = version_name(spec.name, latest + 1)
        return StudyPlan(following, spec.name, latest + 1, identity, exists=False, previous=current)
    stored = _user_attrs(backend, current).get(IDENTITY_ATTR)
    if stored is None:
        return StudyPlan(current, spec.name, latest, identity, exists=True, adopted=True)
    diffs = differences(stored, identity)
    if diffs:
        raise ConfigError(refusal(spec, spec.name, current, latest, diffs), file=str(spec.path))
    return StudyPlan(current, spec.name, latest, identity, exists=True)


def refusal(
    spec: StudySpec,
    base: str,
    current: str,
    version: int,
    diffs: list[tuple[str, Any, Any]],
    *,
    written: bool = False,
) -> str:
    """The message of a refused run: what differs (stored ``current``, version ``version`` of ``base``), then
    what to do."""
    csv = Path(spec.data.path) if spec.data.path is not None else None
    shown = f"{current!r}" + (f" (version {version})" if version > 1 else "")
    following = version_name(base, version + 1)
    lines = [
        f"this study file no longer matches the stored study {shown}: its trials would not be comparable with "
        f"the stored ones. Stored -> study file now:",
        *(f"  {line}" for line in describe_differences(diffs, csv)),
        "Ways forward:",
        f"  - a new study: give the study file a new `name:` (the stored study {current!r} stays as it is);",
        f"  - a new version: run `tune` again with --new-version: it creates {following!r} (the Optuna study and "
        f"the MLflow experiment) and runs the best {WARM_START_TRIALS} settings of {current!r} that fit the new "
        "search space as its first trials;",
        f"  - or undo the edit, and the run resumes {current!r}.",
        "Only the MLflow experiment was written (another worker created the study meanwhile)."
        if written
        else "Nothing was written.",
    ]
    return "\n".join(lines)


def record(study: optuna.Study, plan: StudyPlan, spec: StudySpec) -> list[str]:
    """Write the identity (and version) on a study just created or adopted; lines to print (an adoption).

    Another worker may have created the study between :func:`plan_study` and here: its identity is then checked
    like a resumed study's (ConfigError when it differs) rather than overwritten."""
    if plan.exists and not plan.adopted:
        return []
    stored = study.user_attrs.get(IDENTITY_ATTR)
    if stored is not None:
        diffs = differences(stored, plan.identity)
        if diffs:
            raise ConfigError(
                refusal(spec, plan.base, plan.name, plan.version, diffs, written=True), file=str(spec.path)
            )
        return []
    study.set_user_attr(IDENTITY_ATTR, plan.identity)
    study.set_user_attr(IDENTITY_SHA256_ATTR, identity_sha256(plan.identity))
    study.set_user_attr(VERSION_ATTR, plan.version)
    if plan.previous is not None:
        study.set_user_attr(PREVIOUS_ATTR, plan.previous)
    if plan.adopted:
        return [
            f"identity: study {plan.name!r} had no recorded identity (it was created before identities were "
            "recorded); recorded this study file's, which later runs are checked against"
        ]
    return []


def warm_start(
    study: optuna.Study,
    backend: BaseStorage,
    previous: str,
    search: SearchSpace,
    *,
    k: int = WARM_START_TRIALS,
) -> list[str]:
    """Enqueue the previous version's best ``k`` complete trials' parameters as the study's first trials, each
    reduced to the parameters the new search space accepts (the others are left to the sampler, and said).
    ``search`` must have ``lr: auto`` resolved. Returns the lines to print."""
    before = optuna.load_study(study_name=previous, storage=backend, sampler=optuna.samplers.RandomSampler())
    complete = [
        t
        for t in before.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.value is not None and math.isfinite(t.value)
    ]
    best = sorted(complete, key=lambda t: (t.value, t.number))[:k]
    if not best:
        return [
            f"warm start: {previous!r} has no complete trial; {study.study_name!r} starts from the sampler alone"
        ]
    notes, enqueued = [], []
    for trial in best:
        kept, dropped = fitting_params(search, trial.params)
        if not kept:
            notes.append(f"  trial {trial.number} skipped: nothing of it fits ({'; '.join(dropped)})")
            continue
        if dropped:
            notes.append(f"  trial {trial.number}: {'; '.join(dropped)}; left to the sampler")
        study.enqueue_trial(
            kept, user_attrs={WARM_START_ATTR: f"{previous}#{trial.number}"}, skip_if_exists=True
        )
        enqueued.append(trial.number)
    numbers = ", ".join(str(n) for n in enqueued) or "none"
    head = (
        f"warm start: {len(enqueued)} of the {len(best)} best complete trials of {previous!r} enqueued as the first "
        f"trials of {study.study_name!r} (trials {numbers})"
    )
    return [head, *notes]


def current_version(spec: StudySpec, storage: str | None) -> StudySpec:
    """``spec`` named as the latest stored version of its study (``<name>.v2`` after ``tune --new-version``), so
    that `best`, `report`, `lr-find` and `train-best` read the study `tune` now resumes; unchanged when only
    version 1 exists, or nothing yet (the command then says there is no such study)."""
    import dataclasses

    from pipeline import config

    backend = stored_backend(config.storage_url(storage))
    if backend is None:
        return spec
    found = versions(spec.name, optuna.get_all_study_names(backend))
    if not found or max(found) == 1:
        return spec
    return dataclasses.replace(spec, name=found[max(found)])
