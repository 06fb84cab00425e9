"""A study's report: replay its finished trials through the core and draw them as PNGs (no Optuna, no MLflow).

Optuna keeps only a thinned curve per trial; the full curves, learning rates and weights come from replaying each
trial's parameters with :func:`pipeline.study.experiment.replay`. Training is deterministic from the study's seed, so
the replay reproduces the recorded run, and the report checks that it does against the values the study
recorded (its intermediate values, final value and divergence). A disagreement means the study file or the code
changed since the study ran: the pictures would then show a different experiment, so the report stops
(``strict=False`` only warns).

The runner turns Optuna's trials into :class:`~pipeline.study.experiment.TrialRecord` (plain data) and may pass
parameter importances it computed with ``optuna.importance``.
"""

from __future__ import annotations

import datetime
import math
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.arrays import Dataset
from pipeline.core.checks import check_int
from pipeline.core.models import Model
from pipeline.core.names import (
    BINARY,
    COMPLETE,
    COMPLETED,
    DIVERGED,
    MULTICLASS,
    PRUNE_DIVERGED,
    PRUNED,
    REGRESSION,
)
from pipeline.core.training import TrainResult
from pipeline.errors import ConfigError, PipelineError
from pipeline.paths import inside
from pipeline.reports import plots
from pipeline.study.experiment import ReplaySuggester, TrialRecord, build_model_for, load_study_data, replay
from pipeline.study.space import TrialSettings
from pipeline.study.spec import StudySpec

LOSS_NAMES = {REGRESSION: "MSE", BINARY: "cross-entropy", MULTICLASS: "cross-entropy"}
# Replays run the same NumPy code on the same data; only a different BLAS could move the last digits.
REPLAY_RTOL, REPLAY_ATOL = 1e-6, 1e-12
MAX_COMPARE = 6  # panels in the compare plots when a study has more learning rates than that

FILES = {
    "curves": "curves.png",
    "loss_vs_lr": "loss-vs-lr.png",
    "schedules": "lr-schedules.png",
    "history": "history.png",
    "importance": "importance.png",
    "trajectories": "weights-trajectories.png",
    "histograms": "weights-histograms.png",
}


class ReplayMismatchError(PipelineError):
    """Replaying a trial did not reproduce what the study recorded (the study file or the code changed)."""


class ReplayMismatchWarning(UserWarning):
    """:class:`ReplayMismatchError`'s message, as a warning when ``strict=False``."""


@dataclass(frozen=True)
class ReplayedTrial:
    """A finished trial, its settings and its replayed training (``curve``: the monitored loss per epoch, cut
    where the trial stopped: a trial pruned as underperforming ends at the epoch it was pruned)."""

    record: TrialRecord
    kind: str  # "complete" | "diverged" | "pruned"
    settings: TrialSettings
    result: TrainResult
    curve: np.ndarray

    @property
    def lr(self) -> float:
        return self.settings.lr


# ----------------------------------------------------------------------------------------------- data prep


def trial_kind(record: TrialRecord) -> str | None:
    """ "complete", "diverged" (pruned because training diverged), "pruned" (pruned as underperforming), or None
    for a trial with nothing to show (FAIL, RUNNING, WAITING)."""
    if record.state == "COMPLETE":
        return COMPLETE
    if record.state == "PRUNED":
        if record.prune_reason == PRUNE_DIVERGED or (
            record.prune_reason is None and record.diverged_epoch is not None
        ):
            return DIVERGED
        return PRUNED
    return None


def best_trials(records: Sequence[TrialRecord], k: int) -> list[TrialRecord]:
    """The ``k`` complete trials with the lowest finite value, best first (ties: lower trial number first)."""
    check_int(k, "best_k", "write_report", low=1)
    complete = [
        r for r in records if trial_kind(r) == COMPLETE and r.value is not None and math.isfinite(r.value)
    ]
    return sorted(complete, key=lambda r: (r.value, r.number))[:k]


def is_lr_grid(spec: StudySpec) -> bool:
    """True when the study tries a list of learning rates and nothing else (grid sampler over lr only)."""
    if spec.sampler.name != "grid":
        return False
    try:
        grid = spec.search.grid()
    except ValueError:
        return False
    return list(grid) == ["lr"]


def param_labels(model: Model, feature_names: Sequence[str] | None = None) -> list[str]:
    """A name per entry of the flat parameter vector, from ``model.unpack``: "w[3]", "b", "W1[0,2]".

    With the dataset's ``feature_names``, a weight on an input feature is named by it: "w[bmi]" for a linear
    or logistic model, "W[bmi,2]" for softmax (class 2), "W1[bmi,0]" for the MLP's first layer (unit 0).
    """
    index = model.unpack(np.arange(model.n_params, dtype=np.float64))
    names = list(feature_names or ())
    labels = [""] * model.n_params
    for name, positions in index.items():
        positions = np.asarray(positions)
        if positions.ndim == 0:
            labels[int(positions)] = name
            continue
        # The input layer: its first axis runs over the features.
        by_feature = name in ("w", "W", "W1") and len(names) == positions.shape[0]
        for idx in np.ndindex(positions.shape):
            shown = [names[idx[0]] if by_feature else str(idx[0]), *map(str, idx[1:])]
            labels[int(positions[idx])] = f"{name}[{','.join(shown)}]"
    return labels


def _labels_by_array(model: Model, labels: list[str]) -> dict[str, list[str]]:
    """{array name: the labels of its entries, in ``ravel`` order} from the flat vector's ``param_labels``."""
    index = model.unpack(np.arange(model.n_params, dtype=np.float64))
    return {name: [labels[int(i)] for i in np.asarray(pos).ravel()] for name, pos in index.items()}


def compare_selection(trials: Sequence[ReplayedTrial], max_n: int = MAX_COMPARE) -> list[ReplayedTrial]:
    """One trial per distinct learning rate (the lowest trial number), sorted by lr; at most ``max_n`` of them,
    evenly spread over the sorted rates (the smallest and the largest always in)."""
    by_lr: dict[float, ReplayedTrial] = {}
    for t in sorted(trials, key=lambda t: t.record.number):
        by_lr.setdefault(t.lr, t)
    chosen = [by_lr[lr] for lr in sorted(by_lr)]
    if len(chosen) <= max_n:
        return chosen
    picks = np.unique(np.round(np.linspace(0, len(chosen) - 1, max_n)).astype(int))
    return [chosen[i] for i in picks]


def replay_discrepancies(record: TrialRecord, result: TrainResult, kind: str | None = None) -> list[str]:
    """How a replay differs from what the study recorded for the trial; empty when it reproduces it.

    Compared: every intermediate value (epoch -> monitored loss), a complete trial's final value, and whether
    (and at which epoch) training diverged.
    """
    kind = kind or trial_kind(record)
    problems = []
    monitored = result.monitored
    for epoch, recorded in sorted((int(e), float(v)) for e, v in record.intermediate.items()):
        if epoch >= result.epochs_run:
            problems.append(
                f"epoch {epoch} was recorded ({recorded:.6g}) but the replay stopped after epoch "
                f"{result.epochs_run - 1} ({result.reason})"
            )
        elif not np.isclose(monitored[epoch], recorded, rtol=REPLAY_RTOL, atol=REPLAY_ATOL):
            problems.append(f"epoch {epoch}: recorded loss {recorded:.6g}, replay {monitored[epoch]:.6g}")
    if kind == DIVERGED:
        if result.status != DIVERGED:
            problems.append(f"the trial diverged but the replay ended with: {result.reason}")
        elif record.diverged_epoch is not None and record.diverged_epoch != result.diverged_epoch:
            problems.append(
                f"the trial diverged at epoch {record.diverged_epoch}, the replay at epoch {result.diverged_epoch}"
            )
    elif kind == COMPLETE:
        if result.status != COMPLETED:
            problems.append(f"the trial completed but the replay ended with: {result.reason}")
        elif record.value is not None and not np.isclose(
            result.final_loss, record.value, rtol=REPLAY_RTOL, atol=REPLAY_ATOL
        ):
            problems.append(f"final value: recorded {record.value:.6g}, replay {result.final_loss:.6g}")
    return problems


# ----------------------------------------------------------------------------------------------- replay


class _Misfit(Exception):
    """A trial's recorded parameters do not fit the study's search space."""


class _CheckedReplay(ReplaySuggester):
    """ReplaySuggester that also checks each value against the range / choices the study asks it with."""

    def __init__(self, params: Mapping[str, object]):
        super().__init__(params)
        self.asked: list[str] = []

    def _get(self, name):
        self.asked.append(name)
        if name not in self.params:
            raise _Misfit(f"the study asks for {name!r}, which the trial does not have")
        return self.params[name]

    def float(self, name, low, high, *, log):
        value = super().float(name, low, high, log=log)
        # Optuna may return an end with a rounding error of an ulp or so.
        if not (low * (1 - 1e-12) - 1e-300 <= value <= high * (1 + 1e-12) + 1e-300):
            raise _Misfit(f"its {name} = {value!r} is outside the study's range [{low:g}, {high:g}]")
        return value

    def int(self, name, low, high, *, log):
        value = super().int(name, low, high, log=log)
        if not low <= value <= high:
            raise _Misfit(f"its {name} = {value!r} is outside the study's range [{low}, {high}]")
        return value

    def categorical(self, name, choices):
        value = super().categorical(name, choices)
        if value not in choices:
            raise _Misfit(f"its {name} = {value!r} is not one of the study's choices {list(choices)}")
        return value


def _check_fits(spec: StudySpec, record: TrialRecord) -> None:
    """ConfigError naming the study file when the trial's parameters could not have been sampled from it."""
    suggest = _CheckedReplay(record.params)
    try:
        spec.search.sample(suggest)
        extra = sorted(set(record.params) - set(suggest.asked))
        if extra:
            raise _Misfit(f"the study no longer samples {', '.join(map(repr, extra))}")
    except (_Misfit, ValueError, RuntimeError) as exc:
        raise ConfigError(
            f"trial {record.number}'s parameters no longer fit this study file: {exc}. Was the file edited "
            "after the study ran? Restore it (or give the edited study a new name and run it).",
            file=spec.path.as_posix(),
            value=dict(record.params),
        ) from None


def replay_trials(
    spec: StudySpec,
    records: Sequence[TrialRecord],
    *,
    data: Dataset | None = None,
    trace_params: bool = False,
    strict: bool = True,
) -> list[ReplayedTrial]:
    """Replay every finished trial (COMPLETE or PRUNED; others skipped), checked against what was recorded.

    Raises:
        ConfigError: a trial's parameters do not fit ``spec``'s search space.
        ReplayMismatchError: a replay differs from the record (with ``strict=False``: a ReplayMismatchWarning).
    """
    data = load_study_data(spec) if data is None else data
    replayed = []
    for record in sorted(records, key=lambda r: r.number):
        kind = trial_kind(record)
        if kind is None:
            continue
        _check_fits(spec, record)
        try:
            settings, result = replay(spec, data, record.params, trace_params=trace_params)
        except ValueError as exc:
            raise ConfigError(
                f"trial {record.number} cannot be replayed with this study file ({exc}).",
                file=spec.path.as_posix(),
            ) from None
        problems = replay_discrepancies(record, result, kind)
        if problems:
            shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
            message = (
                f"{spec.path.as_posix()}: replaying trial {record.number} does not reproduce the study's record "
                f"({shown}). The study file, the data or the code changed since the study ran; the report would "
                "show a different experiment. Restore them, or run the study again under a new name."
            )
            if strict:
                raise ReplayMismatchError(message)
            warnings.warn(message, ReplayMismatchWarning, stacklevel=2)
        curve = result.monitored
        if kind == PRUNED and record.intermediate:
            curve = curve[: max(int(e) for e in record.intermediate) + 1]
        replayed.append(ReplayedTrial(record, kind, settings, result, curve))
    return replayed


# ----------------------------------------------------------------------------------------------- the report


def _describe(settings: TrialSettings) -> str:
    """ "adam(beta2=0.999), cosine(min_lr_ratio=0.01), batch 32": a trial's settings besides lr, for legends."""

    def value(v: object) -> str:
        if not isinstance(v, float):
            return str(v)
        # A factor near 1 (beta2 = 0.99985) would print as "1" at 3 digits: show its distance from 1 instead.
        return f"1-{1 - v:.2g}" if 0.99 < v < 1 else f"{v:.3g}"

    def params(kv: Mapping[str, object]) -> str:
        return ", ".join(f"{k}={value(v)}" for k, v in kv.items())

    schedule = settings.schedule
    if settings.schedule_params:
        schedule = f"{schedule}({params(settings.schedule_params)})"
    optimizer = settings.optimizer
    if settings.optimizer_params:
        optimizer = f"{optimizer}({params(settings.optimizer_params)})"
    batch = "" if settings.batch_size is None else f", batch {settings.batch_size}"
    return f"{optimizer}, {schedule}{batch}"


def write_report(
    spec: StudySpec,
    records: list[TrialRecord],
    out_dir: Path,
    *,
    importances: dict[str, float] | None = None,
    best_k: int = 5,
    compare: bool | None = None,
    data: Dataset | None = None,
    strict: bool = True,
    dpi: int = plots.DEFAULT_DPI,
) -> list[Path]:
    """Draw the study's pictures into ``out_dir`` (created) and return their paths; [] when no trial finished.

    Always: ``curves.png`` (every trial's loss per epoch, coloured by lr), ``loss-vs-lr.png`` (final loss
    against lr, diverged region shaded), ``lr-schedules.png`` (the lr used per epoch by the ``best_k`` best
    trials), ``history.png`` (value per trial and best so far), ``importance.png`` (when ``importances`` is
    not empty). With ``compare`` (default: the study's sampler is a grid over lr only):
    ``weights-trajectories.png`` and ``weights-histograms.png`` (one lr per panel / row).

    Args:
        importances: {parameter: importance} from ``optuna.importance.get_param_importances``.
        data: the study's dataset when the caller has it already (else loaded from ``spec``).
        strict: raise when a replay does not reproduce its record (False: warn and draw anyway).

    Raises:
        ConfigError: a trial's parameters do not fit the study file.
        ReplayMismatchError: a replay differs from what the study recorded (see ``strict``).
    """
    check_int(best_k, "best_k", "write_report", low=1)
    data = load_study_data(spec) if data is None else data
    compare = is_lr_grid(spec) if compare is None else compare
    trials = replay_trials(spec, records, data=data, trace_params=compare, strict=strict)
    if not trials:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    has_val = data.X_val.shape[0] > 0
    kind = "the model's own" if spec.model.entry_point is not None else LOSS_NAMES.get(data.task, "loss")
    loss = f"{'validation' if has_val else 'training'} loss ({kind})"
    name = spec.name
    written: list[Path] = []

    counts = Counter(r.state.lower() for r in records)
    made = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    stamped = (
        f"{name}: {len(records)} trials ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}), {made}"
    )

    def out(fig, key: str) -> None:
        plots.stamp(fig, stamped)
        written.append(plots.save(fig, inside(out_dir, out_dir / FILES[key], key="--out"), dpi=dpi))

    lrs = [t.lr for t in trials]
    kinds = [t.kind for t in trials]
    top = best_trials([t.record for t in trials], 1)
    best_index = next((i for i, t in enumerate(trials) if top and t.record.number == top[0].number), None)
    best_label = (
        f"best: trial {top[0].number}, lr {trials[best_index].lr:.3g}, loss {top[0].value:.4g}"
        if best_index is not None
        else "best trial"
    )
    out(
        plots.plot_curves(
            lrs,
            [t.curve for t in trials],
            kinds=kinds,
            diverged_epochs=[t.result.diverged_epoch for t in trials],
            loss_name=loss,
            title=f"{name}: {loss} of every trial",
            best=best_index,
            best_label=best_label,
        ),
        "curves",
    )
    finals = [float(t.curve[-1]) if len(t.curve) else math.nan for t in trials]
    out(
        plots.plot_loss_vs_lr(
            lrs, finals, kinds, loss_name=f"final {loss}", title=f"{name}: final {loss} against learning rate"
        ),
        "loss_vs_lr",
    )

    best = best_trials([t.record for t in trials], best_k)
    if best:
        by_number = {t.record.number: t for t in trials}
        chosen = [by_number[r.number] for r in best]
        mini_batch = any(t.settings.batch_size is not None for t in chosen)
        out(
            plots.plot_lr_schedules(
                [t.result.lr for t in chosen],
                [
                    f"#{t.record.number}: lr={t.lr:.3g}, {_describe(t.settings)}; loss {t.record.value:.4g}"
                    for t in chosen
                ],
                legend_title="trial (best first)",
                title=f"{name}: learning rate used by the {len(chosen)} best trials"
                + ("\n(mini-batches: the rate of each epoch's first update)" if mini_batch else ""),
            ),
            "schedules",
        )

    values = [
        t.record.value if t.record.value is not None else (float(t.curve[-1]) if len(t.curve) else math.nan)
        for t in trials
    ]
    out(
        plots.plot_history(
            [t.record.number for t in trials],
            values,
            kinds,
            loss_name=f"objective: final {loss}",
            title=f"{name}: optimisation history",
        ),
        "history",
    )
    if importances:
        out(plots.plot_importances(importances, title=f"{name}: hyperparameter importance"), "importance")

    if compare:
        picked = compare_selection(trials)
        model = build_model_for(spec, data)
        labels = param_labels(model, data.feature_names)
        distinct = len({t.lr for t in trials})
        of = f" ({len(picked)} of {distinct} learning rates)" if len(picked) < distinct else ""
        out(
            plots.plot_weight_trajectories(
                [t.lr for t in picked],
                [t.result.params_history for t in picked],
                labels,
                # Every weight of a small model; the first few of a large one (more lines are unreadable).
                max_params=len(labels) if len(labels) <= 12 else 8,
                diverged_epochs=[t.result.diverged_epoch for t in picked],
                title=f"{name}: {spec.model.label} weights during training, one panel per learning rate{of}",
            ),
            "trajectories",
        )
        out(
            plots.plot_weight_histograms(
                [t.lr for t in picked],
                [{k: v.copy() for k, v in model.unpack(t.result.params).items()} for t in picked],
                diverged=[t.kind == DIVERGED for t in picked],
                labels=_labels_by_array(model, labels),
                title=f"{name}: final weights by layer, one row per learning rate{of}",
            ),
            "histograms",
        )
    return written
