"""The MPI and NCCL communicators against fakes of mpi4py and cupyx.distributed, the job's
world (init, launch detection) and the abort hook, all in one process.

The fake MPI communicator stands for rank ``rank`` of a group whose other ranks together add
``OTHERS`` to every element of an all-reduce and whose root broadcasts ``ROOT_VALUE``: closed
forms for every result. It records every buffer MPI is handed, so a test can assert that only
host NumPy arrays reach MPI on the staged path. Real launches: tests/test_distributed_mpi.py.
"""

from __future__ import annotations

import ctypes
import importlib
import sys
import threading
import types
from typing import Any

import numpy as np
import pytest

from nnbackend.backend import supports_views
from nnbackend.distributed import (
    Communicator,
    MPICommunicator,
    NCCLCommunicator,
    SingleProcess,
    abort_on_error,
    cuda_aware_mpi,
    get_rank,
    get_world_size,
    init,
    install_abort_hook,
    is_initialized,
    launched_by_mpi,
    world,
)
from nnbackend.distributed import faults as faults_module
from nnbackend.distributed import mpi as mpi_module
from nnbackend.distributed import nccl as nccl_module
from nnbackend.testing import count_host_reads

# The package's world() function hides its module of the same name.
world_module = importlib.import_module("nnbackend.distributed.world")

OTHERS = 10.0
ROOT_VALUE = 7.0
_LAUNCH_VARIABLES = ("PMI_RANK", "PMI_SIZE", "PMIX_RANK", "OMPI_COMM_WORLD_RANK",
                     "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK", "MV2_COMM_WORLD_SIZE")


# ------------------------------------------------------------------------------------ fakes

class FakeMPI(types.SimpleNamespace):
    """Stands for the module mpi4py.MPI: the constants the communicator passes."""


class FakeComm:
    """Rank ``rank`` of ``size``: Allreduce adds OTHERS, Bcast fills ROOT_VALUE off the root."""

    def __init__(self, mpi: FakeMPI, rank: int = 1, size: int = 3) -> None:
        self.MPI = mpi
        self.rank = rank
        self.size = size
        self.calls: list[tuple[Any, ...]] = []

    def Get_rank(self) -> int:
        return self.rank

    def Get_size(self) -> int:
        return self.size

    def Allreduce(self, sendbuf: Any, recvbuf: Any, op: Any) -> None:
        assert sendbuf is self.MPI.IN_PLACE and op is self.MPI.SUM
        self.calls.append(("Allreduce", recvbuf))
        if isinstance(recvbuf, np.ndarray):
            assert recvbuf.flags.c_contiguous and recvbuf.flags.writeable
            recvbuf += np.asarray(OTHERS, dtype=recvbuf.dtype)

    def Bcast(self, buf: Any, root: int = 0) -> None:
        self.calls.append(("Bcast", buf, root))
        if isinstance(buf, np.ndarray):
            assert buf.flags.c_contiguous
            if self.rank != root:
                buf[...] = ROOT_VALUE

    def bcast(self, obj: Any, root: int = 0) -> Any:
        self.calls.append(("bcast", obj, root))
        return obj if self.rank == root else ("from root", root)

    def allgather(self, obj: Any) -> list[Any]:
        self.calls.append(("allgather", obj))
        return [obj if r == self.rank else f"rank{r}" for r in range(self.size)]

    def Barrier(self) -> None:
        self.calls.append(("Barrier",))

    def Abort(self, code: int) -> None:
        self.calls.append(("Abort", code))
        raise SystemExit(f"Abort({code})")  # never os._exit in a test


@pytest.fixture
def fake_mpi(monkeypatch: pytest.MonkeyPatch) -> FakeMPI:
    """mpi4py.MPI replaced by a fake whose COMM_WORLD is rank 1 of 3."""
    mpi = FakeMPI(IN_PLACE=object(), SUM=object())
    mpi.COMM_WORLD = FakeComm(mpi)
    monkeypatch.setattr(mpi_module, "import_mpi", lambda: mpi)
    monkeypatch.delenv(mpi_module.CUDA_AWARE_ENV, raising=False)
    return mpi


def _mpi(fake_mpi: FakeMPI, rank: int = 1, size: int = 3, **kwargs: Any) -> MPICommunicator:
    return MPICommunicator(FakeComm(fake_mpi, rank, size), **kwargs)


def _host(case: Any, a: Any) -> np.ndarray:
    return np.array(case.backend.to_numpy(a), copy=True)


# ------------------------------------------------------------------------------- MPI arrays

def test_mpi_all_reduce_on_the_matrix(case: Any, fake_mpi: FakeMPI) -> None:
    comm = _mpi(fake_mpi)
    g = np.arange(6, dtype=np.float64).reshape(2, 3) / 4
    h = np.linspace(-1.0, 1.0, 5)
    a, b = case.asarray(g.copy()), case.asarray(h.copy())  # NumPy's may be g itself
    with count_host_reads() as reads:
        out = comm.all_reduce([a, b])
    for result, ref in zip(out, (g, h), strict=True):
        case.check_placement(result)
        np.testing.assert_array_equal(_host(case, result),
                                      ref.astype(case.dtype_name) + np.float32(OTHERS))
    if supports_views(case.xp):
        assert out[0] is a and out[1] is b  # in place
    buffers = [call[1] for call in comm.comm.calls]
    assert len(buffers) == 2  # one MPI call per array, no concatenation
    assert all(isinstance(buf, np.ndarray) for buf in buffers)  # only host memory reaches MPI
    if case.backend.name == "numpy":
        assert buffers[0] is a and buffers[1] is b  # no staging copy
    if case.backend.name == "gpulike":
        assert reads.count == 2, reads  # one explicit transfer per array
    assert comm.stats.calls == {"all_reduce": 1}
    assert comm.stats.bytes["all_reduce"] == 11 * np.dtype(case.dtype_name).itemsize


@pytest.mark.parametrize("rank", [0, 1])
def test_mpi_broadcast_on_the_matrix(case: Any, fake_mpi: FakeMPI, rank: int) -> None:
    comm = _mpi(fake_mpi, rank=rank, size=2)
    g = np.arange(4, dtype=np.float64) - 1.5
    a = case.asarray(g.copy())
    with count_host_reads() as reads:
        (out,) = comm.broadcast([a], root=0)
    case.check_placement(out)
    expected = g if rank == 0 else np.full(4, ROOT_VALUE)
    np.testing.assert_array_equal(_host(case, out), expected.astype(case.dtype_name))
    if rank == 0 or supports_views(case.xp):
        assert out is a  # the root's own array; in place elsewhere
    (call,) = comm.comm.calls
    assert call[0] == "Bcast" and isinstance(call[1], np.ndarray) and call[2] == 0
    if case.backend.name == "gpulike":
        # the root reads its array once; the others only receive (no read of their array)
        assert reads.count == (1 if rank == 0 else 0), reads


def test_mpi_numpy_strided_read_only_and_root(fake_mpi: FakeMPI) -> None:
    comm = _mpi(fake_mpi)
    base = np.zeros((3, 4))
    view = base[:, ::2]
    (out,) = comm.all_reduce([view])
    assert out is view
    np.testing.assert_array_equal(base, np.tile([OTHERS, 0.0], (3, 2)))
    (out,) = comm.broadcast([base[:, 1::2]], root=0)
    np.testing.assert_array_equal(base, np.tile([OTHERS, ROOT_VALUE], (3, 2)))
    frozen = np.ones(3)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match=r"rank 1.*shape \(3,\) and dtype float64 is read-only"):
        comm.all_reduce([frozen])
    with pytest.raises(ValueError, match=r"root 3 is not a rank of this group \(0\.\.2\)"):
        comm.broadcast([np.ones(2)], root=3)


def test_mpi_host_values_objects_barrier_abort(fake_mpi: FakeMPI) -> None:
    comm = _mpi(fake_mpi)
    assert (comm.rank, comm.size, comm.name) == (1, 3, "mpi")
    counts = np.array([4, 1], dtype=np.int64)
    total = comm.all_reduce_host(counts)
    assert total.dtype == np.int64 and total.tolist() == [14, 11]
    assert counts.tolist() == [4, 1]  # a new array, the argument untouched
    assert comm.all_reduce_host(np.array([0.5])).tolist() == [10.5]
    with pytest.raises(TypeError, match="integer or floating"):
        comm.all_reduce_host(np.array(["a"]))
    with pytest.raises(TypeError, match=r"Backend\.to_numpy"):
        comm.all_reduce_host(object())  # type: ignore[arg-type]
    assert comm.broadcast_object({"a": 1}) == ("from root", 0)
    assert comm.all_gather_object("me") == ["rank0", "me", "rank2"]
    comm.barrier()
    with pytest.raises(SystemExit, match=r"Abort\(3\)"):
        comm.abort(3)
    kinds = [call[0] for call in comm.comm.calls]
    assert kinds == ["Allreduce", "Allreduce", "bcast", "allgather", "Barrier", "Abort"]
    assert MPICommunicator().comm is fake_mpi.COMM_WORLD  # COMM_WORLD by default


def test_mpi_cuda_aware_hands_device_buffers(fake_mpi: FakeMPI,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The CUDA-aware path, with the GPU-like device standing in for CuPy: the current stream
    is synchronised, then the device array itself goes to MPI (no host read)."""
    import nnbackend as nb

    events: list[str] = []
    monkeypatch.setattr(mpi_module, "_is_cuda_buffer", lambda be: be.name == "gpulike")
    monkeypatch.setattr(mpi_module, "_synchronize_current_stream",
                        lambda: events.append("synchronize"))
    be = nb.get_backend("gpulike")
    a = be.asarray(np.ones(3), dtype="float32")
    comm = _mpi(fake_mpi, cuda_aware=True)
    original = comm.comm.Allreduce

    def allreduce(sendbuf: Any, recvbuf: Any, op: Any) -> None:
        events.append("Allreduce")
        original(sendbuf, recvbuf, op)

    comm.comm.Allreduce = allreduce  # type: ignore[method-assign]
    with count_host_reads() as reads:
        assert comm.all_reduce([a])[0] is a
        assert comm.broadcast([a], root=0)[0] is a
    assert reads.count == 0, reads
    assert events == ["synchronize", "Allreduce", "synchronize"]
    assert [call[1] for call in comm.comm.calls] == [a, a]
    # Not CUDA-aware (the default where detection says so): staged through the host.
    staged = _mpi(fake_mpi, cuda_aware=False)
    staged.all_reduce([a])
    assert isinstance(staged.comm.calls[0][1], np.ndarray)


# ------------------------------------------------------------------ CUDA-awareness detection

class _FakeLibrary:
    def __init__(self, **functions: Any) -> None:
        for name, fn in functions.items():
            setattr(self, name, fn)


def _gpu_query(flag: int, status: int = 0) -> Any:
    def query(kind: int, ref: Any) -> int:
        assert kind == 0  # MPIX_GPU_SUPPORT_CUDA
        ref._obj.value = flag
        return status
    return query


@pytest.mark.parametrize(("functions", "expected"), [
    ({"MPIX_GPU_query_support": _gpu_query(1)}, True),  # MPICH built with CUDA
    ({"MPIX_GPU_query_support": _gpu_query(0),
      "MPIX_Query_cuda_support": lambda: 1}, False),  # MPICH's own answer comes first
    ({"MPIX_GPU_query_support": _gpu_query(1, status=1)}, False),  # the query failed
    ({"MPIX_Query_cuda_support": lambda: 1}, True),  # Open MPI built with CUDA
    ({"MPIX_Query_cuda_support": lambda: 0}, False),
    ({}, False),  # neither exported
])
def test_cuda_aware_detection(monkeypatch: pytest.MonkeyPatch, functions: dict[str, Any],
                              expected: bool) -> None:
    monkeypatch.delenv(mpi_module.CUDA_AWARE_ENV, raising=False)
    monkeypatch.setattr(mpi_module, "_mpi_library_paths", lambda: ["/x/libmpi.so.12"])
    monkeypatch.setattr(ctypes, "CDLL", lambda path: _FakeLibrary(**functions))
    assert cuda_aware_mpi() is expected


def test_cuda_aware_overrides_and_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> list[str]:
        raise OSError("no /proc here")

    monkeypatch.setattr(mpi_module, "_mpi_library_paths", broken)
    monkeypatch.delenv(mpi_module.CUDA_AWARE_ENV, raising=False)
    assert cuda_aware_mpi() is False  # any failure: host staging
    monkeypatch.setenv(mpi_module.CUDA_AWARE_ENV, "1")
    assert cuda_aware_mpi() is True
    monkeypatch.setenv(mpi_module.CUDA_AWARE_ENV, "0")
    assert cuda_aware_mpi() is False
    monkeypatch.setenv(mpi_module.CUDA_AWARE_ENV, "yes")
    with pytest.raises(ValueError, match="NNBACKEND_MPI_CUDA_AWARE must be 1 or 0"):
        cuda_aware_mpi()
    monkeypatch.setattr(mpi_module, "_mpi_library_paths", lambda: [])
    monkeypatch.delenv(mpi_module.CUDA_AWARE_ENV)
    assert cuda_aware_mpi() is False  # no MPI library loaded


def test_mpi_library_paths_reads_this_process() -> None:
    # A list of paths (empty: mpi4py is not loaded in the test process); never an error.
    assert all(isinstance(p, str) for p in mpi_module._mpi_library_paths())


def test_importing_distributed_imports_neither_mpi4py_nor_cupy() -> None:
    import subprocess

    code = ("import sys, nnbackend.distributed as d; d.init(); "
            "print('mpi4py' in sys.modules, 'cupy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True, env=_env_without_launcher())
    assert out.stdout.split() == ["False", "False"]


def _env_without_launcher() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARIABLES}


# ------------------------------------------------------------------------------------- NCCL

class FakeGroup:
    """Stands for cupyx.distributed.NCCLBackend: records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def all_reduce(self, in_array: Any, out_array: Any, op: str = "sum",
                   stream: Any = None) -> None:
        self.calls.append(("all_reduce", in_array, out_array, op, stream))

    def broadcast(self, in_out_array: Any, root: int = 0, stream: Any = None) -> None:
        self.calls.append(("broadcast", in_out_array, root, stream))

    def barrier(self) -> None:
        self.calls.append(("barrier",))


@pytest.fixture
def gpulike_as_cupy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU-like test device stands in for CuPy: NCCL accepts its arrays."""
    from nnbackend.backend import backend_of

    monkeypatch.setattr(nccl_module, "_is_cupy_array",
                        lambda a: backend_of(a).name == "gpulike")


def test_nccl_call_sequence(fake_mpi: FakeMPI, gpulike_as_cupy: None) -> None:
    import nnbackend as nb

    be = nb.get_backend("gpulike:1")
    mpi = _mpi(fake_mpi)
    group = FakeGroup()
    comm = NCCLCommunicator(mpi, group=group)
    assert (comm.rank, comm.size, comm.name, comm.device) == (1, 3, "nccl", None)
    a = be.asarray(np.ones(5), dtype="float32")
    b = be.asarray(np.zeros((2, 2)), dtype="float64")
    with count_host_reads() as reads:
        out = comm.all_reduce([a, b])
        out2 = comm.broadcast([a], root=2)
    assert reads.count == 0, reads  # queued on the device: nothing synchronises
    assert out[0] is a and out[1] is b and out2[0] is a
    # in place (send = receive buffer), one call per array, on the current stream (None)
    assert group.calls == [("all_reduce", a, a, "sum", None), ("all_reduce", b, b, "sum", None),
                           ("broadcast", a, 2, None)]
    assert mpi.comm.calls == []  # arrays never touch MPI
    assert comm.stats.calls == {"all_reduce": 1, "broadcast": 1}
    assert comm.stats.bytes == {"all_reduce": 5 * 4 + 4 * 8, "broadcast": 5 * 4}
    # host values and objects go through MPI; the barrier through the group
    assert comm.all_reduce_host(np.array([1, 2])).tolist() == [11, 12]
    assert comm.broadcast_object("x", root=1) == "x"
    assert comm.all_gather_object(1) == ["rank0", 1, "rank2"]
    comm.barrier()
    assert group.calls[-1] == ("barrier",)
    assert [c[0] for c in mpi.comm.calls] == ["Allreduce", "bcast", "allgather"]
    with pytest.raises(ValueError, match="root 3 is not a rank"):
        comm.broadcast([a], root=3)
    with pytest.raises(SystemExit):
        comm.abort(2)
    assert mpi.comm.calls[-1] == ("Abort", 2)


def test_nccl_refuses_other_arrays(case: Any, fake_mpi: FakeMPI) -> None:
    comm = NCCLCommunicator(_mpi(fake_mpi), group=FakeGroup())
    a = case.asarray(np.ones(3))
    if case.backend.name == "cupy":
        pytest.skip("CuPy arrays are NCCL's")
    with pytest.raises(TypeError, match=r"rank 1\): NCCL sums CuPy arrays only.*shape \(3,\)"):
        comm.all_reduce([a])
    with pytest.raises(TypeError, match="use the \"mpi\" engine"):
        comm.broadcast([a])
    assert comm.group.calls == []


@pytest.mark.parametrize("new_signature", [False, True])
def test_nccl_creates_its_group(fake_mpi: FakeMPI, monkeypatch: pytest.MonkeyPatch,
                                new_signature: bool) -> None:
    """Rank 5 of 6 on a node with 4 GPUs: GPU 1 is made current, then the group is created
    with MPI handing out NCCL's id (use_mpi=True where CuPy takes it)."""
    events: list[tuple[Any, ...]] = []

    class Device:
        def __init__(self, index: int) -> None:
            self.index = index

        def use(self) -> None:
            events.append(("use", self.index))

    cupy = types.ModuleType("cupy")
    cupy.cuda = types.SimpleNamespace(  # type: ignore[attr-defined]
        Device=Device, runtime=types.SimpleNamespace(getDeviceCount=lambda: 4))
    group = FakeGroup()
    if new_signature:
        def init_process_group(n_devices: int, rank: int, *, backend: str = "nccl",
                               host: Any = None, port: Any = None,
                               force_store: bool = False) -> FakeGroup:
            events.append(("init", n_devices, rank, backend))
            return group
    else:
        def init_process_group(n_devices: int, rank: int, *, backend: str = "nccl",  # type: ignore[misc]
                               host: Any = None, port: Any = None,
                               use_mpi: bool = False) -> FakeGroup:
            events.append(("init", n_devices, rank, backend, use_mpi))
            return group
    distributed = types.ModuleType("cupyx.distributed")
    distributed.init_process_group = init_process_group  # type: ignore[attr-defined]
    cupyx = types.ModuleType("cupyx")
    cupyx.distributed = distributed  # type: ignore[attr-defined]
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "cupy", cupy)
        m.setitem(sys.modules, "cupyx", cupyx)
        m.setitem(sys.modules, "cupyx.distributed", distributed)
        fake_mpi.COMM_WORLD = FakeComm(fake_mpi, rank=5, size=6)
        comm = NCCLCommunicator()
    assert comm.group is group and comm.device == 1
    assert isinstance(comm.mpi, MPICommunicator)
    expected_init = ("init", 6, 5, "nccl") if new_signature else ("init", 6, 5, "nccl", True)
    assert events == [("use", 1), expected_init]


def test_nccl_group_errors(fake_mpi: FakeMPI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nccl_module, "select_device", lambda rank: 0)
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "cupyx", None)
        m.setitem(sys.modules, "cupyx.distributed", None)
        with pytest.raises(ImportError, match=r"CuPy with NCCL: pip install \"nnbackend\[cuda12\]"):
            NCCLCommunicator()
    with pytest.raises(ValueError, match=r"rank 1\): creating the NCCL group needs mpi over "
                                         r"MPI\.COMM_WORLD.*pass group="):
        NCCLCommunicator(_mpi(fake_mpi))  # a communicator other than COMM_WORLD


# ------------------------------------------------------------------------------------ world

@pytest.fixture
def fresh_world(monkeypatch: pytest.MonkeyPatch) -> None:
    """No communicator yet, no launcher in the environment, the hooks restored afterwards."""
    monkeypatch.setattr(world_module, "_world", None)
    for name in _LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)


@pytest.mark.parametrize("variable", _LAUNCH_VARIABLES)
def test_launched_by_mpi(fresh_world: None, monkeypatch: pytest.MonkeyPatch,
                         variable: str) -> None:
    assert launched_by_mpi() is False
    monkeypatch.setenv(variable, "1")
    assert launched_by_mpi() is True


def test_world_without_init(fresh_world: None) -> None:
    assert not is_initialized()
    assert isinstance(world(), SingleProcess)
    assert (get_rank(), get_world_size()) == (0, 1)


def test_init_auto_without_launcher(fresh_world: None) -> None:
    comm = init()
    assert isinstance(comm, SingleProcess) and world() is comm and is_initialized()
    assert init("auto") is comm and init("single") is comm
    with pytest.raises(RuntimeError, match=r"already SingleProcess.*engine 'mpi'"):
        init("mpi")
    assert not isinstance(sys.excepthook, faults_module._ExceptHook)  # one rank: no hook


def test_init_errors(fresh_world: None, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="engine must be one of 'auto', 'mpi', 'nccl', 'single'"):
        init("gloo")  # type: ignore[arg-type]
    monkeypatch.setattr(world_module, "_has_mpi4py", lambda: True)
    for engine in ("mpi", "nccl"):
        with pytest.raises(RuntimeError, match=r"not started by an MPI launcher.*"
                           r"`mpiexec -n 2 nnbackend train --distributed \.\.\.`.*"
                           r"`mpiexec -n 2 python script\.py`"):
            init(engine)  # type: ignore[arg-type]
    monkeypatch.setattr(world_module, "_has_mpi4py", lambda: False)
    for engine in ("mpi", "nccl"):
        with pytest.raises(ImportError, match=r'pip install "nnbackend\[mpi\]"'):
            init(engine)  # type: ignore[arg-type]
    monkeypatch.setenv("PMI_SIZE", "4")
    with pytest.raises(ImportError, match=r"MPI launcher \(4 ranks\).*every rank would train "
                                          r"alone.*nnbackend\[mpi\]"):
        init()
    assert not is_initialized()
    monkeypatch.setenv("PMI_SIZE", "1")  # a one-rank launch without mpi4py: the group of one
    assert isinstance(init(), SingleProcess)


@pytest.mark.parametrize("engine", ["auto", "mpi"])
def test_init_mpi_installs_the_abort_hook(fresh_world: None, fake_mpi: FakeMPI,
                                          monkeypatch: pytest.MonkeyPatch, engine: str) -> None:
    monkeypatch.setenv("PMI_RANK", "1")
    monkeypatch.setenv("PMI_SIZE", "3")
    monkeypatch.setattr(world_module, "_has_mpi4py", lambda: True)
    comm = init(engine)  # type: ignore[arg-type]
    assert isinstance(comm, MPICommunicator) and comm.comm is fake_mpi.COMM_WORLD
    assert world() is comm and (get_rank(), get_world_size()) == (1, 3)
    assert isinstance(sys.excepthook, faults_module._ExceptHook)
    assert sys.excepthook.comm is comm
    assert isinstance(threading.excepthook, faults_module._ThreadHook)
    assert init("mpi") is comm


# ----------------------------------------------------------------------------------- faults

class Recorder(Communicator):
    """A communicator whose abort only records (the hooks' target)."""

    name = "recorder"

    def __init__(self, rank: int = 1, size: int = 2) -> None:
        super().__init__(rank, size)
        self.aborted: list[int] = []

    def _all_reduce(self, arrays: list[Any]) -> list[Any]:
        return arrays

    def _broadcast(self, arrays: list[Any], root: int) -> list[Any]:
        return arrays

    def _all_reduce_host(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values)

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        return obj

    def all_gather_object(self, obj: Any) -> list[Any]:
        return [obj]

    def barrier(self) -> None:
        return None

    def abort(self, code: int = 1) -> None:
        self.aborted.append(code)


def _raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as caught:
        return caught


def test_abort_hook_reports_and_aborts(fresh_world: None,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[Any] = []
    sys.excepthook = lambda *exc: seen.append(exc)
    comm = Recorder()
    install_abort_hook(comm)
    original = sys.excepthook.previous  # type: ignore[attr-defined]
    install_abort_hook(comm)  # idempotent: wraps once
    assert sys.excepthook.previous is original  # type: ignore[attr-defined]
    error = _raised(RuntimeError("boom on rank 1"))
    sys.excepthook(type(error), error, error.__traceback__)
    err = capsys.readouterr().err
    assert comm.aborted == [1] and seen == []
    lines = err.strip().split("\n")
    assert all(line.startswith("[rank 1/2] ") for line in lines), err
    assert "Traceback" in lines[0] and "RuntimeError: boom on rank 1" in err
    assert "aborting the job (exit status 1)" in lines[-1]
    # A later communicator replaces the first; a group of one passes to the previous hook.
    single = Recorder(0, 1)
    install_abort_hook(single)
    sys.excepthook(type(error), error, error.__traceback__)
    assert single.aborted == [] and len(seen) == 1


def test_abort_hook_in_threads(fresh_world: None, capsys: pytest.CaptureFixture[str]) -> None:
    comm = Recorder(0, 3)
    install_abort_hook(comm)
    install_abort_hook(comm)
    assert not isinstance(threading.excepthook.previous,  # type: ignore[attr-defined]
                          faults_module._ThreadHook)

    def work() -> None:
        raise ValueError("thread failed")

    thread = threading.Thread(target=work, name="loader")
    thread.start()
    thread.join()
    assert comm.aborted == [1]
    err = capsys.readouterr().err
    assert "[rank 0/3] uncaught exception in thread 'loader':" in err
    assert "[rank 0/3] ValueError: thread failed" in err


def test_abort_hook_falls_back_to_exit_when_abort_fails(monkeypatch: pytest.MonkeyPatch,
                                                        fresh_world: None) -> None:
    class Broken(Recorder):
        def abort(self, code: int = 1) -> None:
            raise OSError("MPI is gone")

    exits: list[int] = []
    monkeypatch.setattr(faults_module.os, "_exit", exits.append)
    install_abort_hook(Broken())
    error = _raised(KeyError("k"))
    sys.excepthook(type(error), error, error.__traceback__)
    assert exits == [1]


def test_abort_on_error(fresh_world: None, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    comm = Recorder()
    with pytest.raises(ValueError, match="bad"), abort_on_error(comm):
        raise ValueError("bad")
    assert comm.aborted == [1]
    assert "[rank 1/2] ValueError: bad" in capsys.readouterr().err
    with pytest.raises(SystemExit), abort_on_error(comm):
        raise SystemExit(3)
    with pytest.raises(SystemExit), abort_on_error(comm):
        raise SystemExit("usage: a message")
    with pytest.raises(SystemExit), abort_on_error(comm):
        raise SystemExit(0)
    with abort_on_error(comm):
        pass
    assert comm.aborted == [1, 3, 1]
    assert "[rank 1/2] usage: a message" in capsys.readouterr().err
    with pytest.raises(KeyError), abort_on_error(comm, show_traceback=False):
        raise KeyError("x")
    err = capsys.readouterr().err
    assert "[rank 1/2] KeyError: 'x'" in err and "Traceback" not in err
    # One rank: nothing aborts. Without a communicator: world() when the exception happens.
    single = Recorder(0, 1)
    with pytest.raises(ValueError), abort_on_error(single):
        raise ValueError("one rank")
    assert single.aborted == []
    late = Recorder(1, 4)
    with pytest.raises(ValueError), abort_on_error():
        monkeypatch.setattr(world_module, "_world", late)
        raise ValueError("after init")
    assert late.aborted == [1]


def test_host_all_reduces_are_counted_in_the_stats() -> None:
    """Σ of host values over the ranks (a data-parallel forward's row counts, metric sums) is
    recorded as ``"host"`` with its bytes, on one process and on a group of three."""
    from nnbackend.testing.localgroup import LocalGroup

    single = SingleProcess()
    assert single.all_reduce_host(np.array([3, 4], dtype=np.int64)).tolist() == [3, 4]
    assert single.stats.calls == {"host": 1} and single.stats.bytes == {"host": 16}

    def rank(comm: Any) -> tuple[list[float], dict[str, int], dict[str, int]]:
        total = comm.all_reduce_host(np.array([1.0, comm.rank]))
        comm.all_reduce_host(np.array([comm.rank], dtype=np.int64))
        return total.tolist(), dict(comm.stats.calls), dict(comm.stats.bytes)

    for total, calls, nbytes in LocalGroup(3).run(rank):
        assert total == [3.0, 3.0]
        assert calls == {"host": 2} and nbytes == {"host": 24}
