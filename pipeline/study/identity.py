"""A study's identity: everything in a study file that determines a trial's result, as a flat dict of key -> value.

Two study files with the same identity give the same loss for the same trial parameters (training is
deterministic from the seed), so their trials can share one Optuna study; a file whose identity differs from the
stored study's would mix incomparable trials. The tuning layer stores the identity on the study when it creates
it and compares it on every resume (:mod:`pipeline.tuning.identity`); this module only computes and compares.

What is in it (keys are shaped like the study file's, so a person finds what changed):

- ``data.*``: the source (a bundled set's name, a CSV's path relative to the study file, a data entry point as
  written) and everything that shapes the arrays: ``target``, ``task``, ``val_fraction``, ``standardize``,
  ``params.*``; for a CSV, ``data.csv_sha256`` of its content (the same path with new rows is other data); for an
  entry point, the sha256 of its source file.
- ``model.*``: the built-in's name and parameters, or the entry point and its source file's sha256.
- ``training.*``: ``epochs``, ``batch_size``, ``divergence_factor`` (which losses count as diverged).
- ``search.*``: every searched or fixed value of the search space, ``lr: auto``'s range-test settings included.
- ``seed``: the split, the initialisation, the mini-batch order.

What is not, on purpose, so that it may change between runs of one study:

- ``budget`` (how long a run lasts), ``tracking`` (how many points are reported), ``description``, ``name``.
- ``sampler``: it decides which parameters are proposed next, not what a given trial's loss is.
- ``pruner``: it decides whether a trial is stopped early, by comparing it with the others; a complete trial's
  value is the same under any pruner, so complete trials stay comparable. Switching pruning on after a night of
  start-up trials is a normal thing to do.
- ``model.gradient_check`` (how a user's model is checked, not what it computes) and an API object's identity in
  memory (named by its entry point text and source file instead).

Numbers are canonical: ``10`` and ``10.0`` are the same value (NumPy trains identically with either).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from pipeline.study.space import Branch, Choice, Fixed, LrAuto, OneMinus, Param, Range, SearchSpace
from pipeline.study.spec import StudySpec

CSV_KEY = "data.csv_sha256"
SOURCE_KEY = "data.source"
ABSENT = object()  # a key one identity has and the other has not


def canonical(value: Any) -> Any:
    """A JSON value that compares and hashes the same for equal settings: integral floats as ints, tuples as
    lists, paths as text, mappings with text keys."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 2**53:
            return int(value)
        return float(value)
    if isinstance(value, Path):
        return value.as_posix()
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    if hasattr(value, "item"):  # a NumPy scalar
        return canonical(value.item())
    return repr(value)


def _flat(out: dict[str, Any], key: str, value: Any) -> None:
    """``key: value``, a mapping spread into ``key.sub`` keys (an empty one kept as ``{}``)."""
    if isinstance(value, Mapping) and value:
        for k, v in value.items():
            _flat(out, f"{key}.{k}", v)
    else:
        out[key] = canonical(value)


def _batch(value):
    return "full" if value is None else value


def _search_value(out: dict[str, Any], key: str, value: Param | LrAuto, *, batch: bool = False) -> None:
    if isinstance(value, LrAuto):
        for f in fields(value):
            out[f"{key}.auto.{f.name}"] = canonical(getattr(value, f.name))
    elif isinstance(value, Fixed):
        out[key] = canonical(_batch(value.value) if batch else value.value)
    elif isinstance(value, Range):
        out[f"{key}.low"], out[f"{key}.high"] = canonical(value.low), canonical(value.high)
        out[f"{key}.log"] = bool(value.log)
    elif isinstance(value, OneMinus):
        out[f"{key}.one_minus.low"], out[f"{key}.one_minus.high"] = (
            canonical(value.low),
            canonical(value.high),
        )
    elif isinstance(value, Choice):
        out[f"{key}.choices"] = canonical([_batch(c) if batch else c for c in value.choices])
    else:  # a value form added later: its own rendering, so a change to it is still seen
        out[key] = canonical(getattr(value, "shown", repr(value)))


def _branches(out: dict[str, Any], key: str, branches: tuple[Branch, ...], categorical: bool) -> None:
    if categorical:
        out[f"{key}.choices"] = [b.name for b in branches]
    else:
        out[f"{key}.name"] = branches[0].name
    for branch in branches:
        where = f"{key}.choices.{branch.name}" if categorical else key
        if categorical and not branch.params:
            out[where] = {}
        for p, v in branch.params.items():
            _search_value(out, f"{where}.{p}", v)


def _data_source(spec: StudySpec) -> str:
    d = spec.data
    if d.entry_point is not None:
        return d.entry_point.text
    if d.path is not None:
        # Relative to the study file, as it is usually written: a checkout moved to another folder is the same.
        try:
            return Path(d.path).relative_to(spec.path.resolve().parent).as_posix()
        except ValueError:
            return Path(d.path).as_posix()
    return d.dataset


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in blocks (a CSV may be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def search_identity(search: SearchSpace) -> dict[str, Any]:
    """The ``search.*`` keys of a study's identity."""
    out: dict[str, Any] = {}
    _search_value(out, "search.lr", search.lr)
    _search_value(out, "search.batch_size", search.batch_size, batch=True)
    _branches(out, "search.optimizer", search.optimizers, search.optimizer_categorical)
    _branches(out, "search.schedule", search.schedules, search.schedule_categorical)
    return out


def study_identity(spec: StudySpec) -> dict[str, Any]:
    """Everything that determines a trial's result, as a flat, ordered dict of key -> JSON value.

    Reads the CSV file (its sha256) when the data are one; call it after the data loaded (a missing file was
    reported then).
    """
    d, m, t = spec.data, spec.model, spec.training
    out: dict[str, Any] = {SOURCE_KEY: _data_source(spec)}
    if d.entry_point is not None:
        out["data.entry_point.source_sha256"] = d.entry_point.source_sha256
    if d.path is not None:
        out[CSV_KEY] = file_sha256(Path(d.path))
        out["data.target"] = d.target
    for key in ("task", "val_fraction", "standardize"):
        out[f"data.{key}"] = canonical(getattr(d, key))
    for k, v in sorted(dict(d.params).items()):
        _flat(out, f"data.params.{k}", v)
    if m.entry_point is not None:
        out["model.entry_point"] = m.entry_point.text
        out["model.entry_point.source_sha256"] = m.entry_point.source_sha256
        for k, v in sorted(dict(m.params).items()):
            _flat(out, f"model.params.{k}", v)
    else:
        out["model.name"] = m.name
        for k, v in sorted(dict(m.params).items()):
            _flat(out, f"model.{k}", v)
    out["training.epochs"] = canonical(t.epochs)
    out["training.batch_size"] = canonical(_batch(t.batch_size))
    out["training.divergence_factor"] = canonical(t.divergence_factor)
    search = search_identity(spec.search)
    if search.get("search.batch_size", ABSENT) == out["training.batch_size"]:
        del search["search.batch_size"]  # not searched: training.batch_size says it (one key, one line)
    out.update(search)
    out["seed"] = canonical(spec.seed)
    return out


def identity_sha256(identity: Mapping[str, Any]) -> str:
    """sha256 of the identity's canonical JSON (sorted keys): a short name for "these settings"."""
    text = json.dumps(canonical(dict(identity)), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(key, old value, new value) for every key whose value differs, in the new identity's order, then the keys
    only the old one has. A missing side is :data:`ABSENT`."""
    old, new = canonical(dict(old)), canonical(dict(new))
    found = [(k, old.get(k, ABSENT), v) for k, v in new.items() if old.get(k, ABSENT) != v]
    found += [(k, v, ABSENT) for k, v in old.items() if k not in new]
    return found


def _shown(value: Any) -> str:
    if value is ABSENT:
        return "(absent)"
    return json.dumps(value) if not isinstance(value, str) else repr(value)


def describe_differences(diffs: list[tuple[str, Any, Any]], csv_path: Path | None) -> list[str]:
    """One line per differing key, ``key: old -> new``; a CSV whose content changed at the same path is said in
    plain words first (the common case: last night's export ran again)."""
    lines = []
    keys = {k for k, _, _ in diffs}
    for key, old, new in diffs:
        if key == CSV_KEY and SOURCE_KEY not in keys and old is not ABSENT and new is not ABSENT:
            lines.insert(
                0,
                f"the CSV file {csv_path} changed since the study was created "
                f"(sha256 {str(old)[:12]}... -> {str(new)[:12]}...)",
            )
        else:
            lines.append(f"{key}: {_shown(old)} -> {_shown(new)}")
    return lines


# ----------------------------------------------------------------------------------------------- warm start


class FitSuggester:
    """A Suggester that answers with a previous trial's parameters where the search space still accepts them,
    and records the others, so that a new version can start from the settings that still fit.

    A value outside its new range or choices, or one the space no longer has, is left out (the sampler will draw
    it); a recorded parameter the space no longer asks is dropped."""

    def __init__(self, params: Mapping[str, Any]):
        self.params = dict(params)
        self.kept: dict[str, Any] = {}
        self.asked: set[str] = set()
        self.dropped: list[str] = []  # one clause per parameter left out, saying why

    def _answer(self, name: str, fits, shown: str, fallback):
        self.asked.add(name)
        if name not in self.params:
            return fallback
        value = self.params[name]
        if fits(value):
            self.kept[name] = value
            return value
        text = f"{value:.4g}" if isinstance(value, float) else repr(value)
        self.dropped.append(f"{name} = {text} is outside {shown}")
        return fallback

    def float(self, name, low, high, *, log):
        def fits(v):
            return isinstance(v, int | float) and not isinstance(v, bool) and low <= v <= high

        return float(self._answer(name, fits, f"the range [{low:g}, {high:g}]", low))

    def int(self, name, low, high, *, log):
        def fits(v):
            return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high

        return int(self._answer(name, fits, f"the range [{low}, {high}]", low))

    def categorical(self, name, choices):
        return self._answer(name, lambda v: v in choices, f"the choices {list(choices)}", choices[0])


def fitting_params(search: SearchSpace, params: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The part of a previous trial's ``params`` that the search space accepts (to enqueue as a warm start), and
    one clause per parameter left out. ``search`` must have ``lr: auto`` resolved."""
    suggest = FitSuggester(params)
    search.sample(suggest)
    gone = [f"{name} is no longer searched" for name in params if name not in suggest.asked]
    return suggest.kept, suggest.dropped + gone
