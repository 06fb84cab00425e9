"""The typed study: what a validated study file says (data, model, training, search, budget, sampler, pruner)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigError
from pipeline.study.space import (
    DEFAULT_REPORT_POINTS,
    DEFAULT_TOLERANCE,
    DEFAULT_TRIALS,
    SearchSpace,
    steps_per_epoch,
)


@dataclass(frozen=True)
class EntryPoint:
    """A user's function named by a study file: ``file.py:function`` (``path`` resolved against the study file)
    or ``package.module:function`` (``module``). ``source`` is the file that holds the code (hashed into the
    study's identity, shipped with an exported model). Loading it runs that code: see
    :mod:`pipeline.study.entry_points`."""

    text: str  # as written in the study file
    function: str
    path: Path | None = None
    module: str | None = None
    source: Path | None = None
    # sha256 of ``source`` when the study was loaded ("" without a readable file): a field, so that a study's
    # fingerprint (every compared field of the spec) changes when the model's code does.
    source_sha256: str = ""
    # A Python object given through the API instead of a name (a model, or a function). Not compared: it is named
    # by ``text`` and ``source`` (its repr may hold a memory address, which would differ on every run).
    obj: Any = field(default=None, compare=False)

    def identity(self) -> dict[str, str]:
        """What names this code in a study's identity: the entry point as written and its file's hash."""
        return {"entry_point": self.text, "source_sha256": self.source_sha256}


@dataclass(frozen=True)
class DataSpec:
    """Arguments of ``pipeline.datasets.load_dataset`` (the seed is the study's). ``path`` is absolute.

    ``dataset == "entry_point"``: the arrays come from the user's function ``entry_point`` called with ``params``
    (and ``seed`` when it takes one), then are split and standardised like any dataset."""

    dataset: str
    path: Path | None = None
    target: str | None = None
    task: str | None = None
    val_fraction: float = 0.2
    standardize: bool = True
    params: Mapping[str, Any] = field(default_factory=dict)
    entry_point: EntryPoint | None = None


@dataclass(frozen=True)
class ModelSpec:
    """``pipeline.core.models.build_model(name, n_features=..., task=..., n_classes=..., **params)``.

    ``name == "entry_point"``: the user's function ``entry_point`` builds the model from ``params`` (and
    ``n_features``, ``task``, ``n_classes`` when it takes them); ``gradient_check`` holds the tolerances of the
    check it must pass before anything is written (``pipeline.core.usermodel.GradientTolerance``)."""

    name: str
    params: Mapping[str, Any] = field(default_factory=dict)
    entry_point: EntryPoint | None = None
    gradient_check: Any = field(default=None, compare=False)  # how the model is checked, not what it computes

    @property
    def label(self) -> str:
        """How to name the model to a person: the built-in's name, or the entry point as written."""
        return self.entry_point.text if self.entry_point is not None else self.name


@dataclass(frozen=True)
class TrainingSpec:
    """``epochs``, the default ``batch_size`` (None = full batch; a trial's is ``TrialSettings.batch_size``,
    which ``search.batch_size`` may vary) and the divergence threshold passed to ``pipeline.core.training.train``."""

    epochs: int
    batch_size: int | None = None
    divergence_factor: float = 10.0

    def total_steps(self, n_train: int, batch_size: int | None) -> int:
        """Updates in a whole run: ``epochs * ceil(n_train / batch_size)`` (full batch: ``epochs``)."""
        return self.epochs * steps_per_epoch(n_train, batch_size)


@dataclass(frozen=True)
class Budget:
    """When a run stops starting trials, whichever limit comes first (None = no such limit).

    Per run (``--trials`` / ``--timeout`` replace both): ``trials`` finished by this process, ``timeout`` seconds
    from the run's start; the deadline also cuts the running trial at its next epoch (pruned, reason ``deadline``).
    Study-wide, over every run and worker: ``max_trials`` finished trials (complete + pruned); ``patience``: stop
    when the best loss has not improved by more than ``tolerance`` (relative) over the last ``patience`` finished
    trials ("converged").
    """

    trials: int | None = DEFAULT_TRIALS
    timeout: float | None = None
    max_trials: int | None = None
    patience: int | None = None
    tolerance: float = DEFAULT_TOLERANCE


@dataclass(frozen=True)
class SamplerSpec:
    """``tpe`` | ``random`` | ``grid`` and extra constructor arguments (the seed is the study's)."""

    name: str = "tpe"
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PrunerSpec:
    """``none`` | ``median`` | ``percentile`` | ``hyperband`` | ``successive_halving`` and the Optuna pruner's
    constructor arguments. Divergence is pruned by the training loop whatever this says."""

    name: str = "none"
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrackingSpec:
    """``report_points``: how many intermediate values per trial go to Optuna (evenly spaced, plus the last)."""

    report_points: int = DEFAULT_REPORT_POINTS


@dataclass(frozen=True)
class WorkersSpec:
    """How workers on database storages watch each other (Optuna's heartbeat), in seconds: every running trial
    writes a heartbeat each ``heartbeat_interval``; a trial whose last one is older than ``grace_period`` (default
    2 x interval) is failed by the next live worker to start a trial and re-run with the same params up to
    ``max_retry`` times. None: no heartbeat. Ignored, with a message, on a journal file or Redis, which have none."""

    heartbeat_interval: int | None = None
    grace_period: int | None = None
    max_retry: int = 1


@dataclass(frozen=True)
class StudySpec:
    """A validated study file. ``name`` is the Optuna study and MLflow experiment name (default: file stem)."""

    path: Path
    name: str
    seed: int
    data: DataSpec
    model: ModelSpec
    training: TrainingSpec
    search: SearchSpace
    budget: Budget
    sampler: SamplerSpec
    pruner: PrunerSpec
    tracking: TrackingSpec
    description: str = ""
    # How the study is run, not what it computes: not part of the study's identity.
    workers: WorkersSpec = field(default_factory=WorkersSpec, compare=False)

    def total_steps(self, n_train: int, batch_size: int | None) -> int:
        """Updates in one trial at ``batch_size``: ``epochs * ceil(n_train / batch_size)``."""
        return self.training.total_steps(n_train, batch_size)

    def check_steps(self, n_train: int) -> None:
        """Check warmup against the real number of updates, once the training set's size is known.

        ``load_study`` can check ``warmup_steps < total steps`` only when a trial may train full batch (total =
        epochs); mini-batch studies need ``n_train``, which the runner learns when it loads the data.

        Raises:
            ConfigError: some trial could draw ``warmup_steps >= epochs * steps_per_epoch``.
        """
        _check_warmup(self.path.as_posix(), self.search, self.training.epochs, n_train)


def _check_warmup(file: str, search: SearchSpace, epochs: int, n_train: int | None) -> None:
    """``warmup_steps < total steps`` for every batch size a trial can draw (the fewest steps is the bound)."""
    warm = search.max_warmup_steps()
    if warm is None:
        return
    options = search.batch_options()
    if n_train is None:
        if None not in options:
            return  # mini-batch only: the bound needs n_train (StudySpec.check_steps)
        total, how = epochs, f"training.epochs = {epochs} (full batch)"
    else:
        batch = max(options, key=lambda b: math.inf if b is None else b)
        total = epochs * steps_per_epoch(n_train, batch)
        shown = "full" if batch is None else batch
        how = f"epochs x ceil(n_train / batch_size) = {epochs} x ceil({n_train} / {shown}) = {total}"
    top, key = warm
    if top >= total:
        raise ConfigError(f"must be < the total number of steps, {how}.", file=file, key=key, value=top)
