"""Checks that need the data as well as the study file: the model against the data's task.

Made right after the data are loaded and before anything is written, so a study whose model cannot fit its data
is refused with exit 2 and the model that would fit, instead of running every trial into a traceback.
"""

from __future__ import annotations

from pipeline.core.arrays import Dataset
from pipeline.core.models import MODEL_TASKS
from pipeline.errors import ConfigError
from pipeline.study.spec import StudySpec

_WHAT = {
    "regression": "a regression target (real numbers)",
    "binary": "a binary target (2 classes)",
    "multiclass": "a multiclass target",
}


def check_model_fits(spec: StudySpec, data: Dataset) -> None:
    """The study's model solves the data's task: logistic needs two classes, softmax classes (an integer or label
    target with at least two), linear a regression target. The message names the models that fit."""
    model, task = spec.model.name, data.task
    if spec.model.entry_point is not None or model not in MODEL_TASKS or task in MODEL_TASKS[model]:
        return  # a user's model is checked by its own entry point's checks
    fits = [name for name, tasks in MODEL_TASKS.items() if task in tasks]
    what = _WHAT.get(task, task)
    if task == "multiclass":
        what = f"{data.n_classes} classes"
    hint = ""
    if model == "softmax" and task == "binary" and spec.data.dataset == "csv":
        hint = " (or keep softmax with data.task: multiclass, which treats the 2 classes as categories)"
    elif model in ("softmax", "logistic") and task == "regression" and spec.data.dataset == "csv":
        hint = (
            " (the CSV's target was taken for regression: it has real values or more distinct integers than "
            "classes are inferred for; set data.task: multiclass or binary if they are classes)"
        )
    raise ConfigError(
        f"model {model} solves {' or '.join(MODEL_TASKS[model])} tasks, but {data.source} has {what}; "
        f"use model: {' or '.join(fits)}{hint}.",
        file=str(spec.path),
        key="model.name",
        value=model,
    )
