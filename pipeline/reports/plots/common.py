"""The plots' shared vocabulary: colours, the lr colour scale, limits of log axes, legends, saving.

Colours mean the same thing everywhere: the viridis colour of a line is its learning rate (log colour scale), red
is divergence, grey is a trial pruned early.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from matplotlib.transforms import blended_transform_factory

from pipeline.core.names import TRIAL_KINDS

KINDS = TRIAL_KINDS
LR_CMAP = "viridis"
DIVERGED_COLOR = "tab:red"
PRUNED_COLOR = "0.55"
DEFAULT_DPI = 110


# ----------------------------------------------------------------------------------------------- helpers


def stamp(fig: Figure, text: str) -> Figure:
    """Write ``text`` (the study, its trial count and the time, say) small and grey at the figure's top right corner,
    so that a picture copied elsewhere still says what it shows and when it was made."""
    # As a figure title, so the layout engine keeps room for it; a figure that has one gets a second line.
    current = fig.get_suptitle()
    if current:
        fig.suptitle(f"{current}\n{text}", fontsize="medium")
    else:
        fig.suptitle(text, x=0.995, ha="right", fontsize=7, color="0.45")
    return fig


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
