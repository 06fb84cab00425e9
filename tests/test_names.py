"""pipeline/core/names.py: the shared names are stored in Optuna user attributes and MLflow tags, so their
values are a format: a study tuned yesterday must still read back today."""

from __future__ import annotations

from pipeline.core import names
from pipeline.core.training import COMPLETED, DIVERGED, STOPPED


def test_the_stored_vocabulary_is_stable():
    assert names.TASKS == ("regression", "binary", "multiclass")
    assert (names.PRUNE_DIVERGED, names.PRUNE_UNDERPERFORMING) == ("diverged", "underperforming")
    assert names.TRIAL_KINDS == ("complete", "diverged", "pruned")
    assert names.FAIL_INTERRUPTED == "interrupted"
    assert (COMPLETED, DIVERGED, STOPPED) == ("completed", "diverged", "stopped")


def test_each_name_is_defined_once():
    # the training loop's names are the shared ones, not copies with the same text
    assert DIVERGED is names.DIVERGED and COMPLETED is names.COMPLETED
