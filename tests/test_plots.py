"""pipeline/reports/plots: the package's public names, and the LR range test's picture (plots/lrfind.py), read
from the matplotlib Figure. The other subjects have their own files: test_plots_common.py, test_plots_trials.py,
test_plots_weights.py."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from figures import legend_texts

from pipeline.reports import plots


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
