"""pipeline/core/arrays.py: the seeded split and the train-only standardisation.

The split's oracle is scikit-learn's train_test_split, which the core used to call: the core's NumPy split must
draw the same rows for the same seed, or studies tuned before would no longer replay.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from pipeline.core.arrays import _n_val, prepare
from pipeline.core.names import BINARY, MULTICLASS, REGRESSION
from pipeline.errors import DataError


def split(y, task, val_fraction, seed, *, standardize=True, X=None):
    X = np.arange(len(y) * 2, dtype=float).reshape(-1, 2) if X is None else X
    classes = tuple(np.unique(y)) if task != REGRESSION else ()
    return prepare(
        name="t",
        task=task,
        X=X,
        y=y,
        classes=classes,
        feature_names=("a", "b"),
        target_name="y",
        source="test",
        val_fraction=val_fraction,
        seed=seed,
        standardize=standardize,
        standardize_target=False,
    )


def sklearn_rows(n, val_fraction, seed, stratify=None):
    n_val = _n_val(n, val_fraction)
    return train_test_split(
        np.arange(n),
        test_size=n_val,
        train_size=n - n_val,
        random_state=seed,
        shuffle=True,
        stratify=stratify,
    )


CASES = [
    # (n, val_fraction, class sizes or None for regression)
    (10, 0.3, None),
    (442, 0.2, None),
    (7, 0.5, None),
    (569, 0.2, [212, 357]),
    (150, 0.2, [50, 50, 50]),
    (178, 0.25, [59, 71, 48]),
    (31, 0.3, [2, 3, 5, 7, 14]),  # ties and remainders: _approximate_mode breaks them at random
    (12, 0.5, [4, 4, 4]),
]


@pytest.mark.parametrize("seed", [0, 1, 7, 12345, 2**32 - 1])
@pytest.mark.parametrize(("n", "val_fraction", "sizes"), CASES)
def test_split_draws_the_rows_scikit_learn_draws(n, val_fraction, sizes, seed):
    if sizes is None:
        y, task, stratify = np.linspace(0.0, 1.0, n), REGRESSION, None
    else:
        y = np.repeat(np.arange(len(sizes)), sizes)
        y = np.random.default_rng(seed % 1000).permutation(y)  # classes interleaved, not in blocks
        task, stratify = (BINARY if len(sizes) == 2 else MULTICLASS), y
    train_rows, val_rows = sklearn_rows(n, val_fraction, seed, stratify)

    data = split(y, task, val_fraction, seed, standardize=False)

    # X's first column is 2 * row index: it names the row each sample came from
    np.testing.assert_array_equal(data.X_train[:, 0] / 2, train_rows)
    np.testing.assert_array_equal(data.X_val[:, 0] / 2, val_rows)


def test_a_stratified_split_keeps_each_class_share_within_one_row():
    y = np.repeat([0, 1, 2], [30, 50, 20])
    data = split(y, MULTICLASS, 0.2, 3)
    assert np.bincount(data.y_val).tolist() == [6, 10, 4]
    assert np.bincount(data.y_train).tolist() == [24, 40, 16]


def test_standardisation_uses_the_training_rows_only():
    rng = np.random.default_rng(0)
    X = rng.normal(loc=5.0, scale=3.0, size=(50, 2))
    data = split(np.zeros(50), REGRESSION, 0.2, 0, X=X)
    np.testing.assert_allclose(data.X_train.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(data.X_train.std(axis=0), 1.0, rtol=1e-12)
    assert not np.allclose(data.X_val.mean(axis=0), 0.0, atol=1e-3)  # the validation rows were not fitted
    raw_val = data.X_val * data.feature_scale + data.feature_mean
    assert {tuple(r) for r in np.round(raw_val, 9)} <= {tuple(r) for r in np.round(X, 9)}


def test_val_fraction_zero_keeps_every_row_for_training_in_order():
    data = split(np.arange(5.0), REGRESSION, 0.0, 0, standardize=False)
    np.testing.assert_array_equal(data.X_train[:, 0] / 2, np.arange(5))
    assert data.n_val == 0


def test_a_class_with_one_row_cannot_be_stratified():
    with pytest.raises(DataError, match="class 1 has only 1 row"):
        split(np.array([0, 0, 0, 1, 0, 0]), BINARY, 0.5, 0)
