"""pipeline/study/space.py: the search values (fixed, range, one_minus, choices) and the search space that samples
itself through a Suggester: conditional branches, sampled names, grids, bounds."""

from __future__ import annotations

import math
import re

import pytest
from test_loader import BASE, changed, write

from pipeline.errors import ConfigError
from pipeline.study.loader import load_study
from pipeline.study.space import (
    Choice,
    Fixed,
    LrAuto,
    OneMinus,
    Range,
    SearchValue,
    TrialSettings,
    steps_per_epoch,
)
from pipeline.study.spec import StudySpec

# ----------------------------------------------------------------------------------------------- sampling


class FakeSuggester:
    """Records every request; answers from ``picks`` (by name), else the low end / first choice."""

    def __init__(self, picks: dict | None = None):
        self.picks = picks or {}
        self.calls: list[tuple] = []

    def float(self, name, low, high, *, log):
        self.calls.append(("float", name, low, high, log))
        return self.picks.get(name, low)

    def int(self, name, low, high, *, log):
        self.calls.append(("int", name, low, high, log))
        return self.picks.get(name, low)

    def categorical(self, name, choices):
        self.calls.append(("categorical", name, list(choices)))
        return self.picks.get(name, choices[0])

    @property
    def names(self) -> list[str]:
        return [c[1] for c in self.calls]


@pytest.fixture
def base_spec(tmp_path) -> StudySpec:
    return load_study(write(tmp_path, BASE))


@pytest.mark.parametrize(
    ("picks", "names", "optimizer_params", "schedule_params"),
    [
        (
            {"optimizer": "sgd", "schedule": "constant"},
            ["lr", "optimizer", "schedule"],
            {},
            {},
        ),
        (
            {
                "optimizer": "momentum",
                "momentum.one_minus_beta": 0.01,
                "schedule": "cosine",
                "cosine.min_lr_ratio": 0.2,
                "cosine.warmup_steps": 4,
            },
            [
                "lr",
                "optimizer",
                "momentum.one_minus_beta",
                "schedule",
                "cosine.min_lr_ratio",
                "cosine.warmup_steps",
            ],
            {"beta": 0.99},
            {"min_lr_ratio": 0.2, "warmup_steps": 4},
        ),
        (  # step's gamma is fixed: in the settings, never asked
            {"optimizer": "sgd", "schedule": "step", "step.decay_steps": 12},
            ["lr", "optimizer", "schedule", "step.decay_steps"],
            {},
            {"decay_steps": 12, "gamma": 0.5},
        ),
    ],
)
def test_sampling_asks_only_the_chosen_branch(base_spec, picks, names, optimizer_params, schedule_params):
    suggest = FakeSuggester({"lr": 0.03, **picks})
    settings = base_spec.search.sample(suggest)
    assert suggest.names == names
    assert settings.lr == 0.03
    assert settings.optimizer == picks["optimizer"] and settings.schedule == picks["schedule"]
    assert settings.optimizer_params == pytest.approx(optimizer_params)
    assert settings.schedule_params == schedule_params


def test_sampling_requests_carry_bounds_scale_and_type(base_spec):
    suggest = FakeSuggester({"optimizer": "momentum", "schedule": "cosine"})
    settings = base_spec.search.sample(suggest)
    assert suggest.calls == [
        ("float", "lr", 1e-4, 1.0, True),
        ("categorical", "optimizer", ["sgd", "momentum"]),
        ("float", "momentum.one_minus_beta", 1e-3, 0.5, True),  # x log-uniform, value 1 - x
        ("categorical", "schedule", ["constant", "cosine", "step"]),
        ("float", "cosine.min_lr_ratio", 1e-3, 0.5, True),
        ("int", "cosine.warmup_steps", 1, 10, True),
    ]
    assert settings.optimizer_params["beta"] == 1 - 1e-3
    assert type(settings.schedule_params["warmup_steps"]) is int


def test_fixed_values_are_not_asked(tmp_path):
    spec = load_study(
        write(tmp_path, changed({"search": {"lr": 0.1, "optimizer": {"name": "adam", "beta1": 0.8}}}))
    )
    suggest = FakeSuggester()
    settings = spec.search.sample(suggest)
    assert suggest.calls == []
    assert settings == TrialSettings(0.1, None, "adam", {"beta1": 0.8}, "constant", {})


def test_batch_size_full_is_none_and_as_params_is_flat(tmp_path):
    spec = load_study(
        write(tmp_path, changed({"search.batch_size": {"choices": [32, "full"]}, "search.optimizer": "sgd"}))
    )
    settings = spec.search.sample(
        FakeSuggester({"batch_size": "full", "schedule": "step", "step.decay_steps": 9})
    )
    assert settings.batch_size is None
    assert settings.as_params() == {
        "lr": 1e-4,
        "batch_size": "full",
        "optimizer": "sgd",
        "schedule": "step",
        "step.decay_steps": 9,
        "step.gamma": 0.5,
    }
    assert spec.search.sample(FakeSuggester({"batch_size": 32})).batch_size == 32


def test_grid_lists_every_categorical(tmp_path):
    study = changed(
        {
            "sampler": {"name": "grid"},
            "search": {
                "lr": {"choices": [0.01, 0.1]},
                "batch_size": {"choices": [16, "full"]},
                "optimizer": {"choices": {"sgd": {}, "momentum": {"beta": {"choices": [0.5, 0.9]}}}},
                "schedule": {"name": "exponential", "decay_rate": 0.01},
            },
        }
    )
    spec = load_study(write(tmp_path, study))
    assert spec.search.grid() == {
        "lr": [0.01, 0.1],
        "batch_size": [16, "full"],
        "optimizer": ["sgd", "momentum"],
        "momentum.beta": [0.5, 0.9],
    }


def test_grid_refuses_non_categorical_params(base_spec):
    with pytest.raises(ValueError, match=r"'lr', 'momentum.one_minus_beta', 'cosine.min_lr_ratio'"):
        base_spec.search.grid()


# ----------------------------------------------------------------------------------------------- lr: auto


def test_auto_lr_must_be_resolved_before_sampling(tmp_path):
    spec = load_study(write(tmp_path, changed({"search.lr": "auto", "search.schedule": "constant"})))
    assert spec.search.lr_auto == LrAuto(start_lr=1e-7, end_lr=10.0, steps=3000, ramp="exponential")
    with pytest.raises(RuntimeError, match=r"lr is 'auto' and unresolved.*with_lr_range"):
        spec.search.sample(FakeSuggester())
    resolved = spec.search.with_lr_range(1e-3, 0.5)
    assert resolved.lr_auto is None and spec.search.lr_auto is not None  # a copy: the spec is unchanged
    suggest = FakeSuggester({"lr": 0.02, "optimizer": "sgd"})
    assert resolved.sample(suggest).lr == 0.02
    assert suggest.calls[0] == ("float", "lr", 1e-3, 0.5, True)


@pytest.mark.parametrize(
    ("low", "high", "message"),
    [
        (0.0, 1.0, r"'low' parameter of with_lr_range must be a float > 0\. Got 0\.0"),
        (1e-3, math.inf, r"'high' parameter .* Got inf"),
        (0.5, 0.1, r"'high' parameter of with_lr_range must be > low = 0\.5\. Got 0\.1"),
    ],
)
def test_with_lr_range_rejects_bad_ranges(base_spec, low, high, message):
    with pytest.raises(ValueError, match=message):
        base_spec.search.with_lr_range(low, high)


# ----------------------------------------------------------------------------------------------- steps


@pytest.mark.parametrize(
    ("n_train", "batch_size", "epochs", "expected"),
    [
        (353, None, 300, 300),  # full batch: one update per epoch
        (455, 32, 100, 1500),  # ceil(455 / 32) = 15
        (1437, 64, 30, 690),  # ceil(1437 / 64) = 23
        (455, 455, 10, 10),
        (455, 1000, 10, 10),  # a batch larger than the set is full batch
        (1, 1, 10, 10),
        (10, 1, 3, 30),  # single sample: one update per row
    ],
)
def test_total_steps(base_spec, n_train, batch_size, epochs, expected):
    from dataclasses import replace

    training = replace(base_spec.training, epochs=epochs)
    assert training.total_steps(n_train, batch_size) == expected
    assert epochs * steps_per_epoch(n_train, batch_size) == expected


def test_warmup_against_mini_batch_steps_is_checked_once_n_train_is_known(tmp_path):
    study = changed(
        {
            "training": {"epochs": 10, "batch_size": 64},
            "search.schedule": {"name": "cosine", "warmup_steps": {"low": 10, "high": 200}},
        }
    )
    path = write(tmp_path, study)
    spec = load_study(path)  # 10 epochs, but mini-batches: 200 warmup steps may fit
    spec.check_steps(1437)  # 10 x ceil(1437 / 64) = 230 > 200
    with pytest.raises(
        ConfigError, match=re.escape(f"{path.as_posix()}: 'search.schedule.warmup_steps': ")
    ) as info:
        spec.check_steps(640)  # 10 x 10 = 100 <= 200
    assert str(info.value).endswith("= 10 x ceil(640 / 64) = 100. Got 200 instead.")


def test_specs_are_frozen(base_spec):
    from dataclasses import FrozenInstanceError

    with pytest.raises(FrozenInstanceError):
        base_spec.seed = 1
    with pytest.raises(FrozenInstanceError):
        base_spec.search.lr = Fixed(1.0)
    assert isinstance(base_spec.search.optimizers[1].params["beta"], OneMinus)


# ----------------------------------------------------------------------------------------------- value types


@pytest.mark.parametrize(
    ("value", "asked", "drawn"),
    [
        (Fixed(0.5), [], 0.5),
        (Range(1e-4, 1.0), [("float", "p", 1e-4, 1.0, True)], 1e-4),
        (Range(0.0, 0.5, log=False), [("float", "p", 0.0, 0.5, False)], 0.0),
        (Range(1, 10, integer=True), [("int", "p", 1, 10, True)], 1),
        (OneMinus(1e-3, 0.5), [("float", "one_minus_p", 1e-3, 0.5, True)], 1 - 1e-3),
        (Choice((8, 32, "full")), [("categorical", "p", [8, 32, "full"])], 8),
    ],
    ids=["fixed", "log range", "linear range", "int range", "one_minus", "choice"],
)
def test_each_value_type_samples_itself(value, asked, drawn):
    suggest = FakeSuggester()
    assert isinstance(value, SearchValue)
    assert value.draw(value.sampled_name("p"), suggest) == drawn
    assert suggest.calls == asked
    assert value.sampled == bool(asked)


def test_one_minus_turns_the_sampled_x_into_the_factor():
    # x = 0.01 asked from the sampler is beta = 0.99: resolution where the factor nears 1
    assert OneMinus(1e-4, 0.1).draw(
        "one_minus_beta", FakeSuggester({"one_minus_beta": 0.01})
    ) == pytest.approx(0.99)


@pytest.mark.parametrize(
    ("value", "representative", "top", "shown", "ends", "options"),
    [
        (Fixed(3), 3, 3, 3, [], [3]),
        (
            Range(0.1, 2.0),
            0.1,
            2.0,
            {"low": 0.1, "high": 2.0},
            [(".low", 0.1, 0.1), (".high", 2.0, 2.0)],
            None,
        ),
        (
            Range(0.0, 1.0, log=False),
            0.0,
            1.0,
            {"low": 0.0, "high": 1.0, "log": False},
            [(".low", 0.0, 0.0), (".high", 1.0, 1.0)],
            None,
        ),
        (
            OneMinus(0.001, 0.5),
            0.999,
            0.999,
            {"one_minus": {"low": 0.001, "high": 0.5}},
            [(".one_minus.low", 0.001, 0.999), (".one_minus.high", 0.5, 0.5)],
            None,
        ),
        (
            Choice((4, 16)),
            4,
            16,
            {"choices": [4, 16]},
            [(".choices[0]", 4, 4), (".choices[1]", 16, 16)],
            [4, 16],
        ),
    ],
    ids=["fixed", "range", "linear range", "one_minus", "choice"],
)
def test_what_each_value_type_knows_about_itself(value, representative, top, shown, ends, options):
    assert value.representative == pytest.approx(representative)
    assert value.top == pytest.approx(top)
    assert value.shown == shown
    assert [(k, w, pytest.approx(v)) for k, w, v in value.ends()] == ends
    assert value.options() == options


def test_the_loader_builds_value_types_from_the_file_forms(tmp_path):
    spec = load_study(write(tmp_path, BASE))
    momentum = {b.name: b for b in spec.search.optimizers}["momentum"]
    cosine = {b.name: b for b in spec.search.schedules}["cosine"]
    step = {b.name: b for b in spec.search.schedules}["step"]
    assert spec.search.lr == Range(1.0e-4, 1.0)
    assert momentum.params["beta"] == OneMinus(1.0e-3, 0.5)
    assert cosine.params["warmup_steps"] == Range(1, 10, log=True, integer=True)
    assert step.params["gamma"] == Fixed(0.5)
