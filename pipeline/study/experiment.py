"""From a validated study and one trial's settings to the core's objects, and back again (no Optuna, no MLflow).

The runner uses it to build every trial; reports and lr-find use it to replay a trial exactly: training is
deterministic from the study's seed, so a trial's settings are enough to reproduce its curves and weights.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.core.arrays import Dataset
from pipeline.core.checks import ArgumentError
from pipeline.core.models import Model, build_model
from pipeline.core.optimizers import Optimizer, build_optimizer
from pipeline.core.schedules import build_schedule
from pipeline.core.training import Hook, TrainResult, train
from pipeline.datasets import load_dataset
from pipeline.errors import ConfigError
from pipeline.study import entry_points
from pipeline.study.settings import ReplaySuggester
from pipeline.study.space import TrialSettings
from pipeline.study.spec import StudySpec


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
    """The study's data, checked against its model (before anything is written)."""
    from pipeline.study.checks import check_model_fits

    d = spec.data
    if d.entry_point is not None:
        return entry_points.load_data(spec)
    data = load_dataset(
        d.dataset,
        path=d.path,
        target=d.target,
        task=d.task,
        val_fraction=d.val_fraction,
        seed=spec.seed,
        standardize=d.standardize,
        **dict(d.params),
    )
    check_model_fits(spec, data)
    return data


def build_model_for(spec: StudySpec, data: Dataset) -> Model:
    """The study's model for the loaded data. The loader checked the model's own parameters; what only the data
    can tell (its task, its number of classes) is checked here, and a mismatch names the study file's key.
    A user's model (``model: {entry_point: ...}``) is built by its function and checked once per process
    (interface, shapes, loss at init, gradient against finite differences): call this before writing anything."""
    if spec.model.entry_point is not None:
        return entry_points.build_model(spec, data)
    try:
        return build_model(
            spec.model.name,
            n_features=data.n_features,
            task=data.task,
            n_classes=data.n_classes,
            **dict(spec.model.params),
        )
    except ArgumentError as exc:
        key = f"model.{exc.param}" if exc.param in spec.model.params else "model.name"
        value = exc.value if exc.param in spec.model.params else spec.model.name
        raise ConfigError(
            f"{exc.rule} (the data {data.source} is a {data.task} task)",
            file=str(spec.path),
            key=key,
            value=value,
        ) from None


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


def replay(spec: StudySpec, data: Dataset, trial_params: Mapping[str, object], *, trace_params: bool = False):
    """(settings, TrainResult) of a trial recorded with ``trial_params``."""
    settings = spec.search.sample(ReplaySuggester(trial_params))
    return settings, run_settings(settings, spec, data, trace_params=trace_params)


# ----------------------------------------------------------------------------------------------- LR range test


RECOMMENDED_RULE = (
    "minimum / 10: a tenth of the rate at which the smoothed loss is lowest (Smith 2015; fastai's `minimum`), "
    "at most half the divergence bound"
)


@dataclass(frozen=True)
class RangeTestReport:
    """An LR range test run for a study: the curve, the suggestions and, for least squares, the theory."""

    lrs: object
    losses: object
    smoothed: object
    diverged_lr: float | None
    stop_reason: str
    suggestions: object  # pipeline.core.lrfind.Suggestions
    theory_lr: float | None  # 2 / lambda_max for full-batch least squares, else None
    optimizer: str
    batch_size: int | None

    @property
    def bound(self) -> float | None:
        """The divergence bound: the rate at which the test diverged, or the theory's 2/lambda_max when that is
        lower (the test's loss takes a few steps to blow up, so it overshoots the bound of full-batch least
        squares by 1.5-2x); None when the ramp ended first and there is no theory."""
        known = [b for b in (self.diverged_lr, self.theory_lr) if b is not None]
        return min(known) if known else None

    @property
    def search_range(self) -> tuple[float, float]:
        """The recommended log-uniform search range: the suggestions' range, never past :attr:`bound`."""
        low, high = self.suggestions.low, self.suggestions.high
        if self.bound is not None:
            high = min(high, self.bound)
        return (low if low < high else high / 10), high

    @property
    def recommended(self) -> float:
        """One rate by :data:`RECOMMENDED_RULE`, kept a factor 2 under the divergence bound.

        Why this rule rather than the valley or the steepest descent: on the reference study (300 epochs of
        full-batch GD on diabetes) the tuned best lr is 0.157; minimum / 10 gives 0.040, the valley 0.00042 and
        the steepest descent 0.00062, rates at which 300 epochs do not reach the best loss (a range test's
        ramp judges a rate by a few steps, the valley suits fine-tuning for a few epochs)."""
        rate = self.suggestions.min_over_10
        if self.bound is not None:
            rate = min(rate, self.bound / 2)
        return rate

    def as_dict(self) -> dict:
        s = self.suggestions
        low, high = self.search_range
        return {
            "recommended": self.recommended,
            "recommended_rule": RECOMMENDED_RULE,
            "divergence_bound": self.bound,
            "diverged_lr": self.diverged_lr,
            "steepest": s.steepest,
            "min_over_10": s.min_over_10,
            "valley": s.valley,
            "lr_at_min": s.lr_at_min,
            "recommended_low": low,
            "recommended_high": high,
            "theory_2_over_lambda_max": self.theory_lr,
            "optimizer": self.optimizer,
            "batch_size": "full" if self.batch_size is None else self.batch_size,
            "stop_reason": self.stop_reason,
        }


def run_range_test(spec: StudySpec, data: Dataset, auto=None) -> RangeTestReport:
    """Smith's LR range test on the study's model and data (Smith 2015, §3.3).

    The optimizer is the study's first optimizer choice with its fixed parameters (searched ones at their
    defaults): an adaptive optimizer's good rates differ from SGD's by orders of magnitude, so the test must use
    the optimizer the study tunes. The batch size is ``training.batch_size``. ``auto`` is the study's
    ``lr: auto`` settings (``spec.LrAuto``); default: its defaults.
    """
    from pipeline.core import lrfind
    from pipeline.core.models import LinearRegression
    from pipeline.study.space import LrAuto

    auto = auto or spec.search.lr_auto or LrAuto()
    branch = spec.search.optimizers[0]
    fixed = {k: p.representative for k, p in branch.params.items() if not p.sampled}
    optimizer = build_optimizer(branch.name, **fixed)
    model = build_model_for(spec, data)
    batch_size = spec.training.batch_size
    kwargs = dict(batch_size=batch_size, seed=spec.seed, stop_factor=auto.stop_factor)
    start_lr, restarted = auto.start_lr, []
    while True:
        if auto.ramp == "segments":
            ramp = lrfind.segments_ramp(auto.start_lr, auto.step_lr, auto.iterations_per_value, auto.end_lr)
            result = lrfind.range_test(model, optimizer, data, ramp=ramp, **kwargs)
        else:
            result = lrfind.range_test(
                model,
                optimizer,
                data,
                start_lr=start_lr,
                end_lr=auto.end_lr,
                steps=auto.steps,
                mode=auto.ramp,
                **kwargs,
            )
        try:
            suggestions = lrfind.suggest(result)
            break
        except ValueError as exc:
            # The ramp diverged at its first rates (features on a large scale, not standardised): restart it
            # 1000x lower, a few times, before giving up with the fix in one line.
            if auto.ramp == "segments" or len(restarted) >= 4 or start_lr / 1000 >= auto.end_lr:
                raise ConfigError(
                    f"the LR range test diverges from its first rates ({exc}). The data are probably not "
                    "standardised: set data.standardize: true, or start the ramp lower with "
                    f"lr: {{auto: {{start_lr: {start_lr / 1000:g}}}}}.",
                    file=str(spec.path),
                    key="search.lr",
                    value="auto",
                ) from None
            restarted.append(start_lr)
            start_lr /= 1000
    stop_reason = result.stop_reason
    if restarted:
        stop_reason += (
            f" (ramp restarted from {start_lr:g}: it diverged from its first rate {restarted[0]:g})"
        )
    theory = None
    full_batch = batch_size is None or batch_size >= data.n_train
    if isinstance(model, LinearRegression) and full_batch and branch.name == "sgd":
        theory = lrfind.least_squares_bound(data.X_train)
    return RangeTestReport(
        lrs=result.lrs,
        losses=result.losses,
        smoothed=result.smoothed,
        diverged_lr=result.diverged_lr,
        stop_reason=stop_reason,
        suggestions=suggestions,
        theory_lr=theory,
        optimizer=branch.name,
        batch_size=batch_size,
    )
