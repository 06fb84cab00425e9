"""From a validated study and one trial's settings to the core's objects, and back again (no Optuna, no MLflow).

The runner uses it to build every trial; reports and lr-find use it to replay a trial exactly: training is
deterministic from the study's seed, so a trial's settings are enough to reproduce its curves and weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.data import Dataset, load_dataset
from pipeline.models import Model, build_model
from pipeline.optimizers import Optimizer, build_optimizer
from pipeline.schedules import build_schedule
from pipeline.spec import StudySpec, TrialSettings
from pipeline.training import Hook, TrainResult, train


@dataclass(frozen=True)
class TrialRecord:
    """A finished (or running) trial as plain data, read from Optuna by the runner, for reports."""

    number: int
    state: str  # "COMPLETE" | "PRUNED" | "FAIL" | "RUNNING" | "WAITING"
    params: Mapping[str, object]  # Optuna's trial.params (sampled names, e.g. "lr", "exponential.decay_rate")
    value: float | None = None
    prune_reason: str | None = None  # "diverged" | "underperforming"
    diverged_epoch: int | None = None
    intermediate: Mapping[int, float] = field(default_factory=dict)  # epoch -> reported loss
    mlflow_run_id: str | None = None


def load_study_data(spec: StudySpec) -> Dataset:
    d = spec.data
    return load_dataset(
        d.dataset,
        path=d.path,
        target=d.target,
        task=d.task,
        val_fraction=d.val_fraction,
        seed=spec.seed,
        standardize=d.standardize,
        **dict(d.params),
    )


def build_model_for(spec: StudySpec, data: Dataset) -> Model:
    return build_model(
        spec.model.name,
        n_features=data.n_features,
        task=data.task,
        n_classes=data.n_classes,
        **dict(spec.model.params),
    )


def build_components(settings: TrialSettings, spec: StudySpec, data: Dataset):
    """Model, optimizer and schedule for one trial's settings; the schedule spans the trial's total updates."""
    model = build_model_for(spec, data)
    optimizer: Optimizer = build_optimizer(settings.optimizer, **dict(settings.optimizer_params))
    schedule_params = dict(settings.schedule_params)
    warmup_steps = schedule_params.pop("warmup_steps", 0)
    schedule = build_schedule(
        settings.schedule,
        lr=settings.lr,
        total_steps=spec.total_steps(data.n_train, settings.batch_size),
        warmup_steps=warmup_steps,
        **schedule_params,
    )
    return model, optimizer, schedule


def run_settings(
    settings: TrialSettings,
    spec: StudySpec,
    data: Dataset,
    *,
    hook: Hook | None = None,
    trace_params: bool = False,
) -> TrainResult:
    """Train once with a trial's settings, seeded by the study."""
    model, optimizer, schedule = build_components(settings, spec, data)
    return train(
        model,
        optimizer,
        schedule,
        data,
        epochs=spec.training.epochs,
        batch_size=settings.batch_size,
        seed=spec.seed,
        divergence_factor=spec.training.divergence_factor,
        hook=hook,
        trace_params=trace_params,
    )


class ReplaySuggester:
    """A Suggester that answers with a finished trial's recorded parameters (Optuna's ``trial.params``).

    Feeding it to ``SearchSpace.sample`` rebuilds that trial's TrialSettings through the same conditional logic
    that sampled them, so one-minus and fixed parameters come out exactly as they did in the trial.
    """

    def __init__(self, params: Mapping[str, object]):
        self.params = dict(params)

    def _get(self, name):
        if name not in self.params:
            raise KeyError(f"the trial has no parameter {name!r} (it has {sorted(self.params)})")
        return self.params[name]

    def float(self, name, low, high, *, log):
        return float(self._get(name))

    def int(self, name, low, high, *, log):
        return int(self._get(name))

    def categorical(self, name, choices):
        return self._get(name)


def replay(spec: StudySpec, data: Dataset, trial_params: Mapping[str, object], *, trace_params: bool = False):
    """(settings, TrainResult) of a trial recorded with ``trial_params``."""
    settings = spec.search.sample(ReplaySuggester(trial_params))
    return settings, run_settings(settings, spec, data, trace_params=trace_params)
