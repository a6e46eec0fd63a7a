"""Shards of the global batches for data-parallel training (batches and sequence_batches with
rank and world_size), on every row of the matrix.

The reference is the closed form: epoch e's order π_e = ``default_rng([seed, e]).permutation(N)``
(the identity unshuffled), global batch k = π_e[kB : kB + b_k], rank r's shard its rows
[⌊r·b_k/W⌋, ⌊(r+1)·b_k/W⌋). The shards of a step, in rank order, must also be the
one-process batch of that step, bit for bit.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from conftest import Case

import nnbackend as nb
from nnbackend.data import (
    Batches,
    DroppedBatchWarning,
    SequenceBatches,
    batches,
    sequence_batches,
    shard_bounds,
)


def _ids(n: int, width: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Features whose row i is (i, i + 0.5, ...) and labels i: every sample is identifiable."""
    X = np.arange(n, dtype=np.float64)[:, None] + 0.5 * np.arange(width)
    return X, np.arange(n, dtype=np.int64)


def _epoch(data: Any, case: Case | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for xb, yb in data:
        if case is not None:
            case.check_placement(xb)
        out.append((nb.to_numpy(xb), nb.to_numpy(yb)))
    return out


def _shards(case: Case, n: int, batch_size: int, world: int, **kwargs: Any) -> list[Batches]:
    """Every rank's Batches; expects the DroppedBatchWarning exactly when the last global
    batch is partial and smaller than the world."""
    X, y = _ids(n)
    rest = n % batch_size
    dropped = 0 < rest < world and not kwargs.get("drop_last", False)
    out = []
    for rank in range(world):
        if dropped:
            with pytest.warns(DroppedBatchWarning, match=f"has {rest} row"):
                data = batches(X, y, batch_size=batch_size, rank=rank, world_size=world,
                               backend=case.backend, dtype=case.dtype_name, **kwargs)
        else:
            data = batches(X, y, batch_size=batch_size, rank=rank, world_size=world,
                           backend=case.backend, dtype=case.dtype_name, **kwargs)
        out.append(data)
    return out


# ------------------------------------------------------------------------------------ bounds


def test_shard_bounds_cover_a_batch_once_in_rank_order() -> None:
    for rows in range(1, 40):
        for world in range(1, rows + 1):
            bounds = [shard_bounds(rows, r, world) for r in range(world)]
            assert bounds[0][0] == 0 and bounds[-1][1] == rows
            assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
            sizes = [hi - lo for lo, hi in bounds]
            assert set(sizes) <= {rows // world, math.ceil(rows / world)}
            assert min(sizes) >= 1


# ------------------------------------------------------------------------------------ batches

# (N, B, W): W divides B or not; last batch full, partial ≥ W, partial < W (left out); B = W.
SIZES = [(12, 4, 2), (10, 3, 2), (23, 6, 4), (20, 7, 3), (17, 5, 3), (16, 5, 5), (9, 9, 2),
         (7, 2, 2), (40, 8, 3)]


@pytest.mark.parametrize("shuffle", [True, False])
@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize(("n", "batch_size", "world"), SIZES)
def test_union_of_shards_is_the_one_process_batch(case: Case, n: int, batch_size: int,
                                                  world: int, shuffle: bool,
                                                  drop_last: bool) -> None:
    X, y = _ids(n)
    if drop_last and n < batch_size:
        pytest.skip("no full batch (tested in test_data)")
    kwargs = {"shuffle": shuffle, "seed": 5, "drop_last": drop_last}
    single = batches(X, y, batch_size=batch_size, backend=case.backend, dtype=case.dtype_name,
                     **kwargs)
    shards = _shards(case, n, batch_size, world, **kwargs)
    full, rest = divmod(n, batch_size)
    steps = full + (1 if rest >= world and not drop_last else 0)
    expected_sizes = [batch_size] * full + [rest] * (steps - full)
    assert len(single) == full + (1 if rest and not drop_last else 0)
    for rank, data in enumerate(shards):
        assert (data.rank, data.world_size, data.batch_size) == (rank, world, batch_size)
        assert len(data) == steps  # the same on every rank
        assert list(data.global_batch_sizes) == expected_sizes
        assert data.samples_per_epoch == sum(expected_sizes)
    for epoch in range(2):
        one = _epoch(single)
        per_rank = [_epoch(data, case) for data in shards]
        order = (np.random.default_rng([5, epoch]).permutation(n) if shuffle
                 else np.arange(n))
        for step in range(steps):
            b = expected_sizes[step]
            rows = order[step * batch_size : step * batch_size + b]
            for rank in range(world):
                xb, yb = per_rank[rank][step]
                lo, hi = shard_bounds(b, rank, world)
                assert shards[rank].shard_rows(step) == (lo, hi)
                assert shards[0].shard_rows(step, rank) == (lo, hi)
                np.testing.assert_array_equal(yb, rows[lo:hi])
                np.testing.assert_array_equal(xb, X[rows[lo:hi]].astype(case.dtype_name))
            union_x = np.concatenate([per_rank[r][step][0] for r in range(world)])
            union_y = np.concatenate([per_rank[r][step][1] for r in range(world)])
            np.testing.assert_array_equal(union_x, one[step][0])  # bit for bit
            np.testing.assert_array_equal(union_y, one[step][1])
    assert all(data.epoch == 2 for data in shards)


def test_world_size_1_is_the_one_process_batches(case: Case) -> None:
    X, y = _ids(23)
    plain = batches(X, y, batch_size=5, seed=3, backend=case.backend, dtype=case.dtype_name)
    one = batches(X, y, batch_size=5, seed=3, rank=0, world_size=1, backend=case.backend,
                  dtype=case.dtype_name)
    assert len(one) == len(plain) == 5 and one.global_batch_sizes == (5, 5, 5, 5, 3)
    assert one.samples_per_epoch == 23 and repr(one) == repr(plain)
    for _ in range(2):
        for (xa, ya), (xb, yb) in zip(_epoch(plain), _epoch(one), strict=True):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)


def test_a_resumed_rank_sees_the_shards_of_its_epoch(case: Case) -> None:
    X, y = _ids(30)
    with pytest.warns(DroppedBatchWarning):  # 30 = 4·7 + 2: the last 2 rows are left out
        straight = batches(X, y, batch_size=7, seed=11, rank=1, world_size=3,
                           backend=case.backend)
    epochs = [_epoch(straight) for _ in range(3)]
    with pytest.warns(DroppedBatchWarning):
        resumed = batches(X, y, batch_size=7, seed=11, rank=1, world_size=3,
                          backend=case.backend)
    resumed.set_epoch(2)
    for (xa, ya), (xb, yb) in zip(epochs[2], _epoch(resumed), strict=True):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


def test_small_last_batch_is_left_out_on_every_rank(case: Case) -> None:
    """17 = 3·5 + 2 on 3 ranks: the last 2 rows cannot reach 3 ranks, so every rank runs 3
    steps and an epoch uses 15 samples, a different 2 left out each (shuffled) epoch."""
    shards = _shards(case, 17, 5, 3, seed=4)
    assert [len(data) for data in shards] == [3, 3, 3]
    assert all(data.samples_per_epoch == 15 for data in shards)
    left_out = []
    for epoch in range(3):
        seen = np.concatenate([yb for data in shards for _, yb in _epoch(data)])
        assert len(np.unique(seen)) == len(seen) == 15
        expected = np.random.default_rng([4, epoch]).permutation(17)[15:]
        np.testing.assert_array_equal(np.setdiff1d(np.arange(17), seen), np.sort(expected))
        left_out.append(tuple(np.sort(expected)))
    assert len(set(left_out)) > 1
    with pytest.warns(DroppedBatchWarning, match=r"each epoch serves 15 of the 17 samples"):
        batches(*_ids(17), batch_size=5, seed=0, rank=2, world_size=3, backend=case.backend)


def test_unshuffled_shards_are_views() -> None:
    X = np.arange(20, dtype=np.float32).reshape(10, 2)
    data = batches(X, np.zeros(10, dtype=np.int64), batch_size=4, shuffle=False, rank=1,
                   world_size=2, backend="numpy")
    got = list(data)
    assert all(np.shares_memory(xb, X) for xb, _ in got)
    assert [xb[:, 0].tolist() for xb, _ in got] == [[4.0, 6.0], [12.0, 14.0], [18.0]]


def test_repr_names_the_shard() -> None:
    X, y = _ids(8)
    data = batches(X, y, batch_size=4, seed=0, rank=1, world_size=2, backend="numpy")
    assert "rank=1, world_size=2" in repr(data)
    assert "rank" not in repr(batches(X, y, batch_size=4, seed=0, backend="numpy"))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"batch_size": 2, "world_size": 3}, ValueError,
         r"batches: batch_size=2 is the global batch, split over world_size=3 ranks: it must "
         r"be at least 3"),
        ({"batch_size": 4, "rank": 2, "world_size": 2}, ValueError,
         r"batches: rank must lie in \[0, 1\] for world_size=2, got 2"),
        ({"batch_size": 4, "rank": -1, "world_size": 2}, ValueError,
         r"batches: rank must be a non-negative integer, got -1"),
        ({"batch_size": 4, "rank": 1.0, "world_size": 2}, TypeError,
         r"batches: rank must be a non-negative integer, got 1\.0"),
        ({"batch_size": 4, "world_size": 0}, ValueError,
         r"batches: world_size must be a positive integer, got 0"),
        ({"batch_size": 4, "world_size": True}, TypeError,
         r"batches: world_size must be a positive integer, got True"),
        ({"batch_size": 8, "world_size": 6}, ValueError,
         r"batches: the 5 samples are fewer than the world_size=6 ranks"),
        ({"batch_size": 4, "world_size": 2, "seed": None}, ValueError,
         r"batches: world_size=2 needs an explicit seed: every rank must draw the same order"),
    ],
)
def test_shard_argument_errors(kwargs: dict[str, Any], error: type[Exception],
                               match: str) -> None:
    X, y = _ids(5)
    with pytest.raises(error, match=match):
        batches(X, y, **{"seed": 0, **kwargs})


def test_unshuffled_shards_need_no_seed() -> None:
    X, y = _ids(6)
    data = batches(X, y, batch_size=4, shuffle=False, rank=1, world_size=2, backend="numpy")
    assert [yb.tolist() for _, yb in data] == [[2, 3], [5]]


def test_shard_rows_errors() -> None:
    X, y = _ids(10)
    data = batches(X, y, batch_size=4, seed=0, rank=0, world_size=2, backend="numpy")
    with pytest.raises(IndexError, match=r"Batches.shard_rows: step 3 is out of range for 3"):
        data.shard_rows(3)
    with pytest.raises(ValueError, match=r"Batches.shard_rows: rank must lie in \[0, 1\]"):
        data.shard_rows(0, 2)
    with pytest.raises(TypeError, match=r"Batches.shard_rows: step must be"):
        data.shard_rows(0.5)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------- sequences


@pytest.mark.parametrize(("batch_size", "world"), [(6, 2), (7, 3), (5, 4), (4, 4), (3, 1)])
def test_sequence_shards_are_the_one_process_windows(case: Case, batch_size: int,
                                                     world: int) -> None:
    ids = (np.arange(97) * 7) % 31
    T, steps, seed = 5, 3, 2
    single = sequence_batches(ids, context=T, batch_size=batch_size, steps_per_epoch=steps,
                              seed=seed, backend=case.backend)
    shards = [sequence_batches(ids, context=T, batch_size=batch_size, steps_per_epoch=steps,
                               seed=seed, backend=case.backend, rank=r, world_size=world)
              for r in range(world)]
    for rank, data in enumerate(shards):
        assert isinstance(data, SequenceBatches)
        assert len(data) == steps and (data.rank, data.world_size) == (rank, world)
        assert data.global_batch_sizes == (batch_size,) * steps
        assert data.samples_per_epoch == steps * batch_size
    for epoch in range(2):
        offsets = np.random.default_rng([seed, epoch]).integers(
            0, len(ids) - T, size=(steps, batch_size), dtype=np.int64)
        one = [(nb.to_numpy(x), nb.to_numpy(y)) for x, y in single]
        per_rank = [[(nb.to_numpy(x), nb.to_numpy(y)) for x, y in data] for data in shards]
        for step in range(steps):
            for rank in range(world):
                lo, hi = shard_bounds(batch_size, rank, world)
                assert shards[rank].shard_rows(step) == (lo, hi)
                x, y = per_rank[rank][step]
                windows = np.stack([ids[o : o + T + 1] for o in offsets[step, lo:hi]])
                np.testing.assert_array_equal(x, windows[:, :T])
                np.testing.assert_array_equal(y, windows[:, 1:])
            for part in (0, 1):
                union = np.concatenate([per_rank[r][step][part] for r in range(world)])
                np.testing.assert_array_equal(union, one[step][part])


def test_sequence_shard_placement_and_default_steps(case: Case) -> None:
    ids = np.arange(200) % 13
    data = sequence_batches(ids, context=4, batch_size=8, seed=0, backend=case.backend, rank=2,
                            world_size=3)
    assert len(data) == (200 - 1) // (8 * 4)  # from the global batch: equal on every rank
    x, y = next(iter(data))
    case.check_placement(x, dtype=case.index_dtype_name)
    case.check_placement(y, dtype=case.index_dtype_name)
    assert x.shape == (3, 4) and y.shape == (3, 4)  # rows [⌊2·8/3⌋, 8) = [5, 8)
    assert "rank=2, world_size=3" in repr(data)


def test_sequence_shard_errors() -> None:
    ids = np.arange(50)
    with pytest.raises(ValueError, match=r"sequence_batches: batch_size=2 is the global batch, "
                                         r"split over world_size=4 ranks"):
        sequence_batches(ids, context=4, batch_size=2, seed=0, world_size=4)
    with pytest.raises(ValueError, match=r"sequence_batches: rank must lie in \[0, 3\]"):
        sequence_batches(ids, context=4, batch_size=8, seed=0, rank=4, world_size=4)
    with pytest.raises(TypeError, match=r"sequence_batches: world_size must be a positive"):
        sequence_batches(ids, context=4, batch_size=8, seed=0, world_size=2.0)
    with pytest.raises(ValueError, match=r"sequence_batches: world_size=2 needs an explicit seed"):
        sequence_batches(ids, context=4, batch_size=8, world_size=2)
    data = sequence_batches(ids, context=4, batch_size=8, steps_per_epoch=2, seed=0,
                            world_size=2)
    with pytest.raises(IndexError, match=r"SequenceBatches.shard_rows: step 2 is out of range"):
        data.shard_rows(2)
