"""Arrays ready for the models: a seeded train/validation split and standardisation fitted on the training rows.

Pure NumPy: no files, no printing, no global random state. The loaders
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

from pipeline.core.names import REGRESSION
from pipeline.errors import DataError


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
    rng = np.random.RandomState(seed)  # noqa: NPY002  (the legacy generator scikit-learn's split draws from)
    if codes is None:
        return _shuffle_split(n, n_train, n_val, rng)
    return _stratified_split(codes, n_train, n_val, rng)


# The two splits below draw exactly what scikit-learn 1.x's train_test_split(shuffle=True, random_state=seed)
# draws (ShuffleSplit, and StratifiedShuffleSplit with its _approximate_mode), so studies tuned before the core
# stopped importing scikit-learn replay the same rows; tests/test_arrays.py holds them to scikit-learn's output.


def _shuffle_split(n: int, n_train: int, n_val: int, rng) -> tuple[np.ndarray, np.ndarray]:
    permutation = rng.permutation(n)
    return permutation[n_val : n_val + n_train], permutation[:n_val]


def _approximate_mode(class_counts: np.ndarray, n_draws: int, rng) -> np.ndarray:
    """Rows drawn per class: the floor of each class's share of ``n_draws``, then one more for the classes
    with the largest remainders (ties broken at random) until ``n_draws`` rows are drawn."""
    continuous = class_counts / class_counts.sum() * n_draws
    floored = np.floor(continuous)
    need_to_add = int(n_draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need_to_add)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need_to_add -= add_now
            if need_to_add == 0:
                break
    return floored.astype(int)


def _stratified_split(codes: np.ndarray, n_train: int, n_val: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Each class split in proportion to its size (within one row), rows of a class drawn at random."""
    _, y_indices, class_counts = np.unique(codes, return_inverse=True, return_counts=True)
    class_indices = np.split(np.argsort(y_indices, kind="stable"), np.cumsum(class_counts)[:-1])
    n_i = _approximate_mode(class_counts, n_train, rng)
    t_i = _approximate_mode(class_counts - n_i, n_val, rng)
    train: list = []
    val: list = []
    for i, rows in enumerate(class_indices):
        shuffled = rows.take(rng.permutation(class_counts[i]), mode="clip")
        train.extend(shuffled[: n_i[i]])
        val.extend(shuffled[n_i[i] : n_i[i] + t_i[i]])
    return rng.permutation(train), rng.permutation(val)


def _fit_scale(A: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and population stds of A (n >= 1, d); constant columns get std 1 (module docstring)."""
    with np.errstate(over="ignore", invalid="ignore"):
        mean = A.mean(axis=0)
        scale = A.std(axis=0)
        # max == min is exact, unlike std == 0: a constant 0.1 column has a rounding-error std ~1e-17, and
        # dividing by it would blow that rounding error up to O(1) values
        constant = np.ptp(A, axis=0) == 0
    # Finite values near the float64 limit (|x| > ~1e154) overflow when summed or squared: for those columns,
    # divide by the column's largest magnitude first (mean and std scale with it), then scale back.
    huge = ~(np.isfinite(mean) & np.isfinite(scale))
    if huge.any():
        top = np.abs(A[:, huge]).max(axis=0)
        B = A[:, huge] / top
        mean[huge] = B.mean(axis=0) * top
        scale[huge] = B.std(axis=0) * top
    mean[constant] = A[0, constant]
    scale[constant] = 1.0
    return mean, scale


def _standardise(A: np.ndarray, mean, scale) -> np.ndarray:
    """(A - mean) / scale; for entries where that overflows (huge finite values of opposite signs), the equal
    A / scale - mean / scale, which cannot."""
    with np.errstate(over="ignore", invalid="ignore"):
        out = (A - mean) / scale
    bad = ~np.isfinite(out)
    if bad.any():
        alt = A / scale - mean / scale
        out[bad] = alt[bad]
    return out


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
    classification = task != REGRESSION
    train_idx, val_idx = _split(
        X.shape[0], source, target_name, y if classification else None, val_fraction, seed
    )
    X_train, X_val = X[train_idx], X[val_idx]
    y_train, y_val = y[train_idx], y[val_idx]

    d = X.shape[1]
    x_mean, x_scale = np.zeros(d), np.ones(d)
    if standardize:
        x_mean, x_scale = _fit_scale(X_train)
        X_train = _standardise(X_train, x_mean, x_scale)
        X_val = _standardise(X_val, x_mean, x_scale)
    y_mean, y_scale = 0.0, 1.0
    if standardize_target:
        m, s = _fit_scale(y_train.reshape(-1, 1))
        y_mean, y_scale = float(m[0]), float(s[0])
        y_train = _standardise(y_train, y_mean, y_scale)
        y_val = _standardise(y_val, y_mean, y_scale)

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
