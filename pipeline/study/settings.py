"""A trial's complete settings, rebuilt from what Optuna recorded: searched and fixed, for `best` and `train-best`.

Light on purpose (no data loading, no scikit-learn, no Optuna): `best` imports it and must answer fast.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from pipeline.errors import ConfigError
from pipeline.study.spec import StudySpec


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


def spec_with_lr_range(spec: StudySpec, lr_range) -> StudySpec:
    """The spec with ``lr: auto`` replaced by the range the study searched (its ``lr_range`` user attribute)."""
    if spec.search.lr_auto is None:
        return spec
    if lr_range is None:
        raise ConfigError(
            f"study {spec.name!r} has lr: auto but no recorded lr_range; run `tune` (or `lr-find`) first.",
            file=str(spec.path),
            key="search.lr",
        )
    return dataclasses.replace(spec, search=spec.search.with_lr_range(*lr_range))


def complete_settings(spec: StudySpec, trial_params: Mapping[str, object]) -> dict:
    """Everything that trains a trial again, as plain data: the searched values and the study's fixed ones
    (optimizer and schedule with all their parameters, batch size, epochs, divergence factor, seed, model, data).

    ``spec`` must have ``lr: auto`` resolved (:func:`spec_with_lr_range`).
    """
    s = spec.search.sample(ReplaySuggester(trial_params))
    model = spec.model
    return {
        "lr": s.lr,
        "batch_size": "full" if s.batch_size is None else s.batch_size,
        "optimizer": {"name": s.optimizer, **dict(s.optimizer_params)},
        "schedule": {"name": s.schedule, **dict(s.schedule_params)},
        "epochs": spec.training.epochs,
        "divergence_factor": spec.training.divergence_factor,
        "seed": spec.seed,
        "model": (
            {"entry_point": model.entry_point.text, **dict(model.params)}
            if model.entry_point is not None
            else {"name": model.name, **dict(model.params)}
        ),
        "data": _data(spec),
    }


def _data(spec: StudySpec) -> dict:
    d = spec.data
    out = {"entry_point": d.entry_point.text} if d.entry_point is not None else {"dataset": d.dataset}
    if d.path is not None:
        out.update(path=str(d.path), target=d.target)
    for key in ("task", "val_fraction", "standardize"):
        if getattr(d, key) is not None:
            out[key] = getattr(d, key)
    if d.params:
        out["params"] = dict(d.params)
    return out
