"""pipeline/reports/plots/weights.py: the compare study's weight trajectories and histograms, read from the
matplotlib Figure (panels, lines per panel, shared limits, tick labels)."""

from __future__ import annotations

import numpy as np
import pytest
from figures import data_lines
from matplotlib.colors import to_rgba

from pipeline.reports import plots


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


def test_a_few_named_weights_are_drawn_as_named_stems_not_a_histogram():
    fig = plots.plot_weight_histograms(
        [0.1], [{"w": np.array([0.3, -0.2, 0.1, 0.0])}], labels={"w": ["w[a]", "w[b]", "w[c]", "w[d]"]}
    )
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["w[a]", "w[b]", "w[c]", "w[d]"]
    assert not ax.patches  # no histogram bars


def test_a_bias_stem_has_no_y_ticks_and_the_legend_names_no_mean_when_no_histogram_drew_one():
    weights = {"w": np.array([0.3, -0.2, 0.1, 0.0]), "b": np.array([0.05])}
    fig = plots.plot_weight_histograms([0.1], [weights], labels={"w": ["w[a]", "w[b]", "w[c]", "w[d]"]})
    bias = fig.axes[1]
    assert list(bias.get_yticks()) == []  # a stem's height (1) is no count
    assert "b = 0.05" in [t.get_text() for t in bias.texts]
    assert "mean" not in [t.get_text() for t in fig.legends[0].get_texts()]
    # With a histogram (an unnamed array of many values), the dashed mean line is drawn and named.
    fig = plots.plot_weight_histograms([0.1], [{"W": np.linspace(-1, 1, 50)}])
    assert "mean" in [t.get_text() for t in fig.legends[0].get_texts()]
    assert fig.axes[0].get_ylabel() == "lr = 0.1\ncount"


@pytest.mark.parametrize(
    ("blocks", "expected"),
    [
        ([np.array([1.0, -2.0]), np.array([7.0])], True),  # largest |values| 2 and 7: within a factor 4
        ([np.array([1.0]), np.array([-5.0])], False),  # 1 and 5: more than a factor 4 apart
        ([np.array([1.0, np.inf]), np.array([3.0, np.nan])], True),  # non-finite values carry no scale
        ([np.array([0.0]), np.array([1e-13])], True),  # rounding-error sizes carry no scale either
        ([np.array([5.0])], True),
    ],
)
def test_comparable_blocks_are_within_the_share_ratio(blocks, expected):
    assert plots.SHARE_RATIO == 4.0
    assert plots.comparable(blocks) is expected


def test_weight_panels_of_unlike_sizes_keep_their_own_y_range():
    small = np.linspace(0, 0.1, 11)[:, None] * np.ones((1, 2))
    large = np.linspace(0, 10.0, 11)[:, None] * np.ones((1, 2))
    fig = plots.plot_weight_trajectories([0.01, 1.0], [small, large], ["w", "b"])
    panels = [ax for ax in fig.axes if data_lines(ax)]
    assert panels[0].get_ylim()[1] < 1.0 < 10.0 <= panels[1].get_ylim()[1]
    assert fig.get_suptitle().endswith("(each panel has its own y scale)")


def test_a_diverged_rate_has_a_red_title_and_a_line_at_its_epoch():
    rng = np.random.default_rng(2)
    histories = [rng.normal(size=(6, 2)), np.vstack([rng.normal(size=(3, 2)), np.full((1, 2), np.inf)])]
    fig = plots.plot_weight_trajectories([0.1, 10.0], histories, ["w", "b"], diverged_epochs=[None, 2])
    panel = fig.axes[1]
    assert panel.get_title() == "lr = 10: diverged at epoch 2 (own y scale)"
    assert to_rgba(panel.title.get_color()) == to_rgba("tab:red")
    vertical = [line for line in panel.get_lines() if list(line.get_xdata()) == [3, 3]]
    assert len(vertical) == 1  # the end of epoch 2 is after 3 completed epochs
    assert "end of the\ndiverged epoch" in [t.get_text() for t in fig.legends[0].get_texts()]


def test_only_the_first_max_params_weights_are_drawn_and_the_legend_says_so():
    history = np.zeros((4, 20)) + np.arange(20)
    fig = plots.plot_weight_trajectories([0.1], [history], [f"w[{j}]" for j in range(20)], max_params=5)
    assert len(data_lines(fig.axes[0])) == 5
    assert fig.legends[0].get_title().get_text() == "first 5 of\n20 parameters"


def test_histories_of_the_wrong_shape_are_refused_with_the_position():
    with pytest.raises(
        ValueError, match=r"shape \(epochs \+ 1, 3\)\. Got shape \(4, 2\) at position 1 instead\."
    ):
        plots.plot_weight_trajectories([0.1, 1.0], [np.zeros((4, 3)), np.zeros((4, 2))], ["a", "b", "c"])
