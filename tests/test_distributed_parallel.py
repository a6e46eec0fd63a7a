"""DistributedDataParallel on every backend of the matrix, with ranks as threads (LocalGroup).

The reference is one process training on the same global batches: N replicas, each on its
shard of n_r rows of a global batch of B, must end with that process's parameters (to
rounding), and every replica with bit-identical ones. The MPI launches of
tests/test_distributed_mpi_training.py check the same on real processes (NumPy float64).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from _compare import close

import nnbackend as nb
from nnbackend import models, optim
from nnbackend.distributed import SingleProcess
from nnbackend.distributed.parallel import DistributedDataParallel, ModelMismatchError
from nnbackend.testing import count_host_reads
from nnbackend.testing.localgroup import LocalAbort, LocalGroup
from nnbackend.train import fit

N_SAMPLES, BATCH = 23, 8  # batches of 8, 8, 7: shards that differ in size


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.normal(size=(N_SAMPLES, 5)), rng.integers(0, 3, size=N_SAMPLES)


def _optimizer(kind: str, params: Any) -> Any:
    if kind == "momentum":
        return optim.SGD(params, 0.1, momentum=0.9)
    if kind == "adamw":
        return optim.AdamW(params, 1e-2, weight_decay=0.1)
    return optim.Adam(params, 1e-2)


def _batches(epochs: int) -> list[np.ndarray]:
    """The global batches' row indices: a seeded permutation per epoch."""
    out = []
    for epoch in range(epochs):
        order = np.random.default_rng([7, epoch]).permutation(N_SAMPLES)
        out.extend(order[i:i + BATCH] for i in range(0, N_SAMPLES, BATCH))
    return out


def _shard(rows: np.ndarray, rank: int, size: int) -> np.ndarray:
    b = len(rows)
    return rows[rank * b // size:(rank + 1) * b // size]


def _train(case: Any, model: Any, opt: Any, data: Any, batches: list[np.ndarray], *,
           clip: float | None, forward: Callable[[Any], tuple[Any, Any]] | None = None
           ) -> None:
    """SGD steps on ``batches`` (row indices), clipping after the backward when asked."""
    X, y = data
    loss_fn = nb.CrossEntropyLoss()
    forward = forward or model.forward
    for rows in batches:
        xb = case.asarray(X[rows])
        yb = case.backend.asarray(y[rows], dtype=case.backend.index_dtype)
        out, backprop = forward(xb)
        _, dy = loss_fn(out, yb)
        opt.zero_grad()
        backprop(dy)
        if clip is not None:
            optim.clip_grad_norm(model.parameters(), clip)
        opt.step()


def _host(model: Any) -> list[np.ndarray]:
    return [nb.to_numpy(p.data).copy() for p in model.parameters()]


def _mlp(case: Any, seed: int) -> Any:
    return models.mlp((5, 7, 3), dtype=case.dtype_name, backend=case.backend, seed=seed)


@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize(("kind", "clip"), [("momentum", None), ("adam", 0.5),
                                            ("adamw", None)])
def test_replicas_train_as_one_process_on_the_global_batch(
        case: Any, data: Any, size: int, kind: str, clip: float | None) -> None:
    batches = _batches(2)

    def rank(comm: Any) -> list[np.ndarray]:
        model = _mlp(case, 10 + comm.rank)  # other values everywhere: rank 0's must win
        opt = _optimizer(kind, model.parameters())
        ddp = DistributedDataParallel(model, opt, comm=comm)
        shards = [_shard(rows, comm.rank, comm.size) for rows in batches]
        _train(case, model, opt, data, shards, clip=clip, forward=ddp.forward)
        return _host(model)

    results = LocalGroup(size).run(rank)
    # every rank's replica is rank 0's, bit for bit; rank 0 is the one process's, to rounding
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            np.testing.assert_array_equal(a, b)
    # the one process starts where every rank started: rank 0's initial values (seed 10)
    reference = _mlp(case, 10)
    ref_opt = _optimizer(kind, reference.parameters())
    _train(case, reference, ref_opt, data, batches, clip=clip)
    for got, want in zip(results[0], _host(reference), strict=True):
        close(got, want, case, f"{kind}, {size} ranks")


def test_broadcast_state_gives_every_rank_rank0s_parameters_and_optimizer_state(
        case: Any, data: Any) -> None:
    def rank(comm: Any) -> tuple[list[np.ndarray], dict[str, Any]]:
        model = _mlp(case, comm.rank)
        opt = _optimizer("adam", model.parameters())
        if comm.rank == 0:  # rank 0 has stepped (a resumed run): its moments must travel
            _train(case, model, opt, data, _batches(1)[:2], clip=None)
        DistributedDataParallel(model, opt, comm=comm)
        return _host(model), opt.state_dict()

    (p0, s0), *others = LocalGroup(2).run(rank)
    for params, state in others:
        for a, b in zip(p0, params, strict=True):
            np.testing.assert_array_equal(a, b)
        assert state["state"][0]["step"] == s0["state"][0]["step"] == 2
        assert len(s0["state"][0]) == 3  # the step and Adam's two moments
        for name, value in s0["state"][0].items():
            np.testing.assert_array_equal(state["state"][0][name], value)


def test_different_models_are_refused_on_every_rank(case: Any) -> None:
    def rank(comm: Any) -> str:
        model = models.mlp((5, 7 + comm.rank, 3), dtype=case.dtype_name, backend=case.backend,
                           seed=0)
        try:
            DistributedDataParallel(model, comm=comm)
        except ModelMismatchError as error:
            return str(error)
        return "accepted"

    messages = LocalGroup(2).run(rank)
    assert messages[0] == messages[1]
    assert "rank 1's model differs from rank 0's" in messages[0]
    assert "Linear(5→7)" in messages[0] and "Linear(5→8)" in messages[0]


class _TwoHeads(nb.Module):
    """y = A x, plus B x on the ranks where ``use_b`` holds (a parameter unused elsewhere)."""

    def __init__(self, case: Any, use_b: bool) -> None:
        super().__init__()
        self.a = nb.Linear(5, 3, seed=0, dtype=case.dtype_name, backend=case.backend)
        self.b = nb.Linear(5, 3, seed=1, dtype=case.dtype_name, backend=case.backend)
        self.use_b = use_b

    def forward_pass(self, x: Any, ctx: Any) -> Any:
        ya, back_a = self.a.forward_pass(x, ctx)
        if not self.use_b:
            return ya, back_a
        yb, back_b = self.b.forward_pass(x, ctx)

        def backprop(dy: Any) -> Any:
            back_a(dy)
            back_b(dy)

        return ya + yb, backprop


@pytest.mark.parametrize("users", [(True, False), (False, False)])
def test_unused_parameters_are_handled_as_pytorch_ddp_does(
        case: Any, data: Any, users: tuple[bool, bool]) -> None:
    X, y = data

    def rank(comm: Any, use_b: bool) -> Any:
        model = _TwoHeads(case, use_b)
        ddp = DistributedDataParallel(model, comm=comm, find_unused_parameters=True)
        rows = _shard(np.arange(8), comm.rank, comm.size)
        out, backprop = ddp.forward(case.asarray(X[rows]))
        _, dy = nb.CrossEntropyLoss()(out, case.backend.asarray(y[rows],
                                                               dtype=case.backend.index_dtype))
        backprop(dy)
        return (nb.to_numpy(model.a.weight.grad).copy(),
                None if model.b.weight.grad is None else nb.to_numpy(model.b.weight.grad).copy())

    results = LocalGroup(2).run(rank, args=list(users))
    # reference: Σ_r (n_r/B) g_r with g_r of each rank's own graph
    want_b = np.zeros((3, 5))
    want_a = np.zeros((3, 5))
    for r, use_b in enumerate(users):
        model = _TwoHeads(case, use_b)
        rows = _shard(np.arange(8), r, 2)
        out, backprop = model.forward(case.asarray(X[rows]))
        _, dy = nb.CrossEntropyLoss()(out, case.backend.asarray(y[rows],
                                                               dtype=case.backend.index_dtype))
        backprop(dy * (len(rows) / 8))
        want_a += nb.to_numpy(model.a.weight.grad)
        if use_b:
            want_b += nb.to_numpy(model.b.weight.grad)
    for grad_a, grad_b in results:
        close(grad_a, want_a, case, "used everywhere")
        if any(users):
            assert grad_b is not None
            close(grad_b, want_b, case, "used on rank 0 only: zeros from rank 1")
        else:
            assert grad_b is None  # unused on every rank: no gradient, the optimizer skips it


def test_unused_parameters_without_the_flag_name_them(case: Any, data: Any) -> None:
    X, _ = data

    def rank(comm: Any) -> None:
        model = _TwoHeads(case, use_b=False)
        ddp = DistributedDataParallel(model, comm=comm)
        out, backprop = ddp.forward(case.asarray(X[:4]))
        backprop(out * 0 + 1)

    with pytest.raises(RuntimeError, match=r"\['b.weight', 'b.bias'\] got no gradient"):
        LocalGroup(2).run(rank)


def test_no_sync_accumulates_locally_and_the_next_backward_sums_it(case: Any, data: Any
                                                                   ) -> None:
    X, y = data
    micro = [np.arange(0, 8), np.arange(8, 16)]

    def grads(model: Any, forward: Any, shards: list[np.ndarray], ddp: Any = None) -> Any:
        loss_fn = nb.CrossEntropyLoss()
        for i, rows in enumerate(shards):
            last = i == len(shards) - 1
            context = ddp.no_sync() if ddp is not None and not last else _null()
            with context:
                out, backprop = forward(case.asarray(X[rows]))
                _, dy = loss_fn(out, case.backend.asarray(y[rows], dtype=case.backend.index_dtype))
                backprop(dy)
        return [nb.to_numpy(p.grad).copy() for p in model.parameters()]

    reference = _mlp(case, 0)
    want = grads(reference, reference.forward, micro)

    def rank(comm: Any) -> Any:
        model = _mlp(case, 0)
        ddp = DistributedDataParallel(model, comm=comm)
        calls_before = comm.log.count(("all_reduce", 1))
        got = grads(model, ddp.forward, [_shard(m, comm.rank, 2) for m in micro], ddp)
        return got, comm.log.count(("all_reduce", 1)) - calls_before

    for got, calls in LocalGroup(2).run(rank):
        assert calls == 1  # one all-reduce for both micro-batches
        for g, w in zip(got, want, strict=True):
            close(g, w, case, "accumulated gradient")


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def test_running_statistics_are_rank0s_on_every_rank(case: Any) -> None:
    rng = np.random.default_rng(5)
    X = rng.normal(size=(9, 4)) * 3 + 1

    def build() -> Any:
        return nb.Sequential(nb.Linear(4, 4, seed=0, dtype=case.dtype_name, backend=case.backend),
                             nb.BatchNorm1d(4, dtype=case.dtype_name, backend=case.backend))

    def rank(comm: Any) -> list[np.ndarray]:
        model = build()
        ddp = DistributedDataParallel(model, comm=comm)
        for _ in range(2):
            out, backprop = ddp.forward(case.asarray(X[_shard(np.arange(9), comm.rank, 2)]))
            backprop(out * 0 + 1)
        return [nb.to_numpy(b).copy() for b in model.buffers()]

    results = LocalGroup(2).run(rank)
    # rank 0's statistics: those of a model that saw rank 0's rows only
    alone = build()
    for _ in range(2):
        alone.forward(case.asarray(X[:4]))
    for buffers in results:
        for got, want in zip(buffers, alone.buffers(), strict=True):
            np.testing.assert_array_equal(got, nb.to_numpy(want))


def test_dropout_masks_come_from_per_rank_streams(case: Any) -> None:
    def rank(comm: Any) -> np.ndarray:
        model = nb.Sequential(nb.Linear(6, 6, seed=0, dtype=case.dtype_name,
                                        backend=case.backend), nb.Dropout(0.5, seed=3))
        ddp = DistributedDataParallel(model, comm=comm)
        out, _ = ddp.forward(case.asarray(np.ones((4, 6))))
        return nb.to_numpy(out) != 0

    masks = LocalGroup(2).run(rank)
    alone = nb.Sequential(nb.Linear(6, 6, seed=0, dtype=case.dtype_name, backend=case.backend),
                          nb.Dropout(0.5, seed=3))
    out, _ = alone.forward(case.asarray(np.ones((4, 6))))
    np.testing.assert_array_equal(masks[0], nb.to_numpy(out) != 0)  # rank 0: the one process's
    assert not np.array_equal(masks[0], masks[1])


def test_a_failing_rank_releases_the_others(case: Any) -> None:
    def rank(comm: Any) -> None:
        model = _mlp(case, 0)
        ddp = DistributedDataParallel(model, comm=comm)
        if comm.rank == 1:
            msg = "rank 1 fails"
            raise KeyError(msg)
        ddp.forward(case.asarray(np.ones((2, 5))))  # waits for rank 1 in the row count

    with pytest.raises(KeyError, match="rank 1 fails"):
        LocalGroup(2, timeout=20).run(rank)


def test_no_host_reads_in_a_step_on_the_gpulike_device(data: Any) -> None:
    X, y = data
    backend = nb.get_backend("gpulike")

    def rank(comm: Any) -> int:
        model = models.mlp((5, 7, 3), backend=backend, seed=0)
        opt = optim.Adam(model.parameters(), 1e-2)
        ddp = DistributedDataParallel(model, opt, comm=comm)
        xb = backend.asarray(X[:4], dtype="float32")
        yb = backend.asarray(y[:4], dtype=backend.index_dtype)
        loss_fn = nb.CrossEntropyLoss()
        with count_host_reads() as reads:
            out, backprop = ddp.forward(xb)
            _, dy = loss_fn(out, yb)
            opt.zero_grad()
            backprop(dy)
            opt.step()
        return reads.count

    assert LocalGroup(2).run(rank) == [0, 0]


def test_a_sync_batch_norm_of_another_group_is_refused(case: Any) -> None:
    def rank(comm: Any) -> str:
        model = nb.SyncBatchNorm.convert_sync_batchnorm(
            nb.Sequential(nb.Linear(4, 4, seed=0, dtype=case.dtype_name, backend=case.backend),
                          nb.BatchNorm1d(4, dtype=case.dtype_name, backend=case.backend)),
            SingleProcess())
        with pytest.raises(ValueError, match="SyncBatchNorm 1 sums over another communicator"):
            DistributedDataParallel(model, comm=comm)
        return "refused"

    assert LocalGroup(2).run(rank) == ["refused", "refused"]


def test_a_resumed_rank0s_learning_rate_and_schedule_are_broadcast_not_refused(
        case: Any) -> None:
    def rank(comm: Any) -> tuple[float, int]:
        model = _mlp(case, 0)
        opt = _optimizer("momentum", model.parameters())
        schedule = optim.StepLR(opt, step_size=1, gamma=0.5)
        if comm.rank == 0:  # as after loading a checkpoint on rank 0 alone
            schedule.step()
            schedule.step()
        ddp = DistributedDataParallel(model, opt, comm=comm)
        ddp.broadcast_state(opt, [schedule])
        return float(opt.param_groups[0]["lr"]), int(schedule.last_epoch)

    assert LocalGroup(2).run(rank) == [(0.025, 2), (0.025, 2)]


def test_a_parameter_frozen_on_one_rank_only_is_refused(case: Any) -> None:
    def rank(comm: Any) -> str:
        model = _mlp(case, 0)
        if comm.rank == 1:
            model[0].weight.requires_grad = False
        with pytest.raises(ModelMismatchError) as error:
            DistributedDataParallel(model, comm=comm)
        return str(error.value)

    first, second = LocalGroup(2).run(rank)
    assert first == second and "frozen" in first and "0.weight" in first


def test_sync_batch_norms_without_a_communicator_sum_over_the_wrappers_group(case: Any
                                                                            ) -> None:
    rng = np.random.default_rng(6)
    X = rng.normal(size=(6, 4))

    def rank(comm: Any) -> np.ndarray:
        model = nb.SyncBatchNorm.convert_sync_batchnorm(nb.Sequential(
            nb.Linear(4, 4, seed=0, dtype=case.dtype_name, backend=case.backend),
            nb.BatchNorm1d(4, dtype=case.dtype_name, backend=case.backend)))
        ddp = DistributedDataParallel(model, comm=comm)
        out, _ = ddp.forward(case.asarray(X[_shard(np.arange(6), comm.rank, 2)]))
        return nb.to_numpy(out).copy()

    alone = nb.Sequential(nb.Linear(4, 4, seed=0, dtype=case.dtype_name, backend=case.backend),
                          nb.BatchNorm1d(4, dtype=case.dtype_name, backend=case.backend))
    want, _ = alone.forward(case.asarray(X))
    close(np.concatenate(LocalGroup(2).run(rank)), nb.to_numpy(want), case,
          "normalised over both ranks' rows")


def test_fit_on_a_pair_of_host_arrays_trains_each_rank_on_its_shard(case: Any, data: Any
                                                                    ) -> None:
    X, y = data

    def run(comm: Any) -> tuple[list[np.ndarray], float]:
        model = _mlp(case, 0)
        opt = _optimizer("momentum", model.parameters())
        target = model if comm is None else DistributedDataParallel(model, opt, comm=comm)
        history = fit(target, nb.CrossEntropyLoss(), opt, (X, y), epochs=2, batch_size=BATCH,
                      seed=5, progress=False, metrics=())
        return _host(model), history.last["loss"]

    want, want_loss = run(None)
    for got, loss in LocalGroup(2).run(run):
        for g, w in zip(got, want, strict=True):
            close(g, w, case, "fit on (X, y), 2 ranks")
        np.testing.assert_allclose(loss, want_loss, rtol=case.rtol)


def test_ranks_that_call_different_collectives_fail_naming_both() -> None:
    def rank(comm: Any) -> None:
        if comm.rank == 0:
            comm.all_reduce([np.zeros(3)])
        else:
            comm.all_reduce([np.zeros(4)])

    with pytest.raises(LocalAbort, match=r"rank 0 \('all_reduce', \(\(3,\), 'float64'\)\), "
                                         r"rank 1 \('all_reduce', \(\(4,\)"):
        LocalGroup(2).run(rank)
