"""Benchmarks: nnbackend against PyTorch eager and a hand-written NumPy floor.

``nnbackend bench`` (:func:`run_cli`) and the pytest-benchmark suite in ``benchmarks/`` share
the workloads, timer and counters of this package, one job per module (each imports only the
ones listed above it):

==================  =============================================================================
module              job
==================  =============================================================================
``counting``        :class:`CountingNamespace` and :class:`CountedArray`: count a computation's
                    array calls
``specs``           what is benchmarked: :data:`SIZES`, :data:`WORKLOADS`, the learning rates,
                    :func:`make_data`, :func:`build_model` and its :func:`host_parameters`
``convspecs``       the convolutional networks: :data:`CONV_SIZES` (LeNet, a residual block),
                    their FLOPs, :func:`make_conv_data`, :func:`conv_parameters` (the initial
                    state), :func:`build_conv_model`
``seqspecs``        the sequence layers: :data:`SEQ_SIZES` (a transformer encoder layer, an
                    LSTM), their FLOPs, :func:`make_seq_data`, :func:`seq_parameters` (the
                    initial state), :func:`build_seq_model`
``floor``           :class:`NumpyMLP`, the hand-written NumPy floor
``convfloor``       :class:`NumpyLeNet`, :class:`NumpyResBlock`: the convolutional floors
``jaxjit``          :class:`JaxJitMLP`, the hand-written ``jax.jit`` MLP step (the compiled
                    peer)
``timing``          :func:`measure`, the machine it ran on (:func:`machine_info`), the BLAS
                    kernel (:func:`blas_kernel`) and the OpenBLAS settings (:data:`OPENBLAS_ENV`)
``workloads``       :data:`TARGETS`, :func:`get_target`, :func:`build_workload` (one step of a
                    target), :func:`compiled_workload` (nnbackend's compiled step), :func:`runs`,
                    :func:`gemm_workload` (its products alone), :func:`build_torch_model`
``convworkloads``   :func:`build_conv_workload`, :func:`build_torch_conv_model`,
                    :func:`conv_gemm_share` (the time inside a step's products)
``seqworkloads``    :func:`build_seq_workload`, :func:`build_torch_seq_model`,
                    :func:`seq_gemm_share`
``memory``          :func:`peak_rss_growth`: a step's peak memory, in a fresh process
``breakdown``       :func:`step_breakdown`: a convolutional step's time per layer and direction
``calls``           :func:`count_calls`: the calls of one step
``plot``            the ``--plot`` sweep of throughput against batch size
``report``          :class:`Row`, :func:`format_table`, :class:`GemmTimes` (the products'
                    time, measured once per library, device, size and direction),
                    :func:`resolve_names`, :func:`run`, :func:`run_cli`
``distributed``     ``bench --distributed`` under ``mpiexec``: :func:`build_ddp_workload` (a
                    rank's DistributedDataParallel step on its shard), :func:`measure_ranks`
                    (every rank the same steps), :func:`set_rank_threads` (cores ÷ ranks),
                    :func:`run_distributed_cli`
==================  =============================================================================

The convolutional networks (``--sizes lenet,resblock``) are described in
:mod:`nnbackend.bench.convspecs` (networks, FLOPs), :mod:`nnbackend.bench.convworkloads`
(steps, GEMM share), :mod:`nnbackend.bench.convfloor` (the floor) and
:mod:`nnbackend.bench.memory` (peak memory); the sequence layers (``--sizes
transformer,lstm``) in :mod:`nnbackend.bench.seqspecs` (layers, FLOPs) and
:mod:`nnbackend.bench.seqworkloads` (steps, GEMM share; no floor), their peak memory by
:mod:`nnbackend.bench.memory` too. The rest of this page is about the MLPs.

Rows
----
For every MLP size (:data:`SIZES`) and workload (:data:`WORKLOADS`), one row per target:

=====================  ==========================================================================
target                 what runs
=====================  ==========================================================================
``floor``              :class:`NumpyMLP`, a hand-written NumPy MLP: preallocated buffers,
                       ``matmul(..., out=)``, in-place ReLU masks, a fused softmax-cross-entropy
                       gradient and in-place SGD/Adam. The speed a NumPy library could hope for.
``torch-cpu``          PyTorch eager on the CPU, written directly against torch:
                       ``torch.nn.Linear``/``ReLU``, ``F.cross_entropy``, ``torch.optim.SGD``/
                       ``Adam`` with their defaults; thread count left at torch's default.
``nnbackend-numpy``    nnbackend on NumPy.
``torch-cuda``         PyTorch eager on CUDA, where a device is available.
``nnbackend-cupy``     nnbackend on CuPy, where a CUDA device is usable.
``nnbackend-gpulike``  nnbackend on the GPU-like test device (CuPy's paths, NumPy's values).
=====================  ==========================================================================

Compiled rows (``compiled`` targets: the training steps only, :data:`COMPILED_WORKLOADS`):

========================  =======================================================================
target                    what runs
========================  =======================================================================
``jax-jit-handwritten``   :class:`JaxJitMLP`: a hand-written ``jax.jit`` step, pure functions
                          over a parameters pytree, ``jax.value_and_grad``, SGD/Adam as
                          ``tree_map``, the state donated. MLPs only.
``nnbackend-jax-jit``     nnbackend's step compiled by :func:`nnbackend.compile_step` on JAX
                          (one ``jax.jit`` program, state donated); MLPs, convolutional networks
                          and sequence layers.
``nnbackend-cupy-graph``  :func:`nnbackend.compile_step` on CuPy: the step captured as a CUDA
                          graph and replayed, where a CUDA device is usable.
========================  =======================================================================

They are timed as the others (JAX: the clock waits for the last step's loss with
``block_until_ready``), after a warm-up that compiles; the compilation's host time is reported
apart (``compile_seconds``). Their calls per step are not counted (one program call), and their
GEMM fraction is the products alone compiled into one program. The convolutional and sequence
steps take no ∂L/∂x (a training step needs none; the FLOPs keep the eager rows' count), and the
residual block's loss is Σ y ⊙ g, whose gradient is the eager step's fixed cotangent g.

Every target starts from the same weights (nnbackend's He initialisation, seeded) and the same
data: x ~ N(0, 1) of shape (B, n₀) in float32 and integer labels uniform in [0, C), drawn once
from ``numpy.random.default_rng(seed)``. Hidden layers use ReLU; the loss is softmax
cross-entropy on the logits.

===============  ==============================================================  =============
workload         one step                                                        FLOPs
===============  ==============================================================  =============
``forward``      inference: logits = model(x), nothing retained                  2 B Σ nᵢ nₒ
``fwd-bwd``      zero_grad, forward, loss and ∂L/∂z, backward into the grads     6 B Σ nᵢ nₒ
``train-sgd``    fwd-bwd, then an SGD step (lr = 0.01)                           6 B Σ nᵢ nₒ
``train-adam``   fwd-bwd, then an Adam step (lr = 1e-3, β = (0.9, 0.999))        6 B Σ nᵢ nₒ
===============  ==============================================================  =============

FLOPs count the matrix products only, by the usual convention: 2 B nᵢ nₒ per layer forward
(x Wᵀ) and twice that backward (δᵀ x and δ W), summed over the layers (nᵢ → nₒ). No target
computes ∂L/∂x of the first layer, so the training count overstates the work by 2 B n₀ n₁;
GFLOP/s is a rate on this fixed count, comparable between rows.

Measurements
------------
time per step
    :func:`measure`: a warm-up (at least two steps and a tenth of the budget), then
    ``repeats`` repeats of timed blocks of steps (a block lasts about 2 ms, so the clock's
    resolution does not matter) with ``time.perf_counter``; the device is synchronised before
    each block's clock stops. The time per step is the minimum over the repeats of the median
    block: the median shrugs off a stray interruption, the minimum picks the quietest repeat.
    The targets of one size and workload are timed in turns (:func:`measure_interleaved`:
    three rounds, each target's time its fastest round's), so that a burst of other work on a
    shared machine falls on one round of every target rather than on one target.
samples/s, GFLOP/s
    B / time and FLOPs / time.
GEMM fraction
    The step's matrix products alone (the same shapes and transposed layouts, into
    preallocated outputs) timed the same way, in the same run, on the same library and device,
    divided by the step's time: the share of the step no implementation of this algorithm can
    remove. 1 − fraction is elementwise work, allocation and per-call overhead.
array calls per step
    nnbackend and the floor: counted by running one step (after two warm-up steps) on arrays
    wrapped by :class:`CountingNamespace`; every call of a namespace function and every
    operator, indexing and array-producing attribute on an array counts once (see the class).
    torch: ATen operators dispatched during the step, the C++ autograd backward included (a
    ``TorchDispatchMode``); a lower level than the Array API calls, shown for scale.
ratios
    ``×torch``: throughput relative to PyTorch eager on the same kind of device; ``×floor``:
    relative to the hand-written NumPy floor. Above 1 is faster.
"""

from __future__ import annotations

from .breakdown import Phase, StepBreakdown, format_breakdown, step_breakdown
from .calls import CallCount, count_calls
from .convfloor import NumpyLeNet, NumpyResBlock
from .convspecs import (
    CONV_SIZES,
    CONV_WORKLOADS,
    DROPOUT_P,
    ConvShape,
    ConvSpec,
    build_conv_model,
    conv_parameters,
    make_conv_data,
)
from .convworkloads import (
    GEMM_NAMES,
    TORCH_GEMM_OPS,
    MatmulTimer,
    blas_core_share,
    build_conv_workload,
    build_torch_conv_model,
    conv_gemm_share,
    torch_threads,
)
from .counting import CountedArray, CountingNamespace
from .distributed import (
    DDP_BACKENDS,
    DistributedRow,
    RankThreads,
    RankTiming,
    build_ddp_workload,
    gradient_bytes,
    measure_ranks,
    resolve_ddp_names,
    run_distributed,
    run_distributed_cli,
    set_rank_threads,
)
from .floor import NumpyMLP, flat_adam_update
from .jaxjit import JaxJitMLP
from .memory import MemoryResult, peak_rss_growth
from .report import (
    GemmTimes,
    Row,
    format_table,
    make_row,
    resolve_names,
    restart_without_openblas_env,
    run,
    run_cli,
    workload_compile_seconds,
)
from .seqspecs import (
    SEQ_SIZES,
    SEQ_WORKLOADS,
    SeqSpec,
    build_seq_model,
    make_seq_data,
    seq_parameters,
)
from .seqworkloads import (
    TORCH_SEQ_GEMM_OPS,
    build_seq_workload,
    build_torch_seq_model,
    seq_gemm_share,
)
from .specs import (
    ADAM_LR,
    SGD_LR,
    SIZES,
    WORKLOADS,
    MLPSpec,
    build_model,
    host_parameters,
    make_data,
)
from .timing import (
    OPENBLAS_ENV,
    Timing,
    blas_kernel,
    machine_info,
    measure,
    measure_interleaved,
    openblas_env,
    thread_info,
    without_openblas_env,
)
from .workloads import (
    COMPILED_WORKLOADS,
    TARGETS,
    Target,
    Workload,
    build_torch_model,
    build_workload,
    compiled_workload,
    gemm_workload,
    get_target,
    runs,
)

__all__ = [
    "ADAM_LR",
    "COMPILED_WORKLOADS",
    "CONV_SIZES",
    "CONV_WORKLOADS",
    "DDP_BACKENDS",
    "DROPOUT_P",
    "GEMM_NAMES",
    "OPENBLAS_ENV",
    "SEQ_SIZES",
    "SEQ_WORKLOADS",
    "SGD_LR",
    "SIZES",
    "TARGETS",
    "TORCH_GEMM_OPS",
    "TORCH_SEQ_GEMM_OPS",
    "WORKLOADS",
    "CallCount",
    "ConvShape",
    "ConvSpec",
    "CountedArray",
    "CountingNamespace",
    "DistributedRow",
    "GemmTimes",
    "JaxJitMLP",
    "MLPSpec",
    "MatmulTimer",
    "MemoryResult",
    "NumpyLeNet",
    "NumpyMLP",
    "NumpyResBlock",
    "Phase",
    "RankThreads",
    "RankTiming",
    "Row",
    "SeqSpec",
    "StepBreakdown",
    "Target",
    "Timing",
    "Workload",
    "blas_core_share",
    "blas_kernel",
    "build_conv_model",
    "build_conv_workload",
    "build_ddp_workload",
    "build_model",
    "build_seq_model",
    "build_seq_workload",
    "build_torch_conv_model",
    "build_torch_model",
    "build_torch_seq_model",
    "build_workload",
    "compiled_workload",
    "conv_gemm_share",
    "conv_parameters",
    "count_calls",
    "flat_adam_update",
    "format_breakdown",
    "format_table",
    "gemm_workload",
    "get_target",
    "gradient_bytes",
    "host_parameters",
    "machine_info",
    "make_conv_data",
    "make_data",
    "make_row",
    "make_seq_data",
    "measure",
    "measure_interleaved",
    "measure_ranks",
    "openblas_env",
    "peak_rss_growth",
    "resolve_ddp_names",
    "resolve_names",
    "restart_without_openblas_env",
    "run",
    "run_cli",
    "run_distributed",
    "run_distributed_cli",
    "runs",
    "seq_gemm_share",
    "seq_parameters",
    "set_rank_threads",
    "step_breakdown",
    "thread_info",
    "torch_threads",
    "without_openblas_env",
    "workload_compile_seconds",
]
