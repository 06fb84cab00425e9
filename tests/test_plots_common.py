"""pipeline/reports/plots/common.py: the helpers every picture shares (divergence spans, the running best, the lr
colour scale, axis limits, stamps, saving), against values worked out by hand from their definitions."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from pipeline.reports import plots
from pipeline.reports.plots import common

# ----------------------------------------------------------------------------------------------- divergence spans


@pytest.mark.parametrize(
    ("lrs", "diverged", "expected"),
    [
        # the rates above 0.1 diverged: the span starts halfway (log scale) between 0.1 and 1
        ([1e-3, 1e-2, 1e-1, 1.0, 10.0], [False, False, False, True, True], [(math.sqrt(0.1), math.inf)]),
        # two separate runs, the first at the low end of the axis (a decayed schedule saved the middle rate)
        ([1.0, 10.0, 100.0], [True, False, True], [(0.0, math.sqrt(10.0)), (math.sqrt(1000.0), math.inf)]),
        # the input order does not matter
        ([10.0, 0.01, 1.0, 0.1], [True, False, False, False], [(math.sqrt(10.0), math.inf)]),
        # at one lr with mixed outcomes, the converging trial sorts first and splits the run at that lr
        ([1.0, 1.0, 10.0], [True, False, True], [(1.0, math.inf)]),
        ([0.1, 1.0], [True, True], [(0.0, math.inf)]),
        ([0.1, 1.0], [False, False], []),
        ([], [], []),
    ],
)
def test_divergence_spans_against_hand_worked_edges(lrs, diverged, expected):
    spans = plots.divergence_spans(lrs, diverged)
    assert len(spans) == len(expected)
    for (low, high), (want_low, want_high) in zip(spans, expected, strict=True):
        assert low == pytest.approx(want_low) and high == pytest.approx(want_high)


def test_divergence_spans_need_one_flag_per_lr():
    with pytest.raises(
        ValueError,
        match=r"^The 'diverged' parameter of divergence_spans must have one entry per lr \(3\)\. Got 2 instead\.$",
    ):
        plots.divergence_spans([0.1, 1.0, 10.0], [True, False])


# ----------------------------------------------------------------------------------------------- running best


def test_best_so_far_counts_only_finite_values_of_counted_trials():
    values = [0.5, math.nan, 0.7, 0.2, math.inf, 0.3]
    counts = [False, True, True, True, True, True]  # the first trial (0.5) was pruned: it does not count
    got = plots.best_so_far(values, counts)
    np.testing.assert_array_equal(got, [math.nan, math.nan, 0.7, 0.2, 0.2, 0.2])


def test_best_so_far_without_flags_counts_every_trial_and_accepts_no_trial():
    np.testing.assert_array_equal(plots.best_so_far([3.0, 1.0, 2.0]), [3.0, 1.0, 1.0])
    assert plots.best_so_far([]).shape == (0,)


# ----------------------------------------------------------------------------------------------- lr colour scale


def test_lr_norm_spans_the_positive_finite_rates_on_a_log_scale():
    norm = plots.lr_norm([0.01, 1.0, math.nan, -1.0, 0.0, math.inf])
    assert isinstance(norm, LogNorm)
    assert (norm.vmin, norm.vmax) == (0.01, 1.0)
    assert norm(0.1) == pytest.approx(0.5)  # halfway in log10 between -2 and 0


def test_lr_norm_widens_a_single_rate_by_a_factor_of_two_each_side():
    norm = plots.lr_norm([0.1, 0.1])
    assert (norm.vmin, norm.vmax) == pytest.approx((0.05, 0.2))


def test_lr_norm_without_a_positive_rate_names_the_parameter():
    with pytest.raises(
        ValueError, match=r"The 'lrs' parameter of lr_norm must hold a float > 0\. Got \[0\.0, -1\.0\]"
    ):
        plots.lr_norm([0.0, -1.0])


# ----------------------------------------------------------------------------------------------- limits and labels


def test_axis_limits_pad_six_percent_of_the_span():
    # linear: 6 % of the span 10 on each side
    assert common._limits([0.0, 10.0, math.inf], log=False) == pytest.approx((-0.6, 10.6))
    # log: 6 % of the span in decades (2) as a factor 10**0.12 each side; values <= 0 are left out on a log axis
    factor = 10**0.12
    assert common._limits([1.0, 100.0, 0.0, -5.0], log=True) == pytest.approx((1 / factor, 100 * factor))
    assert common._limits([math.nan, math.inf], log=False) is None


def test_a_log_axis_within_one_decade_labels_ticks_as_plain_numbers():
    fig = Figure()
    ax = fig.add_subplot()
    ax.set_yscale("log")
    ax.set_ylim(0.4, 0.6)
    common._plain_log_labels(ax)
    assert ax.yaxis.get_major_formatter()(0.45, 0) == "0.45"
    assert ax.yaxis.get_minor_formatter()(0.5, 0) == "0.5"


@pytest.mark.parametrize(
    ("lrs", "text"),
    [([10.0, 1.0, 1.0], "lr = 1, 10"), ([0.32, 1, 2, 3, 6.0], "lr 0.32 to 6")],
)
def test_lr_lists_name_a_few_rates_and_the_range_of_many(lrs, text):
    assert common._lr_list(lrs) == text


# ----------------------------------------------------------------------------------------------- stamps and files


def test_a_stamp_alone_sits_small_at_the_top_right():
    fig = Figure()
    fig.add_subplot()
    plots.stamp(fig, "s: 3 trials")
    title = fig._suptitle
    assert title.get_text() == "s: 3 trials"
    assert title.get_ha() == "right" and title.get_fontsize() == 7


def test_stamp_adds_a_line_and_keeps_an_existing_figure_title():
    fig = plots.plot_curves([0.1], [np.array([1.0, 0.5])])
    plots.stamp(fig, "s: 3 trials, 2026-01-01 00:00 UTC")
    assert fig.get_suptitle() == "s: 3 trials, 2026-01-01 00:00 UTC"
    fig = plots.plot_weight_histograms([0.1], [{"w": np.arange(5.0)}], title="weights")
    plots.stamp(fig, "stamp")
    assert fig.get_suptitle() == "weights\nstamp"


def test_save_writes_a_png_of_the_figure_size_times_dpi_creating_folders(tmp_path):
    fig = Figure(figsize=(2.0, 1.0))
    fig.add_subplot().plot([0, 1], [1, 0])
    path = plots.save(fig, tmp_path / "a" / "b" / "curve.png", dpi=50)
    assert path == tmp_path / "a" / "b" / "curve.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"  # the PNG signature
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk's first fields
    assert (width, height) == (100, 50)
