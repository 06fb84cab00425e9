"""Names shared by every layer, defined once: tasks, how a training run ends, why a trial was pruned.

The core uses them, and so do the study loader, the Optuna and MLflow layers and the reports: they are stored as
Optuna user attributes and MLflow tags, so changing one is a change of the stores' format.
"""

from __future__ import annotations

# What a model predicts, and so which loss it minimises.
REGRESSION, BINARY, MULTICLASS = "regression", "binary", "multiclass"
TASKS: tuple[str, ...] = (REGRESSION, BINARY, MULTICLASS)

# How a training run ended (TrainResult.status).
COMPLETED, DIVERGED, STOPPED = "completed", "diverged", "stopped"

# Why a trial was pruned (the `prune_reason` user attribute in Optuna and tag in MLflow): training diverged (the
# loop's own decision), a configured pruner found it underperforming, or the run's deadline (budget.timeout /
# --timeout) cut it at an epoch boundary.
PRUNE_DIVERGED, PRUNE_UNDERPERFORMING, PRUNE_DEADLINE = DIVERGED, "underperforming", "deadline"
PRUNE_REASONS: tuple[str, ...] = (PRUNE_DIVERGED, PRUNE_UNDERPERFORMING, PRUNE_DEADLINE)

# Why a trial failed (the `fail_reason` user attribute and tag): stopped by Ctrl-C at an epoch boundary.
FAIL_INTERRUPTED = "interrupted"

# What a finished trial shows in a report: complete, pruned because it diverged, pruned as underperforming.
COMPLETE, PRUNED = "complete", "pruned"
TRIAL_KINDS: tuple[str, ...] = (COMPLETE, DIVERGED, PRUNED)
