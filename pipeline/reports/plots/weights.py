"""The compare pictures of a grid over learning rates: each rate's weight trajectories and final weight histograms."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from pipeline.reports.plots.common import (
    DIVERGED_COLOR,
    _check_same_length,
    _fmt,
    _limits,
)

# ----------------------------------------------------------------------------------------------- 4. compare


def _grid_shape(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _param_style(j: int) -> dict:
    """Ten distinct colours, then the same colours dashed, then dotted: lines stay tellable apart past ten."""
    return {"color": colormaps["tab10"](j % 10), "linestyle": ("-", "--", ":")[(j // 10) % 3]}


SHARE_RATIO = 4.0  # panels share an axis only when their largest |values| are within this factor


def comparable(blocks: Sequence[np.ndarray], max_ratio: float = SHARE_RATIO) -> bool:
    """True when the blocks' largest |finite value| differ by at most ``max_ratio``: one shared axis then shows
    them all; past it the smaller ones would be flat lines (an MLP at lr 0.01 beside lr 10)."""
    reach = []
    for b in blocks:
        b = np.asarray(b, dtype=float)
        b = np.abs(b[np.isfinite(b)])
        if len(b):
            reach.append(float(b.max()))
    if len(reach) < 2:
        return True
    low, high = min(reach), max(reach)
    # Values at rounding-error size (a bias that stayed 0) carry no scale of their own.
    return high <= max_ratio * low or high < 1e-12


def _shared_limits(blocks: Sequence[np.ndarray]) -> tuple[float, float] | None:
    """Limits covering every block, or None when the blocks are not :func:`comparable`."""
    if not blocks or not comparable(blocks):
        return None
    return _limits(np.concatenate([np.ravel(b) for b in blocks]), log=False)


def plot_weight_trajectories(
    lrs: Sequence[float],
    histories: Sequence[np.ndarray],
    param_names: Sequence[str],
    *,
    diverged_epochs: Sequence[int | None] | None = None,
    max_params: int = 12,
    title: str = "Weights during training",
) -> Figure:
    """One panel per learning rate: every weight's value against the epoch, one line per weight.

    Args:
        histories: per lr, an array (epochs_run + 1, n_params): row 0 is the initial vector, row i the vector
            after epoch i - 1 (``TrainResult.params_history``).
        param_names: a name per parameter ("w[3]", "W1[0,2]"); a parameter has one style in every panel.
        max_params: only the first this-many parameters are drawn (an MLP has thousands).
        diverged_epochs: per lr, the epoch it diverged at, or None.

    The panels of the rates that did not diverge share one y range when their weights are of comparable size
    (:func:`comparable`), so they compare at a glance; otherwise, and for a diverged rate (red title), a panel
    has its own y range.
    """
    n = len(histories)
    _check_same_length("plot_weight_trajectories", "lrs", lrs, n)
    if not n:
        raise ValueError(
            "The 'histories' parameter of plot_weight_trajectories must hold at least one array. Got [] instead."
        )
    diverged_epochs = list(diverged_epochs) if diverged_epochs is not None else [None] * n
    _check_same_length("plot_weight_trajectories", "diverged_epochs", diverged_epochs, n)
    n_params = len(param_names)
    shown = min(max_params, n_params)
    blocks = []
    for k, h in enumerate(histories):
        h = np.asarray(h, dtype=float)
        if h.ndim != 2 or h.shape[1] != n_params:
            raise ValueError(
                f"The 'histories' parameter of plot_weight_trajectories must hold arrays of shape "
                f"(epochs + 1, {n_params}). Got shape {h.shape} at position {k} instead."
            )
        blocks.append(np.where(np.isfinite(h[:, :shown]), h[:, :shown], np.nan))
    common = _shared_limits([b for b, at in zip(blocks, diverged_epochs, strict=True) if at is None])

    rows, cols = _grid_shape(n)
    fig = Figure(figsize=(4.0 * cols + 1.8, 3.0 * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.set_visible(False)
            continue
        y = blocks[k]
        x = np.arange(len(y))
        for j in range(shown):
            ax.plot(x, y[:, j], linewidth=1.3, **_param_style(j))
        at = diverged_epochs[k]
        heading = f"lr = {_fmt(lrs[k])}"
        if at is None:
            if common is not None:
                ax.set_ylim(*common)
        else:
            ax.axvline(at + 1, color=DIVERGED_COLOR, linestyle="--", linewidth=1.2)
            heading += f": diverged at epoch {at} (own y scale)"
        ax.set_title(heading, fontsize="medium", color=DIVERGED_COLOR if at is not None else "black")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epochs completed")
        if k % cols == 0:
            ax.set_ylabel("weight value")
        ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], label=param_names[j], **_param_style(j)) for j in range(shown)]
    if any(a is not None for a in diverged_epochs):
        handles.append(
            Line2D([], [], color=DIVERGED_COLOR, linestyle="--", label="end of the\ndiverged epoch")
        )
    legend_title = "parameter" if shown == n_params else f"first {shown} of\n{n_params} parameters"
    fig.legend(handles=handles, loc="outside right center", title=legend_title, fontsize="small")
    if n > 1:
        shared = common is not None and sum(a is None for a in diverged_epochs) > 1
        title += f"\n({'one y scale for the rates that converged' if shared else 'each panel has its own y scale'})"
    fig.suptitle(title)
    return fig


def plot_weight_histograms(
    lrs: Sequence[float],
    arrays: Sequence[Mapping[str, np.ndarray]],
    *,
    diverged: Sequence[bool] | None = None,
    few: int = 3,
    labels: Mapping[str, Sequence[str]] | None = None,
    strip: int = 30,
    title: str = "Final weights",
) -> Figure:
    """A grid of histograms: a row per learning rate, a column per named array (``model.unpack(params)``).

    In each column the rows that did not diverge share one x range and one set of bins when their weights are
    of comparable size (:func:`comparable`; else the column's title says "own x scale"), so the spread of
    the weights compares across rates; a diverged row has its own range (red). An array of at most ``few`` values
    (a bias) is drawn as stems labelled with their values; a histogram of one value says nothing. An array with
    ``labels`` (a name per value, e.g. the features a weight vector multiplies) and at most ``strip`` values is
    drawn as one named stem per value: a histogram of ten weights says little, which weight is which says more.
    """
    n = len(arrays)
    _check_same_length("plot_weight_histograms", "lrs", lrs, n)
    if not n:
        raise ValueError(
            "The 'arrays' parameter of plot_weight_histograms must hold at least one mapping. Got [] instead."
        )
    diverged = list(diverged) if diverged is not None else [False] * n
    _check_same_length("plot_weight_histograms", "diverged", diverged, n)
    names = list(arrays[0])
    for r in range(n):
        if list(arrays[r]) != names:
            raise ValueError(
                f"The 'arrays' parameter of plot_weight_histograms must name the same arrays in every row "
                f"({names}). Got {list(arrays[r])} in row {r} instead."
            )
    values = [[np.asarray(arrays[r][name], dtype=float).ravel() for name in names] for r in range(n)]
    finite = [[v[np.isfinite(v)] for v in row] for row in values]
    ok_rows = [r for r in range(n) if not diverged[r]]
    # A scale for degenerate ranges (all values equal, e.g. a bias that stayed 0): the largest weight of the
    # rows, so a stem near 0 shows as near 0 relative to the weights.
    scale = max((float(np.abs(f).max()) for r in ok_rows for f in finite[r] if len(f)), default=1.0) or 1.0

    def limits(blocks) -> tuple[float, float] | None:
        flat = np.concatenate(blocks) if blocks else np.array([])
        if not len(flat):
            return None
        low, high = float(flat.min()), float(flat.max())
        if high - low <= 1e-9 * max(scale, abs(low), abs(high)):
            half = max(0.5 * scale, 0.1 * abs(low))
            return low - half, high + half
        return _limits(flat, log=False)

    rows, cols = n, len(names)
    fig = Figure(figsize=(3.1 * cols + 1.0, 2.0 * rows + 0.9), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    drew_histogram = False  # the legend names the dashed mean line only when a histogram drew one
    for c, name in enumerate(names):
        blocks = [finite[r][c] for r in ok_rows]
        shared = limits(blocks) if comparable(blocks) else None
        for r in range(rows):
            ax = axes[r, c]
            f = finite[r][c]
            color = DIVERGED_COLOR if diverged[r] else "tab:blue"
            span = limits([f]) if diverged[r] or shared is None else shared
            if not len(f):
                ax.text(0.5, 0.5, "no finite value", transform=ax.transAxes, ha="center", va="center")
            elif len(values[r][c]) <= few or (labels and name in labels and len(values[r][c]) <= strip):
                if len(values[r][c]) > few:  # a handful of named weights: one stem each, named
                    ys = np.arange(len(values[r][c]))
                    v = values[r][c]
                    ax.hlines(ys, 0, np.where(np.isfinite(v), v, np.nan), color=color, linewidth=2)
                    ax.plot(v, ys, "o", color=color, markersize=4)
                    ax.axvline(0, color="0.5", linewidth=0.8)
                    ax.set_yticks(
                        ys, labels[name] if c == 0 or r == 0 else [""] * len(ys), fontsize="x-small"
                    )
                    ax.invert_yaxis()
                    if span is not None:
                        ax.set_xlim(*span)
                    if r == 0:
                        ax.set_title(f"{name} ({len(v)} values, one per row)", fontsize="medium")
                    if c == 0:
                        ax.set_ylabel(
                            f"lr = {_fmt(lrs[r])}" + ("\n(diverged)" if diverged[r] else ""), color=color
                        )
                    if r == rows - 1:
                        ax.set_xlabel("value")
                    ax.tick_params(labelsize="small")
                    continue
                ax.vlines(f, 0, 1, color=color, linewidth=2)
                ax.plot(f, np.ones(len(f)), "o", color=color)
                ax.set_ylim(0, 1.35)
                shown = ", ".join(_fmt(v) for v in f)
                ax.text(0.03, 0.93, f"{name} = {shown}", transform=ax.transAxes, va="top", fontsize="small")
            else:
                counts, _, _ = ax.hist(
                    f, bins=int(np.clip(2 * np.sqrt(len(f)), 5, 40)), range=span, color=color, alpha=0.75
                )
                ax.set_ylim(
                    0, max(float(counts.max()), 1.0) * 1.3
                )  # room for the mean's label above the bars
                mean = float(f.mean())
                ax.axvline(mean, color="black", linestyle="--", linewidth=1)
                drew_histogram = True
                ax.text(
                    0.97,
                    0.93,
                    f"mean {_fmt(mean)}",
                    transform=ax.transAxes,
                    ha="right",
                    va="top",
                    fontsize="small",
                    bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0, "pad": 1},
                )
            if span is not None:
                ax.set_xlim(*span)
            stems = bool(len(f)) and len(values[r][c]) <= few  # a stem's height means nothing: no y ticks
            if stems:
                ax.set_yticks([])
            else:
                ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
            if r == 0:
                count = values[r][c].size
                note = "" if shared is not None or len(ok_rows) < 2 else ", own x scale per row"
                ax.set_title(f"{name} ({count} value{'s' if count != 1 else ''}{note})", fontsize="medium")
            if c == 0:
                label = f"lr = {_fmt(lrs[r])}" + ("\n(diverged, own x scale)" if diverged[r] else "")
                ax.set_ylabel(label if stems else f"{label}\ncount", color=color)
            if r == rows - 1:
                ax.set_xlabel("value")
            ax.tick_params(labelsize="small")
    handles = [Patch(color="tab:blue", alpha=0.75, label="final values")]
    if any(diverged):
        handles.append(Patch(color=DIVERGED_COLOR, alpha=0.75, label="final values of a diverged run"))
    if drew_histogram:
        handles.append(Line2D([], [], color="black", linestyle="--", label="mean"))
    fig.legend(
        handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small", frameon=False
    )
    fig.suptitle(title)
    return fig
