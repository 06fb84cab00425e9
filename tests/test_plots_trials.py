"""pipeline/reports/plots/trials.py: the curves, loss against lr, schedules, history and importance pictures, read
from the matplotlib Figure (axis scales, lines, legend entries, colour bar, limits), with expectations computed
here from the inputs, not from the drawing code."""

from __future__ import annotations

import math

import numpy as np
import pytest
from figures import data_lines, legend_texts, viridis_at
from matplotlib.colors import LogNorm, to_rgba

from pipeline.reports import plots

LRS = [1e-3, 1e-2, 1e-1, 1.0, 10.0]


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
