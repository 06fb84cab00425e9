"""The report: pictures written from replayed trials, the replay check, and the data prep behind each picture.

Oracles: hand-made records and inputs with the expected answer written out (which trials diverged, the k best,
the shaded region's edges computed by hand), PNG signatures, and records tampered with on purpose. The records
are made the way the runner makes them (loss at evenly spaced epochs, divergence pruned), from the core.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pipeline.core.models import MLP, LinearRegression
from pipeline.errors import ConfigError
from pipeline.reports import plots
from pipeline.reports.report import (
    FILES,
    ReplayedTrial,
    ReplayMismatchError,
    ReplayMismatchWarning,
    best_trials,
    compare_selection,
    is_lr_grid,
    param_labels,
    replay_discrepancies,
    replay_trials,
    trial_kind,
    write_report,
)
from pipeline.study.experiment import TrialRecord, load_study_data, replay
from pipeline.study.loader import load_study
from pipeline.study.space import Choice

STUDIES = Path(__file__).resolve().parents[1] / "studies"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DPI = 40  # small files, same pictures: the tests check that they are written, a reader checks how they look


def record_of(spec, data, number, params, *, state=None, prune_at=None) -> TrialRecord:
    """A TrialRecord as the runner would store it: loss at evenly spaced epochs, diverged trials pruned.

    ``prune_at``: pretend a pruner stopped the trial after that epoch (state PRUNED, "underperforming").
    """
    _, result = replay(spec, data, params)
    epochs, points = spec.training.epochs, spec.tracking.report_points
    reported = (
        set(range(epochs)) if points >= epochs else {round(x) for x in np.linspace(0, epochs - 1, points)}
    )
    last = result.epochs_run if prune_at is None else prune_at + 1
    intermediate = {e: float(result.monitored[e]) for e in range(last) if e in reported}
    if result.diverged:
        intermediate[result.diverged_epoch] = float(result.monitored[result.diverged_epoch])
        return TrialRecord(
            number,
            "PRUNED",
            params,
            value=intermediate[result.diverged_epoch],
            prune_reason="diverged",
            diverged_epoch=result.diverged_epoch,
            intermediate=intermediate,
        )
    if prune_at is not None:
        intermediate[prune_at] = float(result.monitored[prune_at])
        return TrialRecord(
            number,
            "PRUNED",
            params,
            value=intermediate[prune_at],
            prune_reason="underperforming",
            intermediate=intermediate,
        )
    return TrialRecord(
        number, state or "COMPLETE", params, value=result.final_loss, intermediate=intermediate
    )


def assert_png(path: Path, min_bytes: int = 3_000) -> None:
    blob = path.read_bytes()
    assert blob[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert len(blob) >= min_bytes, f"{path.name} is only {len(blob)} bytes"
    width, height = struct.unpack(">II", blob[16:24])  # the IHDR chunk follows the signature
    assert 150 <= width <= 2_000 and 60 <= height <= 2_000, (path.name, width, height)


@pytest.fixture(scope="module")
def compare():
    spec = load_study(STUDIES / "compare.yaml")
    spec = replace(spec, training=replace(spec.training, epochs=40))
    data = load_study_data(spec)
    records = [record_of(spec, data, i, {"lr": lr}) for i, lr in enumerate([0.001, 0.01, 0.1, 1.0, 10.0])]
    return spec, data, records


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory):
    """A temporary copy of diabetes-reference.yaml with 30 epochs; 8 trials: complete, diverged (lr = 10),
    pruned as underperforming, failed and running."""
    text = (STUDIES / "diabetes-reference.yaml").read_text(encoding="utf-8")
    assert "epochs: 300" in text
    path = tmp_path_factory.mktemp("study") / "diabetes-reference.yaml"
    path.write_text(text.replace("epochs: 300", "epochs: 30"), encoding="utf-8")
    spec = load_study(path)
    data = load_study_data(spec)
    decay = "exponential.decay_rate"
    grid = [(1e-3, 1e-3), (0.05, 0.01), (0.1, 0.05), (0.01, 1e-4), (10.0, 1e-3), (2.0, 0.1)]
    records = [record_of(spec, data, i, {"lr": lr, decay: d}) for i, (lr, d) in enumerate(grid)]
    records.append(record_of(spec, data, 6, {"lr": 1e-4, decay: 0.01}, prune_at=10))
    records.append(TrialRecord(7, "FAIL", {"lr": 0.3, decay: 0.01}))
    records.append(TrialRecord(8, "RUNNING", {"lr": 0.3}))
    return spec, data, records


# ----------------------------------------------------------------------------------------------- pictures


@pytest.mark.slow  # seconds of waiting or drawing: `make test-fast` stays in seconds
def test_compare_report_writes_every_picture_including_the_weight_plots(compare, tmp_path):
    spec, data, records = compare
    assert is_lr_grid(spec)
    paths = write_report(spec, records, tmp_path / "out", importances={}, data=data, dpi=DPI)
    names = {p.name for p in paths}
    expected = {
        FILES[k] for k in ("curves", "loss_vs_lr", "schedules", "history", "trajectories", "histograms")
    }
    assert names == expected  # empty importances: no importance picture
    for path in paths:
        assert path.parent == tmp_path / "out"
        assert_png(path)


@pytest.mark.slow  # seconds of waiting or drawing: `make test-fast` stays in seconds
def test_diabetes_report_skips_failed_and_running_trials_and_draws_importance(diabetes, tmp_path):
    spec, data, records = diabetes
    assert [r.number for r in records if trial_kind(r) == "diverged"] == [4, 5]  # lr = 10 and 2 diverge
    importances = {"lr": 0.8, "exponential.decay_rate": 0.2}
    paths = write_report(spec, records, tmp_path, importances=importances, best_k=3, data=data, dpi=DPI)
    expected = {FILES[k] for k in ("curves", "loss_vs_lr", "schedules", "history", "importance")}
    assert {p.name for p in paths} == expected  # TPE over lr and decay: no compare plots unless asked
    for path in paths:
        assert_png(path)


def test_report_without_finished_trials_writes_nothing(diabetes, tmp_path):
    spec, data, records = diabetes
    unfinished = [r for r in records if r.state in ("FAIL", "RUNNING")]
    assert write_report(spec, unfinished, tmp_path / "none", data=data) == []
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("best_k", [0, -1, 2.5, True])
def test_best_k_must_be_a_positive_int(diabetes, tmp_path, best_k):
    spec, data, records = diabetes
    with pytest.raises(ValueError, match=r"'best_k' parameter of write_report must be an int >= 1\. Got"):
        write_report(spec, records, tmp_path, best_k=best_k, data=data)


def test_lr_range_test_picture_from_any_object_with_the_fields(tmp_path):
    lrs = np.geomspace(1e-6, 10, 60)
    x = np.log10(lrs)
    losses = 0.1 + 1 / (1 + np.exp(2 * (x + 2.5))) + np.where(x > -0.5, 10 ** (2 * (x + 0.5)) - 1, 0)
    # A suggestion the test could not make (None) is left out.
    suggestions = SimpleNamespace(steepest=3e-3, min_over_10=0.02, valley=None, low=3e-3, high=0.05)
    result = SimpleNamespace(
        lrs=lrs, losses=losses, smoothed=losses, diverged_lr=1.0, suggestions=suggestions
    )
    assert_png(plots.save(plots.plot_lr_range_test(result, theory_lr=0.4), tmp_path / "a.png", dpi=DPI))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: plots.plot_importances({}),
            r"'importances' parameter of plot_importances must not be empty",
        ),
        (
            lambda: plots.plot_curves([0.1], [[1.0], [2.0]]),
            r"'lrs' parameter of plot_curves .* Got 1 instead",
        ),
        (lambda: plots.plot_loss_vs_lr([0.1, 1], [1.0], ["complete"] * 2), r"'losses' parameter"),
        (lambda: plots.lr_norm([0.0, -1.0]), r"'lrs' parameter of lr_norm must hold a float > 0"),
    ],
)
def test_plot_functions_reject_inconsistent_inputs(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# ----------------------------------------------------------------------------------------------- replay check


def test_a_tampered_record_stops_the_report_and_names_the_study_file(compare, tmp_path):
    spec, data, records = compare
    good = records[1]
    epoch = sorted(good.intermediate)[5]
    tampered = replace(good, intermediate={**good.intermediate, epoch: good.intermediate[epoch] * 1.01})
    bad = [records[0], tampered, *records[2:]]
    with pytest.raises(
        ReplayMismatchError, match=rf"compare\.yaml: replaying trial 1 .*epoch {epoch}: recorded"
    ):
        write_report(spec, bad, tmp_path / "strict", data=data)
    assert not (tmp_path / "strict").exists()
    with pytest.warns(ReplayMismatchWarning, match="replaying trial 1"):
        trials = replay_trials(spec, bad, data=data, strict=False)
    assert [t.record.number for t in trials] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("number", "change", "match"),
    [
        (1, lambda r: replace(r, value=r.value + 1e-3), r"final value: recorded"),
        (1, lambda r: replace(r, intermediate={**r.intermediate, 39: 0.5}), r"epoch 39: recorded loss 0\.5"),
        (
            3,
            lambda r: replace(r, diverged_epoch=r.diverged_epoch + 1),
            r"diverged at epoch 2, the replay at epoch 1",
        ),
        (
            3,
            lambda r: replace(r, intermediate={**r.intermediate, 7: 1.0}),
            r"epoch 7 was recorded .* stopped after",
        ),
        (
            1,
            lambda r: replace(r, state="PRUNED", prune_reason="diverged"),
            r"trial diverged but the replay ended",
        ),
        (
            3,
            lambda r: replace(r, state="COMPLETE", prune_reason=None),
            r"trial completed but the replay ended",
        ),
    ],
)
def test_replay_discrepancies_name_what_differs(compare, number, change, match):
    spec, data, records = compare
    record = records[number]
    _, result = replay(spec, data, record.params)
    assert replay_discrepancies(record, result) == []
    problems = replay_discrepancies(change(record), result)
    assert len(problems) >= 1
    assert any(re.search(match, p) for p in problems), problems


@pytest.mark.parametrize(
    ("which", "params", "match"),
    [
        ("compare", {"lr": 0.5}, r"its lr = 0\.5 is not one of the study's choices"),
        (
            "diabetes",
            {"lr": 0.1},
            r"the study asks for 'exponential\.decay_rate', which the trial does not have",
        ),
        (
            "diabetes",
            {"lr": 100.0, "exponential.decay_rate": 0.01},
            r"its lr = 100\.0 is outside the study's range",
        ),
        ("compare", {"lr": 0.1, "momentum.beta": 0.9}, r"the study no longer samples 'momentum\.beta'"),
    ],
)
def test_a_trial_that_no_longer_fits_the_study_file_is_a_config_error(
    compare, diabetes, tmp_path, which, params, match
):
    spec, data, _ = compare if which == "compare" else diabetes
    record = TrialRecord(0, "COMPLETE", params, value=1.0)
    with pytest.raises(ConfigError, match=match) as info:
        write_report(spec, [record], tmp_path, data=data)
    assert str(info.value).startswith(spec.path.as_posix())
    assert "trial 0's parameters no longer fit this study file" in str(info.value)


# ----------------------------------------------------------------------------------------------- data prep


@pytest.mark.parametrize(
    ("state", "reason", "epoch", "kind"),
    [
        ("COMPLETE", None, None, "complete"),
        ("PRUNED", "diverged", 3, "diverged"),
        ("PRUNED", "diverged", None, "diverged"),
        ("PRUNED", None, 3, "diverged"),  # older records: no reason, but a divergence epoch
        ("PRUNED", "underperforming", None, "pruned"),
        ("PRUNED", None, None, "pruned"),
        ("FAIL", None, None, None),
        ("RUNNING", None, None, None),
        ("WAITING", None, None, None),
    ],
)
def test_trial_kind(state, reason, epoch, kind):
    assert trial_kind(TrialRecord(0, state, {}, prune_reason=reason, diverged_epoch=epoch)) == kind


def test_best_trials_are_the_complete_ones_with_the_lowest_finite_value():
    records = [
        TrialRecord(0, "COMPLETE", {}, value=0.5),
        TrialRecord(1, "PRUNED", {}, value=0.1, prune_reason="underperforming"),  # not complete
        TrialRecord(2, "COMPLETE", {}, value=0.3),
        TrialRecord(3, "COMPLETE", {}, value=math.inf),
        TrialRecord(4, "COMPLETE", {}, value=0.3),  # tie with 2: the earlier trial first
        TrialRecord(5, "FAIL", {}, value=None),
        TrialRecord(6, "COMPLETE", {}, value=None),
        TrialRecord(7, "COMPLETE", {}, value=0.9),
    ]
    assert [r.number for r in best_trials(records, 2)] == [2, 4]
    assert [r.number for r in best_trials(records, 10)] == [2, 4, 0, 7]


@pytest.mark.parametrize(
    ("lrs", "diverged", "spans"),
    [
        ([1e-3, 1e-2, 1e-1, 1, 10], [0, 0, 0, 1, 1], [(math.sqrt(0.1), math.inf)]),
        ([10, 1e-3, 1, 1e-2, 1e-1], [1, 0, 1, 0, 0], [(math.sqrt(0.1), math.inf)]),  # order of trials is free
        ([1e-3, 1e-2, 1e-1], [1, 0, 0], [(0.0, math.sqrt(1e-5))]),
        ([1e-4, 1e-2, 1, 100], [0, 1, 0, 1], [(1e-3, 0.1), (10.0, math.inf)]),  # a decay saved lr = 1
        ([0.1, 1.0], [1, 1], [(0.0, math.inf)]),
        ([0.1, 1.0], [0, 0], []),
        ([1.0, 1.0, 4.0], [1, 0, 1], [(1.0, math.inf)]),  # one lr, both outcomes: the span starts there
        ([], [], []),
    ],
)
def test_divergence_spans(lrs, diverged, spans):
    got = plots.divergence_spans(lrs, [bool(d) for d in diverged])
    assert len(got) == len(spans)
    for (low, high), (want_low, want_high) in zip(got, spans, strict=True):
        assert low == pytest.approx(want_low, rel=1e-12)
        assert high == pytest.approx(want_high, rel=1e-12)


def test_divergence_spans_need_one_flag_per_lr():
    with pytest.raises(ValueError, match=r"'diverged' parameter of divergence_spans .* Got 1 instead"):
        plots.divergence_spans([0.1, 1.0], [True])


@pytest.mark.parametrize(
    ("values", "counts", "expected"),
    [
        ([3, 1, 2, 0.5], None, [3, 1, 1, 0.5]),
        ([3, 1, 2, math.inf, 0.5], [1, 1, 1, 0, 1], [3, 1, 1, 1, 0.5]),
        ([0.1, 3, 2], [0, 1, 1], [math.nan, 3, 2]),  # before the first counted trial there is no best
        ([], None, []),
    ],
)
def test_best_so_far(values, counts, expected):
    counts = None if counts is None else [bool(c) for c in counts]
    np.testing.assert_array_equal(plots.best_so_far(values, counts), np.array(expected, dtype=float))


def test_is_lr_grid_only_for_a_grid_over_lr_alone(compare, diabetes):
    spec = compare[0]
    assert is_lr_grid(spec)
    assert not is_lr_grid(diabetes[0])  # TPE
    with_batch = replace(spec, search=replace(spec.search, batch_size=Choice((None, 16))))
    assert not is_lr_grid(with_batch)  # a grid over lr and batch size is not one model at several lrs


@pytest.mark.parametrize(
    ("model", "features", "labels"),
    [
        (LinearRegression(3), None, ["w[0]", "w[1]", "w[2]", "b"]),
        (
            LinearRegression(3),
            ["age", "bmi", "bp"],
            ["w[age]", "w[bmi]", "w[bp]", "b"],
        ),  # weights named by feature
        (
            MLP(2, 2, task="regression"),
            None,
            ["W1[0,0]", "W1[0,1]", "W1[1,0]", "W1[1,1]", "b1[0]", "b1[1]", "W2[0,0]", "W2[1,0]", "b2[0]"],
        ),
        (
            MLP(2, 2, task="regression"),
            ["x", "y"],
            ["W1[x,0]", "W1[x,1]", "W1[y,0]", "W1[y,1]", "b1[0]", "b1[1]", "W2[0,0]", "W2[1,0]", "b2[0]"],
        ),
    ],
)
def test_param_labels_name_every_entry_of_the_flat_vector(model, features, labels):
    assert param_labels(model, features) == labels


def test_compare_selection_keeps_one_trial_per_lr_spread_over_the_range():
    def trial(number, lr):
        return ReplayedTrial(
            TrialRecord(number, "COMPLETE", {"lr": lr}), "complete", SimpleNamespace(lr=lr), None, None
        )

    lrs = [10.0**k for k in range(-5, 5)]  # 10 rates
    trials = [trial(i, lr) for i, lr in enumerate(reversed(lrs))] + [trial(99, 1e-5)]  # a repeat of 1e-5
    chosen = compare_selection(trials, max_n=6)
    # round(linspace(0, 9, 6)) = 0, 2, 4, 5, 7, 9
    assert [t.lr for t in chosen] == [lrs[i] for i in (0, 2, 4, 5, 7, 9)]
    assert chosen[0].record.number == 9  # the first trial at 1e-5, not the repeat
    assert [t.lr for t in compare_selection(trials[:3])] == [1e2, 1e3, 1e4]


@pytest.mark.parametrize(
    ("blocks", "expected"),
    [
        ([[0.1, -0.17], [0.33, 0.0], [-0.41]], True),  # linear weights at lr 0.001 / 0.01 / 0.1: one y axis
        ([[0.6, -0.5], [-10.5, 5.3]], False),  # an MLP at lr 0.01 beside lr 10: 17.5x apart
        ([[1.0], [4.0]], True),  # exactly the ratio
        ([[1.0], [4.1]], False),
        ([[3e-17], [-8e-16]], True),  # a bias that stayed 0: rounding errors carry no scale
        ([[0.5], [np.inf, np.nan]], True),  # no finite value: nothing to compare with
    ],
)
def test_panels_share_an_axis_only_when_comparable(blocks, expected):
    assert plots.comparable([np.array(b, dtype=float) for b in blocks]) is expected
