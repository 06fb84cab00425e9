"""pipeline/reports/plots: what each picture shows, read from the matplotlib Figure (axis scales, lines, legend
entries, colour bar, limits), with expectations computed here from the inputs, not from the drawing code."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib import colormaps
from matplotlib.colors import LogNorm, to_rgba

from pipeline.reports import plots

LRS = [1e-3, 1e-2, 1e-1, 1.0, 10.0]


def legend_texts(fig) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def data_lines(ax) -> list:
    """Lines with more than one point: curves, not markers or legend proxies."""
    return [line for line in ax.get_lines() if len(line.get_xdata()) > 1]


def viridis_at(lr: float, low: float, high: float):
    """The colour of lr on a log colour scale from low to high, computed from the definition."""
    return colormaps["viridis"]((math.log(lr) - math.log(low)) / (math.log(high) - math.log(low)))


@pytest.fixture
def curves_figure():
    epochs = np.arange(20)
    curves = [1.0 / (1 + lr * epochs) + 0.1 for lr in LRS[:3]]  # complete, decreasing, positive
    pruned = (1.0 / (1 + 1e-3 * epochs) + 0.2)[:8]
    diverged = np.array([1.0, 5.0, 1e4, 1e8, np.inf])
    kinds = ["complete", "complete", "complete", "pruned", "diverged"]
    fig = plots.plot_curves(
        LRS, [*curves, pruned, diverged], kinds=kinds, diverged_epochs=[None] * 4 + [4], loss_name="val MSE"
    )
    return fig, [*curves, pruned]


def test_curves_draw_one_line_per_trial_on_a_log_axis(curves_figure):
    fig, _ = curves_figure
    ax = fig.axes[0]
    assert len(data_lines(ax)) == 5
    assert ax.get_yscale() == "log" and ax.get_xscale() == "linear"
    assert "log" in ax.get_ylabel() and "val MSE" in ax.get_ylabel()


def test_curves_y_limits_come_from_the_trials_that_did_not_diverge(curves_figure):
    fig, kept = curves_figure
    low, high = fig.axes[0].get_ylim()
    finite = np.concatenate(kept)
    assert low <= finite.min() and high >= finite.max()
    assert high < 10 * finite.max()  # the diverged curve (1e8) leaves through the top


def test_curves_colour_is_the_learning_rate_on_a_log_colour_bar(curves_figure):
    fig, _ = curves_figure
    assert len(fig.axes) == 2  # the plot and its colour bar
    colourbar = fig.axes[1]._colorbar  # the Colorbar drawn in the second axes
    assert isinstance(colourbar.norm, LogNorm)
    assert (colourbar.norm.vmin, colourbar.norm.vmax) == (min(LRS), max(LRS))
    lines = sorted(data_lines(fig.axes[0])[:3], key=lambda line: line.get_ydata()[-1])
    # the largest rate decreases fastest, so the lowest final loss is lr = 0.1
    assert to_rgba(lines[0].get_color()) == pytest.approx(viridis_at(0.1, min(LRS), max(LRS)))


def test_curves_legend_names_each_kind_with_the_diverged_count(curves_figure):
    texts = legend_texts(curves_figure[0])
    assert len(texts) == 3
    assert texts[0].startswith("completed") and texts[1].startswith("pruned")
    assert texts[2].startswith("diverged: 1 trials")


def test_loss_against_lr_is_log_log_with_one_shaded_diverged_span():
    losses = [0.5, 0.2, 0.1, 0.3, math.inf]
    kinds = ["complete"] * 4 + ["diverged"]
    fig = plots.plot_loss_vs_lr(LRS, losses, kinds)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    spans = [p for p in ax.patches if p.get_label().startswith("diverged region")]
    assert len(spans) == 1
    # its left edge is halfway in log lr between 1 (converged) and 10 (diverged): sqrt(10)
    x0 = spans[0].get_x() if hasattr(spans[0], "get_x") else spans[0].get_xy()[0][0]
    assert x0 == pytest.approx(math.sqrt(10))
    texts = legend_texts(fig)
    assert any(t.startswith("best: lr = 0.1") for t in texts)
    assert any(t.startswith("diverged (1)") for t in texts)


def test_history_steps_through_the_running_minimum_of_complete_trials():
    values = [0.5, 0.7, 0.3, math.inf, 0.4, 0.1]
    kinds = ["complete", "complete", "complete", "diverged", "pruned", "complete"]
    fig = plots.plot_history(list(range(6)), values, kinds)
    ax = fig.axes[0]
    (best,) = [line for line in ax.get_lines() if line.get_label() == "best so far"]
    expected = [0.5, 0.5, 0.3, 0.3, 0.3, 0.1]  # pruned and diverged trials do not count
    assert list(best.get_ydata()) == pytest.approx(expected)
    assert ax.get_xlabel() == "trial number"
    assert set(legend_texts(fig)) >= {"completed trial", "best so far", "diverged, drawn at the top edge"}


def test_importances_draw_one_bar_per_parameter_largest_on_top():
    fig = plots.plot_importances({"lr": 0.7, "exponential.decay_rate": 0.2, "batch_size": 0.1})
    ax = fig.axes[0]
    bars = list(ax.containers[0])
    assert len(bars) == 3
    widths = [b.get_width() for b in bars]
    assert widths == sorted(widths)  # barh draws bottom-up: the largest ends on top
    assert [t.get_text() for t in ax.get_yticklabels()][-1] == "lr"


def test_lr_schedules_one_line_per_best_trial_with_its_label():
    steps = np.arange(100)
    schedules = [0.1 * np.exp(-0.01 * steps), 0.05 * np.ones(100), 0.2 / (1 + 0.1 * steps)]
    labels = ["#3 loss 0.1", "#7 loss 0.2", "#1 loss 0.3"]
    fig = plots.plot_lr_schedules(schedules, labels)
    ax = fig.axes[0]
    assert len(data_lines(ax)) == 3
    assert [line.get_label() for line in data_lines(ax)] == labels
    assert legend_texts(fig) == labels


def test_lr_range_test_recommends_one_rate_and_never_ranges_past_the_divergence_bound():
    from pipeline.study.experiment import RangeTestReport

    lrs = np.geomspace(1e-6, 1.0, 200)
    loss = 1.0 / (1 + 1e3 * lrs) + lrs**2
    report = RangeTestReport(
        lrs=lrs,
        losses=loss,
        smoothed=loss,
        diverged_lr=0.5,
        stop_reason="test",
        suggestions=SimpleNamespace(steepest=1e-3, min_over_10=0.03, valley=5e-4, low=5e-4, high=0.5),
        theory_lr=0.4,
        optimizer="sgd",
        batch_size=None,
    )
    # The bound is the lower of the test's divergence point and the theory's 2/lambda_max.
    assert report.bound == 0.4
    assert report.search_range == (5e-4, 0.4)
    assert report.recommended == 0.03  # minimum / 10
    fig = plots.plot_lr_range_test(report)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    vertical = {
        line.get_label().split(" ")[0]: line.get_xdata()[0]
        for line in ax.get_lines()
        if line.get_label() and len(line.get_xdata())
    }
    assert vertical["diverged"] == pytest.approx(0.5)
    assert vertical["recommended"] == pytest.approx(0.03)
    assert vertical["divergence"] == pytest.approx(0.4)  # "divergence bound 2/lambda_max (theory)"
    (span,) = [p for p in ax.patches if p.get_label().startswith("search range")]
    assert span.get_label() == "search range [0.0005, 0.4]"
    assert span.get_x() + span.get_width() <= 0.4 * (1 + 1e-12)  # never past the bound
    assert any(t.startswith("other rules: steepest 0.001, valley 0.0005") for t in legend_texts(fig))
    assert ax.get_xlim()[0] <= 1e-6 and ax.get_xlim()[1] >= 1.0


def test_a_recommended_rate_stays_half_the_bound_below_it():
    from pipeline.study.experiment import RangeTestReport

    report = RangeTestReport(
        lrs=[1.0],
        losses=[1.0],
        smoothed=[1.0],
        diverged_lr=0.1,
        stop_reason="test",
        suggestions=SimpleNamespace(steepest=0.05, min_over_10=0.09, valley=0.008, low=0.008, high=0.1),
        theory_lr=None,
        optimizer="sgd",
        batch_size=None,
    )
    assert report.recommended == pytest.approx(0.05)
    assert report.search_range == (0.008, 0.1)


def test_divergence_spans_are_shared_by_every_picture():
    # the helpers used by several pictures are reachable from the package, as before the split
    for name in ("divergence_spans", "best_so_far", "lr_norm", "save", "comparable", "DEFAULT_DPI"):
        assert hasattr(plots, name)


def test_weight_trajectories_one_panel_per_rate_one_line_per_weight():
    rng = np.random.default_rng(0)
    histories = [np.cumsum(rng.normal(size=(11, 3)), axis=0) for _ in range(2)]
    fig = plots.plot_weight_trajectories([0.01, 0.1], histories, ["w[0]", "w[1]", "b"])
    panels = [ax for ax in fig.axes if data_lines(ax)]
    assert len(panels) == 2
    assert all(len(data_lines(ax)) == 3 for ax in panels)
    # comparable weights: the two panels share one y range
    assert panels[0].get_ylim() == pytest.approx(panels[1].get_ylim())


def test_weight_histograms_a_row_per_rate_a_column_per_array():
    rng = np.random.default_rng(1)
    arrays = [{"W1": rng.normal(size=(4, 8)), "b1": rng.normal(size=8)} for _ in range(3)]
    fig = plots.plot_weight_histograms([0.001, 0.01, 0.1], arrays)
    drawn = [ax for ax in fig.axes if ax.patches or ax.get_lines()]
    assert len(drawn) == 6


def test_curves_mark_the_best_trial_and_thin_out_past_max_lines():
    rng = np.random.default_rng(1)
    n, epochs = 100, 7
    finals = rng.uniform(0.1, 1.0, n)
    curves = [np.linspace(1.0, f, epochs) for f in finals]
    lrs = list(np.geomspace(1e-4, 1.0, n))
    best = int(np.argmin(finals))
    fig = plots.plot_curves(lrs, curves, best=best, best_label="best: trial 9", max_lines=40, top_k=10)
    ax = fig.axes[0]
    # 40 trial lines, plus the best drawn again on top (outline + colour).
    assert len(data_lines(ax)) == 40 + 2
    drawn_finals = {round(float(line.get_ydata()[-1]), 12) for line in data_lines(ax)}
    for i in np.argsort(finals)[:10]:  # the 10 lowest final losses are all drawn
        assert round(float(finals[i]), 12) in drawn_finals
    texts = legend_texts(fig)
    assert "best: trial 9" in texts and "40 of 100 trials drawn: the 10 best and a sample" in texts
    # Epoch ticks are integers even on a 7-epoch run.
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_stamp_adds_a_line_and_keeps_an_existing_figure_title():
    fig = plots.plot_curves([0.1], [np.array([1.0, 0.5])])
    plots.stamp(fig, "s: 3 trials, 2026-01-01 00:00 UTC")
    assert fig.get_suptitle() == "s: 3 trials, 2026-01-01 00:00 UTC"
    fig = plots.plot_weight_histograms([0.1], [{"w": np.arange(5.0)}], title="weights")
    plots.stamp(fig, "stamp")
    assert fig.get_suptitle() == "weights\nstamp"


def test_a_few_named_weights_are_drawn_as_named_stems_not_a_histogram():
    fig = plots.plot_weight_histograms(
        [0.1], [{"w": np.array([0.3, -0.2, 0.1, 0.0])}], labels={"w": ["w[a]", "w[b]", "w[c]", "w[d]"]}
    )
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["w[a]", "w[b]", "w[c]", "w[d]"]
    assert not ax.patches  # no histogram bars
