"""Random numbers on every backend: a counter-based generator in standard int32 operations.

The Array API has no random numbers. :class:`Generator` draws them with a keyed hash of
``(seed, stream, counter, element index)`` written only in standard integer operations, so the
same seed gives bit-identical draws (dropout masks, uniforms) on NumPy, array-api-strict,
PyTorch, JAX, CuPy and the GPU-like test device, on any device, and its whole state is three
integers.

Why counter-based rather than each library's own generator
----------------------------------------------------------
- *The same draws everywhere.* NumPy's PCG64, PyTorch's Philox/MT19937, CuPy's cuRAND and JAX's
  Threefry give different streams for the same seed, so a model trained with dropout on CuPy
  could not be checked against NumPy, and tests could not compare backends mask for mask.
- *A state that is data.* CuPy's ``RandomState`` has no ``get_state``/``set_state`` (its cuRAND
  state cannot be saved), PyTorch's is an opaque byte tensor per device, JAX's a key array;
  here the state is ``(seed, stream, counter)``: plain integers in a checkpoint, or one 0-d
  int32 array on the device for a compiled step.
- *No host-to-device transfer per step.* Element indices come from ``xp.arange`` on the device;
  the per-draw keys are Python ints folded in as scalar operands (kernel arguments, not copies),
  or 0-d device arrays when the counter lives on the device. Drawing on the host and copying
  (scikit-learn's approach) would move every mask over the bus.
- *Independent streams without coordination.* Any layer can :meth:`Generator.fork` its own
  stream from a key; no global state, no order dependence.
- *One stream per replica of a data-parallel job.* Rank r of a job draws from replica r of the
  same ``(seed, stream)`` (:meth:`Generator.set_replica`, :func:`set_replicas`): independent
  masks on every rank, derived from ``(seed, stream, r, counter)``, and no state to save per
  rank (see *Replicas* below).

The cost is speed: ~25 elementwise int32 operations per element where a native generator runs
one fused kernel (on a GPU, ~25 small kernel launches per draw). Measured for a (256, 1024)
mask on 2 shared CPU cores: NumPy 0.6 ms of arithmetic, 1.3–1.5 ms in all with the page faults
of its two fresh 1 MiB work arrays, against 0.5 ms for NumPy's own ``rng.random(shape,
dtype=float32) < q``; PyTorch CPU ~1 ms against ~1.5 ms for its ``bernoulli_``.

The hash
--------
All arithmetic is modulo 2³². ``A`` and ``B`` are xorshift-multiply bijections of 32-bit words
found by C. Wellons' hash prospector (https://github.com/skeeto/hash-prospector): ``A`` is
``lowbias32`` ``[16 7feb352d 15 846ca68b 16]``, ``B`` the alternative ``[15 d168aaad 15 af723597
15]``, where ``[a m₁ b m₂ c]`` means x ← x ⊕ (x ≫ a); x ← x·m₁; x ← x ⊕ (x ≫ b); x ← x·m₂;
x ← x ⊕ (x ≫ c). μ is SplitMix64's 64-bit finaliser and γ = 0x9e3779b97f4a7c15.

1. Stream key, once per generator, on the host (64-bit Python arithmetic), for replica r::

       z = μ(seed ⊕ μ(stream + γ)) ⊕ μ(r·γ),   w_j = μ(z + j·γ)  (j = 1, 2)
       (b₁, b₂) = (low, high) 32 bits of w₁,   (b₃, b₄) = those of w₂

   μ(0) = 0, so replica 0 has the key of a generator without replicas.

2. Draw keys for counter value c (0 ≤ c < 2³²), on the host or on the device::

       k₁ = A(c + b₁),  k₂ = B(c + b₂)        (word 0)
       k₃ = A(c + b₃),  k₄ = B(c + b₄)        (word 1, float64 only)

3. Element i (its index in C order, 0 ≤ i < 2³¹)::

       word₀[i] = A(B(i + k₁) ⊕ k₂),   word₁[i] = A(B(i + k₃) ⊕ k₄)

Every draw (one call of :meth:`~Generator.bits`, :meth:`~Generator.uniform` or
:meth:`~Generator.bernoulli_mask`, of any shape) consumes one counter value: counting draws
rather than values keeps the element index and the counter separate 32-bit words (no carries),
so a stream holds 2³² draws of up to 2³¹ values each. The two-word key of a draw differs from
every other draw's of the same stream (c ↦ A(c + b₁) is a bijection); two streams share one with
probability ~2⁻⁶⁴. Within one draw the words are distinct (a bijection of i), a sample without
replacement from 2³² values: indistinguishable from independent draws for any test short of
looking for repeats among ≳ 2¹⁶ values.

On int32 (PyTorch's CPU uint32 lacks ``+``, shifts and comparisons; JAX has no 64-bit integers
without x64): words are int32 holding the same bit patterns, ``*`` and ``+`` wrap around modulo
2³² (tested on every backend), and the logical shift x ≫ s is the arithmetic shift masked,
``(x >> s) & (2³²⁻ˢ − 1)``.

Outputs
-------
- :meth:`~Generator.bits`: word₀ as int32 (the uint32 bit pattern; negative values are ≥ 2³¹).
- :meth:`~Generator.uniform`, float32: u = ⌊word₀ / 2⁸⌋ · 2⁻²⁴ ∈ [0, 1 − 2⁻²⁴], every
  multiple of 2⁻²⁴ equally likely (float32's resolution near 1).
- :meth:`~Generator.uniform`, float64: u = ⌊word₀ / 2⌋ · 2⁻³¹ + ⌊word₁ / 2¹⁰⌋ · 2⁻⁵³ ∈
  [0, 1 − 2⁻⁵³], every multiple of 2⁻⁵³ equally likely; both terms and the sum are exact, and
  rounding it down to a multiple of 2⁻²⁴ gives the float32 draw of the same state.
- :meth:`~Generator.bernoulli_mask` (keep probability q): mask = [word₀ < ⌈q · 2³²⌉], i.e.
  [word₀ · 2⁻³² < q]: P(True) = ⌈q · 2³²⌉ / 2³², within 2.4·10⁻¹⁰ of q, exact for
  q = 0, ½, 1 and every multiple of 2⁻³²; the same mask for every dtype of the data.

State
-----
``seed`` and ``stream`` are configuration (host ints, fixed for the generator's life; under a
compiled step they are constants). ``counter`` is the state that changes: a Python int (the
default: fastest eagerly, keys computed on the host) or a 0-d int32 array on the device (keys
computed there, so a jitted or graph-captured step takes it as an input and does not
recompile). :meth:`~Generator.state` / :meth:`~Generator.from_state` /
:meth:`~Generator.load_state` give and take plain ints for checkpoints;
:meth:`~Generator.state_arrays` / :meth:`~Generator.load_state_arrays` the array form. Both
forms draw identical values.

Replicas
--------
A data-parallel job runs one copy of the model per rank, and each copy's dropout must draw
its own masks (the same masks on every rank would drop the same units of every shard: a
different, weaker regulariser than one process on the global batch). The replica index r
(0 ≤ r < 2³², default 0) is folded into the stream key above, so replica r of ``(seed,
stream)`` is a stream of its own, as independent of replica 0 as another stream is, and the
draw at counter c is a function of ``(seed, stream, r, c)`` alone, the same on every backend.
Replica 0 is the stream of a generator without replicas, bit for bit: a one-rank job draws
the masks of single-process training.

The replica is the rank's, not the stream's: :meth:`~Generator.state` leaves it out
(``{version, seed, stream, counter}`` as ever), and :meth:`~Generator.load_state` keeps the
generator's own replica. Every rank advances its counter by the same number of draws per step
(same layers, same steps), so rank 0's checkpoint holds every rank's counter, and loading it on
rank r (after :func:`set_replicas` with r) continues rank r's stream exactly.

Resuming with another world size N' (a checkpoint of N ranks loaded by N' ranks): ranks
0..N'−1 continue from the saved counter with replicas 0..N'−1. The run is reproducible (the
same checkpoint and N' give the same masks), but it is not the run the N ranks would have
continued: the masks of replicas N'..N−1 are no longer drawn (N' < N), or replicas N..N'−1
draw from a stream the N-rank run never used (N' > N), and the data shards differ as well.
Dropout-free models are unaffected (their gradient is Σ n_r g_r / B whatever N is).

Examples
--------
>>> import nnbackend as nb
>>> from nnbackend.random import Generator
>>> gen = Generator(0)
>>> be = nb.get_backend("numpy")
>>> mask = gen.bernoulli_mask((2, 3), 0.5, backend=be)
>>> mask.dtype, mask.shape, gen.counter
(dtype('bool'), (2, 3), 1)
>>> saved = gen.state()
>>> a = gen.uniform((4,), backend=be)
>>> b = Generator.from_state(saved).uniform((4,), backend=be)
>>> bool((a == b).all())
True
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Mapping
from typing import Any

import array_api_compat
import numpy as np

from ._checks import check_probability
from ._libraries import library_of, to_host
from ._typing import Array, Device, Namespace
from .backend import Backend, get_backend

__all__ = ["STATE_VERSION", "Generator", "generators", "set_replicas"]

STATE_VERSION = 1
"""Version of :meth:`Generator.state`'s format (and of the hash it reproduces)."""

_M32 = (1 << 32) - 1
_M64 = (1 << 64) - 1
_INT32_MIN = -(1 << 31)
_GAMMA = 0x9E3779B97F4A7C15  # 2⁶⁴/φ, SplitMix64's increment
_MAX_ELEMENTS = 1 << 31  # element indices are int32 (arange must be exact)


def _int32(value: int) -> int:
    """The int32 whose two's-complement bits are the low 32 bits of ``value``."""
    value &= _M32
    return value - (1 << 32) if value >= 1 << 31 else value


Mixer = tuple[int, int, int, int, int]
_MIX_A: Mixer = (16, _int32(0x7FEB352D), 15, _int32(0x846CA68B), 16)  # lowbias32
_MIX_B: Mixer = (15, _int32(0xD168AAAD), 15, _int32(0xAF723597), 15)
_LOW = {s: (1 << (32 - s)) - 1 for s in range(1, 32)}  # (x >> s) & _LOW[s]: logical shift


def _mix64(z: int) -> int:
    """SplitMix64's finaliser μ (a bijection of 64-bit words), on the host."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def _stream_words(seed: int, stream: int, replica: int = 0) -> tuple[int, int, int, int]:
    """(b₁, b₂, b₃, b₄) of a (seed, stream, replica), as int32 Python ints.

    The replica enters as z ⊕ μ(r·γ): μ(0) = 0 leaves replica 0's words those of the stream
    without replicas, and r ↦ μ(r·γ) is a bijection (γ is odd), so replicas never share a z.
    """
    z = _mix64(seed ^ _mix64((stream + _GAMMA) & _M64)) ^ _mix64((replica * _GAMMA) & _M64)
    w1, w2 = _mix64((z + _GAMMA) & _M64), _mix64((z + 2 * _GAMMA) & _M64)
    return _int32(w1), _int32(w1 >> 32), _int32(w2), _int32(w2 >> 32)


# -- draw keys: on Python ints (host) or on small int32 arrays (device), the same bits ---------


def _add(x: Any, y: int) -> Any:
    return _int32(x + y) if isinstance(x, int) else x + y


def _mul(x: Any, y: int) -> Any:
    return _int32(x * y) if isinstance(x, int) else x * y


def _mix_value(x: Any, mixer: Mixer) -> Any:
    """``mixer`` applied to an int32 Python int or a (1,) int32 array, out of place."""
    a, m1, b, m2, c = mixer
    x = _mul(x ^ ((x >> a) & _LOW[a]), m1)
    x = _mul(x ^ ((x >> b) & _LOW[b]), m2)
    return x ^ ((x >> c) & _LOW[c])


# -- element hashes: in place on a fresh arange where the library allows --------------------

Shift = Callable[[Array, int, Array], Array]


def _shifter(xp: Namespace) -> tuple[Shift, bool]:
    """x ≫ s (arithmetic) into a scratch array, and whether it writes in place.

    Where the library has NumPy-style ``out=`` (NumPy, CuPy, PyTorch, the GPU-like device) the
    shift writes into one scratch buffer reused by all six shifts of a hash, which on NumPy
    saves ~40 % of a large draw (each fresh 1 MiB temporary costs page faults); elsewhere
    ``x >> s``.
    """
    native = library_of(xp).native
    shift = None if native is None else (
        getattr(native, "bitwise_right_shift", None) or getattr(native, "right_shift", None)
    )
    if shift is None:
        return (lambda x, s, scratch: x >> s), False
    native_shift = shift

    def shift_into(x: Array, s: int, scratch: Array) -> Array:
        native_shift(x, s, out=scratch)
        return scratch

    return shift_into, True


def _mix_array(x: Array, scratch: Array, mixer: Mixer, shift: Shift) -> tuple[Array, Array]:
    """``mixer`` applied to a fresh int32 array that this module owns.

    Written with in-place operators: they write in place on NumPy, CuPy, PyTorch and
    array-api-strict, and on JAX (immutable arrays) Python rebinds them to the out-of-place
    result, so the same lines serve every namespace. Returns the new ``(x, scratch)``.
    """
    a, m1, b, m2, c = mixer
    for s, m in ((a, m1), (b, m2), (c, 0)):
        scratch = shift(x, s, scratch)
        scratch &= _LOW[s]
        x ^= scratch
        if m:
            x *= m
    return x, scratch


def _word(
    xp: Namespace, device: Device, n: int, k1: Any, k2: Any, shift: Shift, in_place: bool
) -> Array:
    """A(B(i + k₁) ⊕ k₂) for i = 0, …, n − 1, as a flat int32 array on ``device``."""
    x = xp.arange(n, dtype=xp.int32, device=device)
    scratch = xp.empty_like(x) if in_place else x
    x += k1
    x, scratch = _mix_array(x, scratch, _MIX_B, shift)
    x ^= k2
    x, _ = _mix_array(x, scratch, _MIX_A, shift)
    return x


# -- argument checks --------------------------------------------------------------------------


def _check_int(value: Any, name: str, bits: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        msg = f"Generator: {name} must be an int in [0, 2**{bits}), got {value!r}"
        raise TypeError(msg)
    number = int(value)
    if not 0 <= number < 1 << bits:
        msg = f"Generator: {name} must be in [0, 2**{bits}), got {number}"
        raise ValueError(msg)
    return number


def _shape(shape: Any) -> tuple[tuple[int, ...], int]:
    """The shape as a tuple of ints and its number of elements (at most 2³¹)."""
    dims = (shape,) if isinstance(shape, int | np.integer) else shape
    try:
        dims = tuple(dims)
    except TypeError:
        msg = f"Generator: shape must be an int or a tuple of ints, got {shape!r}"
        raise TypeError(msg) from None
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int | np.integer) or d < 0:
            msg = f"Generator: shape must hold non-negative ints, got {shape!r}"
            raise ValueError(msg)
    dims = tuple(int(d) for d in dims)
    n = math.prod(dims)
    if n > _MAX_ELEMENTS:
        msg = f"Generator: one draw holds at most 2**31 values, shape {dims} has {n}"
        raise ValueError(msg)
    return dims, n


def _target(backend: Any, xp: Namespace | None, device: Device) -> Backend:
    """Where a draw goes: ``xp`` (and ``device``) when given, else ``get_backend(backend)``."""
    if xp is None:
        return get_backend(backend, device=device)
    if backend is not None:
        msg = "Generator: pass either backend= or xp= (with device=), not both"
        raise TypeError(msg)
    return Backend(library_of(xp).name, xp, device)


class Generator:
    """A seeded, resumable stream of random numbers, identical on every backend.

    Parameters
    ----------
    seed : int or None
        0 ≤ seed < 2⁶⁴. ``None`` draws one from the operating system (recorded in
        :meth:`state`, so the run can still be reproduced).
    stream : int
        0 ≤ stream < 2⁶⁴: independent streams of one seed (see also :meth:`fork`).
    counter : int
        Draws already made, 0 ≤ counter < 2³²; each draw consumes one value.
    replica : int
        0 ≤ replica < 2³²: the rank of a data-parallel job whose copy of the stream this is
        (see *Replicas* in the module docstring). Replica 0, the default, is the stream itself.

    Notes
    -----
    See the module docstring for the hash, the output formulas and their resolution. Draws
    take ``backend=`` (a :class:`~nnbackend.Backend` or a request for
    :func:`~nnbackend.get_backend`) or ``xp=`` with ``device=`` (the namespace and device of
    an array: what a layer has at hand). Nothing is read from or copied to the device: a draw
    is ~25 elementwise int32 operations on arrays made there.
    """

    __slots__ = ("_counter", "_replica", "_seed", "_stream", "_words")

    def __init__(
        self, seed: int | None = None, *, stream: int = 0, counter: int = 0, replica: int = 0
    ) -> None:
        self._seed = secrets.randbits(64) if seed is None else _check_int(seed, "seed", 64)
        self._stream = _check_int(stream, "stream", 64)
        self._counter: Any = _check_int(counter, "counter", 32)
        self._replica = _check_int(replica, "replica", 32)
        self._words = _stream_words(self._seed, self._stream, self._replica)

    # -- configuration and state ----------------------------------------------------------------

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def stream(self) -> int:
        return self._stream

    @property
    def replica(self) -> int:
        """The replica (data-parallel rank) whose copy of the stream this generator draws."""
        return self._replica

    def set_replica(self, replica: int) -> None:
        """Draw replica ``replica``'s copy of the stream from now on (0 ≤ replica < 2³²).

        The counter is kept: rank r calls it once, with its rank, before training (or after
        loading rank 0's state, which leaves the replica alone); the draw at counter c is then
        the one of ``(seed, stream, r, c)``.
        """
        self._replica = _check_int(replica, "replica", 32)
        self._words = _stream_words(self._seed, self._stream, self._replica)

    @property
    def counter(self) -> Any:
        """Draws made so far: a Python int, or a 0-d int32 array after
        :meth:`load_state_arrays` (its bits read as unsigned; it wraps after 2³² draws)."""
        return self._counter

    def __repr__(self) -> str:
        counter = self._counter if isinstance(self._counter, int) else "<0-d int32 array>"
        replica = f", replica={self._replica}" if self._replica else ""
        return f"Generator(seed={self._seed}, stream={self._stream}, counter={counter}{replica})"

    def fork(self, key: int) -> Generator:
        """A generator of the same seed on stream μ(stream·γ + key + 1), counter 0.

        Deterministic (the same key gives the same child) and independent of this generator's
        counter, so a model can give layer ``i`` ``gen.fork(i)`` in any order. ``0 ≤ key < 2⁶⁴``.
        The child draws the parent's replica (a rank's fork is that rank's copy of the child).
        """
        key = _check_int(key, "fork key", 64)
        return Generator(self._seed, stream=_mix64((self._stream * _GAMMA + key + 1) & _M64),
                         replica=self._replica)

    def state(self) -> dict[str, int]:
        """``{"version", "seed", "stream", "counter"}`` as plain ints, for a checkpoint.

        The replica is not part of it (it is the rank's, not the stream's): every rank of a
        data-parallel job gives the same state, and rank 0's restores them all. A counter on
        the device is read to the host here (one small read): call it when saving, not inside
        a step.
        """
        counter = self._counter
        if not isinstance(counter, int):
            counter = int(np.asarray(to_host(counter)).reshape(())) & _M32
        return {"version": STATE_VERSION, "seed": self._seed, "stream": self._stream,
                "counter": counter}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], *, replica: int = 0) -> Generator:
        """A generator continuing exactly where the one that gave ``state`` stood, drawing
        replica ``replica``'s copy of the stream (0: the stream itself)."""
        seed, stream, counter = _parse_state(state)
        return cls(seed, stream=stream, counter=counter, replica=replica)

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (as :meth:`state` returns), in place; the generator keeps
        its replica, so each rank loading rank 0's state continues its own copy."""
        seed, stream, counter = _parse_state(state)
        self._seed, self._stream, self._counter = seed, stream, counter
        self._words = _stream_words(seed, stream, self._replica)

    def state_arrays(
        self, *, backend: Any = None, xp: Namespace | None = None, device: Device = None
    ) -> dict[str, Array]:
        """``{"counter": 0-d int32 array}``: the state that changes per draw, as an array.

        A counter already on the device comes back as it is (no copy, no read) when no target
        is given; a Python counter is copied to the target once. ``seed`` and ``stream`` stay
        host ints: they are the generator's configuration, constant under a compiled step.
        """
        counter = self._counter
        if not isinstance(counter, int) and xp is None and backend is None and device is None:
            return {"counter": counter}
        target = _target(backend, xp, device)
        if isinstance(counter, int):
            host = np.asarray(_int32(counter), dtype=np.int32)
            return {"counter": target.asarray(host, dtype="int32", copy=True)}
        return {"counter": target.xp.asarray(counter, device=target.device, copy=True)}

    def load_state_arrays(self, arrays: Mapping[str, Array]) -> None:
        """Take the counter from ``arrays`` (as :meth:`state_arrays` gives): a 0-d int32
        array, kept on its device and advanced there by every draw."""
        if set(arrays) != {"counter"}:
            msg = f"Generator.load_state_arrays: expected the key 'counter', got {sorted(arrays)}"
            raise KeyError(msg)
        counter = arrays["counter"]
        if isinstance(counter, int | np.integer):  # a host int (bools refused by the check)
            self._counter = _check_int(counter, "counter", 32)
            return
        xp = array_api_compat.array_namespace(counter)
        if counter.shape != () or counter.dtype != xp.int32:
            msg = (
                "Generator.load_state_arrays: counter must be a 0-d int32 array, got shape "
                f"{counter.shape} dtype {counter.dtype}"
            )
            raise ValueError(msg)
        self._counter = counter

    # -- draws ----------------------------------------------------------------------------------

    def bits(
        self, shape: Any, *, backend: Any = None, xp: Namespace | None = None,
        device: Device = None,
    ) -> Array:
        """Uniform 32-bit words, as int32 arrays holding their bit patterns.

        Returns word₀ of the module docstring: each of the 2³² patterns equally likely
        (read as unsigned, ``x & 0xFFFFFFFF`` on the host).
        """
        target = _target(backend, xp, device)
        dims, n = _shape(shape)
        c32 = self._advance()
        return target.xp.reshape(self._word(target, n, c32), dims)

    def uniform(
        self, shape: Any, *, dtype: Any = None, backend: Any = None,
        xp: Namespace | None = None, device: Device = None,
    ) -> Array:
        """Uniform floats in [0, 1): multiples of 2⁻²⁴ (float32, the default) or 2⁻⁵³ (float64).

        float32: u = ⌊word₀/2⁸⌋·2⁻²⁴; float64: u = ⌊word₀/2⌋·2⁻³¹ + ⌊word₁/2¹⁰⌋·2⁻⁵³ (exact).
        """
        target = _target(backend, xp, device)
        float_dtype = target.dtype(dtype)
        dims, n = _shape(shape)
        c32 = self._advance()
        spx = target.xp
        w0 = self._word(target, n, c32)
        if float_dtype == spx.float32:
            u = spx.astype(_logical_shift(w0, 8), float_dtype)
            u *= 2.0**-24
        else:
            w1 = self._word(target, n, c32, word=1)
            u = spx.astype(_logical_shift(w0, 1), float_dtype)
            u *= 2.0**-31
            low = spx.astype(_logical_shift(w1, 10), float_dtype)
            low *= 2.0**-53
            u += low
        return spx.reshape(u, dims)

    def bernoulli_mask(
        self, shape: Any, keep_prob: float, *, backend: Any = None,
        xp: Namespace | None = None, device: Device = None,
    ) -> Array:
        """A boolean array, True with probability ``keep_prob``: [word₀ < ⌈q·2³²⌉].

        Exact for q = 0 and 1 (all False, all True), within 2.4·10⁻¹⁰ of q otherwise; one draw
        in every case, so later draws do not depend on q.
        """
        q = check_probability(keep_prob, caller="Generator.bernoulli_mask", name="keep_prob")
        target = _target(backend, xp, device)
        dims, n = _shape(shape)
        c32 = self._advance()
        spx = target.xp
        threshold = math.ceil(q * 2.0**32)  # exact: q·2³² is a float64 scaled by 2³²
        if threshold == 0:
            return spx.zeros(dims, dtype=spx.bool, device=target.device)
        if threshold == 1 << 32:
            return spx.ones(dims, dtype=spx.bool, device=target.device)
        w = self._word(target, n, c32)
        w ^= _INT32_MIN  # unsigned order ⇔ signed order after flipping the sign bit
        return spx.reshape(w < threshold + _INT32_MIN, dims)

    # -- internals ------------------------------------------------------------------------------

    def _advance(self) -> Any:
        """The current counter as int32 (a Python int, or a (1,) array on its device), and the
        counter advanced by one draw."""
        c = self._counter
        if isinstance(c, int):
            if c > _M32:
                msg = f"Generator: stream {self._stream} exhausted (2**32 draws); fork a new one"
                raise OverflowError(msg)
            self._counter = c + 1
            return _int32(c)
        # (1,)-shaped, not 0-d: NumPy turns 0-d results into scalars, whose arithmetic warns
        # on the wrap-around the hash relies on.
        xp = array_api_compat.array_namespace(c)
        c32 = xp.reshape(c, (1,))
        self._counter = xp.reshape(c32 + 1, ())
        return c32

    def _keys(self, c32: Any, word: int) -> tuple[Any, Any]:
        """(k₁, k₂) for word 0 or (k₃, k₄) for word 1 of the draw at counter ``c32``."""
        b_low, b_high = self._words[2 * word], self._words[2 * word + 1]
        return _mix_value(_add(c32, b_low), _MIX_A), _mix_value(_add(c32, b_high), _MIX_B)

    def _word(self, target: Backend, n: int, c32: Any, word: int = 0) -> Array:
        k1, k2 = self._keys(c32, word)
        shift, in_place = _shifter(target.xp)
        return _word(target.xp, target.device, n, k1, k2, shift, in_place)


def _logical_shift(x: Array, s: int) -> Array:
    """x ≫ s as unsigned 32-bit words (non-negative int32), in place on a word this module
    made (rebound on JAX)."""
    x >>= s
    x &= _LOW[s]
    return x


def _parse_state(state: Mapping[str, Any]) -> tuple[int, int, int]:
    if not isinstance(state, Mapping):
        msg = f"Generator state must be a mapping, got {type(state).__name__}"
        raise TypeError(msg)
    expected = {"version", "seed", "stream", "counter"}
    if set(state) != expected:
        msg = (
            f"Generator state must have the keys {sorted(expected)}, got {sorted(state)} "
            f"(missing {sorted(expected - set(state))}, unexpected {sorted(set(state) - expected)})"
        )
        raise KeyError(msg)
    if state["version"] != STATE_VERSION:
        msg = f"Generator state version {state['version']!r} is not {STATE_VERSION}"
        raise ValueError(msg)
    return (_check_int(state["seed"], "seed", 64), _check_int(state["stream"], "stream", 64),
            _check_int(state["counter"], "counter", 32))


# -- data-parallel replicas of a model's streams ------------------------------------------------


def generators(module: Any) -> list[Generator]:
    """Every :class:`Generator` held by ``module`` or its sub-modules, each once, in the order
    of ``module.modules()`` and of each module's attributes.

    The layers that draw (``Dropout``, ``Dropout2d``, ``MultiheadAttention``, the recurrent
    layers) hold theirs as an attribute (``self.generator``); a Generator in a list, tuple or
    dict attribute is found too. ``module`` is anything with a ``modules()`` method, such as
    :class:`nnbackend.layers.Module`.
    """
    modules = getattr(module, "modules", None)
    if not callable(modules):
        msg = f"generators: expected a Module (with modules()), got {type(module).__name__}"
        raise TypeError(msg)
    found: dict[int, Generator] = {}
    for sub in modules():
        for value in vars(sub).values():
            items = value.values() if isinstance(value, dict) else (
                value if isinstance(value, list | tuple) else (value,))
            for item in items:
                if isinstance(item, Generator):
                    found.setdefault(id(item), item)
    return list(found.values())


def set_replicas(module: Any, rank: int) -> list[Generator]:
    """Make every generator of ``module`` draw replica ``rank`` of its stream (in place).

    Rank r of a data-parallel job calls it once on its copy of the model, after the model's
    state (rank 0's, broadcast or loaded from rank 0's checkpoint) is in place: loading a state
    later keeps the replica, so the order does not matter. Rank 0's copy then draws what a
    single process would. Returns the generators it set (empty for a model without dropout).
    """
    found = generators(module)
    for gen in found:
        gen.set_replica(rank)
    return found
