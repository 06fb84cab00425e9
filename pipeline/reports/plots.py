"""Pictures of a study, drawn from plain arrays: each ``plot_*`` function returns one matplotlib Figure.

No Optuna, no MLflow, no training: :mod:`pipeline.reports.report` replays the trials and hands these functions curves,
learning rates and weights. Every picture has a title, labelled axes (a log axis says so in its label) and a
legend or a colour bar. Colours mean the same thing everywhere: the viridis colour of a line is its learning
rate (log colour scale), red is divergence, grey is a trial pruned early.

The figures are :class:`matplotlib.figure.Figure` objects made without pyplot: nothing touches pyplot's global
figure list or the interactive backend, so the module is safe on a headless server and inside a notebook alike;
``save`` writes PNGs through the Agg renderer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator
from matplotlib.transforms import blended_transform_factory

from pipeline.core.names import COMPLETE, DIVERGED, PRUNED, TRIAL_KINDS

KINDS = TRIAL_KINDS
LR_CMAP = "viridis"
DIVERGED_COLOR = "tab:red"
PRUNED_COLOR = "0.55"
DEFAULT_DPI = 110


# ----------------------------------------------------------------------------------------------- helpers


def save(fig: Figure, path: str | Path, *, dpi: int = DEFAULT_DPI) -> Path:
    """Write ``fig`` as a PNG at ``path`` (parent folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path


def divergence_spans(lrs: Sequence[float], diverged: Sequence[bool]) -> list[tuple[float, float]]:
    """The learning-rate intervals where trials diverged, one per run of neighbouring diverged trials.

    Sort the trials by lr; each maximal run of consecutive diverged trials becomes one interval whose edges lie
    halfway, on a log scale, between the run's outermost trials and their non-diverged neighbours
    (``sqrt(lr_ok * lr_diverged)``). A run at an end of the lr axis reaches 0 or +inf. A decayed schedule can
    save a large rate, so the diverged region is not always "everything above the smallest diverging lr";
    runs show where the study actually saw divergence. Trials at one lr with mixed outcomes split the run.

    Returns:
        [(low, high), ...] in increasing order; empty when nothing diverged.
    """
    lrs = np.asarray(lrs, dtype=float)
    diverged = np.asarray(diverged, dtype=bool)
    if lrs.shape != diverged.shape:
        raise ValueError(
            f"The 'diverged' parameter of divergence_spans must have one entry per lr ({lrs.size}). "
            f"Got {diverged.size} instead."
        )
    # Stable sort; at one lr a converging trial sorts first, so a mixed lr never counts as a diverged run.
    order = np.lexsort((diverged, lrs))
    lrs, diverged = lrs[order], diverged[order]
    spans = []
    i = 0
    while i < len(lrs):
        if not diverged[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(lrs) and diverged[j + 1]:
            j += 1
        low = 0.0 if i == 0 else math.sqrt(lrs[i - 1] * lrs[i])
        high = math.inf if j == len(lrs) - 1 else math.sqrt(lrs[j] * lrs[j + 1])
        if high > low:
            spans.append((low, high))
        i = j + 1
    return spans


def best_so_far(values: Sequence[float], counts: Sequence[bool] | None = None) -> np.ndarray:
    """Running minimum of ``values`` over the entries where ``counts`` is True (NaN before the first one)."""
    values = np.asarray(values, dtype=float)
    counts = np.ones(values.shape, bool) if counts is None else np.asarray(counts, dtype=bool)
    masked = np.where(counts & np.isfinite(values), values, np.inf)
    running = np.minimum.accumulate(masked) if len(masked) else masked
    return np.where(np.isfinite(running), running, np.nan)


def lr_norm(lrs: Sequence[float]) -> LogNorm:
    """A log colour scale spanning ``lrs`` (widened around a single rate so the colour bar has a range)."""
    lrs = np.asarray(lrs, dtype=float)
    positive = lrs[np.isfinite(lrs) & (lrs > 0)]
    if not len(positive):
        raise ValueError(
            f"The 'lrs' parameter of lr_norm must hold a float > 0. Got {lrs.tolist()!r} instead."
        )
    low, high = float(positive.min()), float(positive.max())
    if low == high:
        low, high = low / 2, high * 2
    return LogNorm(vmin=low, vmax=high)


def _log_ok(values) -> bool:
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    return bool(len(finite)) and bool(np.all(finite > 0))


def _limits(values, log: bool, pad: float = 0.06) -> tuple[float, float] | None:
    """Axis limits around the finite values with a margin (multiplicative on a log axis)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if log:
        v = v[v > 0]
    if not len(v):
        return None
    low, high = float(v.min()), float(v.max())
    if log:
        span = math.log10(high / low) if high > low else 1.0
        factor = 10 ** (pad * span)
        return low / factor, high * factor
    span = high - low if high > low else max(abs(high), 1.0)
    return low - pad * span, high + pad * span


def _scale_label(label: str, scale: str) -> str:
    return f"{label} ({scale} scale)" if scale != "linear" else label


def _lr_colorbar(fig: Figure, ax, norm: LogNorm, cmap: str = LR_CMAP) -> None:
    mappable = ScalarMappable(norm=norm, cmap=colormaps[cmap])
    fig.colorbar(mappable, ax=ax, label="learning rate (log scale)", pad=0.02)


def _plain_log_labels(ax) -> None:
    """On a log y axis spanning less than a decade, label ticks as plain numbers (0.45, not 4.5x10^-1)."""
    if ax.get_yscale() != "log":
        return
    low, high = ax.get_ylim()
    if 0 < low and high / low < 10:
        plain = FuncFormatter(lambda v, _: f"{v:.3g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)


def _at_top(ax, x, **style) -> None:
    """Markers at the top edge of the axes (x in data units), drawn over the frame: off-scale values."""
    if len(np.atleast_1d(x)) == 0:
        return
    transform = blended_transform_factory(ax.transData, ax.transAxes)
    ax.plot(
        x, np.full(len(np.atleast_1d(x)), 0.97), linestyle="none", transform=transform, clip_on=False, **style
    )


def _check_same_length(owner: str, name: str, values, n: int) -> None:
    if len(values) != n:
        raise ValueError(
            f"The '{name}' parameter of {owner} must have one entry per trial ({n}). Got {len(values)} instead."
        )


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _legend_below(fig: Figure, ax, *, handles=None, ncols: int = 2, title: str | None = None) -> None:
    """The legend under the axes, outside them: inside, it would hide points wherever it went."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    else:
        labels = [h.get_label() for h in handles]
    fig.legend(
        handles, labels, loc="outside lower center", ncols=ncols, fontsize="small", frameon=False, title=title
    )


def _lr_list(lrs) -> str:
    """ "lr = 1, 10" for a few rates, "lr 0.32 to 6" for many."""
    lrs = sorted(set(float(x) for x in lrs))
    if len(lrs) <= 4:
        return "lr = " + ", ".join(_fmt(x) for x in lrs)
    return f"lr {_fmt(lrs[0])} to {_fmt(lrs[-1])}"


# ----------------------------------------------------------------------------------------------- 1. curves


def plot_curves(
    lrs: Sequence[float],
    curves: Sequence[np.ndarray],
    *,
    kinds: Sequence[str] | None = None,
    diverged_epochs: Sequence[int | None] | None = None,
    loss_name: str = "validation loss",
    title: str = "Learning curves",
) -> Figure:
    """Every trial's loss against the epoch, coloured by its learning rate on a log colour scale.

    Args:
        lrs: each trial's learning rate (its colour).
        curves: each trial's loss per epoch (index = epoch); a diverged curve may end in inf.
        kinds: "complete" | "diverged" | "pruned" per trial (default all complete). Diverged curves are dashed
            red with an x at the top edge at the epoch they diverged; pruned curves are dotted.
        diverged_epochs: the epoch each diverged trial diverged at (default: its last epoch).
        loss_name: the y label, e.g. "validation loss (MSE)".

    The y axis is logarithmic when every finite loss is positive; its limits come from the trials that did not
    diverge, so a diverged curve leaves through the top instead of squashing the others.
    """
    n = len(curves)
    _check_same_length("plot_curves", "lrs", lrs, n)
    kinds = list(kinds) if kinds is not None else [COMPLETE] * n
    _check_same_length("plot_curves", "kinds", kinds, n)
    diverged_epochs = list(diverged_epochs) if diverged_epochs is not None else [None] * n
    _check_same_length("plot_curves", "diverged_epochs", diverged_epochs, n)
    curves = [np.asarray(c, dtype=float) for c in curves]

    fig = Figure(figsize=(8.5, 5.0), layout="constrained")
    ax = fig.add_subplot()
    norm = lr_norm(lrs)
    cmap = colormaps[LR_CMAP]
    kept = [c for c, k in zip(curves, kinds, strict=True) if k != DIVERGED] or curves
    kept_values = np.concatenate(kept) if kept else np.array([])
    log = _log_ok(np.concatenate(curves)) if curves else False
    # Draw large rates last so the lines most likely to be off-scale do not hide the others.
    for i in sorted(range(n), key=lambda i: lrs[i]):
        c, kind = curves[i], kinds[i]
        y = np.where(np.isfinite(c), c, np.nan)
        epochs = np.arange(len(c))
        if kind == DIVERGED:
            ax.plot(epochs, y, color=DIVERGED_COLOR, linestyle="--", linewidth=1.0, alpha=0.7)
            at = diverged_epochs[i] if diverged_epochs[i] is not None else len(c) - 1
            _at_top(ax, [at], marker="x", color=DIVERGED_COLOR, markersize=8, markeredgewidth=2)
        else:
            style = ":" if kind == PRUNED else "-"
            ax.plot(epochs, y, color=cmap(norm(lrs[i])), linestyle=style, linewidth=1.3, alpha=0.85)
            if kind == PRUNED and len(c):
                ax.plot([len(c) - 1], [y[-1]], marker="s", color=cmap(norm(lrs[i])), markersize=4)
    if log:
        ax.set_yscale("log")
    limits = _limits(kept_values, log)
    if limits is not None:
        ax.set_ylim(*limits)
    longest = max((len(c) for c in curves), default=1)
    ax.set_xlim(-0.01 * longest, longest - 1 + 0.01 * longest if longest > 1 else 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel(_scale_label(loss_name, "log" if log else "linear"))
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    _lr_colorbar(fig, ax, norm)
    handles = []
    if COMPLETE in kinds:
        handles.append(Line2D([], [], color=cmap(0.5), label="completed (colour = learning rate)"))
    if PRUNED in kinds:
        handles.append(
            Line2D(
                [],
                [],
                color=cmap(0.5),
                linestyle=":",
                marker="s",
                markersize=4,
                label="pruned early (■ = last epoch)",
            )
        )
    if DIVERGED in kinds:
        diverged_lrs = [lr for lr, k in zip(lrs, kinds, strict=True) if k == DIVERGED]
        handles.append(
            Line2D(
                [],
                [],
                color=DIVERGED_COLOR,
                linestyle="--",
                marker="x",
                markeredgewidth=2,
                label=f"diverged: {len(diverged_lrs)} trials, {_lr_list(diverged_lrs)} (× at top = epoch it diverged)",
            )
        )
    _legend_below(fig, ax, handles=handles, ncols=2 if len(handles) < 3 else 1)
    _plain_log_labels(ax)
    return fig


# ----------------------------------------------------------------------------------------------- 2. loss vs lr


def plot_loss_vs_lr(
    lrs: Sequence[float],
    losses: Sequence[float],
    kinds: Sequence[str],
    *,
    loss_name: str = "final validation loss",
    title: str = "Final loss against learning rate",
) -> Figure:
    """Each trial's final loss against its learning rate (log x), diverged trials as red x at the top edge.

    The shaded red spans are :func:`divergence_spans`: runs of neighbouring diverged trials, with edges halfway
    (in log lr) to the nearest trial that did not diverge. Pruned trials show the loss at which they were
    pruned (hollow grey), which is not comparable with a final loss. The best complete trial is starred.
    """
    n = len(lrs)
    _check_same_length("plot_loss_vs_lr", "losses", losses, n)
    _check_same_length("plot_loss_vs_lr", "kinds", kinds, n)
    lrs = np.asarray(lrs, dtype=float)
    losses = np.asarray(losses, dtype=float)
    kinds = np.asarray(kinds, dtype=object)
    complete, diverged, pruned = (kinds == COMPLETE), (kinds == DIVERGED), (kinds == PRUNED)

    fig = Figure(figsize=(8.0, 5.0), layout="constrained")
    ax = fig.add_subplot()
    ax.set_xscale("log")
    shown = losses[~diverged]
    log = _log_ok(shown) if len(shown) else False
    if log:
        ax.set_yscale("log")
    xlim = _limits(lrs, log=True, pad=0.05)
    ax.set_xlim(*xlim)
    ylim = _limits(shown, log, pad=0.08)
    if ylim is not None:
        # Headroom for the diverged markers at the top edge.
        top = ylim[1] * (ylim[1] / ylim[0]) ** 0.12 if log else ylim[1] + 0.12 * (ylim[1] - ylim[0])
        ax.set_ylim(ylim[0], top)

    for k, (low, high) in enumerate(divergence_spans(lrs, diverged)):
        ax.axvspan(
            max(low, xlim[0]),
            min(high, xlim[1]),
            color=DIVERGED_COLOR,
            alpha=0.12,
            linewidth=0,
            label="diverged region (edges halfway, in log lr,\nto the nearest trial that converged)"
            if k == 0
            else None,
        )
    if complete.any():
        ax.plot(
            lrs[complete],
            losses[complete],
            "o",
            color="tab:blue",
            markersize=5,
            label=f"completed: {loss_name}",
        )
        finite = complete & np.isfinite(losses)
        if finite.any():
            best = np.flatnonzero(finite)[np.argmin(losses[finite])]
            ax.plot(
                [lrs[best]],
                [losses[best]],
                "*",
                color="gold",
                markeredgecolor="black",
                markersize=15,
                label=f"best: lr = {_fmt(lrs[best])}, loss = {_fmt(losses[best])}",
            )
    if pruned.any():
        ax.plot(
            lrs[pruned],
            losses[pruned],
            "o",
            markerfacecolor="none",
            markeredgecolor=PRUNED_COLOR,
            markersize=6,
            label="pruned early: loss when pruned",
        )
    if diverged.any():
        _at_top(ax, lrs[diverged], marker="x", color=DIVERGED_COLOR, markersize=8, markeredgewidth=2)
        ax.plot(
            [],
            [],
            "x",
            color=DIVERGED_COLOR,
            markeredgewidth=2,
            label=f"diverged ({int(diverged.sum())}), drawn at the top edge",
        )
    if ylim is None:
        ax.text(0.5, 0.5, "every trial diverged", transform=ax.transAxes, ha="center", va="center")
        ax.set_yticks([])
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel(_scale_label(loss_name, "log" if log else "linear"))
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    _legend_below(fig, ax)
    _plain_log_labels(ax)
    return fig


# ----------------------------------------------------------------------------------------------- 3. schedules


def plot_lr_schedules(
    lr_curves: Sequence[np.ndarray],
    labels: Sequence[str],
    *,
    ylabel: str = "learning rate",
    legend_title: str | None = None,
    title: str = "Learning-rate schedules of the best trials",
) -> Figure:
    """The learning rate actually used at each epoch by a few trials (log y), one line per trial."""
    _check_same_length("plot_lr_schedules", "labels", labels, len(lr_curves))
    if not len(lr_curves):
        raise ValueError(
            "The 'lr_curves' parameter of plot_lr_schedules must hold at least one curve. Got [] instead."
        )
    fig = Figure(figsize=(8.0, 4.2 + 0.22 * len(labels)), layout="constrained")
    ax = fig.add_subplot()
    curves = [np.asarray(c, dtype=float) for c in lr_curves]
    log = _log_ok(np.concatenate(curves))
    for rank, (c, label) in enumerate(zip(curves, labels, strict=True)):
        ax.plot(np.arange(len(c)), c, linewidth=2.2 if rank == 0 else 1.4, label=label, zorder=10 - rank)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(_scale_label(ylabel, "log" if log else "linear"))
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    _legend_below(fig, ax, ncols=1, title=legend_title)
    _plain_log_labels(ax)
    return fig


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
    title: str = "Final weights",
) -> Figure:
    """A grid of histograms: a row per learning rate, a column per named array (``model.unpack(params)``).

    In each column the rows that did not diverge share one x range and one set of bins when their weights are
    of comparable size (:func:`comparable`; else the column's title says "own x scale"), so the spread of
    the weights compares across rates; a diverged row has its own range (red). An array of at most ``few`` values
    (a bias) is drawn as stems labelled with their values; a histogram of one value says nothing.
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
            elif len(values[r][c]) <= few:
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
            ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
            if r == 0:
                count = values[r][c].size
                note = "" if shared is not None or len(ok_rows) < 2 else ", own x scale per row"
                ax.set_title(f"{name} ({count} value{'s' if count != 1 else ''}{note})", fontsize="medium")
            if c == 0:
                label = f"lr = {_fmt(lrs[r])}" + ("\n(diverged, own x scale)" if diverged[r] else "")
                ax.set_ylabel(f"{label}\ncount", color=color)
            if r == rows - 1:
                ax.set_xlabel("value")
            ax.tick_params(labelsize="small")
    handles = [Patch(color="tab:blue", alpha=0.75, label="final values")]
    if any(diverged):
        handles.append(Patch(color=DIVERGED_COLOR, alpha=0.75, label="final values of a diverged run"))
    handles.append(Line2D([], [], color="black", linestyle="--", label="mean"))
    fig.legend(
        handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small", frameon=False
    )
    fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------------------------- 5. history


def plot_history(
    numbers: Sequence[int],
    values: Sequence[float],
    kinds: Sequence[str],
    *,
    loss_name: str = "objective (final validation loss)",
    title: str = "Optimisation history",
) -> Figure:
    """Each trial's value against its number, the best-so-far line over complete trials, pruned and diverged
    trials marked apart (diverged ones at the top edge: their value is inf or meaningless)."""
    n = len(numbers)
    _check_same_length("plot_history", "values", values, n)
    _check_same_length("plot_history", "kinds", kinds, n)
    numbers = np.asarray(numbers, dtype=float)
    values = np.asarray(values, dtype=float)
    kinds = np.asarray(kinds, dtype=object)
    order = np.argsort(numbers, kind="stable")
    numbers, values, kinds = numbers[order], values[order], kinds[order]
    complete, diverged, pruned = (kinds == COMPLETE), (kinds == DIVERGED), (kinds == PRUNED)

    fig = Figure(figsize=(8.0, 4.8), layout="constrained")
    ax = fig.add_subplot()
    shown = values[~diverged]
    log = _log_ok(shown) if len(shown) else False
    if log:
        ax.set_yscale("log")
    ylim = _limits(shown, log, pad=0.08)
    if ylim is not None:
        top = ylim[1] * (ylim[1] / ylim[0]) ** 0.12 if log else ylim[1] + 0.12 * (ylim[1] - ylim[0])
        ax.set_ylim(ylim[0], top)
    if complete.any():
        ax.plot(
            numbers[complete], values[complete], "o", color="tab:blue", markersize=5, label="completed trial"
        )
        running = best_so_far(values, complete)
        ax.step(numbers, running, where="post", color="tab:orange", linewidth=2, label="best so far")
    if pruned.any():
        ax.plot(
            numbers[pruned],
            values[pruned],
            "o",
            markerfacecolor="none",
            markeredgecolor=PRUNED_COLOR,
            label="pruned early (value when pruned)",
        )
    if diverged.any():
        _at_top(ax, numbers[diverged], marker="x", color=DIVERGED_COLOR, markersize=7, markeredgewidth=2)
        ax.plot([], [], "x", color=DIVERGED_COLOR, markeredgewidth=2, label="diverged, drawn at the top edge")
    if ylim is None:
        ax.text(0.5, 0.5, "no trial completed", transform=ax.transAxes, ha="center", va="center")
        ax.set_yticks([])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial number")
    ax.set_ylabel(_scale_label(loss_name, "log" if log else "linear"))
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    _legend_below(fig, ax)
    _plain_log_labels(ax)
    return fig


def plot_importances(
    importances: Mapping[str, float],
    *,
    method: str = "optuna.importance (normalised to sum to 1)",
    title: str = "Hyperparameter importance",
) -> Figure:
    """Horizontal bars, the most important parameter on top, each bar labelled with its value."""
    if not importances:
        raise ValueError("The 'importances' parameter of plot_importances must not be empty. Got {} instead.")
    items = sorted(importances.items(), key=lambda kv: kv[1])
    names = [k for k, _ in items]
    values = np.array([v for _, v in items], dtype=float)
    fig = Figure(figsize=(7.5, 1.2 + 0.45 * len(items)), layout="constrained")
    ax = fig.add_subplot()
    bars = ax.barh(names, values, color="tab:blue", label=method)
    ax.bar_label(bars, labels=[_fmt(v) for v in values], padding=3, fontsize="small")
    top = float(np.nanmax(values)) if np.isfinite(values).any() else 1.0
    ax.set_xlim(0, top * 1.18 if top > 0 else 1)
    ax.set_xlabel("importance")
    ax.set_ylabel("hyperparameter")
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return fig


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

    low, high = getattr(s, "low", None), getattr(s, "high", None)
    if low is not None and high is not None:
        ax.axvspan(
            low,
            high,
            color="tab:green",
            alpha=0.12,
            linewidth=0,
            label=f"recommended range [{_fmt(low)}, {_fmt(high)}]",
        )
    lines = (
        ("steepest", "steepest descent", "tab:green", "--"),
        ("min_over_10", "minimum / 10", "tab:orange", "--"),
        ("valley", "valley", "tab:purple", "--"),
    )
    for attr, label, color, style in lines:
        value = getattr(s, attr, None)
        if value is not None:
            ax.axvline(value, color=color, linestyle=style, linewidth=1.5, label=f"{label}: {_fmt(value)}")
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
            label=rf"theory $2/\lambda_{{max}}$ = {_fmt(theory_lr)}",
        )
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel(_scale_label("training loss", "log" if log else "linear"))
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    _legend_below(fig, ax, ncols=2)
    _plain_log_labels(ax)
    return fig
