"""Helpers of the plot tests (tests/test_plots*.py): what a matplotlib Figure shows, read back from it."""

from __future__ import annotations

import math

from matplotlib import colormaps


def legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def data_lines(ax) -> list:
    """Lines with more than one point: curves, not markers or legend proxies."""
    return [line for line in ax.get_lines() if len(line.get_xdata()) > 1]


def viridis_at(lr: float, low: float, high: float):
    """The colour of lr on a log colour scale from low to high, computed from the definition."""
    return colormaps["viridis"]((math.log(lr) - math.log(low)) / (math.log(high) - math.log(low)))
