"""Datasets as train/validation arrays: scikit-learn's bundled sets, synthetic generators, the sources' tiny
examples and CSV files.

Every dataset goes through the same three steps:

1. raw arrays (X float64 (n, d), a raw target) from a loader; CSV values are checked for non-numeric,
   NaN and inf cells here, with the file, column and row in the message;
2. the target resolved for a task: ``regression`` keeps float values; ``binary`` / ``multiclass`` encode
   the sorted distinct labels as 0..k-1 (int64);
3. a deterministic split from ``seed`` (stratified for classification), then standardisation fitted on the
   training rows only, so nothing about the validation rows leaks into training:

       x' = (x - mean_train) / std_train        (population std, ddof=0, per feature column)

   A column that is constant on the training rows (max == min, e.g. the blank border pixels of ``digits``)
   gets std_train := 1, so it is only centred: exactly 0 on the training rows, and the validation rows keep
   their offset from the training constant. Nothing is divided by zero and no column is dropped, so feature
   indices stay those of the source. The regression target is standardised the same way
   (``standardize_target``); a model's MSE in the original units is then ``mse * target_scale ** 2``.

No I/O beyond reading the CSV (scikit-learn's bundled loaders read files shipped with the package; nothing is
downloaded), no printing, no global random state.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline import config
from pipeline.core.arrays import Dataset, prepare
from pipeline.core.checks import ArgumentError, check_bool, check_float, check_int
from pipeline.core.names import BINARY, MULTICLASS, REGRESSION, TASKS
from pipeline.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

# scikit-learn (~2-3 s) and pandas (~0.5 s) are imported by the loaders that need them, not with this module: the
# study loader imports it for its tables, and commands such as `best` never load data.

# CSV task inference: an integer-valued numeric target with at most this many distinct values is read as class
# labels, with more as a quantity (a 0..10 rating is classes, a price in whole euros is a regression target).
MAX_INFERRED_CLASSES = 20


@dataclass(frozen=True)
class _Raw:
    """What a loader returns: unsplit, unscaled arrays and what is known about them."""

    X: np.ndarray
    y: np.ndarray  # raw target: floats, or labels of any kind
    feature_names: tuple[str, ...]
    target_name: str
    source: str
    task: str | None  # the dataset's own task; None = infer from the values (CSV)
    label_names: tuple | None = None  # names of integer labels 0..k-1 (sklearn's target_names)


# ----------------------------------------------------------------------------------------------------
# Parameter validation (sklearn-style messages)


class DataArgumentError(ArgumentError, DataError):
    """A bad argument of a data loader: the core's one message shape, and a DataError (exit 2 at the CLI)."""


# Generated data live in memory as float64: bounds that keep a study file from asking for terabytes.
DATA_LIMITS = {"n_samples": 1_000_000, "n_features": 10_000}


def _positive_int(param, owner, value):
    return check_int(value, param, owner, low=1, high=DATA_LIMITS.get(param), error=DataArgumentError)


def _non_negative(param, owner, value):
    return check_float(value, param, owner, low=0.0, error=DataArgumentError)


def _any_float(param, owner, value):
    return check_float(value, param, owner, error=DataArgumentError)


def _fraction(param, owner, value):
    return check_float(value, param, owner, low=0.0, high=1.0, high_open=True, error=DataArgumentError)


def _optional_positive_int(param, owner, value):
    return None if value is None else _positive_int(param, owner, value)


# ----------------------------------------------------------------------------------------------------
# Loaders


@functools.cache
def _bundled_arrays(name: str) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], tuple | None]:
    """Arrays of one of scikit-learn's bundled datasets (shipped with the package), read once per process.

    Importing scikit-learn takes 1-3 s, most of a `tune` start on warm stores, so the arrays are also kept in a
    cache file per scikit-learn version (:func:`pipeline.config.dataset_cache_file`), read with NumPy alone. The
    file is written atomically; a missing, unreadable or foreign one is rebuilt from scikit-learn.
    """
    cache = config.dataset_cache_file(name)
    try:
        with np.load(cache, allow_pickle=False) as saved:
            X, y = saved["X"], saved["y"]
            feature_names = tuple(str(f) for f in saved["feature_names"])
            label_names = tuple(str(n) for n in saved["label_names"]) if saved["has_labels"] else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        X, y, feature_names, label_names = _bundled_from_sklearn(name)
        _write_cache(cache, X, y, feature_names, label_names)
    X, y = np.ascontiguousarray(X, dtype=np.float64), np.asarray(y)
    X.flags.writeable = False  # the cache hands out the same arrays every time
    y.flags.writeable = False
    return X, y, feature_names, label_names


def _bundled_from_sklearn(name: str):
    from sklearn import datasets as skdatasets

    bunch = getattr(skdatasets, f"load_{name}")()
    names = getattr(bunch, "target_names", None)
    label_names = None if names is None else tuple(str(n) for n in names)
    return (
        np.asarray(bunch.data),
        np.asarray(bunch.target),
        tuple(str(f) for f in bunch.feature_names),
        label_names,
    )


def _write_cache(path: Path, X, y, feature_names, label_names) -> None:
    """Best effort: a read-only or full disk only costs the next start the scikit-learn import."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=path.stem, suffix=".tmp", delete=False
        ) as tmp:
            np.savez(
                tmp,
                X=X,
                y=y,
                feature_names=np.array(feature_names, dtype=str),
                label_names=np.array(label_names or (), dtype=str),
                has_labels=np.array(label_names is not None),
            )
        os.replace(tmp.name, path)
    except OSError:
        with contextlib.suppress(OSError, NameError):
            os.unlink(tmp.name)


# dataset -> (task, target name); target names are what the scikit-learn docs say the target measures
_BUNDLED: dict[str, tuple[str, str]] = {
    "diabetes": (REGRESSION, "disease_progression"),
    "breast_cancer": (BINARY, "diagnosis"),
    "wine": (MULTICLASS, "cultivar"),
    "digits": (MULTICLASS, "digit"),
    "iris": (MULTICLASS, "species"),
}


def _load_bundled(name: str) -> _Raw:
    X, y, feature_names, label_names = _bundled_arrays(name)
    task, target_name = _BUNDLED[name]
    if name == "digits":
        label_names = None  # digits' target_names are the digits themselves: keep them as ints
    return _Raw(X, y, feature_names, target_name, f"sklearn:{name}", task, label_names)


def _columns(d: int) -> tuple[str, ...]:
    return tuple(f"x{j}" for j in range(d))


def _make_regression(
    seed: int, n_samples: int, n_features: int, n_informative: int | None, noise: float, bias: float
):
    from sklearn import datasets as skdatasets

    if n_informative is None:
        n_informative = n_features
    elif n_informative > n_features:
        # make_regression would silently clamp it
        raise DataArgumentError(
            "n_informative", "dataset 'regression'", f"an int in [1, n_features={n_features}]", n_informative
        )
    X, y = skdatasets.make_regression(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=n_informative,
        noise=noise,
        bias=bias,
        random_state=seed,
    )
    return _Raw(X, y, _columns(n_features), "y", "sklearn:make_regression", REGRESSION)


def _make_moons(seed: int, n_samples: int, noise: float):
    from sklearn import datasets as skdatasets

    X, y = skdatasets.make_moons(n_samples=n_samples, noise=noise, random_state=seed)
    return _Raw(X, y, _columns(2), "y", "sklearn:make_moons", BINARY)


def _make_circles(seed: int, n_samples: int, noise: float, factor: float):
    from sklearn import datasets as skdatasets

    X, y = skdatasets.make_circles(n_samples=n_samples, noise=noise, factor=factor, random_state=seed)
    return _Raw(X, y, _columns(2), "y", "sklearn:make_circles", BINARY)


def _make_line(seed: int, n_samples: int, noise: float):
    """The sources' straight line: y = 2 x + 1 + e, x ~ U(0, 2), e ~ N(0, noise^2)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 2.0, size=n_samples)
    y = 2.0 * x + 1.0 + rng.normal(0.0, noise, size=n_samples)
    return _Raw(x.reshape(-1, 1), y, ("x",), "y", "synthetic:line", REGRESSION)


def _numeric_example(seed: int):
    """The sources' worked example: x = 1, 2, 3, 4 and y = 3 x (no noise)."""
    x = np.array([1.0, 2.0, 3.0, 4.0])
    return _Raw(x.reshape(-1, 1), 3.0 * x, ("x",), "y", "example:numeric_example", REGRESSION)


def _single_sample(seed: int):
    """The sources' single-sample example: one row x = (28.1, 58.0) with target 165."""
    X = np.array([[28.1, 58.0]])
    return _Raw(X, np.array([165.0]), ("x1", "x2"), "y", "example:single_sample", REGRESSION)


@dataclass(frozen=True)
class _Generator:
    make: Callable[..., _Raw]
    defaults: dict[str, Any]
    checks: dict[str, Callable[[str, str, Any], Any]]
    raw_by_default: bool = False  # the sources' examples: no split/standardisation unless asked


_GENERATORS: dict[str, _Generator] = {
    "regression": _Generator(
        _make_regression,
        {"n_samples": 200, "n_features": 10, "n_informative": None, "noise": 10.0, "bias": 0.0},
        {
            "n_samples": _positive_int,
            "n_features": _positive_int,
            "n_informative": _optional_positive_int,
            "noise": _non_negative,
            "bias": _any_float,
        },
    ),
    "moons": _Generator(
        _make_moons, {"n_samples": 200, "noise": 0.2}, {"n_samples": _positive_int, "noise": _non_negative}
    ),
    "circles": _Generator(
        _make_circles,
        {"n_samples": 200, "noise": 0.1, "factor": 0.5},
        {
            "n_samples": _positive_int,
            "noise": _non_negative,
            "factor": _fraction,
        },
    ),
    "line": _Generator(
        _make_line,
        {"n_samples": 100, "noise": 0.5},
        {"n_samples": _positive_int, "noise": _non_negative},
        True,
    ),
    "numeric_example": _Generator(_numeric_example, {}, {}, True),
    "single_sample": _Generator(_single_sample, {}, {}, True),
}

DATASETS: tuple[str, ...] = (*_BUNDLED, *_GENERATORS, "csv")

# Generator parameters each dataset accepts as **generator_params (empty: none).
DATASET_PARAMS: dict[str, tuple[str, ...]] = {
    name: tuple(_GENERATORS[name].defaults) if name in _GENERATORS else () for name in DATASETS
}


def _load_csv(path: str | os.PathLike, target: str) -> _Raw:
    import pandas as pd

    where = str(path)
    p = Path(path)
    if not p.exists():
        raise DataError(f"{where}: file not found.")
    if not p.is_file():
        raise DataError(f"{where}: is not a file.")
    try:
        df = pd.read_csv(p)
    except pd.errors.EmptyDataError:
        raise DataError(f"{where}: the file is empty (no header, no rows).") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        raise DataError(f"{where}: cannot be read as CSV: {exc}") from None
    columns = [str(c) for c in df.columns]
    df.columns = columns
    if target not in columns:
        raise DataError(
            f"{where}: no target column {target!r}. Available columns: {', '.join(map(repr, columns))}."
        )
    features = [c for c in columns if c != target]
    if not features:
        raise DataError(f"{where}: no feature columns besides the target column {target!r}.")
    if len(df) == 0:
        raise DataError(f"{where}: empty set: the file has a header but no data rows.")

    X = np.empty((len(df), len(features)), dtype=np.float64)
    for j, col in enumerate(features):
        X[:, j] = _numeric_column(df[col], where, col, "feature")
    return _Raw(X, df[target].to_numpy(), tuple(features), target, where, None)


def _numeric_column(s: pd.Series, where: str, col: str, role: str) -> np.ndarray:
    """A column as float64, or a DataError naming the column, the first bad row and its value."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        return s.to_numpy(dtype=np.float64, na_value=np.nan)
    converted = pd.to_numeric(s, errors="coerce")
    bad = np.flatnonzero(converted.isna().to_numpy() & s.notna().to_numpy())
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{where}: column {col!r}: non-numeric value {s.iloc[i]!r} at row {i} (0-based data row, "
            f"header not counted); {role} values must be numbers ({bad.size} bad value(s) in this column)."
        )
    return converted.to_numpy(dtype=np.float64, na_value=np.nan)


def _check_finite(X: np.ndarray, raw: _Raw) -> None:
    bad = ~np.isfinite(X)
    if bad.any():
        i, j = (int(k) for k in np.argwhere(bad)[0])
        kind = "missing value or NaN" if np.isnan(X[i, j]) else f"infinite value {X[i, j]}"
        raise DataError(
            f"{raw.source}: column {raw.feature_names[j]!r}: {kind} at row {i} (0-based data row); "
            f"{int(bad.sum())} non-finite value(s) in the features."
        )


# ----------------------------------------------------------------------------------------------------
# Target -> task


def _resolve_target(raw: _Raw, task: str | None) -> tuple[str, np.ndarray, tuple]:
    """(task, encoded y, class labels) for the requested task, else the dataset's own, else inferred."""
    where, col = raw.source, raw.target_name
    y = raw.y
    # NumPy's own types need no pandas (bundled sets, generators, numeric CSV columns)
    if y.dtype.kind in "iufb":
        missing = np.isnan(y) if y.dtype.kind == "f" else np.zeros(y.shape, dtype=bool)
    else:
        import pandas as pd

        missing = pd.isna(y)
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise DataError(f"{where}: column {col!r}: missing target value at row {i} (0-based data row).")
    numeric = y.dtype.kind in "iuf"
    if numeric and not np.isfinite(y).all():
        i = int(np.flatnonzero(~np.isfinite(y))[0])
        raise DataError(
            f"{where}: column {col!r}: infinite target value {y[i]} at row {i} (0-based data row)."
        )

    task = task or raw.task
    if task == REGRESSION:
        if numeric:
            return REGRESSION, y.astype(np.float64), ()
        import pandas as pd

        return REGRESSION, _numeric_column(pd.Series(y), where, col, "target"), ()

    labels, codes = np.unique(y if y.dtype.kind in "biuf" else y.astype(str), return_inverse=True)
    k = len(labels)
    if task is None:  # infer (CSV)
        integral = numeric and bool(np.all(np.mod(y, 1) == 0))
        if k == 2 or (k > 2 and not numeric):
            task = BINARY if k == 2 else MULTICLASS
        elif k > 2 and integral and k <= MAX_INFERRED_CLASSES:
            task = MULTICLASS
        elif k > 2:
            task = REGRESSION
            return task, y.astype(np.float64), ()
    if k < 2:
        value = labels.tolist()[0] if k else None
        raise DataError(
            f"{where}: column {col!r}: a single class ({value!r}) in all {len(y)} rows; classification "
            "needs at least 2 classes."
        )
    if task == BINARY and k != 2:
        raise DataError(
            f"{where}: column {col!r}: task 'binary' needs exactly 2 classes, found {k}: "
            f"{_preview(labels)}. Use task='multiclass'."
        )
    classes = tuple(labels.tolist())
    if raw.label_names is not None:
        classes = tuple(raw.label_names[int(c)] for c in classes)
    return task, codes.astype(np.int64).reshape(-1), classes


def _preview(labels: np.ndarray, n: int = 10) -> str:
    shown = ", ".join(repr(v) for v in labels[:n].tolist())
    return f"[{shown}{', ...' if len(labels) > n else ''}]"


# ----------------------------------------------------------------------------------------------------
# Public entry point


def load_dataset(
    name: str,
    *,
    path: str | os.PathLike | None = None,
    target: str | None = None,
    task: str | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    standardize: bool | None = None,
    standardize_target: bool | None = None,
    **generator_params: Any,
) -> Dataset:
    """Load, split and standardise a dataset.

    Args:
        name: one of ``DATASETS``: scikit-learn's bundled ``diabetes, breast_cancer, wine, digits, iris``;
            synthetic ``regression`` (make_regression), ``moons``, ``circles``, ``line``
            (y = 2x + 1 + N(0, noise^2), x ~ U(0, 2)); the sources' examples ``numeric_example``
            (x = 1..4, y = 3x) and ``single_sample`` (x = (28.1, 58.0), y = 165); ``csv`` (needs ``path``
            and ``target``).
        path, target: the CSV file and the name of its target column (``csv`` only). The other columns are the
            features and must all be numeric.
        task: ``regression | binary | multiclass``; default the dataset's own task, inferred for CSV:
            2 distinct values -> binary; non-numeric labels -> multiclass; integer-valued numbers with at most
            ``MAX_INFERRED_CLASSES`` distinct values -> multiclass; other numbers -> regression.
        val_fraction: share of rows held out for validation, in [0, 1): ``ceil(val_fraction * n)`` rows.
            Default 0.2, and 0 for the sources' ``numeric_example`` / ``single_sample`` (which are not split).
        seed: seeds the synthetic generators and the split (two independent streams from one SeedSequence).
        standardize: standardise the features on the training rows. Default True, except for the sources'
            examples (``line``, ``numeric_example``, ``single_sample``), whose coefficients keep their
            meaning.
        standardize_target: standardise a regression target on the training rows. Default: as ``standardize``.
            Only for regression.
        **generator_params: synthetic datasets' parameters (``DATASET_PARAMS[name]``), e.g. ``n_samples``,
            ``noise``, ``n_features``, ``factor``.

    Raises:
        DataError: unknown name or parameter, invalid value, missing/unreadable file, unknown target column,
            non-numeric / NaN / inf values, empty set, a single class, too few rows for the split. The message
            names the file (or source) and the column.
    """
    if not isinstance(name, str) or name not in DATASETS:
        close = difflib.get_close_matches(str(name), DATASETS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise DataError(f"Unknown dataset {name!r}.{hint} Valid names: {', '.join(DATASETS)}.")
    owner = f"dataset {name!r}"
    if task is not None and task not in TASKS:
        raise DataArgumentError("task", owner, f"one of {', '.join(TASKS)} or None", task)
    if val_fraction is not None:
        val_fraction = _fraction("val_fraction", owner, val_fraction)
    seed = check_int(seed, "seed", owner, low=0, error=DataArgumentError)
    standardize = check_bool(
        standardize, "standardize", "load_dataset", none_ok=True, error=DataArgumentError
    )
    standardize_target = check_bool(
        standardize_target, "standardize_target", "load_dataset", none_ok=True, error=DataArgumentError
    )

    if name == "csv":
        if path is None or target is None:
            raise DataError(
                f"Dataset 'csv' needs both path and target (the target column). Got path={path!r}, "
                f"target={target!r}."
            )
        if not isinstance(path, str | os.PathLike):
            raise DataArgumentError("path", owner, "a str or path", path)
        if not isinstance(target, str):
            raise DataArgumentError("target", owner, "a str (a column name)", target)
        if generator_params:
            raise DataError(
                f"Dataset 'csv' takes no generator parameters. Got {sorted(generator_params)} instead."
            )
    elif path is not None or target is not None:
        raise DataError(
            f"path and target apply only to dataset 'csv', not {name!r}. Got path={path!r}, "
            f"target={target!r}."
        )

    gen_seed, split_seed = (int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(2))
    raw_by_default = False
    if name == "csv":
        raw = _load_csv(path, target)
    elif name in _BUNDLED:
        if generator_params:
            raise DataError(
                f"Dataset {name!r} takes no generator parameters. Got {sorted(generator_params)} instead."
            )
        raw = _load_bundled(name)
    else:
        gen = _GENERATORS[name]
        unknown = sorted(set(generator_params) - set(gen.defaults))
        if unknown:
            valid = ", ".join(gen.defaults) or "none"
            raise DataError(
                f"Unknown parameter {unknown[0]!r} for dataset {name!r}. Valid parameters: {valid}."
            )
        params = {**gen.defaults, **generator_params}
        params = {k: gen.checks[k](k, owner, v) if k in generator_params else v for k, v in params.items()}
        raw = gen.make(gen_seed, **params)
        raw_by_default = gen.raw_by_default

    _check_finite(raw.X, raw)
    task, y, classes = _resolve_target(raw, task)
    classification = task != REGRESSION

    if val_fraction is None:
        val_fraction = 0.0 if name in ("numeric_example", "single_sample") else 0.2
    if standardize is None:
        standardize = not raw_by_default
    if standardize_target is None:
        standardize_target = standardize and not classification
    elif standardize_target and classification:
        raise DataError(f"standardize_target=True applies only to regression; {owner} is {task}.")

    return prepare(
        name=name,
        task=task,
        X=raw.X,
        y=y,
        classes=classes,
        feature_names=raw.feature_names,
        target_name=raw.target_name,
        source=raw.source,
        val_fraction=val_fraction,
        seed=split_seed,
        standardize=standardize,
        standardize_target=standardize_target,
    )


def from_arrays(
    X,
    y,
    *,
    source: str,
    feature_names=None,
    target_name: str = "y",
    task: str | None = None,
    val_fraction: float | None = None,
    seed: int = 0,
    standardize: bool | None = None,
) -> Dataset:
    """Arrays a user's code returned (a study's ``data: {entry_point: ...}``), split and standardised like any
    dataset: the same finiteness check, target resolution (``task`` None: inferred as for a CSV), seeded split
    (stratified for classes) and train-only standardisation.

    Raises:
        DataError: X is not a 2-D array of numbers, y not one value per row, non-finite values, ...
    """
    where = source
    try:
        X = np.array(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{where}: X must be a 2-D array of numbers ({exc}).") from None
    y = np.asarray(y)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise DataError(f"{where}: X must be a non-empty 2-D array (rows, features). Got shape {X.shape}.")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise DataError(
            f"{where}: y must be a 1-D array with one value per row of X ({X.shape[0]}). Got shape {y.shape}."
        )
    names = _columns(X.shape[1]) if feature_names is None else tuple(str(f) for f in feature_names)
    if len(names) != X.shape[1]:
        raise DataError(f"{where}: {len(names)} feature names for {X.shape[1]} columns.")
    if task is not None and task not in TASKS:
        raise DataArgumentError("task", where, f"one of {', '.join(TASKS)} or None", task)
    val_fraction = 0.2 if val_fraction is None else _fraction("val_fraction", where, val_fraction)
    standardize = True if standardize is None else standardize
    raw = _Raw(X, y, names, str(target_name), where, None)
    _check_finite(X, raw)
    task, y, classes = _resolve_target(raw, task)
    split_seed = int(np.random.SeedSequence(seed).spawn(2)[1].generate_state(1)[0])
    return prepare(
        name=where,
        task=task,
        X=X,
        y=y,
        classes=classes,
        feature_names=names,
        target_name=raw.target_name,
        source=where,
        val_fraction=val_fraction,
        seed=split_seed,
        standardize=standardize,
        standardize_target=standardize and task == REGRESSION,
    )
