"""Mini-batches on the device (coverage, determinism, placement) and the train/test split."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from conftest import Case

import nnbackend as nb
from nnbackend.backend import dtype_name
from nnbackend.data import batches, train_test_split


def _ids(n: int, width: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Features whose row i is (i, i + 0.5, ...) and labels i: every sample is identifiable."""
    X = np.arange(n, dtype=np.float64)[:, None] + 0.5 * np.arange(width)
    return X, np.arange(n, dtype=np.int64)


def _epoch(data: Any) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(nb.to_numpy(xb), nb.to_numpy(yb)) for xb, yb in data]


def _order(epoch: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    return np.concatenate([yb for _, yb in epoch])


# ------------------------------------------------------------------------------------ coverage
# The features are exact in float32, so every row of the matrix must reproduce them bit for bit.


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize(("n", "batch_size"), [(1, 1), (10, 3), (12, 4), (17, 5), (5, 8)])
def test_every_sample_once_per_epoch(case: Case, n: int, batch_size: int, shuffle: bool,
                                     drop_last: bool) -> None:
    X, y = _ids(n)
    if drop_last and n < batch_size:
        with pytest.raises(ValueError, match=f"batch_size={batch_size} leaves no batch of the {n}"):
            batches(X, y, batch_size=batch_size, drop_last=True, backend=case.backend)
        return
    data = batches(X, y, batch_size=batch_size, shuffle=shuffle, seed=1, drop_last=drop_last,
                   backend=case.backend, dtype=case.dtype_name)
    expected_len = n // batch_size if drop_last else math.ceil(n / batch_size)
    assert len(data) == expected_len
    assert data.n_samples == n and data.batch_size == batch_size
    for _ in range(3):
        epoch = _epoch(data)
        assert len(epoch) == expected_len
        sizes = [len(yb) for _, yb in epoch]
        assert sizes[:-1] == [batch_size] * (len(sizes) - 1)
        assert sizes[-1] == (batch_size if drop_last else n - batch_size * (expected_len - 1))
        order = _order(epoch)
        if drop_last:
            assert len(np.unique(order)) == len(order) == expected_len * batch_size
        else:
            np.testing.assert_array_equal(np.sort(order), np.arange(n))
        if not shuffle:
            np.testing.assert_array_equal(order, np.arange(len(order)))
        for xb, yb in epoch:  # features travel with their labels
            np.testing.assert_array_equal(xb, X[yb])


def test_shuffled_order_is_default_rng_of_seed_and_epoch(case: Case) -> None:
    X, y = _ids(23)
    data = batches(X, y, batch_size=5, seed=42, backend=case.backend)
    for epoch in range(3):
        expected = np.random.default_rng([42, epoch]).permutation(23)
        np.testing.assert_array_equal(_order(_epoch(data)), expected)


def test_same_seed_same_batches_and_epochs_differ(case: Case) -> None:
    X, y = _ids(40)
    a = batches(X, y, batch_size=8, seed=3, backend=case.backend)
    b = batches(X, y, batch_size=8, seed=3, backend=case.backend)
    epochs_a = [_order(_epoch(a)) for _ in range(3)]
    epochs_b = [_order(_epoch(b)) for _ in range(3)]
    for ea, eb in zip(epochs_a, epochs_b, strict=True):
        np.testing.assert_array_equal(ea, eb)
    assert not np.array_equal(epochs_a[0], epochs_a[1])
    assert not np.array_equal(epochs_a[1], epochs_a[2])
    other = batches(X, y, batch_size=8, seed=4, backend=case.backend)
    assert not np.array_equal(_order(_epoch(other)), epochs_a[0])


def test_set_epoch_reproduces_a_straight_run(case: Case) -> None:
    """A resumed run (set_epoch(e) on a fresh object) sees the batches of epoch e exactly."""
    X, y = _ids(30)
    straight = batches(X, y, batch_size=7, seed=11, backend=case.backend)
    epochs = [_epoch(straight) for _ in range(4)]
    resumed = batches(X, y, batch_size=7, seed=11, backend=case.backend)
    resumed.set_epoch(2)
    for expected in epochs[2:]:
        got = _epoch(resumed)
        for (xa, ya), (xb, yb) in zip(expected, got, strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    resumed.set_epoch(0)
    np.testing.assert_array_equal(_order(_epoch(resumed)), _order(epochs[0]))


def test_an_abandoned_pass_does_not_advance_the_epoch(case: Case) -> None:
    X, y = _ids(20)
    data = batches(X, y, batch_size=5, seed=0, backend=case.backend)
    first = next(iter(data))
    assert data.epoch == 0
    np.testing.assert_array_equal(nb.to_numpy(next(iter(data))[1]), nb.to_numpy(first[1]))


def test_unseeded_batches_shuffle_per_epoch_and_per_object(case: Case) -> None:
    X, y = _ids(50)
    a = batches(X, y, batch_size=10, backend=case.backend)
    b = batches(X, y, batch_size=10, backend=case.backend)
    first, second = _order(_epoch(a)), _order(_epoch(a))
    assert not np.array_equal(first, second)
    assert not np.array_equal(first, _order(_epoch(b)))
    a.set_epoch(1)  # the entropy is drawn once: epochs stay reproducible within the object
    np.testing.assert_array_equal(_order(_epoch(a)), second)


# ------------------------------------------------------------------------------------ placement


@pytest.mark.parametrize("shuffle", [True, False])
def test_batches_live_on_the_backend(case: Case, shuffle: bool) -> None:
    X, y = _ids(13)
    onehot = np.eye(13)[y]
    X_before, y_before = X.copy(), y.copy()
    labels = batches(X, y.astype(np.uint8), batch_size=4, shuffle=shuffle, seed=0,
                     backend=case.backend, dtype=case.dtype_name)
    targets = batches(X, onehot, batch_size=4, shuffle=shuffle, seed=0, backend=case.backend,
                      dtype=case.dtype)
    assert labels.backend == case.backend
    for data, target_dtype in ((labels, case.index_dtype_name), (targets, case.dtype_name)):
        case.check_placement(data.X)
        case.check_placement(data.y, dtype=target_dtype)
        seen = []
        for xb, yb in data:
            case.check_placement(xb)
            case.check_placement(yb, dtype=target_dtype)
            ids = nb.to_numpy(yb) if target_dtype.startswith("int") else nb.to_numpy(yb).argmax(1)
            np.testing.assert_array_equal(nb.to_numpy(xb), X[ids].astype(case.dtype_name))
            seen.append(ids)
        np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(13))
    np.testing.assert_array_equal(X, X_before)
    np.testing.assert_array_equal(y, y_before)
    assert X.dtype == np.float64


def test_device_arrays_are_used_as_they_are(case: Case) -> None:
    X, y = _ids(9)
    X_dev, y_dev = case.asarray(X), case.backend.asarray(y)
    data = batches(X_dev, y_dev, batch_size=4, shuffle=False, backend=case.backend,
                   dtype=case.dtype_name)
    assert data.X is X_dev and data.y is y_dev
    xb, yb = next(iter(data))
    case.check_placement(xb)
    np.testing.assert_array_equal(nb.to_numpy(yb), [0, 1, 2, 3])


def test_defaults_float32_features_and_index_labels_from_lists(case: Case) -> None:
    data = batches([[0, 1], [2, 3], [4, 5]], [0, 1, 1], batch_size=2, backend=case.backend)
    xb, yb = next(iter(data))
    case.check_placement(xb, dtype="float32")
    case.check_placement(yb, dtype=case.index_dtype_name)
    bools = batches(np.zeros((3, 2)), np.array([True, False, True]), batch_size=3,
                    backend=case.backend, dtype=case.dtype_name)
    case.check_placement(bools.y)


def test_unshuffled_batches_are_views() -> None:
    X = np.arange(12, dtype=np.float32).reshape(6, 2)
    data = batches(X, np.zeros(6, dtype=np.int64), batch_size=4, shuffle=False, backend="numpy")
    assert all(np.shares_memory(xb, X) for xb, _ in data)


def test_images_keep_their_trailing_axes(case: Case) -> None:
    X = np.zeros((10, 1, 4, 4))
    xb, _ = next(iter(batches(X, np.zeros(10, dtype=np.int64), batch_size=3,
                              backend=case.backend)))
    assert xb.shape == (3, 1, 4, 4)


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batch_size": 0}, ValueError, r"batch_size must be a positive integer, got 0"),
        ({"batch_size": -3}, ValueError, r"got -3"),
        ({"batch_size": 2.5}, TypeError, r"batch_size must be a positive integer, got 2\.5"),
        ({"batch_size": True}, TypeError, r"got True"),
        ({"batch_size": 2, "seed": -1}, ValueError, r"seed must be a non-negative integer, got -1"),
        ({"batch_size": 2, "seed": 1.5}, TypeError, r"seed must be a non-negative integer"),
        ({"batch_size": 2, "dtype": "int32"}, TypeError, r"float32 or float64, got 'int32'"),
        ({"batch_size": 2, "backend": "nope"}, ValueError, r"'nope' is not a known backend"),
    ],
)
def test_argument_errors(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    X, y = _ids(5)
    with pytest.raises(error, match=match):
        batches(X, y, **kwargs)


def test_shape_errors_name_the_arrays_and_shapes() -> None:
    X, y = _ids(5)
    with pytest.raises(ValueError, match=r"same number of samples, got X of shape \(5, 3\) "
                                         r"and y of shape \(4,\)"):
        batches(X, y[:4], batch_size=2)
    with pytest.raises(ValueError, match=r"X must have a sample axis"):
        batches(np.float64(1.0), y, batch_size=2)
    with pytest.raises(ValueError, match=r"y must have a sample axis"):
        batches(X, np.int64(1), batch_size=2)
    with pytest.raises(ValueError, match=r"hold no samples"):
        batches(np.zeros((0, 3)), np.zeros(0), batch_size=2)
    with pytest.raises(TypeError, match=r"y must hold numbers or bools, got dtype <U1"):
        batches(X, np.array(list("abcde")), batch_size=2)
    data = batches(X, y, batch_size=2, backend="numpy")
    with pytest.raises(ValueError, match=r"epoch must be a non-negative integer, got -1"):
        data.set_epoch(-1)


# ------------------------------------------------------------------------------------ split


def test_split_sizes_match_scikit_learn() -> None:
    sklearn_split = pytest.importorskip("sklearn.model_selection").train_test_split
    for n, test_size in [(10, 0.25), (7, 0.5), (100, 0.33), (3, 0.2), (50, 7), (2, 1)]:
        X, y = _ids(n)
        ours = train_test_split(X, y, test_size=test_size, seed=0)
        theirs = sklearn_split(X, y, test_size=test_size, random_state=0)
        assert [len(a) for a in ours] == [len(a) for a in theirs]


@pytest.mark.parametrize("stratify", [False, True])
def test_split_is_disjoint_complete_paired_and_deterministic(stratify: bool) -> None:
    X, ids = _ids(40)
    y = ids % 4 if stratify else ids
    X_before = X.copy()
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, seed=5, stratify=stratify)
    assert (len(X_tr), len(X_te)) == (28, 12)
    rows = np.concatenate([X_tr[:, 0], X_te[:, 0]]).astype(np.int64)
    np.testing.assert_array_equal(np.sort(rows), np.arange(40))
    np.testing.assert_array_equal(y_tr, y[X_tr[:, 0].astype(np.int64)])
    np.testing.assert_array_equal(y_te, y[X_te[:, 0].astype(np.int64)])
    again = train_test_split(X, y, test_size=0.3, seed=5, stratify=stratify)
    for a, b in zip((X_tr, X_te, y_tr, y_te), again, strict=True):
        np.testing.assert_array_equal(a, b)
    other = train_test_split(X, y, test_size=0.3, seed=6, stratify=stratify)
    assert not np.array_equal(other[1], X_te)
    np.testing.assert_array_equal(X, X_before)


@pytest.mark.parametrize(("counts", "test_size"), [((50, 30, 20), 0.2), ((7, 5, 3), 0.5),
                                                   ((90, 10), 0.25), ((3, 4, 5, 6), 7)])
def test_stratified_split_keeps_class_proportions(counts: tuple[int, ...],
                                                  test_size: float) -> None:
    y = np.repeat(np.arange(len(counts)), counts)
    X = np.zeros((len(y), 2))
    n = len(y)
    n_test = test_size if isinstance(test_size, int) else math.ceil(test_size * n)
    _, _, y_tr, y_te = train_test_split(X, y, test_size=test_size, seed=0, stratify=True)
    test_counts = np.bincount(y_te, minlength=len(counts))
    assert test_counts.sum() == n_test
    ideal = np.asarray(counts) * n_test / n
    assert np.all(np.abs(test_counts - ideal) < 1), (test_counts, ideal)
    np.testing.assert_array_equal(test_counts + np.bincount(y_tr, minlength=len(counts)), counts)
    assert not np.array_equal(y_te, np.sort(y_te)) or len(set(y_te.tolist())) == 1  # shuffled


@pytest.mark.parametrize(
    ("test_size", "error", "match"),
    [
        (0.0, ValueError, r"strictly between 0 and 1, got 0\.0"),
        (1.0, ValueError, r"strictly between 0 and 1, got 1\.0"),
        (-0.1, ValueError, r"got -0\.1"),
        (0, ValueError, r"test_size=0 must lie in \[1, 9\] for 10 samples"),
        (10, ValueError, r"test_size=10 must lie in \[1, 9\]"),
        (0.95, ValueError, r"test_size=0\.95 of 10 samples leaves no training sample"),
        (True, TypeError, r"got True"),
        ("0.2", TypeError, r"float in \(0, 1\) or an int, got '0\.2'"),
    ],
)
def test_split_test_size_errors(test_size: Any, error: type[Exception], match: str) -> None:
    X, y = _ids(10)
    with pytest.raises(error, match=match):
        train_test_split(X, y, test_size=test_size)


def test_split_input_errors() -> None:
    X, y = _ids(10)
    with pytest.raises(ValueError, match=r"X of shape \(10, 3\) and y of shape \(9,\)"):
        train_test_split(X, y[:9])
    with pytest.raises(ValueError, match=r"integer class labels of shape \(N,\), got float64"):
        train_test_split(X, y.astype(np.float64), stratify=True)
    with pytest.raises(ValueError, match=r"at least 2 samples of every class; class\(es\) \[2\]"):
        train_test_split(X, np.array([0] * 5 + [1] * 4 + [2]), stratify=True)


def test_split_accepts_device_arrays(case: Case) -> None:
    X, y = _ids(8)
    X_tr, X_te, y_tr, y_te = train_test_split(case.asarray(X), case.backend.asarray(y),
                                              test_size=2, seed=0)
    assert all(isinstance(a, np.ndarray) for a in (X_tr, X_te, y_tr, y_te))
    assert dtype_name(X_tr.dtype) == case.dtype_name
    np.testing.assert_array_equal(np.sort(np.concatenate([y_tr, y_te])), np.arange(8))
