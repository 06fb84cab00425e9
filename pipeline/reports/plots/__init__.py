"""Pictures of a study, drawn from plain arrays: each ``plot_*`` function returns one matplotlib Figure.

No Optuna, no MLflow, no training: :mod:`pipeline.reports.report` replays the trials and hands these functions curves,
learning rates and weights. Every picture has a title, labelled axes (a log axis says so in its label) and a
legend or a colour bar. Colours mean the same thing everywhere: the viridis colour of a line is its learning
rate (log colour scale), red is divergence, grey is a trial pruned early.

The figures are :class:`matplotlib.figure.Figure` objects made without pyplot: nothing touches pyplot's global
figure list or the interactive backend, so the module is safe on a headless server and inside a notebook alike;
``save`` writes PNGs through the Agg renderer.

One module per subject: :mod:`.common` (colours, scales, legends, saving), :mod:`.trials` (curves, loss against
lr, schedules, history, importance), :mod:`.weights` (the compare study's weights), :mod:`.lrfind` (the range
test). Everything public is importable from here.
"""

from __future__ import annotations

from pipeline.reports.plots.common import (
    DEFAULT_DPI,
    DIVERGED_COLOR,
    KINDS,
    LR_CMAP,
    PRUNED_COLOR,
    best_so_far,
    divergence_spans,
    lr_norm,
    save,
    stamp,
)
from pipeline.reports.plots.lrfind import (
    plot_lr_range_test,
)
from pipeline.reports.plots.trials import (
    plot_curves,
    plot_history,
    plot_importances,
    plot_loss_vs_lr,
    plot_lr_schedules,
)
from pipeline.reports.plots.weights import (
    SHARE_RATIO,
    comparable,
    plot_weight_histograms,
    plot_weight_trajectories,
)

__all__ = [
    "save",
    "stamp",
    "divergence_spans",
    "best_so_far",
    "lr_norm",
    "KINDS",
    "LR_CMAP",
    "DIVERGED_COLOR",
    "PRUNED_COLOR",
    "DEFAULT_DPI",
    "plot_curves",
    "plot_loss_vs_lr",
    "plot_lr_schedules",
    "plot_history",
    "plot_importances",
    "comparable",
    "plot_weight_trajectories",
    "plot_weight_histograms",
    "SHARE_RATIO",
    "plot_lr_range_test",
]
