"""Arrays ready for the models: a seeded train/validation split and standardisation fitted on the training rows.

Pure NumPy (and scikit-learn's stratified splitter): no files, no printing, no global random state. The loaders
that produce the raw arrays live in :mod:`pipeline.datasets`.

    x' = (x - mean_train) / std_train        (population std, ddof=0, per feature column)

A column that is constant on the training rows gets std_train := 1, so it is only centred. The regression
target is standardised the same way (``standardize_target``); a model's MSE in the original units is then
``mse * target_scale ** 2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.errors import DataError

TASKS: tuple[str, ...] = ("regression", "binary", "multiclass")


@dataclass(
    frozen=True, eq=False
)  # eq=False: field-wise == on ndarrays is ambiguous; identity is what is meant
class Dataset:
    """A split, standardised dataset ready for the models.

    X arrays are float64, C-contiguous, shape (n, d), read-only (one Dataset may be shared by many trials).
    y is float64 for regression and int64 in 0..n_classes-1 for classification.
    ``X_val``/``y_val`` have 0 rows when ``val_fraction`` was 0.

    ``classes`` holds the original label of each encoded class (``classes[k]`` was encoded as ``k``);
    empty for regression. ``feature_mean``/``feature_scale`` and ``target_mean``/``target_scale`` are the
    statistics that were applied (0 and 1 when not standardised):
    ``x_raw = x * feature_scale + feature_mean``.
    """

    name: str
    task: str
    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    n_classes: int
    feature_names: tuple[str, ...]
    target_name: str
    source: str
    classes: tuple = ()
    feature_mean: np.ndarray | None = None
    feature_scale: np.ndarray | None = None
    target_mean: float = 0.0
    target_scale: float = 1.0

    @property
    def n_features(self) -> int:
        return self.X_train.shape[1]

    @property
    def n_train(self) -> int:
        return self.X_train.shape[0]

    @property
    def n_val(self) -> int:
        return self.X_val.shape[0]


# ----------------------------------------------------------------------------------------------------
# Split and standardisation


def _n_val(n: int, val_fraction: float) -> int:
    # ceil(val_fraction * n) like train_test_split, rounded first: 0.3 * 10 = 3.0000000000000004 gives 3
    return math.ceil(round(val_fraction * n, 9))


def _split(
    n: int, source: str, target_name: str, codes: np.ndarray | None, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    if n == 0:
        raise DataError(f"{source}: empty set: no rows.")
    if val_fraction == 0:
        return np.arange(n), np.arange(0)
    n_val = _n_val(n, val_fraction)
    n_train = n - n_val
    what = f"{source}: too few rows for val_fraction={val_fraction}: {n} row(s) give"
    if n_train < 1:
        raise DataError(
            f"{what} {n_train} training and {n_val} validation row(s); each part needs at least one."
        )
    if codes is not None:
        counts = np.bincount(codes)
        k = len(counts)
        if n_train < k or n_val < k:
            raise DataError(
                f"{what} {n_train} training and {n_val} validation row(s); a stratified split of column "
                f"{target_name!r} needs at least {k} (one per class) in each part."
            )
        rare = int(np.argmin(counts))
        if counts[rare] < 2:
            raise DataError(
                f"{source}: column {target_name!r}: class {rare} has only {counts[rare]} row; a "
                "stratified split needs at least 2 rows per class (or use val_fraction=0)."
            )
    from sklearn.model_selection import train_test_split  # imported here: only a split needs scikit-learn

    train_idx, val_idx = train_test_split(
        np.arange(n), test_size=n_val, train_size=n_train, random_state=seed, shuffle=True, stratify=codes
    )
    return train_idx, val_idx


def _fit_scale(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and population stds of A (n >= 1, d); constant columns get std 1 (module docstring)."""
    mean = A.mean(axis=0)
    scale = A.std(axis=0)
    # max == min is exact, unlike std == 0: a constant 0.1 column has a rounding-error std ~1e-17, and
    # dividing by it would blow that rounding error up to O(1) values
    constant = np.ptp(A, axis=0) == 0
    mean[constant] = A[0, constant]
    scale[constant] = 1.0
    return mean, scale


def _readonly(a: np.ndarray, dtype) -> np.ndarray:
    a = np.array(a, dtype=dtype, order="C", copy=True)
    a.flags.writeable = False
    return a


# ----------------------------------------------------------------------------------------------------
# From raw arrays to a Dataset


def prepare(
    *,
    name: str,
    task: str,
    X: np.ndarray,
    y: np.ndarray,
    classes: tuple,
    feature_names: tuple[str, ...],
    target_name: str,
    source: str,
    val_fraction: float,
    seed: int,
    standardize: bool,
    standardize_target: bool,
) -> Dataset:
    """Split (stratified for classification, from ``seed``) and standardise on the training rows only.

    ``y`` is float for regression, int codes 0..k-1 for classification (``classes[k]`` the original label).
    """
    classification = task != "regression"
    train_idx, val_idx = _split(
        X.shape[0], source, target_name, y if classification else None, val_fraction, seed
    )
    X_train, X_val = X[train_idx], X[val_idx]
    y_train, y_val = y[train_idx], y[val_idx]

    d = X.shape[1]
    x_mean, x_scale = np.zeros(d), np.ones(d)
    if standardize:
        x_mean, x_scale = _fit_scale(X_train)
        X_train = (X_train - x_mean) / x_scale
        X_val = (X_val - x_mean) / x_scale
    y_mean, y_scale = 0.0, 1.0
    if standardize_target:
        m, s = _fit_scale(y_train.reshape(-1, 1))
        y_mean, y_scale = float(m[0]), float(s[0])
        y_train = (y_train - y_mean) / y_scale
        y_val = (y_val - y_mean) / y_scale

    y_dtype = np.int64 if classification else np.float64
    return Dataset(
        name=name,
        task=task,
        X_train=_readonly(X_train, np.float64),
        y_train=_readonly(y_train, y_dtype),
        X_val=_readonly(X_val, np.float64),
        y_val=_readonly(y_val, y_dtype),
        n_classes=len(classes) if classification else 0,
        feature_names=feature_names,
        target_name=target_name,
        source=source,
        classes=classes,
        feature_mean=_readonly(x_mean, np.float64),
        feature_scale=_readonly(x_scale, np.float64),
        target_mean=y_mean,
        target_scale=y_scale,
    )
