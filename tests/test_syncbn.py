"""Synchronised batch normalisation (``batch_norm_forward``/``backward`` with ``reduce``, and
SyncBatchNorm) on the whole matrix, with ranks as threads of one process (LocalGroup): every
rank's shard of a global batch (unequal shards, one of a single row) against ONE BatchNorm on
the concatenated batch, on the same backend and dtype: outputs, ∂L/∂x rows, Σ over the ranks
of ∂L/∂γ and ∂L/∂β, and running statistics identical on every rank, over training steps and
evaluation; the number of collective calls; a group of one bit for bit as BatchNorm;
convert_sync_batchnorm on a CNN (and a data-parallel step of it); description and state
dicts."""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import torch
from _compare import held, one_torch_thread  # noqa: F401 (a module-scoped autouse fixture)

import nnbackend as nb
import nnbackend.functional as F
from nnbackend.distributed.comm import SingleProcess
from nnbackend.layers.normalization import InputLayoutError
from nnbackend.models import cnn_for
from nnbackend.testing import count_host_reads
from nnbackend.testing.localgroup import LocalCommunicator, LocalGroup

STEPS = 2  # training steps before the evaluation step
SHARDS = {2: (3, 2), 3: (2, 2, 1)}  # rows of a global batch of 5 per rank: unequal, one of 1


def _tolerance(case: Any) -> float:
    """float64: the sums over the ranks differ from one process's by rounding only."""
    return 1e-12 if case.is_float64 else case.rtol


def _near(got: Any, want: Any, case: Any, what: str) -> None:
    """``got`` equals the single-process ``want`` to the tolerance, on the reference's scale."""
    got, want = nb.to_numpy(got).astype(np.float64), nb.to_numpy(want).astype(np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    tol = _tolerance(case)
    scale = float(np.abs(want).max()) if want.size else 1.0
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * (scale or 1.0), err_msg=what)


def _identical(arrays: list[Any], what: str) -> None:
    """Every rank holds the same bits."""
    first = nb.to_numpy(arrays[0])
    for rank, a in enumerate(arrays[1:], start=1):
        assert np.array_equal(nb.to_numpy(a), first), f"{what}: rank {rank} differs from rank 0"


def _slices(ranks: int) -> list[slice]:
    bounds = np.cumsum((0, *SHARDS[ranks]))
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]


def _copy(a: Any) -> np.ndarray | None:
    """A host copy (the layer updates its buffers and gradients in place later)."""
    return None if a is None else np.array(nb.to_numpy(a), copy=True)


def _bn(case: Any, shape: tuple[int, ...], **kwargs: Any) -> nb.Module:
    """The single-process reference: BatchNorm1d for (N, C) and (N, C, L), else BatchNorm2d
    (its computation takes any trailing axes; only its shape check is 4-d)."""
    cls = nb.BatchNorm1d if len(shape) <= 3 else nb.BatchNorm2d
    return cls(shape[1], dtype=case.dtype_name, backend=case.backend, **kwargs)


def _state(case: Any, layer: nb.Module, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The layer's state with γ, β and running statistics that are not the initial ones."""
    state = {k: nb.to_numpy(v).copy() for k, v in layer.state_dict().items()}
    c = layer.num_features
    for name, values in (("weight", rng.normal(1.0, 0.4, c)), ("bias", rng.normal(0.0, 0.5, c)),
                         ("running_mean", rng.normal(0.0, 0.3, c)),
                         ("running_var", rng.uniform(0.5, 2.0, c))):
        if name in state:
            state[name] = held(case, values).astype(case.dtype_name)
    return state


# (shape of the global batch, keyword arguments): 2-d, 3-d and 4-d inputs, momentum=None,
# no γ/β, no running statistics. Few shapes: JAX compiles its kernels once per shape.
CONFIGS = [
    ((5, 4), {}),
    ((5, 3, 7), {"momentum": None}),
    ((5, 2, 3, 4), {}),
    ((5, 2, 3, 4), {"affine": False, "momentum": 0.3}),
    ((5, 3, 7), {"track_running_stats": False}),
    ((5, 4), {"bias": False, "momentum": None}),
]


def _ids(config: Any) -> str:
    shape, kwargs = config
    return "x".join(map(str, shape)) + "".join(f"-{k}={v}" for k, v in kwargs.items())


@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
def test_ranks_train_and_evaluate_as_one_batch_norm_on_the_whole_batch(
    case: Any, config: Any, ranks: int
) -> None:
    shape, kwargs = config
    rng = np.random.default_rng(len(shape) * 10 + ranks)
    ref = _bn(case, shape, **kwargs)
    state = _state(case, ref, rng)
    ref.load_state_dict(state)
    steps = [(held(case, rng.normal(2.0, 3.0, shape)), held(case, rng.normal(size=shape)))
             for _ in range(STEPS + 1)]
    slices = _slices(ranks)

    def rank(comm: LocalCommunicator) -> list[dict[str, Any]]:
        layer = nb.SyncBatchNorm(shape[1], dtype=case.dtype_name, backend=case.backend,
                                 comm=comm, **kwargs)
        layer.load_state_dict(state)
        records = []
        for step, (x, dy) in enumerate(steps):
            layer.train(step < STEPS)
            calls = len(comm.log)
            s = slices[comm.rank]
            y, backprop = layer.forward(case.asarray(x[s]), input_grad=True)
            dx = backprop(case.asarray(dy[s]))
            case.check_placement(y)
            records.append({
                "y": _copy(y), "dx": _copy(dx), "calls": comm.log[calls:],
                "dweight": None if layer.weight is None else _copy(layer.weight.grad),
                "dbias": None if layer.bias is None else _copy(layer.bias.grad),
                **{name: _copy(buffer) for name, buffer in layer.named_buffers()},
            })
            layer.zero_grad()
        return records

    per_rank = LocalGroup(ranks).run(rank)
    for step, (x, dy) in enumerate(steps):
        training = step < STEPS
        ref.train(training)
        y, backprop = ref.forward(case.asarray(x), input_grad=True)
        dx = backprop(case.asarray(dy))
        what = f"step {step} ({'train' if training else 'eval'})"
        got = [records[step] for records in per_rank]
        calls = [("all_reduce", 1)] * 3 if training else []  # two forward, one backward
        assert all(r["calls"] == calls for r in got), (what, [r["calls"] for r in got])
        # The reference rows and γ/β gradients: of the whole batch, or in evaluation without
        # running statistics of each rank's own batch (no communication, as PyTorch's).
        local = not training and ref.running_mean is None
        owns = [_bn(case, shape, **kwargs) for _ in slices] if local else [ref] * len(slices)
        rows, grads = [], {"weight": [], "bias": []}
        for own, s in zip(owns, slices, strict=True):
            if not local:
                rows.append((nb.to_numpy(y)[s], nb.to_numpy(dx)[s]))
                continue
            own.load_state_dict(state)
            y_own, backprop_own = own.eval().forward(case.asarray(x[s]), input_grad=True)
            rows.append((y_own, backprop_own(case.asarray(dy[s]))))
        for own in owns[:1] if not local else owns:
            for name in grads:
                p = getattr(own, name)
                if p is not None:
                    grads[name].append(nb.to_numpy(p.grad).astype(np.float64))
        for r, s, (y_want, dx_want) in zip(got, slices, rows, strict=True):
            _near(r["y"], y_want, case, f"y rows {s}, {what}")
            _near(r["dx"], dx_want, case, f"dx rows {s}, {what}")
        for name, wanted in grads.items():
            if getattr(ref, name) is None:
                assert all(r[f"d{name}"] is None for r in got), name
                continue
            total = sum(nb.to_numpy(r[f"d{name}"]).astype(np.float64) for r in got)
            _near(total, sum(wanted), case, f"Σ over the ranks of d{name}, {what}")
        ref.zero_grad()
        for name, buffer in ref.named_buffers():
            _identical([r[name] for r in got], f"{name}, {what}")
            _near(got[0][name], buffer, case, f"{name}, {what}")
        if "num_batches_tracked" in dict(ref.named_buffers()):
            assert int(nb.to_numpy(got[0]["num_batches_tracked"])) == min(step + 1, STEPS)


def test_functional_reduce_matches_one_process_with_an_empty_shard(case: Any) -> None:
    """Three ranks holding 3 + 1 + 0 rows of (4, 3, 5): a shard of one row and an empty one
    (a last partial batch smaller than the group); momentum=None with a device count."""
    rng = np.random.default_rng(1)
    x = held(case, rng.normal(-1.0, 2.0, (4, 3, 5)))
    dy = held(case, rng.normal(size=(4, 3, 5)))
    w, b = held(case, rng.normal(1.0, 0.3, 3)), held(case, rng.normal(size=3))
    count = np.asarray(3, np.int64)
    slices = [slice(0, 3), slice(3, 4), slice(4, 4)]

    def stats() -> tuple[Any, Any]:
        return case.asarray(np.zeros(3)), case.asarray(np.ones(3))

    def rank(comm: LocalCommunicator) -> tuple[Any, ...]:
        s = slices[comm.rank]
        out = F.batch_norm_forward(
            case.asarray(x[s]), *stats(), case.asarray(w), case.asarray(b), True, None,
            num_batches_tracked=case.asarray(count, dtype=case.index_dtype_name),
            reduce=comm.all_reduce)
        assert out.saved is not None
        with pytest.raises(ValueError, match="the backward needs the same reduce"):
            F.batch_norm_backward(case.asarray(dy[s]), out.saved)
        grads = F.batch_norm_backward(case.asarray(dy[s]), out.saved, reduce=comm.all_reduce)
        return (out.y, out.running_mean, out.running_var, *grads)

    got = LocalGroup(3).run(rank)
    want = F.batch_norm_forward(case.asarray(x), *stats(), case.asarray(w), case.asarray(b),
                                True, None, num_batches_tracked=3)
    assert want.saved is not None
    want_grads = F.batch_norm_backward(case.asarray(dy), want.saved)
    for r, s in zip(got, slices, strict=True):
        _near(r[0], nb.to_numpy(want.y)[s], case, f"y rows {s}")
        _near(r[3], nb.to_numpy(want_grads[0])[s], case, f"dx rows {s}")
    _identical([r[1] for r in got], "running_mean")
    _identical([r[2] for r in got], "running_var")
    _near(got[0][1], want.running_mean, case, "running_mean")
    _near(got[0][2], want.running_var, case, "running_var")
    for i, name in ((4, "dweight"), (5, "dbias")):
        total = sum(nb.to_numpy(r[i]).astype(np.float64) for r in got)
        _near(total, want_grads[i - 3], case, f"Σ over the ranks of {name}")
    assert nb.to_numpy(got[2][0]).shape == (0, 3, 5)


def test_evaluation_and_inference_in_training_mode(case: Any) -> None:
    """Evaluation never communicates and is BatchNorm's evaluation; inference in training mode
    (``layer(x)``) uses and updates the global statistics, as the training forward does."""
    rng = np.random.default_rng(2)
    shape = (5, 2, 3, 4)
    ref = _bn(case, shape)
    state = _state(case, ref, rng)
    ref.load_state_dict(state)
    x = held(case, rng.normal(1.0, 2.0, shape))
    slices = _slices(2)

    def rank(comm: LocalCommunicator) -> tuple[Any, ...]:
        layer = nb.SyncBatchNorm(2, dtype=case.dtype_name, backend=case.backend, comm=comm)
        layer.load_state_dict(state)
        s = slices[comm.rank]
        trained = layer(case.asarray(x[s]))
        calls = len(comm.log)
        layer.eval()
        evaluated = layer(case.asarray(x[s]))
        _, backprop = layer.forward(case.asarray(x[s]), input_grad=True)
        backprop(case.asarray(x[s]))
        return trained, evaluated, comm.log[:calls], comm.log[calls:], layer.running_var

    got = LocalGroup(2).run(rank)
    trained = nb.to_numpy(ref(case.asarray(x)))
    evaluated = nb.to_numpy(ref.eval()(case.asarray(x)))
    for r, s in zip(got, slices, strict=True):
        assert r[2] == [("all_reduce", 1)] * 2 and r[3] == [], (r[2], r[3])
        _near(r[0], trained[s], case, "inference in training mode")
        _near(r[1], evaluated[s], case, "evaluation")
        _near(r[4], ref.running_var, case, "running_var")


def test_a_group_of_one_is_batch_norm_bit_for_bit(case: Any) -> None:
    rng = np.random.default_rng(3)
    shape = (4, 3, 2, 2)
    x, dy = held(case, rng.normal(size=shape)), held(case, rng.normal(size=shape))
    ref = _bn(case, shape, momentum=None)
    state = _state(case, ref, rng)
    ref.load_state_dict(state)
    y, backprop = ref.forward(case.asarray(x), input_grad=True)
    want = [y, backprop(case.asarray(dy)), ref.weight.grad, ref.bias.grad,
            *ref.state_dict().values()]
    solo = LocalGroup(1).communicators()[0]
    for comm in (solo, SingleProcess(), None):  # None: the job's (no job: the group of one)
        layer = nb.SyncBatchNorm(3, momentum=None, dtype=case.dtype_name,
                                 backend=case.backend, comm=comm)
        layer.load_state_dict(state)
        y, backprop = layer.forward(case.asarray(x), input_grad=True)
        got = [y, backprop(case.asarray(dy)), layer.weight.grad, layer.bias.grad,
               *layer.state_dict().values()]
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert np.array_equal(nb.to_numpy(g), nb.to_numpy(w)), (comm, i)
    assert solo.log == []


def test_no_host_reads_with_several_ranks(case: Any) -> None:
    if case.backend.name != "gpulike":
        pytest.skip("only the GPU-like test device counts host reads")
    rng = np.random.default_rng(4)
    x, dy = rng.normal(size=(5, 3, 2, 2)), rng.normal(size=(5, 3, 2, 2))
    slices = _slices(2)

    def rank(comm: LocalCommunicator) -> None:
        layer = nb.SyncBatchNorm(3, momentum=None, dtype=case.dtype_name,
                                 backend=case.backend, comm=comm)
        s = slices[comm.rank]
        xs, dys = case.asarray(x[s]), case.asarray(dy[s])
        for training in (True, False):
            layer.train(training)
            _, backprop = layer.forward(xs, input_grad=True)
            backprop(dys)
            layer(xs)

    with count_host_reads() as reads:
        LocalGroup(2).run(rank)
    assert reads.count == 0, reads


# ------------------------------------------------------------------------------------------
# The layer: shapes, description, state dicts, conversion


def test_layer_takes_any_rank_from_two_and_names_what_it_expects(case: Any) -> None:
    layer = nb.SyncBatchNorm(3, dtype=case.dtype_name, backend=case.backend)
    rng = np.random.default_rng(5)
    for shape in ((4, 3), (4, 3, 5), (2, 3, 2, 3), (2, 3, 2, 2, 2)):
        x = case.asarray(rng.normal(size=shape))
        want = F.batch_norm(x, None, None, training=True)
        assert np.array_equal(nb.to_numpy(layer(x)), nb.to_numpy(want)), shape
    name = (r"SyncBatchNorm\(3, eps=1e-05, momentum=0\.1, affine=True, bias=True, "
            r"track_running_stats=True\)")
    with pytest.raises(InputLayoutError, match=rf"^{name} expected input of shape "
                                               r"\(N, 3, \.\.\.\), got \(4, 2, 5\)$"):
        layer.forward(case.asarray(np.ones((4, 2, 5))))
    with pytest.raises(InputLayoutError, match=r"\(N, 3, \.\.\.\), got \(3,\)"):
        layer(case.asarray(np.ones(3)))


def test_repr_state_description_and_batch_norm_state_dicts() -> None:
    layer = nb.SyncBatchNorm(4, momentum=None, bias=False)
    assert repr(layer) == repr(torch.nn.SyncBatchNorm(4, momentum=None, bias=False))
    assert list(nb.SyncBatchNorm(4).state_dict()) == list(
        torch.nn.SyncBatchNorm(4).state_dict())
    assert layer.has_training_behaviour
    config = layer.config()
    assert config == {"num_features": 4, "eps": 1e-5, "momentum": None, "affine": True,
                      "track_running_stats": True, "bias": False, "dtype": "float32"}
    description = nb.layers.describe(nb.Sequential(nb.Linear(3, 4), layer))
    assert description["config"]["layers"][1]["type"] == "SyncBatchNorm"
    rebuilt = nb.layers.build(description)
    assert type(rebuilt[1]) is nb.SyncBatchNorm and rebuilt[1].config() == config
    assert rebuilt[1].comm is None  # a description records no group: the job's at forward
    bn = nb.BatchNorm2d(4, momentum=None, bias=False)
    bn.forward(np.random.default_rng(6).normal(size=(3, 4, 2, 2)).astype(np.float32))
    layer.load_state_dict(bn.state_dict())
    assert int(nb.to_numpy(layer.num_batches_tracked)) == 1
    np.testing.assert_array_equal(layer.running_var, bn.running_var)


def _cnn(case: Any) -> nb.Sequential:
    return cnn_for((2, 6, 6), 3, hidden=(5,), dropout=0.0, seed=0,
                   dtype=case.dtype_name, backend=case.backend)


def test_convert_replaces_every_batch_norm_in_place_with_its_state(case: Any) -> None:
    model = _cnn(case)
    model[1].eval()  # a training flag that is not the container's
    before = list(model.named_parameters())
    state = {k: nb.to_numpy(v).copy() for k, v in model.state_dict().items()}
    batch_norms = [m for m in model.modules() if isinstance(m, nb.BatchNorm2d)]
    assert len(batch_norms) == 2
    comm = SingleProcess()
    converted = nb.SyncBatchNorm.convert_sync_batchnorm(model, comm=comm)
    assert converted is model
    assert not any(isinstance(m, nb.BatchNorm2d) for m in model.modules())
    synced = [m for m in model.modules() if isinstance(m, nb.SyncBatchNorm)]
    assert [m.num_features for m in synced] == [bn.num_features for bn in batch_norms]
    assert all(m.comm is comm for m in synced)
    assert model[1] is synced[0] and model.layers[1] is synced[0]  # registry and tuple
    assert not synced[0].training and synced[1].training
    after = list(model.named_parameters())  # the same Parameter objects, names and order
    assert [n for n, _ in after] == [n for n, _ in before]
    assert all(p is q for (_, p), (_, q) in zip(after, before, strict=True))
    for bn, sync in zip(batch_norms, synced, strict=True):
        assert sync.running_mean is bn.running_mean and sync.weight is bn.weight
    assert list(model.state_dict()) == list(state)
    for k, v in model.state_dict().items():
        assert np.array_equal(nb.to_numpy(v), state[k]), k
    # Nested containers and a layer on its own.
    bn1 = nb.BatchNorm1d(4, affine=False, dtype=case.dtype_name, backend=case.backend)
    nested = nb.Sequential(nb.Linear(4, 4, seed=1, dtype=case.dtype_name),
                           nb.Residual(nb.Sequential(bn1, nb.ReLU())),
                           nb.Parallel(nb.BatchNorm1d(4, dtype=case.dtype_name), nb.Identity()),
                           backend=case.backend)
    names = list(nested.state_dict())
    nb.SyncBatchNorm.convert_sync_batchnorm(nested)
    assert list(nested.state_dict()) == names
    inner = nested[1].block
    assert type(inner[0]) is nb.SyncBatchNorm and inner.layers[0] is inner[0]
    assert type(nested[2].branches[0]) is nb.SyncBatchNorm
    single = nb.SyncBatchNorm.convert_sync_batchnorm(bn1)
    assert type(single) is nb.SyncBatchNorm and single.running_var is bn1.running_var
    assert single.weight is None and single.comm is None
    with pytest.raises(TypeError, match="convert_sync_batchnorm: expected a Module"):
        nb.SyncBatchNorm.convert_sync_batchnorm("model")  # type: ignore[arg-type]


def test_converted_cnn_in_two_ranks_steps_as_the_cnn_on_the_whole_batch(case: Any) -> None:
    """The gradient of the global loss, each rank's rows of it as dy: Σ over the ranks of every
    parameter's gradient is the single process's, and the running statistics agree."""
    rng = np.random.default_rng(7)
    x = held(case, rng.normal(size=(5, 2, 6, 6)))
    dy = held(case, rng.normal(size=(5, 3)))
    ref = _cnn(case)
    y, backprop = ref.forward(case.asarray(x))
    backprop(case.asarray(dy))
    slices = _slices(2)

    def rank(comm: LocalCommunicator) -> tuple[Any, list[Any], dict[str, Any]]:
        model = nb.SyncBatchNorm.convert_sync_batchnorm(_cnn(case), comm=comm)
        s = slices[comm.rank]
        y, backprop = model.forward(case.asarray(x[s]))
        backprop(case.asarray(dy[s]))
        return y, [p.grad for p in model.parameters()], dict(model.state_dict())

    got = LocalGroup(2).run(rank)
    for r, s in zip(got, slices, strict=True):
        _near(r[0], nb.to_numpy(y)[s], case, f"logits rows {s}")
    for i, (name, p) in enumerate(ref.named_parameters()):
        total = sum(nb.to_numpy(r[1][i]).astype(np.float64) for r in got)
        _near(total, p.grad, case, f"Σ over the ranks of ∂L/∂{name}")
    for name, buffer in ref.named_buffers():
        _identical([r[2][name] for r in got], name)
        _near(got[0][2][name], buffer, case, name)
