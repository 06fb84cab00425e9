"""pipeline/study/settings.py: a trial's complete settings rebuilt from what Optuna recorded (its params), with the
study's fixed values filled in, against a dict written out by hand from the study file below."""

from __future__ import annotations

import pytest
import yaml

from pipeline.errors import ConfigError
from pipeline.study.loader import load_study
from pipeline.study.settings import ReplaySuggester, complete_settings, spec_with_lr_range
from pipeline.study.space import Range

STUDY = {
    "name": "settings",
    "seed": 3,
    "data": {"dataset": "diabetes", "val_fraction": 0.25},
    "model": {"name": "linear"},
    "training": {"epochs": 40, "batch_size": 16, "divergence_factor": 5},
    "search": {
        "lr": {"low": 1.0e-4, "high": 1.0},
        "optimizer": {
            "choices": {"sgd": {}, "momentum": {"beta": {"one_minus": {"low": 1.0e-3, "high": 0.5}}}}
        },
        "schedule": {
            "choices": {"constant": {}, "step": {"decay_steps": {"low": 5, "high": 20}, "gamma": 0.5}}
        },
    },
}


def spec_of(tmp_path, study=STUDY):
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return load_study(path)


def test_complete_settings_of_a_momentum_step_trial(tmp_path):
    params = {
        "lr": 0.02,
        "optimizer": "momentum",
        "momentum.one_minus_beta": 0.125,
        "schedule": "step",
        "step.decay_steps": 8,
    }
    assert complete_settings(spec_of(tmp_path), params) == {
        "lr": 0.02,
        "batch_size": 16,
        "optimizer": {"name": "momentum", "beta": 0.875},  # searched as 1 - beta
        "schedule": {"name": "step", "decay_steps": 8, "gamma": 0.5},  # gamma: fixed in the file
        "epochs": 40,
        "divergence_factor": 5.0,
        "seed": 3,
        "model": {"name": "linear"},
        "data": {"dataset": "diabetes", "val_fraction": 0.25},
    }


def test_complete_settings_of_a_plain_trial_leave_the_other_branches_out(tmp_path):
    study = {**STUDY, "training": {"epochs": 40}}  # full batch
    settings = complete_settings(
        spec_of(tmp_path, study), {"lr": 0.5, "optimizer": "sgd", "schedule": "constant"}
    )
    assert settings["optimizer"] == {"name": "sgd"}
    assert settings["schedule"] == {"name": "constant"}
    assert settings["batch_size"] == "full"
    assert settings["divergence_factor"] == 10.0  # the default (README: divergence_factor: 10)


def test_a_parameter_the_trial_does_not_have_is_named():
    suggester = ReplaySuggester({"lr": 0.1})
    with pytest.raises(KeyError, match=r"the trial has no parameter 'step\.decay_steps' \(it has \['lr'\]\)"):
        suggester.int("step.decay_steps", 5, 20, log=True)
    assert suggester.float("lr", 1e-4, 1, log=True) == 0.1
    assert ReplaySuggester({"b": "16"}).int("b", 1, 64, log=False) == 16


def test_lr_auto_is_replaced_by_the_recorded_range(tmp_path):
    study = {**STUDY, "search": {**STUDY["search"], "lr": "auto"}}
    spec = spec_of(tmp_path, study)
    assert spec_with_lr_range(spec, [1e-3, 0.4]).search.lr == Range(1e-3, 0.4, log=True)
    with pytest.raises(
        ConfigError, match=r"'search\.lr': study 'settings' has lr: auto but no recorded lr_range"
    ):
        spec_with_lr_range(spec, None)
    plain = spec_of(tmp_path)
    assert spec_with_lr_range(plain, None) is plain
