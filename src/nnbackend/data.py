"""Mini-batches on the device, a host-side train/test split, and windows of token sequences.

:func:`batches` moves a data set to the backend's device once and then serves shuffled
mini-batches by indexing on the device, so an epoch costs one small host→device transfer (the
permutation) instead of one per batch. The permutation of epoch ``e`` is drawn on the host from
``np.random.default_rng([seed, e])``: a run resumed at epoch ``e`` sees exactly the batches an
uninterrupted run would have seen.

For next-token prediction, :func:`sequence_batches` serves windows of a token sequence at
random offsets (drawn per epoch from ``default_rng([seed, epoch])``, resumable in the same way)
and :func:`sequence_windows` the non-overlapping windows that predict every id of a validation
sequence exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
from array_api_compat import is_array_api_obj
from numpy.typing import NDArray

from ._checks import check_int, dtype_kind, namespace_of
from ._typing import Array
from .backend import Backend, dtype_name, get_backend, to_numpy

__all__ = [
    "Batches",
    "SequenceBatches",
    "SequenceWindows",
    "batches",
    "sequence_batches",
    "sequence_windows",
    "train_test_split",
]


class Batches:
    """A re-iterable of ``(xb, yb)`` mini-batches on one backend; each ``iter()`` is one epoch.

    Build it with :func:`batches`. Every sample appears exactly once per epoch, in batches of
    ``batch_size`` rows (the last one smaller unless ``drop_last``).

    Attributes
    ----------
    X, y : array
        The whole data set on the backend's device (features and targets).
    n_samples : int
        Number of samples ``N``.
    batch_size : int
        Rows per batch ``B``; ``len(self)`` is ``⌈N / B⌉`` (``⌊N / B⌋`` with ``drop_last``).
    backend : Backend
        Where the batches live.
    shuffle, drop_last : bool
        As given to :func:`batches`.
    seed : int
        The shuffle seed (drawn from fresh entropy once when :func:`batches` got ``None``).
    epoch : int
        The epoch the next ``iter()`` serves; :meth:`set_epoch` sets it and each full pass
        advances it by one.
    """

    def __init__(
        self,
        X: Array,
        y: Array,
        *,
        batch_size: int,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        backend: Backend,
    ) -> None:
        self.X = X
        self.y = y
        self.n_samples = int(X.shape[0])
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.backend = backend
        self.epoch = 0
        # Indices in the namespace's index dtype (take() needs an integer array).
        self._index_dtype = dtype_name(backend.index_dtype)

    def __len__(self) -> int:
        if self.drop_last:
            return self.n_samples // self.batch_size
        return math.ceil(self.n_samples / self.batch_size)

    def __repr__(self) -> str:
        return (
            f"Batches(n_samples={self.n_samples}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last}, backend={self.backend!r})"
        )

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` serve epoch ``epoch`` (its shuffle order is fixed by it)."""
        check_int(epoch, what="Batches.set_epoch: epoch")
        self.epoch = epoch

    def permutation(self, epoch: int) -> NDArray[np.int64]:
        """The host order of the samples in epoch ``epoch``: ``default_rng([seed, epoch])``."""
        if not self.shuffle:
            return np.arange(self.n_samples, dtype=np.int64)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_samples)

    def __iter__(self) -> Iterator[tuple[Array, Array]]:
        epoch, size = self.epoch, self.batch_size
        bounds = [(i, min(i + size, self.n_samples)) for i in range(0, len(self) * size, size)]
        if self.shuffle:
            # One transfer of the whole permutation per epoch; batches slice it on the device.
            # (A move to a device copies: copy=False would raise there, as CuPy's asarray does.)
            order = self.backend.asarray(self.permutation(epoch).astype(self._index_dtype))
            xp = self.backend.xp
            for start, stop in bounds:
                idx = order[start:stop]
                yield xp.take(self.X, idx, axis=0), xp.take(self.y, idx, axis=0)
        else:
            for start, stop in bounds:  # the standard wants every axis indexed: hence `...`
                yield self.X[start:stop, ...], self.y[start:stop, ...]
        self.epoch = epoch + 1


def batches(
    X: Any,
    y: Any,
    *,
    batch_size: int,
    shuffle: bool = True,
    seed: int | None = None,
    drop_last: bool = False,
    backend: Any = None,
    dtype: Any = None,
) -> Batches:
    """Mini-batches of ``(X, y)`` on ``backend``, re-iterable once per epoch.

    ``X`` and ``y`` are moved to the backend's device once, here. Each epoch then yields
    ``(X[idx], y[idx])`` for consecutive slices ``idx`` of a permutation π_e of ``0..N-1``
    (the identity when ``shuffle=False``, where batches are views ``X[i:i+B]``, no copies).

    Parameters
    ----------
    X : array_like, shape (N, ...)
        Features: a NumPy array, nested sequence, or an array of any namespace (already on the
        backend's device: no copy). Converted to ``dtype``.
    y : array_like, shape (N, ...)
        Targets. Integer class labels become the backend's ``index_dtype`` (int64; int32 on JAX
        without 64-bit types);
        floating (one-hot, regression) and bool targets become ``dtype``.
    batch_size : int
        Rows per batch ``B`` (positive).
    shuffle : bool
        Draw a new order every epoch: π_e = ``np.random.default_rng([seed, e]).permutation(N)``.
    seed : int, optional
        Shuffle seed (non-negative). ``None`` draws fresh entropy once, here.
    drop_last : bool
        Leave out the last batch when it has fewer than ``B`` rows.
    backend : str, namespace or Backend, optional
        Where the batches live (see :func:`nnbackend.get_backend`; ``None`` is the default).
    dtype : optional
        Floating dtype of the features: ``"float32"`` (default) or ``"float64"``, a NumPy
        dtype, or a dtype of the backend's namespace.

    Returns
    -------
    Batches
        ``len()`` is the number of batches; ``set_epoch(e)`` selects the epoch to serve next,
        and each full pass advances it by itself.

    Raises
    ------
    ValueError
        ``X`` or ``y`` has no sample axis, their lengths differ, ``batch_size`` is not
        positive, or ``drop_last`` would leave no batch.
    TypeError
        ``batch_size`` or ``seed`` is not an integer, ``dtype`` is not a floating dtype, or
        ``y`` is neither numeric nor bool.

    Examples
    --------
    >>> data = batches(X, y, batch_size=64, seed=0, backend="numpy")
    >>> for epoch in range(10):
    ...     for xb, yb in data:          # a new order every epoch
    ...         ...
    """
    check_int(batch_size, what="batches: batch_size", minimum=1)
    if seed is None:
        seed = int(np.random.SeedSequence().entropy)  # type: ignore[arg-type]
    else:
        check_int(seed, what="batches: seed")
    be = get_backend(backend)
    float_dtype = be.dtype(dtype)
    X = X if is_array_api_obj(X) else np.asarray(X)
    y = y if is_array_api_obj(y) else np.asarray(y)
    n = _check_samples(X, y, where="batches")
    if drop_last and n < batch_size:
        msg = (
            f"batches: drop_last=True with batch_size={batch_size} leaves no batch of the "
            f"{n} samples"
        )
        raise ValueError(msg)
    kind = dtype_kind(y.dtype, namespace_of(y))
    if kind.endswith("integer"):
        target_dtype: Any = be.index_dtype
    elif kind in ("bool", "real floating"):
        target_dtype = float_dtype
    else:
        msg = f"batches: y must hold numbers or bools, got dtype {y.dtype}"
        raise TypeError(msg)
    return Batches(
        be.asarray(X, dtype=float_dtype),
        be.asarray(y, dtype=target_dtype),
        batch_size=int(batch_size),
        shuffle=shuffle,
        seed=int(seed),
        drop_last=drop_last,
        backend=be,
    )


def train_test_split(
    X: Any,
    y: Any,
    *,
    test_size: float | int = 0.25,
    seed: int | None = None,
    stratify: bool = False,
) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any], NDArray[Any]]:
    """Shuffle and split host arrays into train and test parts (scikit-learn's order).

    The test part has ``n_test = ⌈test_size · N⌉`` samples for a float ``test_size`` (the
    count itself for an int); the train part has the other ``N − n_test``.

    Parameters
    ----------
    X : array_like, shape (N, ...)
        Features (arrays of any namespace are copied to the host).
    y : array_like, shape (N, ...)
        Targets; integer class labels of shape ``(N,)`` when ``stratify``.
    test_size : float or int
        Fraction in (0, 1) or a count in [1, N − 1].
    seed : int, optional
        Seed of the NumPy generator that draws the split.
    stratify : bool
        Keep each class's share: class ``c`` with ``N_c`` samples contributes
        ``N_c · n_test / N`` test samples, rounded (largest remainders) so the counts add up
        to ``n_test``. Every class needs at least two samples.

    Returns
    -------
    X_train, X_test, y_train, y_test : numpy.ndarray
        New arrays (the inputs are not modified), each part in random order.

    Raises
    ------
    ValueError
        Lengths differ, ``test_size`` leaves either part empty, or (with ``stratify``) ``y``
        is not 1-D integer labels or a class has fewer than two samples.
    """
    X_host = to_numpy(X)
    y_host = to_numpy(y)
    n = _check_samples(X_host, y_host, where="train_test_split")
    n_test = _test_count(test_size, n)
    rng = np.random.default_rng(seed)
    if stratify:
        test = _stratified_test_indices(y_host, n_test, rng)
        mask = np.ones(n, dtype=bool)
        mask[test] = False
        train = rng.permutation(np.flatnonzero(mask))
        test = rng.permutation(test)
    else:
        order = rng.permutation(n)
        test, train = order[:n_test], order[n_test:]
    return X_host[train], X_host[test], y_host[train], y_host[test]


def _test_count(test_size: float | int, n: int) -> int:
    """Number of test samples from a fraction or a count; both parts must be non-empty."""
    if isinstance(test_size, bool) or not isinstance(test_size, int | float | np.number):
        msg = f"train_test_split: test_size must be a float in (0, 1) or an int, got {test_size!r}"
        raise TypeError(msg)
    if isinstance(test_size, int | np.integer):
        n_test = int(test_size)
        if not 1 <= n_test <= n - 1:
            msg = (
                f"train_test_split: test_size={n_test} must lie in [1, {n - 1}] "
                f"for {n} samples"
            )
            raise ValueError(msg)
        return n_test
    if not 0.0 < float(test_size) < 1.0:
        msg = f"train_test_split: test_size must lie strictly between 0 and 1, got {test_size}"
        raise ValueError(msg)
    n_test = math.ceil(float(test_size) * n)
    if n_test >= n:
        msg = f"train_test_split: test_size={test_size} of {n} samples leaves no training sample"
        raise ValueError(msg)
    return n_test


def _stratified_test_indices(
    y: NDArray[Any], n_test: int, rng: np.random.Generator
) -> NDArray[np.int64]:
    """Test indices holding each class's share of ``n_test`` (largest-remainder rounding)."""
    if y.ndim != 1 or y.dtype.kind not in "iub":
        msg = (
            "train_test_split: stratify=True needs integer class labels of shape (N,), "
            f"got {y.dtype} of shape {y.shape}"
        )
        raise ValueError(msg)
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        lonely = classes[counts < 2].tolist()
        msg = (
            f"train_test_split: stratify=True needs at least 2 samples of every class; "
            f"class(es) {lonely} have 1"
        )
        raise ValueError(msg)
    ideal = counts * (n_test / len(y))
    take = np.floor(ideal).astype(np.int64)
    extra = n_test - int(take.sum())
    take[np.argsort(-(ideal - take), kind="stable")[:extra]] += 1
    parts = [
        rng.permutation(np.flatnonzero(inverse == k))[:t] for k, t in enumerate(take.tolist())
    ]
    return np.concatenate(parts)


def _check_samples(X: Array, y: Array, *, where: str) -> int:
    """Both arrays have a sample axis of the same length; return that length."""
    for name, a in (("X", X), ("y", y)):
        if len(a.shape) == 0:
            msg = f"{where}: {name} must have a sample axis (shape (N, ...)), got a 0-d array"
            raise ValueError(msg)
    n, n_y = int(X.shape[0]), int(y.shape[0])
    if n != n_y:
        msg = (
            f"{where}: X and y must hold the same number of samples, got X of shape "
            f"{tuple(X.shape)} and y of shape {tuple(y.shape)}"
        )
        raise ValueError(msg)
    if n == 0:
        msg = f"{where}: X and y hold no samples (shapes {tuple(X.shape)}, {tuple(y.shape)})"
        raise ValueError(msg)
    return n



# ------------------------------------------------------------------------------- sequences


class SequenceBatches:
    """Random windows of one token sequence, re-iterable once per epoch (build it with
    :func:`sequence_batches`).

    Each batch is ``(x, y)`` of shape (B, T): B windows of T + 1 consecutive ids at random
    offsets o, ``x = ids[o : o + T]`` and ``y = ids[o + 1 : o + T + 1]`` (the next id of each
    position). Epoch e's offsets are drawn on the host from ``np.random.default_rng([seed,
    e])``, so a run resumed at epoch e sees the batches an uninterrupted one would.

    Attributes
    ----------
    ids : array
        The whole sequence on the backend's device (its index dtype).
    context, batch_size, steps : int
        T, B, and the batches per epoch (``len(self)``).
    seed, epoch : int
        The offsets' seed; the epoch the next ``iter()`` serves (each full pass advances it).
    backend : Backend
    """

    def __init__(self, ids: Array, *, context: int, batch_size: int, steps: int, seed: int,
                 backend: Backend) -> None:
        self.ids = ids
        self.n_tokens = int(ids.shape[0])
        self.context = context
        self.batch_size = batch_size
        self.steps = steps
        self.seed = seed
        self.backend = backend
        self.epoch = 0
        xp = backend.xp
        # the T + 1 positions of a window, on the device once
        self._span = xp.arange(context + 1, dtype=backend.index_dtype, device=backend.device)

    def __len__(self) -> int:
        return self.steps

    def __repr__(self) -> str:
        return (f"SequenceBatches(n_tokens={self.n_tokens}, context={self.context}, "
                f"batch_size={self.batch_size}, steps={self.steps}, backend={self.backend!r})")

    def set_epoch(self, epoch: int) -> None:
        """Make the next ``iter()`` serve epoch ``epoch`` (its offsets are fixed by it)."""
        check_int(epoch, what="SequenceBatches.set_epoch: epoch")
        self.epoch = epoch

    def offsets(self, epoch: int) -> NDArray[np.int64]:
        """Epoch ``epoch``'s window starts, (steps, B), uniform in 0..N−T−1."""
        rng = np.random.default_rng([self.seed, epoch])
        return rng.integers(0, self.n_tokens - self.context, size=(self.steps, self.batch_size),
                            dtype=np.int64)

    def __iter__(self) -> Iterator[tuple[Array, Array]]:
        epoch, xp, T = self.epoch, self.backend.xp, self.context
        index_dtype = dtype_name(self.backend.index_dtype)
        # One transfer per epoch: every offset; the windows are gathered on the device.
        starts = self.backend.asarray(self.offsets(epoch).astype(index_dtype))
        for step in range(self.steps):
            where = xp.reshape(starts[step, :][:, None] + self._span[None, :], (-1,))
            window = xp.reshape(xp.take(self.ids, where, axis=0), (self.batch_size, T + 1))
            yield window[:, :T], window[:, 1:]
        self.epoch = epoch + 1


def sequence_batches(
    ids: Any,
    *,
    context: int,
    batch_size: int,
    steps_per_epoch: int | None = None,
    seed: int | None = None,
    backend: Any = None,
) -> SequenceBatches:
    """Batches of random windows of a token sequence, for next-token prediction.

    The sequence moves to the backend's device once, here; each batch then gathers B windows
    of T + 1 ids there, at offsets drawn per epoch from ``default_rng([seed, epoch])``, and
    yields inputs ``x`` (B, T) and targets ``y`` (B, T), ``y[b, t] = x[b, t + 1]`` (the id after
    ``x[b, t]``).

    Parameters
    ----------
    ids : array_like of int, shape (N,)
        The token ids (host or already on the device), N ≥ T + 1.
    context : int
        T, the window's inputs.
    batch_size : int
        B, windows per batch.
    steps_per_epoch : int, optional
        Batches per epoch; default ``max(1, (N − 1) // (B·T))``: an epoch predicts about as
        many positions as the sequence has.
    seed : int, optional
        The offsets' seed (non-negative); None draws fresh entropy once, here.
    backend : optional
        Where the batches live (see :func:`nnbackend.get_backend`).

    Raises
    ------
    ValueError
        ``ids`` is not 1-D, is shorter than T + 1, or a size is not positive.
    TypeError
        ``ids`` is not integer, or a size or the seed is not an integer.
    """
    check_int(context, what="sequence_batches: context", minimum=1)
    check_int(batch_size, what="sequence_batches: batch_size", minimum=1)
    seed = _seed_or_entropy(seed, "sequence_batches")
    be = get_backend(backend)
    host = _token_ids(ids, "sequence_batches")
    if host.shape[0] < context + 1:
        msg = (f"sequence_batches: {host.shape[0]} ids are too few for windows of context "
               f"{context} + 1")
        raise ValueError(msg)
    if steps_per_epoch is None:
        steps = max(1, (host.shape[0] - 1) // (batch_size * context))
    else:
        steps = check_int(steps_per_epoch, what="sequence_batches: steps_per_epoch", minimum=1)
    return SequenceBatches(be.asarray(host, dtype=be.index_dtype), context=int(context),
                           batch_size=int(batch_size), steps=steps, seed=seed, backend=be)


class SequenceWindows:
    """Non-overlapping windows that predict every target of a sequence once (build it with
    :func:`sequence_windows`): full windows (B, T) in batches, then the last partial window
    (1, r) when the targets do not fill whole windows.

    Attributes
    ----------
    stream : array
        Inputs and targets on the device: ``stream[1:]`` are the targets.
    n_targets : int
        M, the ids predicted (each exactly once).
    context, batch_size : int
    """

    def __init__(self, stream: Array, *, context: int, batch_size: int) -> None:
        self.stream = stream
        self.n_targets = int(stream.shape[0]) - 1
        self.context = context
        self.batch_size = batch_size
        full = self.n_targets // context
        self._bounds = [(i, min(i + batch_size, full)) for i in range(0, full, batch_size)]
        self._rest = self.n_targets - full * context
        xp, T = namespace_of(stream), context
        self._x = xp.reshape(stream[: full * T], (full, T))
        self._y = xp.reshape(stream[1 : full * T + 1], (full, T))

    def __len__(self) -> int:
        return len(self._bounds) + (1 if self._rest else 0)

    def __repr__(self) -> str:
        return (f"SequenceWindows(n_targets={self.n_targets}, context={self.context}, "
                f"batch_size={self.batch_size})")

    def __iter__(self) -> Iterator[tuple[Array, Array]]:
        for start, stop in self._bounds:
            yield self._x[start:stop, :], self._y[start:stop, :]
        if self._rest:
            xp, first = namespace_of(self.stream), self.n_targets - self._rest
            yield (xp.reshape(self.stream[first : self.n_targets], (1, self._rest)),
                   xp.reshape(self.stream[first + 1 :], (1, self._rest)))


def sequence_windows(
    ids: Any,
    *,
    context: int,
    batch_size: int = 64,
    preceding: Any = None,
    backend: Any = None,
) -> SequenceWindows:
    """Windows of T consecutive inputs, side by side, in which every id is predicted once.

    The inputs of window k are ``s[kT : kT + T]`` and its targets ``s[kT + 1 : kT + T + 1]``
    for the stream s = ``preceding + ids`` (``preceding`` is the id just before the sequence,
    e.g. the last training id before a validation split: then every id of ``ids`` is a target;
    without it, ``ids[0]`` is only an input). The last window is shorter when the M targets are
    not a multiple of T; it is served alone, (1, M mod T), after the full ones in batches of
    ``batch_size``. A model evaluated on them predicts each target once, from up to T ids
    before it (the windows start afresh every T positions).

    Parameters
    ----------
    ids : array_like of int, shape (N,)
    context : int
        T.
    batch_size : int
        Full windows per batch.
    preceding : int, optional
        The id before ``ids[0]``.
    backend : optional
        Where the windows live (the ids are moved once, here).
    """
    check_int(context, what="sequence_windows: context", minimum=1)
    check_int(batch_size, what="sequence_windows: batch_size", minimum=1)
    be = get_backend(backend)
    host = _token_ids(ids, "sequence_windows")
    if preceding is not None:
        host = np.concatenate([_token_ids([preceding], "sequence_windows: preceding"), host])
    if host.shape[0] < 2:
        msg = "sequence_windows: nothing to predict: the stream needs 2 ids at least"
        raise ValueError(msg)
    return SequenceWindows(be.asarray(host, dtype=be.index_dtype), context=int(context),
                           batch_size=int(batch_size))


def _token_ids(ids: Any, where: str) -> NDArray[np.int64]:
    """Host int64 ids of shape (N,) (any integer dtype; a device array is copied back)."""
    host = to_numpy(ids) if is_array_api_obj(ids) else np.asarray(ids)
    if host.ndim != 1:
        msg = f"{where}: ids must be 1-D (N,), got shape {host.shape}"
        raise ValueError(msg)
    if host.dtype.kind not in "iu":
        msg = f"{where}: ids must be integers, got dtype {host.dtype}"
        raise TypeError(msg)
    if host.size and host.min() < 0:
        msg = f"{where}: ids must be non-negative, got {host.min()}"
        raise ValueError(msg)
    return host.astype(np.int64, copy=False)


def _seed_or_entropy(seed: int | None, where: str) -> int:
    if seed is None:
        return int(np.random.SeedSequence().entropy)  # type: ignore[arg-type]
    return check_int(seed, what=f"{where}: seed")
