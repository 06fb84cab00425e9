"""Pictures of a study's trials: curves coloured by lr, final loss against lr, the best trials' schedules, the
optimisation history and the parameters' importance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps, patheffects
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from pipeline.core.names import COMPLETE, DIVERGED, PRUNED
from pipeline.reports.plots.common import (
    DIVERGED_COLOR,
    LR_CMAP,
    PRUNED_COLOR,
    _at_top,
    _check_same_length,
    _fmt,
    _legend_below,
    _limits,
    _log_ok,
    _lr_colorbar,
    _lr_list,
    _plain_log_labels,
    _scale_label,
    best_so_far,
    divergence_spans,
    lr_norm,
)

# ----------------------------------------------------------------------------------------------- 1. curves

_OUTLINE = [patheffects.withStroke(linewidth=4, foreground="black")]


def _curves_drawn(curves, kinds, best, max_lines: int, top_k: int) -> list[int]:
    """Indices of the curves to draw: all when there are at most ``max_lines``, else the ``top_k`` completed
    trials with the lowest final loss, the best, and an evenly spaced sample of the rest."""
    n = len(curves)
    if n <= max_lines:
        return list(range(n))

    def final(i):
        c = curves[i]
        return float(c[-1]) if kinds[i] == COMPLETE and len(c) and np.isfinite(c[-1]) else math.inf

    ranked = sorted(range(n), key=final)
    chosen = set(ranked[:top_k]) | ({best} if best is not None else set())
    rest = [i for i in range(n) if i not in chosen]
    room = max(0, max_lines - len(chosen))
    if room and rest:
        picks = np.unique(np.round(np.linspace(0, len(rest) - 1, min(room, len(rest)))).astype(int))
        chosen |= {rest[j] for j in picks}
    return sorted(chosen)


def plot_curves(
    lrs: Sequence[float],
    curves: Sequence[np.ndarray],
    *,
    kinds: Sequence[str] | None = None,
    diverged_epochs: Sequence[int | None] | None = None,
    loss_name: str = "validation loss",
    title: str = "Learning curves",
    best: int | None = None,
    best_label: str = "best trial",
    max_lines: int = 40,
    top_k: int = 10,
) -> Figure:
    """Every trial's loss against the epoch, coloured by its learning rate on a log colour scale.

    Args:
        lrs: each trial's learning rate (its colour).
        curves: each trial's loss per epoch (index = epoch); a diverged curve may end in inf.
        kinds: "complete" | "diverged" | "pruned" per trial (default all complete). Diverged curves are dashed
            red with an x at the top edge at the epoch they diverged; pruned curves are dotted.
        diverged_epochs: the epoch each diverged trial diverged at (default: its last epoch).
        loss_name: the y label, e.g. "validation loss (MSE)".
        best: index of the best trial, drawn last, thick and outlined in black, and named in the legend
            (``best_label``).
        max_lines, top_k: past ``max_lines`` trials, only the ``top_k`` lowest final losses of completed trials
            and an evenly spaced sample of the others (``max_lines`` lines in all) are drawn, and the legend says
            so: 170 overlapping lines show nothing.

    Epoch ticks are integers. The y axis is logarithmic when every finite loss is positive; its limits come from the trials that did not
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
    drawn = _curves_drawn(curves, kinds, best, max_lines, top_k)
    kept = [curves[i] for i in drawn if kinds[i] != DIVERGED] or [curves[i] for i in drawn]
    kept_values = np.concatenate(kept) if kept else np.array([])
    log = _log_ok(np.concatenate(curves)) if curves else False
    # Draw large rates last so the lines most likely to be off-scale do not hide the others.
    for i in sorted(drawn, key=lambda i: lrs[i]):
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
    if best is not None and len(curves[best]):
        c = curves[best]
        y = np.where(np.isfinite(c), c, np.nan)
        ax.plot(np.arange(len(c)), y, color="black", linewidth=4.0, zorder=5)
        ax.plot(np.arange(len(c)), y, color=cmap(norm(lrs[best])), linewidth=2.0, zorder=6)
    if log:
        ax.set_yscale("log")
    limits = _limits(kept_values, log)
    if limits is not None:
        ax.set_ylim(*limits)
    longest = max((len(c) for c in curves), default=1)
    ax.set_xlim(-0.01 * longest, longest - 1 + 0.01 * longest if longest > 1 else 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(_scale_label(loss_name, "log" if log else "linear"))
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    _lr_colorbar(fig, ax, norm)
    handles = []
    if best is not None:
        handles.append(Line2D([], [], color=cmap(0.5), linewidth=2, path_effects=_OUTLINE, label=best_label))
    if len(drawn) < n:
        handles.append(
            Line2D(
                [], [], linestyle="", label=f"{len(drawn)} of {n} trials drawn: the {top_k} best and a sample"
            )
        )
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
    # Below the axes: inside, it covered the shortest bar's label.
    _legend_below(fig, ax, ncols=1)
    return fig
