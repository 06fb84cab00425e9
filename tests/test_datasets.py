"""Tests for pipeline.datasets and pipeline.core.arrays: shapes and tasks from scikit-learn's documentation, split determinism, train-only
standardisation against a hand computation, stratification, CSV inference and every DataError."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from sklearn import datasets as skdatasets

from pipeline.core.arrays import Dataset
from pipeline.datasets import DATASET_PARAMS, DATASETS, load_dataset
from pipeline.errors import DataError


def write_csv(tmp_path, text: str, name: str = "data.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def csv_text(columns: dict[str, list]) -> str:
    names = list(columns)
    rows = zip(*columns.values(), strict=True)
    return ",".join(names) + "\n" + "".join(",".join(str(v) for v in row) + "\n" for row in rows)


# --- shapes, tasks, dtypes ----------------------------------------------------------------------------------

# (name, rows, features, task, n_classes): numbers from scikit-learn's dataset documentation
BUNDLED = [
    ("diabetes", 442, 10, "regression", 0),
    ("breast_cancer", 569, 30, "binary", 2),
    ("wine", 178, 13, "multiclass", 3),
    ("digits", 1797, 64, "multiclass", 10),
    ("iris", 150, 4, "multiclass", 3),
]


def check_arrays(data: Dataset) -> None:
    for a in (data.X_train, data.X_val):
        assert a.dtype == np.float64 and a.flags.c_contiguous and a.ndim == 2
        assert not a.flags.writeable
    y_dtype = np.float64 if data.task == "regression" else np.int64
    for a in (data.y_train, data.y_val):
        assert a.dtype == y_dtype and a.flags.c_contiguous and a.ndim == 1
    assert data.X_train.shape[0] == data.y_train.shape[0]
    assert data.X_val.shape[0] == data.y_val.shape[0]
    assert data.X_val.shape[1] == data.n_features == len(data.feature_names)
    assert np.isfinite(data.X_train).all() and np.isfinite(data.X_val).all()


@pytest.mark.parametrize(("name", "rows", "features", "task", "n_classes"), BUNDLED)
def test_bundled_dataset_shapes(name, rows, features, task, n_classes):
    data = load_dataset(name)
    check_arrays(data)
    assert (data.task, data.n_classes, data.n_features) == (task, n_classes, features)
    assert data.n_train + data.n_val == rows
    assert data.n_val == math.ceil(0.2 * rows)
    assert data.source == f"sklearn:{name}"
    if n_classes:
        assert len(data.classes) == n_classes
        assert set(np.unique(np.concatenate([data.y_train, data.y_val]))) == set(range(n_classes))


@pytest.mark.parametrize(
    ("name", "params", "rows", "features", "task", "n_classes"),
    [
        ("regression", {}, 200, 10, "regression", 0),
        ("regression", {"n_samples": 50, "n_features": 3, "noise": 0.0}, 50, 3, "regression", 0),
        ("moons", {}, 200, 2, "binary", 2),
        ("moons", {"n_samples": 30, "noise": 0.0}, 30, 2, "binary", 2),
        ("circles", {"n_samples": 40, "factor": 0.3}, 40, 2, "binary", 2),
        ("line", {}, 100, 1, "regression", 0),
        ("numeric_example", {}, 4, 1, "regression", 0),
        ("single_sample", {}, 1, 2, "regression", 0),
    ],
)
def test_synthetic_dataset_shapes(name, params, rows, features, task, n_classes):
    data = load_dataset(name, **params)
    check_arrays(data)
    assert (data.task, data.n_classes, data.n_features) == (task, n_classes, features)
    assert data.n_train + data.n_val == rows


def test_every_name_loads_and_params_table_covers_them():
    assert set(DATASET_PARAMS) == set(DATASETS)
    for name in DATASETS:
        if name != "csv":
            check_arrays(load_dataset(name))


@pytest.mark.parametrize(
    ("name", "X", "y"),
    [  # the sources' worked examples, raw: no split, no standardisation
        ("numeric_example", [[1.0], [2.0], [3.0], [4.0]], [3.0, 6.0, 9.0, 12.0]),
        ("single_sample", [[28.1, 58.0]], [165.0]),
    ],
)
def test_sources_examples_are_raw_and_unsplit(name, X, y):
    data = load_dataset(name)
    np.testing.assert_array_equal(data.X_train, X)
    np.testing.assert_array_equal(data.y_train, y)
    assert data.X_val.shape == (0, len(X[0])) and data.y_val.shape == (0,)


def test_line_fit_recovers_slope_2_and_intercept_1():
    data = load_dataset("line", val_fraction=0.0)
    x, y = data.X_train[:, 0], data.y_train
    assert x.shape == (100,) and 0 <= x.min() and x.max() < 2  # raw x ~ U(0, 2): not standardised
    slope, intercept = np.polyfit(x, y, 1)
    # ordinary least-squares standard errors with noise sigma = 0.5; 4 of them is a loose, seed-proof band
    se_slope = 0.5 / (np.sqrt(len(x)) * x.std())
    se_intercept = se_slope * np.sqrt(np.mean(x**2))
    assert abs(slope - 2) < 4 * se_slope
    assert abs(intercept - 1) < 4 * se_intercept
    residual_std = np.std(y - (slope * x + intercept))
    assert 0.4 < residual_std < 0.6


def test_line_without_noise_is_exact():
    data = load_dataset("line", noise=0.0, n_samples=20, val_fraction=0.0)
    slope, intercept = np.polyfit(data.X_train[:, 0], data.y_train, 1)
    assert slope == pytest.approx(2.0, abs=1e-12) and intercept == pytest.approx(1.0, abs=1e-12)


# --- split determinism and stratification -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["wine", "diabetes", "moons", "line"])
def test_split_is_deterministic_from_the_seed(name):
    a, b, c = load_dataset(name, seed=3), load_dataset(name, seed=3), load_dataset(name, seed=4)
    for field in ("X_train", "y_train", "X_val", "y_val"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.X_train, c.X_train)
    assert not np.array_equal(a.y_val, c.y_val)


@pytest.mark.parametrize(("name", "val_fraction"), [("breast_cancer", 0.2), ("wine", 0.3), ("iris", 0.2)])
def test_stratified_split_keeps_class_proportions(name, val_fraction):
    data = load_dataset(name, val_fraction=val_fraction, seed=11)
    y_all = np.concatenate([data.y_train, data.y_val])
    overall = np.bincount(y_all) / len(y_all)
    for part in (data.y_train, data.y_val):
        counts = np.bincount(part, minlength=data.n_classes)
        # stratified: each class within one row of its exact share of the part
        assert np.all(np.abs(counts - overall * len(part)) <= 1.0)


def test_val_fraction_zero_gives_empty_validation_set():
    data = load_dataset("iris", val_fraction=0)
    assert data.X_train.shape == (150, 4) and data.X_val.shape == (0, 4) and data.y_val.shape == (0,)


@pytest.mark.parametrize(("val_fraction", "n_val"), [(0.3, 3), (0.25, 3), (0.1, 1), (0.5, 5)])
def test_validation_rows_are_ceil_of_fraction(tmp_path, val_fraction, n_val):
    path = write_csv(tmp_path, csv_text({"x": list(range(10)), "y": [0.5 * i for i in range(10)]}))
    data = load_dataset("csv", path=path, target="y", val_fraction=val_fraction)
    assert (data.n_train, data.n_val) == (10 - n_val, n_val)


# --- standardisation ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["wine", "breast_cancer", "digits"])
def test_standardisation_is_fitted_on_training_rows_only(name):
    raw = load_dataset(name, seed=5, standardize=False)
    std = load_dataset(name, seed=5)
    # the unstandardised split holds exactly the rows of scikit-learn's own arrays
    source = getattr(skdatasets, f"load_{name}")().data
    rows = {r.tobytes() for r in source}
    assert all(r.tobytes() in rows for r in np.vstack([raw.X_train, raw.X_val]))
    assert raw.n_train + raw.n_val == len(source)

    mean = raw.X_train.mean(axis=0)
    sd = raw.X_train.std(axis=0)
    constant = sd == 0
    sd[constant] = 1.0  # documented: constant training columns are only centred
    np.testing.assert_allclose(std.X_train, (raw.X_train - mean) / sd, atol=1e-12)
    np.testing.assert_allclose(std.X_val, (raw.X_val - mean) / sd, atol=1e-12)
    np.testing.assert_allclose(std.X_train.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(std.X_train.std(axis=0)[~constant], 1.0, rtol=1e-12)
    # the validation statistics come from the training rows, so they are not exactly 0 / 1
    assert not np.allclose(std.X_val.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(std.feature_mean, mean)
    np.testing.assert_allclose(std.feature_scale, sd)


def test_digits_constant_columns_become_zero_not_nan():
    data = load_dataset("digits")
    constant = data.feature_scale == 1.0
    assert constant.sum() >= 3  # at least the three blank pixels constant over all 1797 images
    np.testing.assert_array_equal(data.X_train[:, constant], 0.0)


def test_constant_csv_column_is_centred_not_divided(tmp_path):
    # 0.1 is not exactly representable: a naive std is ~1e-17, not 0, and dividing by it gives O(1) noise
    path = write_csv(
        tmp_path, csv_text({"c": [0.1] * 9 + [0.7], "x": list(range(10)), "y": [0] * 5 + [1] * 5})
    )
    data = load_dataset("csv", path=path, target="y", val_fraction=0.0)
    np.testing.assert_allclose(data.X_train[:, 0], [-1 / 3] * 9 + [3.0], rtol=1e-12)  # (x - 0.16) / 0.18
    path = write_csv(tmp_path, csv_text({"c": [0.1] * 10, "x": list(range(10)), "y": [0] * 5 + [1] * 5}))
    data = load_dataset("csv", path=path, target="y", val_fraction=0.0)
    np.testing.assert_array_equal(data.X_train[:, 0], 0.0)
    assert data.feature_scale[0] == 1.0


def test_regression_target_standardised_on_training_rows():
    raw = load_dataset("diabetes", seed=2, standardize_target=False)
    std = load_dataset("diabetes", seed=2)
    mean, sd = raw.y_train.mean(), raw.y_train.std()
    np.testing.assert_allclose(std.y_train, (raw.y_train - mean) / sd, atol=1e-12)
    np.testing.assert_allclose(std.y_val, (raw.y_val - mean) / sd, atol=1e-12)
    assert (std.target_mean, std.target_scale) == pytest.approx((mean, sd))
    np.testing.assert_array_equal(raw.X_train, std.X_train)  # features standardised in both


@pytest.mark.parametrize(
    ("name", "kwargs", "features_scaled", "target_scaled"),
    [
        ("diabetes", {}, True, True),
        ("regression", {}, True, True),
        ("line", {}, False, False),
        ("line", {"standardize": True}, True, True),
        ("line", {"standardize": True, "standardize_target": False}, True, False),
        ("numeric_example", {}, False, False),
        ("diabetes", {"standardize": False}, False, False),
        ("diabetes", {"standardize": False, "standardize_target": True}, False, True),
    ],
)
def test_standardisation_defaults(name, kwargs, features_scaled, target_scaled):
    data = load_dataset(name, **kwargs)
    assert bool(np.any(data.feature_scale != 1.0)) == features_scaled
    assert (data.target_scale != 1.0) == target_scaled


# --- CSV ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target_values", "task", "expected_task", "n_classes", "classes"),
    [
        ([0.5 * i + 0.1 for i in range(12)], None, "regression", 0, ()),
        (list(range(30)) * 1, None, "regression", 0, ()),  # many integer values: a quantity
        ([0, 1] * 6, None, "binary", 2, (0, 1)),
        ([-1, 1] * 6, None, "binary", 2, (-1, 1)),
        ([0.5, 1.5] * 6, None, "binary", 2, (0.5, 1.5)),
        (["no", "yes"] * 6, None, "binary", 2, ("no", "yes")),
        (["b", "a", "c"] * 4, None, "multiclass", 3, ("a", "b", "c")),
        ([3, 1, 2, 5] * 3, None, "multiclass", 4, (1, 2, 3, 5)),
        ([3.0, 1.0, 2.0] * 4, None, "multiclass", 3, (1.0, 2.0, 3.0)),
        ([3, 1, 2, 5] * 3, "regression", "regression", 0, ()),
        ([0, 1] * 6, "multiclass", "multiclass", 2, (0, 1)),
        ([0, 1] * 6, "regression", "regression", 0, ()),
    ],
)
def test_csv_task_inference(tmp_path, target_values, task, expected_task, n_classes, classes):
    n = len(target_values)
    path = write_csv(
        tmp_path, csv_text({"f1": range(n), "f2": [i % 3 for i in range(n)], "t": target_values})
    )
    data = load_dataset("csv", path=path, target="t", task=task, val_fraction=0.0, standardize=False)
    check_arrays(data)
    assert (data.task, data.n_classes, data.classes) == (expected_task, n_classes, classes)
    assert data.feature_names == ("f1", "f2") and data.target_name == "t" and data.source == str(path)
    if expected_task == "regression":
        np.testing.assert_array_equal(data.y_train, np.asarray(target_values, dtype=float))
    else:  # labels encoded as their index in the sorted classes
        expected = [classes.index(type(classes[0])(v)) for v in target_values]
        np.testing.assert_array_equal(data.y_train, expected)


def test_csv_target_column_in_the_middle_and_bool_features(tmp_path):
    path = write_csv(tmp_path, "a,label,b\n1,x,True\n2,y,False\n3,x,True\n4,y,False\n")
    data = load_dataset("csv", path=path, target="label", val_fraction=0.0, standardize=False)
    assert data.feature_names == ("a", "b")
    np.testing.assert_array_equal(data.X_train, [[1, 1], [2, 0], [3, 1], [4, 0]])
    np.testing.assert_array_equal(data.y_train, [0, 1, 0, 1])


# --- errors -------------------------------------------------------------------------------------------------

GOOD = {"x1": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "x2": [2, 1, 4, 3, 6, 5], "y": [0, 1, 0, 1, 0, 1]}


@pytest.mark.parametrize(
    ("text", "kwargs", "pattern"),
    [
        ("x1,x2,y\n1,2,0\n2,abc,1\n3,4,0\n", {}, r"column 'x2': non-numeric value 'abc' at row 1"),
        ("x1,x2,y\n1,2,0\n2,,1\n3,4,0\n", {}, r"column 'x2': missing value or NaN at row 1"),
        ("x1,x2,y\n1,2,0\n2,3,1\ninf,4,0\n", {}, r"column 'x1': infinite value inf at row 2"),
        ("x1,x2,y\n1,2,0\n2,3,\n3,4,0\n", {}, r"column 'y': missing target value at row 1"),
        ("x1,x2,y\n1,2,0.5\n2,3,inf\n3,4,1.5\n", {}, r"column 'y': infinite target value inf at row 1"),
        (
            "x1,x2,y\n1,2,a\n2,3,b\n3,4,1.5\n",
            {"task": "regression"},
            r"column 'y': non-numeric value 'a' at row 0",
        ),
        ("x1,x2,y\n1,2,a\n2,3,a\n3,4,a\n", {}, r"column 'y': a single class \('a'\) in all 3 rows"),
        (
            "x1,x2,y\n1,2,a\n2,3,b\n3,4,c\n",
            {"task": "binary"},
            r"column 'y': task 'binary' needs exactly 2 classes",
        ),
        ("x1,x2,y\n", {}, r"empty set"),
        ("x1,x2,y\n1,2,0\n", {}, r"no target column 'target'. Available columns: 'x1', 'x2', 'y'"),
        ("y\n1\n2\n", {}, r"no feature columns besides the target column 'y'"),
        ("", {}, r"the file is empty"),
        ('x1,x2,y\n1,2,0\n2,3,1,7,8\n"unclosed\n', {}, r"cannot be read as CSV"),
        ("x1,x2,y\n1,2,0\n2,3,1\n3,4,0\n", {"val_fraction": 0.5}, r"too few rows for val_fraction=0.5"),
        (
            "x1,x2,y\n1,2,0\n2,3,1\n3,4,0\n4,5,1\n5,6,0\n",
            {"val_fraction": 0.2},
            r"too few rows.*one per class",
        ),
        (
            "x1,x2,y\n1,2,0\n2,3,0\n3,4,0\n4,5,0\n5,6,1\n",
            {"val_fraction": 0.4},
            r"column 'y': class 1 has only 1",
        ),
        (
            "x1,x2,y\n1,2,3.5\n",
            {"val_fraction": 0.5, "task": "regression"},
            r"0 training and 1 validation row",
        ),
    ],
)
def test_csv_errors_name_file_and_column(tmp_path, text, kwargs, pattern):
    path = write_csv(tmp_path, text, name="bad-input.csv")
    target = "target" if "no target column" in pattern else "y"
    with pytest.raises(DataError, match=re.escape(str(path)) + ".*" + pattern):
        load_dataset("csv", path=path, target=target, **kwargs)


def test_missing_file_and_directory(tmp_path):
    missing = tmp_path / "nowhere.csv"
    with pytest.raises(DataError, match=re.escape(str(missing)) + ": file not found"):
        load_dataset("csv", path=missing, target="y")
    with pytest.raises(DataError, match=re.escape(str(tmp_path)) + ": is not a file"):
        load_dataset("csv", path=tmp_path, target="y")


def test_unreadable_bytes(tmp_path):
    path = tmp_path / "binary.csv"
    path.write_bytes(b"x,y\n\xff\xfe\x00\x01,\x80\n")
    with pytest.raises(DataError, match=re.escape(str(path)) + ": cannot be read as CSV"):
        load_dataset("csv", path=path, target="y")


@pytest.mark.parametrize(
    ("name", "kwargs", "pattern"),
    [
        ("mnist", {}, r"Unknown dataset 'mnist'.*Valid names: diabetes, breast_cancer, wine, digits, iris"),
        ("diabets", {}, r"Did you mean 'diabetes'\?"),
        (
            "iris",
            {"val_fraction": 1.0},
            r"'val_fraction' parameter of dataset 'iris' must be a float in \[0.0, 1.0\)",
        ),
        ("iris", {"val_fraction": -0.1}, r"'val_fraction'.*Got -0.1 instead"),
        ("iris", {"val_fraction": float("nan")}, r"'val_fraction'.*Got nan instead"),
        ("iris", {"val_fraction": "0.2"}, r"'val_fraction'.*Got '0.2' instead"),
        ("iris", {"val_fraction": True}, r"'val_fraction'.*Got True instead"),
        ("iris", {"seed": -1}, r"'seed' parameter of dataset 'iris' must be an int >= 0. Got -1 instead"),
        ("iris", {"seed": 1.5}, r"'seed'.*Got 1.5 instead"),
        ("iris", {"task": "ranking"}, r"'task'.*one of regression, binary, multiclass.*Got 'ranking'"),
        (
            "iris",
            {"task": "binary"},
            r"sklearn:iris: column 'species': task 'binary' needs exactly 2 classes",
        ),
        ("iris", {"standardize_target": True}, r"standardize_target=True applies only to regression"),
        ("iris", {"standardize": "yes"}, r"'standardize'.*Got 'yes' instead"),
        ("iris", {"noise": 0.1}, r"Dataset 'iris' takes no generator parameters"),
        ("iris", {"target": "species"}, r"path and target apply only to dataset 'csv'"),
        ("csv", {}, r"Dataset 'csv' needs both path and target"),
        ("csv", {"path": "x.csv", "target": "y", "noise": 1}, r"Dataset 'csv' takes no generator parameters"),
        (
            "moons",
            {"nois": 0.1},
            r"Unknown parameter 'nois' for dataset 'moons'. Valid parameters: n_samples, noise",
        ),
        (
            "moons",
            {"noise": -1},
            r"The 'noise' parameter of dataset 'moons' must be a float >= 0.0. Got -1 instead",
        ),
        ("moons", {"noise": float("inf")}, r"'noise'.*Got inf instead"),
        (
            "moons",
            {"n_samples": 0},
            r"'n_samples' parameter of dataset 'moons' must be an int in \[1, 1000000\]. Got 0",
        ),
        ("moons", {"n_samples": 10**12}, r"'n_samples'.*must be an int in \[1, 1000000\]. Got 1000000000000"),
        ("moons", {"n_samples": True}, r"'n_samples'.*Got True instead"),
        ("moons", {"n_samples": 10.0}, r"'n_samples'.*Got 10.0 instead"),
        (
            "circles",
            {"factor": 1.0},
            r"'factor' parameter of dataset 'circles' must be a float in \[0.0, 1.0\)",
        ),
        ("regression", {"n_features": 2, "n_informative": 3}, r"'n_informative'.*\[1, n_features=2\].*Got 3"),
        ("line", {"n_samples": 1}, r"synthetic:line: too few rows for val_fraction=0.2"),
        ("single_sample", {"val_fraction": 0.2}, r"example:single_sample: too few rows"),
        ("numeric_example", {"n_samples": 3}, r"Valid parameters: none"),
    ],
)
def test_argument_errors(name, kwargs, pattern):
    with pytest.raises(DataError, match=pattern):
        load_dataset(name, **kwargs)


def test_data_error_is_a_value_error():
    with pytest.raises(ValueError, match="Unknown dataset"):
        load_dataset("nope")


def test_numeric_example_can_still_be_split_when_asked():
    data = load_dataset("numeric_example", val_fraction=0.25, seed=0)
    assert (data.n_train, data.n_val) == (3, 1)
    np.testing.assert_array_equal(np.sort(np.concatenate([data.X_train, data.X_val])[:, 0]), [1, 2, 3, 4])
    np.testing.assert_array_equal(
        np.concatenate([data.y_train, data.y_val]), 3 * np.concatenate([data.X_train, data.X_val])[:, 0]
    )


# ----------------------------------------------------------------------------------------------------
# The bundled sets' cache: read with NumPy alone, the same arrays as scikit-learn's loaders


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    from pipeline import datasets

    monkeypatch.setenv("LR_PIPELINE_CACHE", str(tmp_path / "cache"))
    datasets._bundled_arrays.cache_clear()
    yield tmp_path / "cache"
    datasets._bundled_arrays.cache_clear()


@pytest.mark.parametrize("name", ["diabetes", "breast_cancer", "wine", "digits", "iris"])
def test_the_cache_holds_scikit_learns_arrays(empty_cache, name):
    from pipeline import datasets

    bunch = getattr(skdatasets, f"load_{name}")()
    first = datasets._bundled_arrays(name)  # written from scikit-learn
    assert len(list(empty_cache.glob(f"*-{name}.npz"))) == 1
    datasets._bundled_arrays.cache_clear()
    again = datasets._bundled_arrays(name)  # read from the file
    for got in (first, again):
        X, y, features, labels = got
        np.testing.assert_array_equal(X, bunch.data)
        np.testing.assert_array_equal(y, bunch.target)
        assert y.dtype == np.asarray(bunch.target).dtype
        assert features == tuple(str(f) for f in bunch.feature_names)
        names = getattr(bunch, "target_names", None)
        assert labels == (None if names is None else tuple(str(n) for n in names))


def test_a_damaged_cache_file_is_rebuilt(empty_cache):
    from pipeline import datasets

    datasets._bundled_arrays("iris")
    (path,) = empty_cache.glob("*-iris.npz")
    path.write_bytes(path.read_bytes()[:100])  # torn
    datasets._bundled_arrays.cache_clear()
    X, *_ = datasets._bundled_arrays("iris")
    np.testing.assert_array_equal(X, skdatasets.load_iris().data)
    with np.load(path) as rebuilt:
        assert rebuilt["X"].shape == (150, 4)
    assert list(empty_cache.glob("*.tmp")) == []


def test_an_unwritable_cache_only_costs_the_import(tmp_path, monkeypatch):
    from pipeline import datasets

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LR_PIPELINE_CACHE", str(blocker / "cache"))
    datasets._bundled_arrays.cache_clear()
    try:
        X, *_ = datasets._bundled_arrays("wine")
    finally:
        datasets._bundled_arrays.cache_clear()
    assert X.shape == (178, 13)
