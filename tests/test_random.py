"""nnbackend.random.Generator on every row of the matrix.

- Known answers: the first words of three (seed, stream, counter) states are hard-coded from
  the pure-Python uint32 reference below (written independently of the int32 implementation:
  unsigned arithmetic masked to 32 bits, logical shifts), and every row must give exactly
  them, with the counter on the host or on the device (where it crosses 2³¹ and wraps).
- The int32 wrap-around the hash relies on, checked directly on every row.
- Outputs (uniform float32/float64, Bernoulli masks) equal their formulas applied to the
  reference words; the masks of a seed are the same on every row.
- Statistics, with fixed seeds: binomial keep rates (|k − nq| < 5σ), Kolmogorov–Smirnov
  and χ² uniformity, bit frequencies, correlations across successive draws, streams, forks and
  seeds (|r|·√n < 5).
- State: resumable from ``state()`` and from the array form, JSON round trip, exhaustion.
- No host reads while drawing on the GPU-like device; placement; clear errors.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

import nnbackend as nb
from nnbackend.random import STATE_VERSION, Generator
from nnbackend.testing import count_host_reads

# -- the reference: unsigned 32-bit arithmetic in plain Python -------------------------------

M32, M64, GAMMA = (1 << 32) - 1, (1 << 64) - 1, 0x9E3779B97F4A7C15


def _mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def _xsm(x: int, a: int, m1: int, b: int, m2: int, c: int) -> int:
    x ^= x >> a
    x = (x * m1) & M32
    x ^= x >> b
    x = (x * m2) & M32
    return x ^ (x >> c)


def _mix_a(x: int) -> int:
    return _xsm(x, 16, 0x7FEB352D, 15, 0x846CA68B, 16)


def _mix_b(x: int) -> int:
    return _xsm(x, 15, 0xD168AAAD, 15, 0xAF723597, 15)


def reference_word(seed: int, stream: int, counter: int, index: int, word: int = 0) -> int:
    """word₀ (or word₁) of element ``index`` of draw ``counter``, as an unsigned int."""
    z = _mix64(seed ^ _mix64((stream + GAMMA) & M64))
    w = _mix64((z + (word + 1) * GAMMA) & M64)
    k1 = _mix_a((counter + (w & M32)) & M32)
    k2 = _mix_b((counter + (w >> 32)) & M32)
    return _mix_a(_mix_b((index + k1) & M32) ^ k2)


def reference_words(seed: int, stream: int, counter: int, n: int, word: int = 0) -> np.ndarray:
    return np.array([reference_word(seed, stream, counter, i, word) for i in range(n)],
                    dtype=np.uint64)


KNOWN = {  # (seed, stream, counter): the first 8 words, from reference_word
    (0, 0, 0): [0xD5B89F93, 0xCB40B525, 0x0C95F946, 0x29697EE6,
                0x8723E540, 0x9859F6C1, 0x86CD0EAD, 0xD9D0DA4B],
    (2**64 - 1, 7, 2**31 - 1): [0x4F4CAE9B, 0xA5AD2D60, 0x86113AFD, 0xE4579FA1,
                                0x6BBF753D, 0xAFC61523, 0xFDF7643C, 0xCCD0E612],
    (12345, 2**63, 2**32 - 1): [0x2E8DD3AD, 0xB60F1B69, 0xB5F2AE8E, 0x848A1759,
                                0x19E73FA4, 0x4F585B36, 0x8B7E5AD8, 0xA9919168],
}
KNOWN_WORD1 = [0x8C82E57D, 0x00DA376F, 0x2F42D144, 0x93BDAF83]  # (0, 0, 0), word₁
KNOWN_AFTER_WRAP = [0xD35BCC4F, 0xEC641F77, 0xC3E57E1A, 0xE3312531]  # (2⁶⁴−1, 7, 2³¹)


def _unsigned(case: Any, x: Any) -> np.ndarray:
    """Words read back from the backend as unsigned ints."""
    host = case.backend.to_numpy(x)
    assert host.dtype == np.int32
    return host.astype(np.int64) & M32


def _device_counter(case: Any, gen: Generator) -> Generator:
    """``gen`` with its counter moved into a 0-d int32 array on the case's device."""
    gen.load_state_arrays(gen.state_arrays(backend=case.backend))
    return gen


# -- known answers and the arithmetic under them ----------------------------------------------


def test_reference_gives_the_hard_coded_answers() -> None:
    for (seed, stream, counter), words in KNOWN.items():
        assert list(reference_words(seed, stream, counter, 8)) == words
    assert list(reference_words(0, 0, 0, 4, word=1)) == KNOWN_WORD1
    assert list(reference_words(2**64 - 1, 7, 2**31, 4)) == KNOWN_AFTER_WRAP


@pytest.mark.parametrize("state", list(KNOWN), ids=str)
def test_known_answers_on_every_row(case: Any, state: tuple[int, int, int]) -> None:
    seed, stream, counter = state
    gen = Generator(seed, stream=stream, counter=counter)
    assert list(_unsigned(case, gen.bits(8, backend=case.backend))) == KNOWN[state]
    assert gen.counter == counter + 1


@pytest.mark.parametrize("state", list(KNOWN), ids=str)
def test_known_answers_with_the_counter_on_the_device(
    case: Any, state: tuple[int, int, int]
) -> None:
    seed, stream, counter = state
    gen = _device_counter(case, Generator(seed, stream=stream, counter=counter))
    assert list(_unsigned(case, gen.bits(8, backend=case.backend))) == KNOWN[state]
    assert gen.state()["counter"] == (counter + 1) & M32  # a 0-d int32 wraps at 2³²


def test_device_counter_crosses_the_int32_sign_bit(case: Any) -> None:
    """Counter 2³¹ − 1 → 2³¹ is int32's overflow: the device counter wraps to −2³¹ and the
    draw there equals the reference at 2³¹, as the host counter's does."""
    host = Generator(2**64 - 1, stream=7, counter=2**31 - 1)
    device = _device_counter(case, Generator(2**64 - 1, stream=7, counter=2**31 - 1))
    for gen in (host, device):
        gen.bits(1, backend=case.backend)
        assert list(_unsigned(case, gen.bits(4, backend=case.backend))) == KNOWN_AFTER_WRAP
    assert case.backend.to_numpy(device.counter).item() == -(2**31) + 1
    assert host.state() == device.state()


def test_int32_arithmetic_wraps_on_every_row(case: Any) -> None:
    """What the hash assumes of int32 on each library: ``*`` and ``+`` modulo 2³², ``>>``
    arithmetic (sign-filling), so masking it gives the logical shift."""
    host = np.array([2**31 - 1, -(2**31), -1, 0x12345678, -0x2468ACE0], dtype=np.int32)
    x = case.asarray(host, dtype="int32")
    u = host.astype(np.int64) & M32
    m = 0x846CA68B - 2**32  # a multiplier of the hash, as int32
    assert list(_unsigned(case, x * m)) == [(int(v) * 0x846CA68B) & M32 for v in u]
    assert list(_unsigned(case, x + (2**31 - 1))) == [(int(v) + 2**31 - 1) & M32 for v in u]
    assert list(case.backend.to_numpy(x >> 15)) == [int(v) >> 15 for v in host]
    assert list(_unsigned(case, (x >> 15) & (2**17 - 1))) == [int(v) >> 15 for v in u]
    assert list(_unsigned(case, x ^ m)) == [int(v) ^ 0x846CA68B for v in u]


@pytest.mark.parametrize("shape", [(), (0,), (7,), (2, 3, 4)], ids=str)
def test_shapes_hold_the_words_in_c_order(case: Any, shape: tuple[int, ...]) -> None:
    gen = Generator(0)
    x = gen.bits(shape, backend=case.backend)
    assert tuple(x.shape) == shape
    n = math.prod(shape)
    assert list(_unsigned(case, x).reshape(-1)) == list(reference_words(0, 0, 0, n))


def test_int_shape_and_xp_device_target(case: Any) -> None:
    x = Generator(0).bits(8, xp=case.xp, device=case.backend.device)
    case.check_placement(x, dtype="int32")
    assert list(_unsigned(case, x)) == KNOWN[(0, 0, 0)]


# -- outputs: their formulas on the reference words -------------------------------------------


def test_uniform_float32_is_the_top_24_bits(case: Any) -> None:
    u = Generator(0).uniform((8,), dtype="float32", backend=case.backend)
    case.check_placement(u, dtype="float32")
    expected = np.array(KNOWN[(0, 0, 0)], dtype=np.float64)
    expected = np.floor(expected / 2**8) * 2**-24
    assert np.array_equal(case.backend.to_numpy(u), expected.astype(np.float32))


def test_uniform_float64_has_53_bits_and_rounds_down_to_float32(case: Any) -> None:
    if not case.has_float64:
        with pytest.raises((TypeError, ValueError)):
            Generator(0).uniform((4,), dtype="float64", backend=case.backend)
        return
    u = Generator(0).uniform((4,), dtype="float64", backend=case.backend)
    case.check_placement(u, dtype="float64")
    w0 = np.array(KNOWN[(0, 0, 0)][:4], dtype=np.float64)
    w1 = np.array(KNOWN_WORD1, dtype=np.float64)
    expected = np.floor(w0 / 2) * 2**-31 + np.floor(w1 / 2**10) * 2**-53
    got = case.backend.to_numpy(u)
    assert np.array_equal(got, expected)
    u32 = case.backend.to_numpy(Generator(0).uniform((4,), dtype="float32", backend=case.backend))
    assert np.array_equal(np.floor(got * 2**24) * 2**-24, u32.astype(np.float64))


def test_uniform_range_includes_0_and_excludes_1(case: Any) -> None:
    u = case.backend.to_numpy(Generator(3).uniform((1 << 16,), backend=case.backend))
    assert u.min() >= 0.0
    assert u.max() < 1.0
    assert u.max() > 1.0 - 1e-3


@pytest.mark.parametrize("q", [0.5, 0.9, 0.1, 2**-32, 1 - 2**-32])
def test_mask_is_bits_below_the_threshold(case: Any, q: float) -> None:
    mask = Generator(0).bernoulli_mask((8,), q, backend=case.backend)
    case.check_placement(mask, dtype="bool")
    words = np.array(KNOWN[(0, 0, 0)], dtype=np.float64)
    assert list(case.backend.to_numpy(mask)) == list(words * 2**-32 < q)


def test_masks_of_a_seed_are_the_same_on_every_row(case: Any) -> None:
    """A (2, 3, 5) mask of keep probability 0.7, packed to bits (hard-coded from NumPy)."""
    gen = Generator(2024, stream=3)
    first = gen.bernoulli_mask((2, 3, 5), 0.7, backend=case.backend)
    second = gen.bernoulli_mask((2, 3, 5), 0.7, backend=case.backend)
    packed = [np.packbits(case.backend.to_numpy(m).reshape(-1)).tolist() for m in (first, second)]
    expected = [
        [
            int(b) for b in np.packbits(
                reference_words(2024, 3, c, 30).astype(np.float64) * 2**-32 < 0.7
            )
        ]
        for c in (0, 1)
    ]
    assert packed == expected
    assert packed == [[253, 79, 220, 232], [119, 173, 127, 108]]


@pytest.mark.parametrize("q", [0.0, 1.0])
def test_mask_edge_probabilities_are_exact_and_still_one_draw(case: Any, q: float) -> None:
    gen = Generator(0)
    mask = gen.bernoulli_mask((3, 4), q, backend=case.backend)
    case.check_placement(mask, dtype="bool")
    assert (case.backend.to_numpy(mask) == bool(q)).all()
    assert gen.counter == 1  # later draws do not depend on q
    assert list(_unsigned(case, gen.bits(4, backend=case.backend))) == list(
        reference_words(0, 0, 1, 4)
    )


# -- statistics (fixed seeds: deterministic, thresholds generous) -----------------------------

N_STAT = 100_000


def _ks_uniform(u: np.ndarray) -> float:
    """Kolmogorov–Smirnov statistic of a sample against U(0, 1), computed directly."""
    s = np.sort(u.astype(np.float64))
    n = s.size
    return float(max((np.arange(1, n + 1) / n - s).max(), (s - np.arange(n) / n).max()))


@pytest.mark.parametrize("q", [0.1, 0.5, 0.9, 0.999])
def test_keep_rate_is_binomial(case: Any, q: float) -> None:
    mask = Generator(11).bernoulli_mask((N_STAT,), q, backend=case.backend)
    k = int(case.backend.to_numpy(mask).sum())
    sigma = math.sqrt(N_STAT * q * (1 - q))
    assert abs(k - N_STAT * q) < 5 * sigma, (k, N_STAT * q, sigma)


def test_uniform_passes_ks_and_chi_square(case: Any) -> None:
    u = case.backend.to_numpy(Generator(12).uniform((N_STAT,), backend=case.backend))
    # KS: the asymptotic critical value at α = 0.001 is 1.95/√n
    assert _ks_uniform(u) < 1.95 / math.sqrt(N_STAT)
    bins = 100
    counts = np.bincount(np.floor(u * bins).astype(np.int64), minlength=bins)
    chi2 = float(((counts - N_STAT / bins) ** 2).sum() / (N_STAT / bins))
    df = bins - 1
    assert chi2 < df + 5 * math.sqrt(2 * df), chi2  # χ²(df) ≈ N(df, 2·df)


def test_every_bit_is_fair(case: Any) -> None:
    words = _unsigned(case, Generator(13).bits((N_STAT,), backend=case.backend))
    ones = ((words[:, None] >> np.arange(32)) & 1).sum(axis=0)
    z = (ones - N_STAT / 2) / math.sqrt(N_STAT / 4)
    assert np.abs(z).max() < 5, z


def _corr_z(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation times √n: ~N(0, 1) for independent samples."""
    return float(np.corrcoef(a, b)[0, 1] * math.sqrt(a.size))


def test_draws_streams_forks_and_seeds_are_uncorrelated(case: Any) -> None:
    be = case.backend

    def draw(gen: Generator) -> np.ndarray:
        return be.to_numpy(gen.uniform((N_STAT,), backend=be)).astype(np.float64)

    gen = Generator(0)
    first, second = draw(gen), draw(gen)  # successive counters
    others = {
        "next draw": second,
        "stream 1": draw(Generator(0, stream=1)),
        "fork(0)": draw(Generator(0).fork(0)),
        "fork(1)": draw(Generator(0).fork(1)),
        "seed 1": draw(Generator(1)),
    }
    for name, other in others.items():
        assert abs(_corr_z(first, other)) < 5, name
    assert abs(_corr_z(first[:-1], first[1:])) < 5  # neighbours within one draw


def test_one_element_across_many_draws_is_uniform(case: Any) -> None:
    """The mask of one neuron over training steps: element 0 of 1000 successive draws."""
    gen = Generator(5)
    if case.backend.name in ("jax", "array_api_strict", "torch"):
        gen = _device_counter(case, gen)  # the device path's keys, checked here too
    values = np.array([
        case.backend.to_numpy(gen.uniform((1,), backend=case.backend))[0] for _ in range(1000)
    ])
    assert _ks_uniform(values) < 1.95 / math.sqrt(values.size)
    assert abs(_corr_z(values[:-1], values[1:])) < 5


# -- state ------------------------------------------------------------------------------------


def test_state_resumes_the_stream(case: Any) -> None:
    be = case.backend
    gen = Generator(99, stream=4)
    for _ in range(3):
        gen.uniform((5,), backend=be)
    saved = gen.state()
    assert saved == {"version": STATE_VERSION, "seed": 99, "stream": 4, "counter": 3}
    assert all(type(v) is int for v in saved.values())
    expected = [be.to_numpy(gen.bernoulli_mask((64,), 0.5, backend=be)) for _ in range(2)]
    for resumed in (Generator.from_state(json.loads(json.dumps(saved))), Generator(0)):
        resumed.load_state(saved)
        got = [be.to_numpy(resumed.bernoulli_mask((64,), 0.5, backend=be)) for _ in range(2)]
        assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))


def test_state_arrays_round_trip(case: Any) -> None:
    be = case.backend
    host = Generator(8, counter=41)
    device = Generator(8)
    device.load_state_arrays(host.state_arrays(backend=be))
    counter = device.state_arrays()["counter"]
    case.check_placement(counter, dtype="int32")
    assert counter.shape == ()
    assert device.state_arrays()["counter"] is counter  # no copy when already on the device
    for _ in range(2):
        a, b = host.uniform((16,), backend=be), device.uniform((16,), backend=be)
        assert np.array_equal(be.to_numpy(a), be.to_numpy(b))
    assert device.state() == host.state()
    device.load_state_arrays({"counter": 7})  # a host int goes back to the host path
    assert device.counter == 7


def test_no_host_reads_while_drawing(case: Any) -> None:
    be = case.backend
    for gen in (Generator(1), _device_counter(case, Generator(1))):
        with count_host_reads() as reads:
            gen.bits((4, 8), backend=be)
            gen.uniform((4, 8), dtype=case.dtype_name, backend=be)
            gen.bernoulli_mask((4, 8), 0.8, backend=be)
            gen.state_arrays()
            repr(gen)
        assert reads.count == 0, reads


def test_exhausted_stream_refuses_to_repeat(case: Any) -> None:
    gen = Generator(0, counter=2**32 - 1)
    gen.bits(1, backend=case.backend)
    with pytest.raises(OverflowError, match="exhausted"):
        gen.bits(1, backend=case.backend)


def test_fork_is_deterministic_and_leaves_the_parent_alone() -> None:
    parent = Generator(3, counter=5)
    a, b = parent.fork(1), parent.fork(1)
    assert a.stream == b.stream != parent.stream
    assert a.counter == 0 and parent.counter == 5
    assert len({parent.fork(k).stream for k in range(100)}) == 100
    assert a.seed == parent.seed


def test_seed_none_is_recorded() -> None:
    gen = Generator()
    again = Generator.from_state(gen.state())
    be = nb.get_backend("numpy")
    assert np.array_equal(gen.bits(4, backend=be), again.bits(4, backend=be))


# -- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"seed": -1}, ValueError, "seed must be in"),
    ({"seed": 2**64}, ValueError, "seed must be in"),
    ({"seed": True}, TypeError, "seed must be an int"),
    ({"seed": 1.0}, TypeError, "seed must be an int"),
    ({"seed": 0, "stream": -3}, ValueError, "stream"),
    ({"seed": 0, "counter": 2**32}, ValueError, "counter"),
])
def test_bad_configuration(kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        Generator(**kwargs)


def test_bad_draw_arguments() -> None:
    be = nb.get_backend("numpy")
    gen = Generator(0)
    with pytest.raises(ValueError, match="keep_prob must lie in"):
        gen.bernoulli_mask(3, 1.5, backend=be)
    with pytest.raises(ValueError, match="keep_prob must lie in"):
        gen.bernoulli_mask(3, float("nan"), backend=be)
    with pytest.raises(TypeError, match="keep_prob"):
        gen.bernoulli_mask(3, True, backend=be)
    with pytest.raises(ValueError, match="non-negative"):
        gen.bits((2, -1), backend=be)
    with pytest.raises(TypeError, match="shape"):
        gen.bits(2.5, backend=be)
    with pytest.raises(ValueError, match="at most 2\\*\\*31"):
        gen.bits((2**16, 2**16), backend=be)
    with pytest.raises(TypeError, match="not both"):
        gen.bits(2, backend=be, xp=be.xp)
    with pytest.raises(TypeError, match="float32 or float64"):
        gen.uniform(2, dtype="int32", backend=be)
    assert gen.counter == 0  # refused draws consume nothing


def test_bad_states() -> None:
    good = Generator(1).state()
    with pytest.raises(KeyError, match="missing \\['counter'\\]"):
        Generator.from_state({k: v for k, v in good.items() if k != "counter"})
    with pytest.raises(ValueError, match="version"):
        Generator.from_state({**good, "version": 99})
    with pytest.raises(TypeError, match="mapping"):
        Generator.from_state([1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="0-d int32"):
        Generator(0).load_state_arrays({"counter": np.zeros((2,), dtype=np.int32)})
    with pytest.raises(ValueError, match="0-d int32"):
        Generator(0).load_state_arrays({"counter": np.zeros((), dtype=np.int64)})
    with pytest.raises(KeyError, match="counter"):
        Generator(0).load_state_arrays({})


# -- compiled steps ---------------------------------------------------------------------------


def test_jax_jit_takes_the_counter_as_an_input(case: Any) -> None:
    """A jitted step with the counter as a traced 0-d array: traced once, and its masks are the
    eager ones for every counter (nothing frozen into the compiled function)."""
    if case.backend.name != "jax":
        pytest.skip("jax.jit is JAX's")
    import jax

    gen = Generator(21, stream=2)
    traces = []

    def step(counter: Any) -> tuple[Any, Any]:
        traces.append(1)
        gen.load_state_arrays({"counter": counter})
        mask = gen.bernoulli_mask((6, 5), 0.6, xp=case.xp, device=case.backend.device)
        return mask, gen.state_arrays()["counter"]

    jitted = jax.jit(step)
    counter = Generator(21, stream=2).state_arrays(backend=case.backend)["counter"]
    eager = Generator(21, stream=2)
    for _ in range(3):
        mask, counter = jitted(counter)
        expected = eager.bernoulli_mask((6, 5), 0.6, backend=case.backend)
        assert np.array_equal(np.asarray(mask), np.asarray(expected))
    assert len(traces) == 1
    assert int(counter) == 3
