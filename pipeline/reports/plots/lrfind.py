"""The LR range test's picture (Smith 2015, §3.3): loss against a rising learning rate, with the suggestions."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from pipeline.reports.plots.common import (
    DIVERGED_COLOR,
    _fmt,
    _legend_below,
    _limits,
    _log_ok,
    _plain_log_labels,
    _scale_label,
)

# ----------------------------------------------------------------------------------------------- 6. lr range test


def plot_lr_range_test(result, *, theory_lr: float | None = None, title: str = "LR range test") -> Figure:
    """Loss against learning rate during an LR range test (Smith 2015), with the suggested rates.

    Args:
        result: any object with ``lrs``, ``losses`` (raw), ``smoothed``, ``diverged_lr`` (float or None) and
            ``suggestions`` with ``steepest``, ``min_over_10``, ``valley``, ``low``, ``high`` (floats or None);
            ``pipeline.core.lrfind``'s result has these.
        theory_lr: optional theoretical bound drawn as a line, e.g. ``2 / lambda_max`` of the loss's Hessian
            (gradient descent on a quadratic diverges above it); default ``result.theory_lr`` when present.

    The y range follows the smoothed curve up to the divergence point, so the blow-up leaves through the top.

    Reference: L. N. Smith, "Cyclical Learning Rates for Training Neural Networks", 2015 (arXiv:1506.01186).
    """
    lrs = np.asarray(result.lrs, dtype=float)
    raw = np.asarray(result.losses, dtype=float)
    smooth = np.asarray(result.smoothed, dtype=float)
    if not (len(lrs) == len(raw) == len(smooth)) or not len(lrs):
        raise ValueError(
            "The 'result' parameter of plot_lr_range_test must have lrs, losses and smoothed of one non-zero "
            f"length. Got lengths {len(lrs)}, {len(raw)}, {len(smooth)} instead."
        )
    if theory_lr is None:
        theory_lr = getattr(result, "theory_lr", None)
    s = result.suggestions
    diverged_lr = result.diverged_lr

    fig = Figure(figsize=(8.5, 5.0), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xscale("log")
    window = lrs <= diverged_lr if diverged_lr is not None else np.ones(len(lrs), bool)
    if not window.any():
        window[:] = True
    basis = np.concatenate([smooth[window], raw[window]])
    finite = basis[np.isfinite(basis)]
    log = _log_ok(finite) and len(finite) > 0 and finite.max() / finite.min() > 30
    ax.plot(
        lrs,
        np.where(np.isfinite(raw), raw, np.nan),
        color="0.6",
        alpha=0.5,
        linewidth=0.9,
        label="loss (raw)",
    )
    ax.plot(
        lrs,
        np.where(np.isfinite(smooth), smooth, np.nan),
        color="tab:blue",
        linewidth=2,
        label="loss (smoothed)",
    )
    if log:
        ax.set_yscale("log")
    ylim = _limits(smooth[window] if np.isfinite(smooth[window]).any() else finite, log, pad=0.1)
    if ylim is not None:
        ax.set_ylim(ylim)
    ax.set_xlim(*_limits(lrs, log=True, pad=0.01))

    # The range and the one recommended rate, never past the divergence bound (a RangeTestReport knows them;
    # a bare result falls back on its suggestions).
    low, high = getattr(result, "search_range", (getattr(s, "low", None), getattr(s, "high", None)))
    if low is not None and high is not None:
        ax.axvspan(
            low,
            high,
            color="tab:green",
            alpha=0.12,
            linewidth=0,
            label=f"search range [{_fmt(low)}, {_fmt(high)}]",
        )
    recommended = getattr(result, "recommended", getattr(s, "min_over_10", None))
    if recommended is not None:
        ax.axvline(
            recommended,
            color="tab:green",
            linewidth=2.5,
            label=f"recommended lr = {_fmt(recommended)} (minimum / 10, at most half the bound)",
        )
    if diverged_lr is not None:
        ax.axvline(
            diverged_lr,
            color=DIVERGED_COLOR,
            linestyle=":",
            linewidth=2,
            label=f"diverged at lr = {_fmt(diverged_lr)}",
        )
    if theory_lr is not None:
        ax.axvline(
            theory_lr,
            color="black",
            linestyle="-.",
            linewidth=1.3,
            label=rf"divergence bound $2/\lambda_{{max}}$ = {_fmt(theory_lr)} (theory)",
        )
    others = [(n, getattr(s, a, None)) for n, a in (("steepest", "steepest"), ("valley", "valley"))]
    others = [f"{n} {_fmt(v)}" for n, v in others if v is not None]
    if others:
        ax.plot([], [], " ", label="other rules: " + ", ".join(others))
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel(_scale_label("training loss", "log" if log else "linear"))
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    _legend_below(fig, ax, ncols=2)
    _plain_log_labels(ax)
    return fig
