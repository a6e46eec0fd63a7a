"""Small data sets on the host: scikit-learn's digits, synthetic generators, MNIST-style IDX files.

Everything here returns NumPy arrays: features float32, class labels int64. Move them to a
backend with :func:`nnbackend.data.batches` (or ``backend.asarray``).
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import zlib
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import NDArray

from ._checks import check_int, check_nonnegative

__all__ = [
    "IDXFormatError",
    "load_digits",
    "load_idx",
    "load_idx_dataset",
    "load_idx_header",
    "make_blobs",
    "make_regression",
    "make_spirals",
]

Float32Array = NDArray[np.float32]
Int64Array = NDArray[np.int64]

_IDX_TYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


class IDXFormatError(ValueError):
    """A file is not a well-formed IDX file; the message names the file and what is wrong."""


# ------------------------------------------------------------------------------------ digits


def load_digits() -> tuple[Float32Array, Int64Array]:
    """scikit-learn's bundled 8×8 handwritten digits, pixels scaled to [0, 1].

    Returns
    -------
    X : numpy.ndarray of float32, shape (1797, 64)
        Pixel intensities ``v / 16`` (the raw values are integers 0..16).
    y : numpy.ndarray of int64, shape (1797,)
        The digit, 0..9.

    Raises
    ------
    ImportError
        scikit-learn is not installed (``pip install "nnbackend[datasets]"``).
    """
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as exc:
        msg = f'load_digits needs scikit-learn ({exc}); pip install "nnbackend[datasets]"'
        raise ImportError(msg) from exc
    X, y = sklearn_load_digits(return_X_y=True)
    return (np.asarray(X, dtype=np.float64) / 16.0).astype(np.float32), y.astype(np.int64)


# ------------------------------------------------------------------------------------ synthetic


def make_blobs(
    n_samples: int,
    n_features: int = 2,
    centers: int = 3,
    *,
    cluster_std: float = 1.0,
    seed: int | None = None,
) -> tuple[Float32Array, Int64Array]:
    """Isotropic Gaussian clusters around centers drawn uniformly in the box [−10, 10]^d.

    Sample ``i`` of class ``k`` is ``x_i = c_k + σ·ε_i`` with ``c_k ~ U([−10, 10]^d)`` and
    ``ε_i ~ N(0, I_d)``. The classes are as balanced as ``n_samples`` allows (sizes differ by
    at most one) and the samples are shuffled.

    Parameters
    ----------
    n_samples : int
        Total number of samples ``N``.
    n_features : int
        Dimension ``d``.
    centers : int
        Number of clusters (classes) ``K``.
    cluster_std : float
        Standard deviation ``σ`` of every cluster (>= 0).
    seed : int, optional
        Seed of the NumPy generator.

    Returns
    -------
    X : numpy.ndarray of float32, shape (N, d)
    y : numpy.ndarray of int64, shape (N,)
        The cluster of each sample, 0..K-1.
    """
    check_int(n_samples, what="make_blobs: n_samples", minimum=1)
    check_int(n_features, what="make_blobs: n_features", minimum=1)
    check_int(centers, what="make_blobs: centers", minimum=1)
    check_nonnegative(cluster_std, caller="make_blobs", name="cluster_std")
    rng = np.random.default_rng(seed)
    means = rng.uniform(-10.0, 10.0, size=(centers, n_features))
    y = rng.permutation(_balanced_labels(n_samples, centers))
    X = means[y] + cluster_std * rng.standard_normal((n_samples, n_features))
    return X.astype(np.float32), y


def make_spirals(
    n_samples: int,
    n_classes: int = 3,
    *,
    noise: float = 0.2,
    seed: int | None = None,
) -> tuple[Float32Array, Int64Array]:
    """Interleaved spiral arms in the plane, one per class (the CS231n toy problem).

    Arm ``k`` with ``m`` points has radii ``r_j = j / (m − 1)`` and angles
    ``t_j = 4k + 4·r_j + noise·ε_j`` (``ε_j ~ N(0, 1)``); its points are
    ``(r_j sin t_j, r_j cos t_j)``. Arms are as balanced as ``n_samples`` allows; the samples
    are shuffled.

    Parameters
    ----------
    n_samples : int
        Total number of samples ``N``.
    n_classes : int
        Number of arms (classes) ``K``.
    noise : float
        Standard deviation of the angular noise (>= 0).
    seed : int, optional
        Seed of the NumPy generator.

    Returns
    -------
    X : numpy.ndarray of float32, shape (N, 2)
        Points in the unit disc.
    y : numpy.ndarray of int64, shape (N,)
        The arm of each point, 0..K-1.
    """
    check_int(n_samples, what="make_spirals: n_samples", minimum=1)
    check_int(n_classes, what="make_spirals: n_classes", minimum=1)
    check_nonnegative(noise, caller="make_spirals", name="noise")
    rng = np.random.default_rng(seed)
    y = _balanced_labels(n_samples, n_classes)
    radius = np.empty(n_samples)
    for k in range(n_classes):
        arm = y == k
        radius[arm] = np.linspace(0.0, 1.0, int(arm.sum()))
    angle = 4.0 * y + 4.0 * radius + noise * rng.standard_normal(n_samples)
    X = np.stack([radius * np.sin(angle), radius * np.cos(angle)], axis=1)
    order = rng.permutation(n_samples)
    return X[order].astype(np.float32), y[order]


@overload
def make_regression(
    n_samples: int, n_features: int, *, n_targets: int = ..., noise: float = ...,
    seed: int | None = ..., coef: Literal[False] = ...,
) -> tuple[Float32Array, Float32Array]: ...


@overload
def make_regression(
    n_samples: int, n_features: int, *, n_targets: int = ..., noise: float = ...,
    seed: int | None = ..., coef: Literal[True],
) -> tuple[Float32Array, Float32Array, Float32Array]: ...


def make_regression(
    n_samples: int,
    n_features: int,
    *,
    n_targets: int = 1,
    noise: float = 0.0,
    seed: int | None = None,
    coef: bool = False,
) -> tuple[Float32Array, Float32Array] | tuple[Float32Array, Float32Array, Float32Array]:
    """A random linear regression problem ``y = X W + noise·ε``.

    ``X ~ N(0, 1)`` of shape (N, d), ``W ~ N(0, 1)`` of shape (d, T), ``ε ~ N(0, 1)`` of
    shape (N, T); ``y`` is computed in float64 and then rounded to float32.

    Parameters
    ----------
    n_samples, n_features, n_targets : int
        ``N``, ``d`` and ``T``.
    noise : float
        Standard deviation of the additive Gaussian noise (>= 0).
    seed : int, optional
        Seed of the NumPy generator.
    coef : bool
        Also return the true coefficients ``W``.

    Returns
    -------
    X : numpy.ndarray of float32, shape (N, d)
    y : numpy.ndarray of float32, shape (N, T)
    W : numpy.ndarray of float32, shape (d, T)
        Only when ``coef=True``.
    """
    check_int(n_samples, what="make_regression: n_samples", minimum=1)
    check_int(n_features, what="make_regression: n_features", minimum=1)
    check_int(n_targets, what="make_regression: n_targets", minimum=1)
    check_nonnegative(noise, caller="make_regression", name="noise")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    W = rng.standard_normal((n_features, n_targets))
    y = X @ W + noise * rng.standard_normal((n_samples, n_targets))
    result = (X.astype(np.float32), y.astype(np.float32))
    return (*result, W.astype(np.float32)) if coef else result


def _balanced_labels(n_samples: int, n_classes: int) -> Int64Array:
    """Labels 0..K-1 in blocks whose sizes differ by at most one (the first get the extra)."""
    sizes = [n_samples // n_classes + (k < n_samples % n_classes) for k in range(n_classes)]
    return np.repeat(np.arange(n_classes, dtype=np.int64), sizes)


def load_idx(path: str | os.PathLike[str]) -> NDArray[Any]:
    """Read an IDX file (the MNIST format), gzip-compressed or not.

    Layout (big-endian): two zero bytes, a type code (``0x08`` uint8, ``0x09`` int8, ``0x0B``
    int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), the number of dimensions
    ``D`` (one byte), ``D`` uint32 sizes, then ``∏ sizes`` values in C order. Compression is
    recognised by the gzip magic bytes, whatever the file is called.

    Parameters
    ----------
    path : str or path-like
        The file.

    Returns
    -------
    numpy.ndarray, shape (sizes...)
        A new, writable array in native byte order with the file's dtype.

    Raises
    ------
    IDXFormatError
        (a ValueError) The file is not well-formed: wrong magic, unknown type code, no
        dimensions, a truncated header or payload, trailing bytes, or corrupt compression.
        The payload size is checked before anything is allocated.
    FileNotFoundError
        The file does not exist.
    """
    raw = Path(path).read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            msg = f"{path}: corrupt gzip data ({exc})"
            raise IDXFormatError(msg) from exc
    dtype, shape, offset = _parse_header(path, raw)
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow, nothing allocated
    actual = len(raw) - offset
    if actual != expected:
        problem = "truncated" if actual < expected else "trailing bytes after the"
        msg = (
            f"{path}: {problem} IDX data: shape {shape} of {dtype.name} needs {expected} "
            f"bytes, the file has {actual} after the header"
        )
        raise IDXFormatError(msg)
    try:
        data = np.frombuffer(raw, dtype=dtype, offset=offset).reshape(shape)
    except ValueError as exc:  # an empty shape whose other sizes NumPy cannot represent
        msg = f"{path}: IDX shape {shape} cannot be represented: {exc}"
        raise IDXFormatError(msg) from exc
    return data.astype(dtype.newbyteorder("="))


def load_idx_header(path: str | os.PathLike[str]) -> tuple[np.dtype[Any], tuple[int, ...]]:
    """The dtype and shape an IDX file declares, from its header alone.

    Reads the ``4 + 4·D`` header bytes (through gzip when the file is compressed) and none of
    the data, so files can be checked against each other before they are loaded.

    Parameters
    ----------
    path : str or path-like
        The file.

    Returns
    -------
    dtype : numpy.dtype
        In native byte order.
    shape : tuple of int

    Raises
    ------
    IDXFormatError
        The header is malformed, as in :func:`load_idx` (the payload is not checked).
    FileNotFoundError
        The file does not exist.
    """
    with open(path, "rb") as file:
        compressed = file.read(2) == _GZIP_MAGIC
        file.seek(0)
        try:
            with gzip.GzipFile(fileobj=file) if compressed else contextlib.nullcontext(file) as f:
                head = f.read(4)
                if len(head) == 4:
                    head += f.read(4 * head[3])
        except (OSError, EOFError, zlib.error) as exc:
            msg = f"{path}: corrupt gzip data ({exc})"
            raise IDXFormatError(msg) from exc
    dtype, shape, _ = _parse_header(path, head)
    return dtype.newbyteorder("="), shape


def _parse_header(
    path: str | os.PathLike[str], raw: bytes
) -> tuple[np.dtype[Any], tuple[int, ...], int]:
    """(dtype, shape, offset of the data) from the start of an IDX file, checked."""
    if len(raw) < 4:
        msg = f"{path}: too short for an IDX header ({len(raw)} bytes, need at least 4)"
        raise IDXFormatError(msg)
    if raw[:2] != b"\x00\x00":
        msg = f"{path}: not an IDX file: the first two bytes must be zero, got {raw[:2]!r}"
        raise IDXFormatError(msg)
    code, ndim = raw[2], raw[3]
    dtype = _IDX_TYPES.get(code)
    if dtype is None:
        known = ", ".join(f"0x{c:02X} ({t.name})" for c, t in _IDX_TYPES.items())
        msg = f"{path}: unknown IDX type code 0x{code:02X}; known: {known}"
        raise IDXFormatError(msg)
    if ndim == 0:
        msg = f"{path}: IDX header declares 0 dimensions"
        raise IDXFormatError(msg)
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        msg = (
            f"{path}: truncated IDX header: {ndim} dimensions need {offset} header bytes, "
            f"the file has {len(raw)}"
        )
        raise IDXFormatError(msg)
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return dtype, shape, offset


def load_idx_dataset(
    images_path: str | os.PathLike[str], labels_path: str | os.PathLike[str]
) -> tuple[Float32Array, Int64Array]:
    """Load an MNIST-style pair of IDX files as flat features and integer labels.

    Parameters
    ----------
    images_path : str or path-like
        IDX file of shape (N, rows, cols).
    labels_path : str or path-like
        IDX file of integer labels of shape (N,).

    Returns
    -------
    X : numpy.ndarray of float32, shape (N, rows·cols)
        Pixels; uint8 images are scaled to [0, 1] (``v / 255``), other types are cast.
    y : numpy.ndarray of int64, shape (N,)

    Raises
    ------
    IDXFormatError
        A file is malformed, the images are not 3-D, the labels not 1-D integers, or their
        counts differ (the message names both files).
    """
    images = load_idx(images_path)
    labels = load_idx(labels_path)
    if images.ndim != 3:
        msg = (
            f"{images_path}: images must have shape (N, rows, cols), got shape {images.shape}"
        )
        raise IDXFormatError(msg)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        msg = (
            f"{labels_path}: labels must be integers of shape (N,), got {labels.dtype} of "
            f"shape {labels.shape}"
        )
        raise IDXFormatError(msg)
    if len(images) != len(labels):
        msg = (
            f"{images_path} holds {len(images)} images but {labels_path} holds "
            f"{len(labels)} labels"
        )
        raise IDXFormatError(msg)
    X = images.reshape(len(images), -1).astype(np.float32)
    if images.dtype == np.uint8:
        X /= np.float32(255.0)
    return X, labels.astype(np.int64)
