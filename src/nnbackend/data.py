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

Shards for data-parallel training
---------------------------------
With ``world_size=N`` and ``rank=r``, :func:`batches` and :func:`sequence_batches` serve rank
r's shard of each global batch: ``batch_size`` is the global batch B; every rank draws the same
permutation (or offsets) from ``(seed, epoch)`` and cuts the same global batches as one process
would, and rank r takes the contiguous rows [⌊r·b/N⌋, ⌊(r+1)·b/N⌋) of a global batch of b rows
(:func:`shard_bounds`). Shard sizes differ by at most one row, and the shards of step k, in
rank order, are exactly the one-process batch of step k; ``world_size=1`` is the one-process
data set, bit for bit. Every rank serves the same number of steps (a rank with one step more
would wait forever in its gradient all-reduce), so:

- ``batch_size < world_size`` is refused (a rank would get an empty shard at every step);
- the last, partial global batch is split like the others when it has at least N rows, and
  left out on every rank when it has fewer (a :class:`DroppedBatchWarning` at construction
  says how many samples per epoch that leaves out: the ``n_samples mod B`` of the last batch,
  different samples each epoch when shuffled), as ``drop_last=True`` leaves out every partial
  batch;
- the seed must be given (``seed=None`` would draw different entropy in every process).

The global sizes b_k (:attr:`Batches.global_batch_sizes`) let the training loop weight each
rank's loss by its share n_r / b_k of the global batch, and :attr:`Batches.samples_per_epoch`
is the number of samples of an epoch over all ranks.
"""

from __future__ import annotations

import math
import warnings
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
    "DroppedBatchWarning",
    "SequenceBatches",
    "SequenceWindows",
    "batches",
    "sequence_batches",
    "sequence_windows",
    "shard_bounds",
    "train_test_split",
]


class DroppedBatchWarning(UserWarning):
    """The last global batch of an epoch has fewer rows than there are ranks, so it is left
    out on every rank (each rank must run the same steps, each with at least one row)."""


def shard_bounds(rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rank ``rank``'s rows [⌊r·b/N⌋, ⌊(r+1)·b/N⌋) of a global batch of b = ``rows`` rows.

    The N ranges are contiguous, in rank order, cover 0..b−1 once, and differ in length by at
    most one (each holds ⌊b/N⌋ or ⌈b/N⌉ rows).
    """
    return rank * rows // world_size, (rank + 1) * rows // world_size


def _check_shard(rank: Any, world_size: Any, batch_size: int, where: str) -> tuple[int, int]:
    """``(rank, world_size)`` as ints, 0 ≤ rank < world_size ≤ batch_size."""
    world_size = check_int(world_size, what=f"{where}: world_size", minimum=1)
    rank = check_int(rank, what=f"{where}: rank")
    if rank >= world_size:
        msg = (f"{where}: rank must lie in [0, {world_size - 1}] for world_size={world_size}, "
               f"got {rank}")
        raise ValueError(msg)
    if batch_size < world_size:
        msg = (
            f"{where}: batch_size={batch_size} is the global batch, split over "
            f"world_size={world_size} ranks: it must be at least {world_size}, or some rank "
            "would have no rows at every step"
        )
        raise ValueError(msg)
    return rank, world_size


class Batches:
    """A re-iterable of ``(xb, yb)`` mini-batches on one backend; each ``iter()`` is one epoch.

    Build it with :func:`batches`. Every sample appears exactly once per epoch, in batches of
    ``batch_size`` rows (the last one smaller unless ``drop_last``). With ``world_size`` N > 1
    the batches are rank ``rank``'s shards of those global batches (see the module docstring):
    rows [⌊r·b_k/N⌋, ⌊(r+1)·b_k/N⌋) of global batch k of b_k rows, with a last global batch
    of fewer than N rows left out on every rank.

    Attributes
    ----------
    X, y : array
        The whole data set on the backend's device (features and targets).
    n_samples : int
        Number of samples ``N``.
    batch_size : int
        Rows per global batch ``B``; ``len(self)`` is ``⌈N / B⌉`` (``⌊N / B⌋`` with
        ``drop_last``, or when the last global batch is smaller than ``world_size``), the same
        on every rank.
    rank, world_size : int
        This process's shard r and the number of shards N (0 and 1: the whole batches).
    global_batch_sizes : tuple of int
        b_k, the rows of global batch k over all ranks (B but for a last partial one).
    samples_per_epoch : int
        Σ_k b_k: the samples one epoch serves over all ranks (N minus the rows left out).
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
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.X = X
        self.y = y
        self.n_samples = int(X.shape[0])
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.backend = backend
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        # Indices in the namespace's index dtype (take() needs an integer array).
        self._index_dtype = dtype_name(backend.index_dtype)
        full, rest = divmod(self.n_samples, batch_size)
        sizes = [batch_size] * full
        if rest and not drop_last:
            if rest >= world_size:
                sizes.append(rest)
            else:  # a shard of it would be empty on some rank: no rank takes it
                warnings.warn(
                    f"batches: the last global batch has {rest} row(s), fewer than the "
                    f"world_size={world_size} ranks; it is left out on every rank, so each "
                    f"epoch serves {self.n_samples - rest} of the {self.n_samples} samples",
                    DroppedBatchWarning, stacklevel=3,
                )
        self.global_batch_sizes: tuple[int, ...] = tuple(sizes)
        self.samples_per_epoch = sum(sizes)
        # This rank's slice of each global batch, as positions in the epoch's order.
        self._bounds: list[tuple[int, int]] = []
        for step, rows in enumerate(sizes):
            lo, hi = shard_bounds(rows, rank, world_size)
            self._bounds.append((step * batch_size + lo, step * batch_size + hi))

    def __len__(self) -> int:
        return len(self.global_batch_sizes)

    def __repr__(self) -> str:
        shard = (f", rank={self.rank}, world_size={self.world_size}"
                 if self.world_size > 1 else "")
        return (
            f"Batches(n_samples={self.n_samples}, batch_size={self.batch_size}, "
            f"shuffle={self.shuffle}, drop_last={self.drop_last}{shard}, "
            f"backend={self.backend!r})"
        )

    def shard_rows(self, step: int, rank: int | None = None) -> tuple[int, int]:
        """Rows [lo, hi) of global batch ``step`` that rank ``rank`` (default: this rank)
        serves, ``(⌊r·b/N⌋, ⌊(r+1)·b/N⌋)`` for its b = ``global_batch_sizes[step]`` rows."""
        step, rank = _check_step_rank(step, rank, self, "Batches.shard_rows")
        return shard_bounds(self.global_batch_sizes[step], rank, self.world_size)

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
        epoch, bounds = self.epoch, self._bounds
        if self.shuffle:
            # One transfer per epoch: this rank's part of the permutation (all of it on one
            # rank), which the batches slice on the device. (A move to a device copies:
            # copy=False would raise there, as CuPy's asarray does.)
            perm = self.permutation(epoch)
            host = np.concatenate([perm[start:stop] for start, stop in bounds])
            order = self.backend.asarray(host.astype(self._index_dtype))
            xp, offset = self.backend.xp, 0
            for start, stop in bounds:
                idx = order[offset : offset + stop - start]
                offset += stop - start
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
    rank: int = 0,
    world_size: int = 1,
) -> Batches:
    """Mini-batches of ``(X, y)`` on ``backend``, re-iterable once per epoch.

    ``X`` and ``y`` are moved to the backend's device once, here. Each epoch then yields
    ``(X[idx], y[idx])`` for consecutive slices ``idx`` of a permutation π_e of ``0..N-1``
    (the identity when ``shuffle=False``, where batches are views ``X[i:i+B]``, no copies).

    With ``world_size`` N > 1, ``batch_size`` is the global batch: rank r yields, at step k,
    rows [⌊r·b_k/N⌋, ⌊(r+1)·b_k/N⌋) of the global batch k of b_k rows that one process would
    yield (the same π_e on every rank), so the shards of a step, in rank order, are that
    batch. A last global batch of fewer than N rows is left out on every rank (with a
    :class:`DroppedBatchWarning`), so every rank runs ``len()`` steps, each with a row at
    least. Without shuffle (validation data) the shards are views of the same global batches.

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
    rank : int
        This process's shard, 0 ≤ rank < ``world_size`` (its data-parallel rank).
    world_size : int
        The number of shards N (ranks), 1 ≤ N ≤ ``batch_size``. Every rank passes the same
        data, ``batch_size``, ``seed`` (an explicit one: entropy would differ between
        processes, so ``seed=None`` with ``shuffle`` is refused when N > 1), ``shuffle`` and
        ``drop_last``.

    Returns
    -------
    Batches
        ``len()`` is the number of batches (steps, equal on every rank); ``set_epoch(e)``
        selects the epoch to serve next, and each full pass advances it by itself.

    Raises
    ------
    ValueError
        ``X`` or ``y`` has no sample axis, their lengths differ, ``batch_size`` is not
        positive or smaller than ``world_size``, ``rank`` is not in [0, world_size − 1],
        or no batch would be left (``drop_last`` with fewer than B samples, or fewer samples
        than ranks), or ``seed`` is None with ``shuffle`` and ``world_size`` > 1.
    TypeError
        ``batch_size``, ``seed``, ``rank`` or ``world_size`` is not an integer, ``dtype`` is
        not a floating dtype, or ``y`` is neither numeric nor bool.

    Warns
    -----
    DroppedBatchWarning
        The last global batch has fewer rows than ranks, so no rank serves it.

    Examples
    --------
    >>> data = batches(X, y, batch_size=64, seed=0, backend="numpy")
    >>> for epoch in range(10):
    ...     for xb, yb in data:          # a new order every epoch
    ...         ...
    >>> shard = batches(X, y, batch_size=64, seed=0, rank=1, world_size=4)  # 16 rows a step
    """
    check_int(batch_size, what="batches: batch_size", minimum=1)
    rank, world_size = _check_shard(rank, world_size, batch_size, "batches")
    if seed is None:
        if shuffle:
            _check_shared_seed(world_size, "batches")
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
    if n < world_size:
        msg = (
            f"batches: the {n} samples are fewer than the world_size={world_size} ranks, so "
            "no global batch gives every rank a row"
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
        rank=rank,
        world_size=world_size,
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


def _check_shared_seed(world_size: int, where: str) -> None:
    """Refuse seed=None on several ranks: each process would draw its own entropy, and shards
    of different permutations overlap and miss samples."""
    if world_size > 1:
        msg = (
            f"{where}: world_size={world_size} needs an explicit seed: every rank must draw "
            "the same order, and fresh entropy differs from process to process"
        )
        raise ValueError(msg)


def _check_step_rank(step: Any, rank: Any, data: Batches | SequenceBatches,
                     where: str) -> tuple[int, int]:
    """``step`` in [0, len(data)) and ``rank`` (None: the data's own) in [0, world_size)."""
    step = check_int(step, what=f"{where}: step")
    if step >= len(data):
        msg = f"{where}: step {step} is out of range for {len(data)} steps per epoch"
        raise IndexError(msg)
    if rank is None:
        return step, data.rank
    rank = check_int(rank, what=f"{where}: rank")
    if rank >= data.world_size:
        msg = (f"{where}: rank must lie in [0, {data.world_size - 1}] for "
               f"world_size={data.world_size}, got {rank}")
        raise ValueError(msg)
    return step, rank


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
    e])``, so a run resumed at epoch e sees the batches an uninterrupted one would. With
    ``world_size`` N > 1, B is the global batch and rank r serves windows
    [⌊r·B/N⌋, ⌊(r+1)·B/N⌋) of each step's B (the same offsets on every rank).

    Attributes
    ----------
    ids : array
        The whole sequence on the backend's device (its index dtype).
    context, batch_size, steps : int
        T, the global B, and the batches per epoch (``len(self)``, the same on every rank).
    rank, world_size : int
        This process's shard r and the number of shards N (0 and 1: the whole batches).
    global_batch_sizes : tuple of int
        B for every step; ``samples_per_epoch`` is steps · B windows over all ranks.
    seed, epoch : int
        The offsets' seed; the epoch the next ``iter()`` serves (each full pass advances it).
    backend : Backend
    """

    def __init__(self, ids: Array, *, context: int, batch_size: int, steps: int, seed: int,
                 backend: Backend, rank: int = 0, world_size: int = 1) -> None:
        self.ids = ids
        self.n_tokens = int(ids.shape[0])
        self.context = context
        self.batch_size = batch_size
        self.steps = steps
        self.seed = seed
        self.backend = backend
        self.rank = rank
        self.world_size = world_size
        self.global_batch_sizes: tuple[int, ...] = (batch_size,) * steps
        self.samples_per_epoch = steps * batch_size
        self._shard = shard_bounds(batch_size, rank, world_size)
        self.epoch = 0
        xp = backend.xp
        # the T + 1 positions of a window, on the device once
        self._span = xp.arange(context + 1, dtype=backend.index_dtype, device=backend.device)

    def __len__(self) -> int:
        return self.steps

    def __repr__(self) -> str:
        shard = (f", rank={self.rank}, world_size={self.world_size}"
                 if self.world_size > 1 else "")
        return (f"SequenceBatches(n_tokens={self.n_tokens}, context={self.context}, "
                f"batch_size={self.batch_size}, steps={self.steps}{shard}, "
                f"backend={self.backend!r})")

    def shard_rows(self, step: int, rank: int | None = None) -> tuple[int, int]:
        """Windows [lo, hi) of step ``step``'s B that rank ``rank`` (default: this rank)
        serves: ``(⌊r·B/N⌋, ⌊(r+1)·B/N⌋)``, the same at every step."""
        step, rank = _check_step_rank(step, rank, self, "SequenceBatches.shard_rows")
        return shard_bounds(self.batch_size, rank, self.world_size)

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
        lo, hi = self._shard
        # One transfer per epoch: this rank's offsets of every step (all of them on one rank);
        # the windows are gathered on the device.
        starts = self.backend.asarray(self.offsets(epoch)[:, lo:hi].astype(index_dtype))
        for step in range(self.steps):
            where = xp.reshape(starts[step, :][:, None] + self._span[None, :], (-1,))
            window = xp.reshape(xp.take(self.ids, where, axis=0), (hi - lo, T + 1))
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
    rank: int = 0,
    world_size: int = 1,
) -> SequenceBatches:
    """Batches of random windows of a token sequence, for next-token prediction.

    The sequence moves to the backend's device once, here; each batch then gathers B windows
    of T + 1 ids there, at offsets drawn per epoch from ``default_rng([seed, epoch])``, and
    yields inputs ``x`` (B, T) and targets ``y`` (B, T), ``y[b, t] = x[b, t + 1]`` (the id after
    ``x[b, t]``). With ``world_size`` N > 1, B is the global batch: every rank draws the same
    offsets and rank r yields windows [⌊r·B/N⌋, ⌊(r+1)·B/N⌋) of each step's B, so the shards
    of a step, in rank order, are the one-process batch, and every rank runs the same steps.

    Parameters
    ----------
    ids : array_like of int, shape (N,)
        The token ids (host or already on the device), N ≥ T + 1.
    context : int
        T, the window's inputs.
    batch_size : int
        B, windows per (global) batch.
    steps_per_epoch : int, optional
        Batches per epoch; default ``max(1, (N − 1) // (B·T))``: an epoch predicts about as
        many positions as the sequence has (B the global batch: the same on every rank).
    seed : int, optional
        The offsets' seed (non-negative); None draws fresh entropy once, here (refused with
        ``world_size`` > 1: every rank must draw the same offsets).
    backend : optional
        Where the batches live (see :func:`nnbackend.get_backend`).
    rank, world_size : int
        This process's shard r and the number of shards N, 0 ≤ r < N ≤ B.

    Raises
    ------
    ValueError
        ``ids`` is not 1-D, is shorter than T + 1, a size is not positive, ``batch_size``
        is smaller than ``world_size``, ``rank`` is not in [0, world_size − 1], or ``seed``
        is None with ``world_size`` > 1.
    TypeError
        ``ids`` is not integer, or a size, the seed, the rank or the world size is not an
        integer.
    """
    check_int(context, what="sequence_batches: context", minimum=1)
    check_int(batch_size, what="sequence_batches: batch_size", minimum=1)
    rank, world_size = _check_shard(rank, world_size, batch_size, "sequence_batches")
    if seed is None:
        _check_shared_seed(world_size, "sequence_batches")
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
                           batch_size=int(batch_size), steps=steps, seed=seed, backend=be,
                           rank=rank, world_size=world_size)


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
