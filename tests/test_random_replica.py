"""Replicas of a Generator's stream (one per data-parallel rank) on every row of the matrix.

- Known answers: replica r's words come from the uint32 reference of test_random with the
  replica folded into the stream key (z ⊕ μ(r·γ)), hard-coded for a few (seed, stream,
  counter, replica), on the host counter and the device counter.
- Replica 0 is the stream without replicas, bit for bit (a one-rank job draws what a single
  process draws); replicas differ from each other and are uncorrelated.
- State: ``state()`` leaves the replica out, ``load_state`` keeps it, ``fork`` passes it on.
- ``set_replicas`` finds the generators of every layer that draws, and a rank's Dropout layer
  draws its replica's masks, the same on every row.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from test_random import (
    GAMMA,
    KNOWN,
    M32,
    M64,
    N_STAT,
    _corr_z,
    _device_counter,
    _mix64,
    _mix_a,
    _mix_b,
    _unsigned,
)

from nnbackend.layers import (
    GRU,
    LSTM,
    RNN,
    Dropout,
    Dropout2d,
    Linear,
    MultiheadAttention,
    Sequential,
)
from nnbackend.random import STATE_VERSION, Generator, generators, set_replicas


def reference_word(seed: int, stream: int, counter: int, index: int, replica: int) -> int:
    """word₀ of element ``index`` of draw ``counter`` of replica ``replica``, unsigned."""
    z = _mix64(seed ^ _mix64((stream + GAMMA) & M64)) ^ _mix64((replica * GAMMA) & M64)
    w = _mix64((z + GAMMA) & M64)
    k1 = _mix_a((counter + (w & M32)) & M32)
    k2 = _mix_b((counter + (w >> 32)) & M32)
    return _mix_a(_mix_b((index + k1) & M32) ^ k2)


def reference_words(seed: int, stream: int, counter: int, n: int, replica: int) -> list[int]:
    return [reference_word(seed, stream, counter, i, replica) for i in range(n)]


KNOWN_REPLICAS = {  # (seed, stream, counter, replica): the first 8 words, from reference_word
    (0, 0, 0, 1): [0x8E7594F9, 0xD5FB62EF, 0xB396A04E, 0xA5990822,
                   0x6A1AC09E, 0x7E5B090A, 0xD3D30E25, 0xD3F34AB6],
    (0, 0, 0, 2): [0x1A3C52D9, 0x7B3BC322, 0x7C5B4517, 0xDC3348AD,
                   0x5211A826, 0x6A412D57, 0xC3B62735, 0x48CB804F],
    (2**64 - 1, 7, 2**31 - 1, 2**32 - 1): [0x99184620, 0x5D82EC3D, 0xA7AD2CF1, 0x84595FA1,
                                           0xC8FCC1B9, 0xD842DF8C, 0xB89B72C1, 0xF90891C2],
    (12345, 2**63, 5, 3): [0xE2FFBEBA, 0xC709F2A5, 0xC418BE0B, 0xEADFF76C,
                           0xEB6A76C5, 0x0E805259, 0x177DC7A1, 0x309AC0DA],
}


def test_reference_gives_the_hard_coded_replica_answers() -> None:
    for (seed, stream, counter, replica), words in KNOWN_REPLICAS.items():
        assert reference_words(seed, stream, counter, 8, replica) == words
    for (seed, stream, counter), words in KNOWN.items():  # replica 0: the plain stream
        assert reference_words(seed, stream, counter, 8, 0) == words


@pytest.mark.parametrize("state", list(KNOWN_REPLICAS), ids=str)
def test_replica_known_answers_on_every_row(case: Any, state: tuple[int, int, int, int]) -> None:
    seed, stream, counter, replica = state
    host = Generator(seed, stream=stream, counter=counter, replica=replica)
    device = _device_counter(case, Generator(seed, stream=stream, counter=counter))
    device.set_replica(replica)
    for gen in (host, device):
        assert gen.replica == replica
        assert list(_unsigned(case, gen.bits(8, backend=case.backend))) == KNOWN_REPLICAS[state]
        assert gen.state()["counter"] == counter + 1


@pytest.mark.parametrize("state", list(KNOWN), ids=str)
def test_replica_0_is_the_stream_itself(case: Any, state: tuple[int, int, int]) -> None:
    seed, stream, counter = state
    explicit = Generator(seed, stream=stream, counter=counter, replica=0)
    back = Generator(seed, stream=stream, counter=counter, replica=5)
    back.set_replica(0)
    for gen in (explicit, back):
        assert list(_unsigned(case, gen.bits(8, backend=case.backend))) == KNOWN[state]
    plain, zero = Generator(seed, stream=stream), Generator(seed, stream=stream, replica=0)
    for _ in range(2):
        a = plain.uniform((16,), dtype=case.dtype_name, backend=case.backend)
        b = zero.uniform((16,), dtype=case.dtype_name, backend=case.backend)
        assert np.array_equal(case.backend.to_numpy(a), case.backend.to_numpy(b))


def test_masks_of_a_replica_are_the_same_on_every_row(case: Any) -> None:
    """(2, 3, 5) masks of keep probability 0.7 for replicas 0..3, packed to bits (hard-coded
    from the reference): each rank draws its own mask, identically on every backend."""
    expected = {0: [253, 79, 220, 232], 1: [219, 174, 189, 216], 2: [127, 122, 94, 52],
                3: [158, 170, 15, 180]}
    for replica, packed in expected.items():
        words = np.array(reference_words(2024, 3, 0, 30, replica), dtype=np.float64)
        assert np.packbits(words * 2**-32 < 0.7).tolist() == packed
        gen = Generator(2024, stream=3, replica=replica)
        mask = gen.bernoulli_mask((2, 3, 5), 0.7, backend=case.backend)
        case.check_placement(mask, dtype="bool")
        assert np.packbits(case.backend.to_numpy(mask).reshape(-1)).tolist() == packed


def test_replicas_are_uncorrelated(case: Any) -> None:
    be = case.backend
    draws = [be.to_numpy(Generator(0, replica=r).uniform((N_STAT,), backend=be))
             .astype(np.float64) for r in range(4)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.array_equal(draws[i], draws[j])
            assert abs(_corr_z(draws[i], draws[j])) < 5, (i, j)
    # neighbouring replicas of neighbouring streams are not shifted copies of each other
    other = be.to_numpy(Generator(0, stream=1, replica=1).uniform((N_STAT,), backend=be))
    assert abs(_corr_z(draws[1], other.astype(np.float64))) < 5


# -- state ------------------------------------------------------------------------------------


def test_state_leaves_the_replica_out_and_load_state_keeps_it(case: Any) -> None:
    be = case.backend
    ranks = [Generator(99, stream=4, replica=r) for r in range(3)]
    for gen in ranks:
        for _ in range(3):
            gen.bernoulli_mask((5,), 0.5, backend=be)
    saved = ranks[0].state()  # rank 0's checkpoint
    assert saved == {"version": STATE_VERSION, "seed": 99, "stream": 4, "counter": 3}
    assert all(gen.state() == saved for gen in ranks)
    expected = [be.to_numpy(gen.bernoulli_mask((64,), 0.5, backend=be)) for gen in ranks]
    for r in range(3):
        resumed = Generator(1, replica=r)  # another seed: load_state replaces it, not the rank
        resumed.load_state(saved)
        assert resumed.replica == r
        assert np.array_equal(be.to_numpy(resumed.bernoulli_mask((64,), 0.5, backend=be)),
                              expected[r])
        rebuilt = Generator.from_state(saved, replica=r)
        assert np.array_equal(be.to_numpy(rebuilt.bernoulli_mask((64,), 0.5, backend=be)),
                              expected[r])
    assert Generator.from_state(saved).replica == 0


def test_set_replica_keeps_the_counter_and_fork_passes_it_on(case: Any) -> None:
    be = case.backend
    gen = Generator(3, counter=5)
    gen.set_replica(2)
    assert gen.counter == 5 and gen.replica == 2
    assert list(_unsigned(case, gen.bits(4, backend=be))) == reference_words(3, 0, 5, 4, 2)
    child = gen.fork(1)
    assert child.replica == 2 and child.stream == Generator(3).fork(1).stream
    assert list(_unsigned(case, child.bits(4, backend=be))) == reference_words(
        3, child.stream, 0, 4, 2)


def test_repr_names_a_nonzero_replica() -> None:
    assert repr(Generator(1)) == "Generator(seed=1, stream=0, counter=0)"
    assert repr(Generator(1, replica=3)) == "Generator(seed=1, stream=0, counter=0, replica=3)"


@pytest.mark.parametrize(("replica", "error"), [(-1, ValueError), (2**32, ValueError),
                                                (True, TypeError), (1.0, TypeError)])
def test_bad_replicas(replica: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="Generator: replica must be"):
        Generator(0, replica=replica)
    gen = Generator(0, replica=4)
    with pytest.raises(error, match="Generator: replica must be"):
        gen.set_replica(replica)
    assert gen.replica == 4


# -- a model's generators -----------------------------------------------------------------------


def _drawing_model() -> Sequential:
    return Sequential(
        Linear(4, 4), Dropout(0.2, seed=1), Dropout2d(0.3, seed=2),
        MultiheadAttention(4, 2, dropout=0.1, seed=3),
        LSTM(4, 4, num_layers=2, dropout=0.1, seed=4), GRU(4, 4, seed=5), RNN(4, 4, seed=6),
    )


def test_set_replicas_sets_every_layer_that_draws() -> None:
    model = _drawing_model()
    found = set_replicas(model, 3)
    assert sorted(gen.seed for gen in found) == [1, 2, 3, 4, 5, 6]
    assert all(gen.replica == 3 for gen in found)
    assert [gen.seed for gen in generators(model)] == [gen.seed for gen in found]
    states = model.extra_state_dict()  # what a checkpoint holds: no replica anywhere
    assert all(set(state) == {"version", "seed", "stream", "counter"}
               for state in states.values())
    model.load_extra_state_dict(_drawing_model().extra_state_dict())
    assert all(gen.replica == 3 for gen in generators(model))
    assert set_replicas(Sequential(Linear(2, 2)), 1) == []
    with pytest.raises(TypeError, match="generators: expected a Module"):
        set_replicas(object(), 1)


def test_generators_held_in_containers_are_found_once() -> None:
    shared = Generator(9)
    layer = Dropout(0.5, seed=1)
    layer.extra_streams = [shared, Generator(10)]
    layer.by_name = {"again": shared}
    assert [gen.seed for gen in generators(Sequential(layer))] == [1, 9, 10]


def test_a_ranks_dropout_draws_its_replicas_masks(case: Any) -> None:
    """Dropout(0.5, seed=7) on rank r keeps exactly [word < 2³¹] of replica r's first draw,
    on every row; rank 0 draws the masks of an untouched layer."""
    x = case.asarray(np.ones((4, 6)))
    masks = []
    for rank in range(3):
        layer = Dropout(0.5, seed=7)
        set_replicas(layer, rank)
        y = case.backend.to_numpy(layer(x))
        keep = np.array(reference_words(7, 0, 0, 24, rank)).reshape(4, 6) < 2**31
        np.testing.assert_array_equal(y, np.where(keep, 2.0, 0.0))
        masks.append(keep)
    single = case.backend.to_numpy(Dropout(0.5, seed=7)(x))
    np.testing.assert_array_equal(single != 0, masks[0])
    assert not np.array_equal(masks[0], masks[1]) and not np.array_equal(masks[1], masks[2])
