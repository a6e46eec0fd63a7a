"""Normalisation layers over :mod:`nnbackend.functional.normalization`, as PyTorch's:
``BatchNorm1d``/``BatchNorm2d`` (per channel, over the batch), ``SyncBatchNorm`` (the same over
the global batch of a data-parallel group), ``LayerNorm`` and ``RMSNorm`` (per sample, over its
trailing ``normalized_shape`` axes; sections at the end).

``BatchNorm1d`` takes (N, C) or (N, C, L), ``BatchNorm2d`` (N, C, H, W); both normalise each
channel C over every other axis. State, under PyTorch's names and shapes (a ``torch.nn``
BatchNorm's state dict, converted to NumPy, loads as it is, and ours into PyTorch's):

==========================  =================================================================
``weight`` (C,)             γ, a parameter initialised to ones (``affine=True``)
``bias`` (C,)               β, a parameter initialised to zeros (``affine=True``)
``running_mean`` (C,)       a buffer, zeros (``track_running_stats=True``)
``running_var`` (C,)        a buffer, ones (``track_running_stats=True``)
``num_batches_tracked`` ()  a 0-d integer buffer, the number of training forwards so far
                            (int64; int32 on JAX without 64-bit types), on the device
==========================  =================================================================

Each training forward (``forward`` and ``module(x)`` alike, as in PyTorch) uses the batch's
statistics and updates the running ones and the count on the device, without reading anything
back; evaluation uses the running statistics (batch statistics when they are not tracked).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from .._checks import check_flag, check_int, check_nonnegative, check_probability
from .._libraries import library_of
from .._typing import Array, Backprop, Namespace
from ..backend import dtype_name, get_backend
from ..functional.normalization import (
    BatchNormForward,
    Reduce,
    _normalized_shape,
    batch_norm_backward,
    batch_norm_forward,
    layer_norm_backward,
    layer_norm_forward,
    rms_norm_forward,
)
from .linear import InputShapeError
from .module import Context, Module, Parameter

if TYPE_CHECKING:  # layers do not import the distributed package (it is looked up lazily)
    from ..distributed.comm import Communicator

__all__ = ["BatchNorm1d", "BatchNorm2d", "InputLayoutError", "LayerNorm", "RMSNorm",
           "SyncBatchNorm"]


class InputLayoutError(InputShapeError):
    """An input of the wrong rank or channel count for a layer (BatchNorm, Dropout2d): the
    message gives the accepted shapes, e.g. ``(N, 16, H, W)``.

    An :class:`~nnbackend.layers.linear.InputShapeError`, so that containers prepend the
    layer's path as the error passes through them (``Sequential: layer 3 BatchNorm2d(16, ...)
    expected input of shape (N, 16, H, W), got (8, 6, 14, 14)``).
    """

    def __init__(self, layer: str, expected: str, shape: tuple[int, ...]) -> None:
        super().__init__(layer, 0, shape)
        self.expected_shape = expected

    def __str__(self) -> str:
        where = self.layer
        if self.path:
            where = f"{self.container}: layer {'.'.join(map(str, self.path))} {where}"
        return f"{where} expected input of shape {self.expected_shape}, got {self.shape}"


class _BatchNorm(Module):
    """y = (x − μ) / √(σ² + ε) · γ + β per channel (axis 1); see the module docstring.

    Parameters
    ----------
    num_features : int
        C, the number of channels (axis 1 of the input).
    eps : float
        ε ≥ 0 added to the variance (PyTorch's 1e-5).
    momentum : float or None
        Weight m ∈ [0, 1] of each batch in the running statistics, r ← (1 − m) r + m · batch
        (PyTorch's 0.1); None: their cumulative average (m = 1 / ``num_batches_tracked``).
    affine : bool
        Learn γ (``weight``) and β (``bias``).
    bias : bool
        With ``affine``, learn β too (PyTorch 2's keyword; False: γ only).
    track_running_stats : bool
        Keep running statistics (for evaluation); False: batch statistics in every mode, and
        no buffers.
    dtype : optional
        float32 (default) or float64: of the parameters and the running statistics.
    backend : optional
        Where the arrays live (see :func:`nnbackend.get_backend`; default: the current one).

    Notes
    -----
    Training: the batch mean μ and biased variance σ² normalise, and the running variance takes
    the unbiased one (n / (n − 1) σ², n = values per channel), as PyTorch's; a training batch
    with one value per channel is refused. Backward (training): ∂L/∂x = (γ/σ)·(δ − mean δ −
    x̂ · mean(δ x̂)), ∂L/∂γ = Σ δ x̂, ∂L/∂β = Σ δ; in evaluation ∂L/∂x = δ γ / σ_running.
    """

    has_training_behaviour = True
    takes_ownership = True  # x − μ (training) or y (inference) in an owned x's storage
    hands_over_output = True  # y is new (or the owned x's storage); the backward keeps x − μ
    hands_over_input_grad = True  # ∂L/∂x is built in the storage of x − μ, spent
    _layouts: ClassVar[tuple[tuple[str, ...], ...]]
    """The accepted input shapes, axis names after N and C (``()`` is (N, C))."""
    _ranks: ClassVar[tuple[int, ...]]
    """The accepted ranks (of ``_layouts``)."""
    # Buffers (None without track_running_stats; Array is Any, so None fits the annotation).
    running_mean: Array
    running_var: Array
    num_batches_tracked: Array

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        bias: bool = True,
        dtype: Any = None,
        backend: Any = None,
    ) -> None:
        super().__init__()
        kind = type(self).__name__
        self.num_features = check_int(num_features, what=f"{kind}: num_features", minimum=1)
        self.eps = check_nonnegative(eps, caller=kind, name="eps")
        self.momentum = None if momentum is None else check_probability(
            momentum, caller=kind, name="momentum")
        self.affine = check_flag(affine, caller=kind, name="affine")
        use_bias = check_flag(bias, caller=kind, name="bias") and affine
        self.track_running_stats = check_flag(track_running_stats, caller=kind,
                                              name="track_running_stats")
        be = get_backend(backend)
        dt = be.dtype(dtype)
        self._dtype_name = dtype_name(dt)
        c = self.num_features
        self.weight: Parameter | None = None
        self.bias: Parameter | None = None
        if affine:
            self.weight = Parameter(be.xp.ones((c,), dtype=dt, device=be.device), "weight")
        if use_bias:
            self.bias = Parameter(be.zeros((c,), dtype=dt), "bias")
        stats = track_running_stats
        self.register_buffer(
            "running_mean", be.zeros((c,), dtype=dt) if stats else None)
        self.register_buffer(
            "running_var", be.xp.ones((c,), dtype=dt, device=be.device) if stats else None)
        # int64 (as PyTorch's); int32 where 64-bit types are off (JAX without x64).
        count = be.xp.zeros((), dtype=be.index_dtype, device=be.device) if stats else None
        self.register_buffer("num_batches_tracked", count)

    # ---------------------------------------------------------------- description

    def config(self) -> dict[str, Any]:
        """The constructor's arguments (see :mod:`nnbackend.layers.description`), with the
        arrays' dtype as it is now."""
        ref = self._reference_array()
        return {"num_features": self.num_features, "eps": self.eps, "momentum": self.momentum,
                "affine": self.affine, "track_running_stats": self.track_running_stats,
                "bias": self.bias is not None,
                "dtype": self._dtype_name if ref is None else dtype_name(ref.dtype)}

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")

    def _reference_array(self) -> Array | None:
        """γ, or the running mean without γ: the namespace, device and dtype inputs must have."""
        weight = self.weight
        return weight.data if weight is not None else self.running_mean

    # ---------------------------------------------------------------- the protocol

    def _check_shape(self, x: Array) -> None:
        """Raise :class:`InputLayoutError` unless x has an accepted rank and C channels."""
        if x.ndim not in self._ranks or x.shape[1] != self.num_features:
            c = self.num_features
            expected = " or ".join("(" + ", ".join(("N", str(c), *axes)) + ")"
                                   for axes in self._layouts)
            raise InputLayoutError(repr(self), expected, tuple(x.shape))

    def forward_pass(self, x: Array, ctx: Context) -> tuple[Array, Backprop]:
        self._check_shape(x)
        xp, input_grad = ctx.xp, ctx.input_grad
        reduce = self._reduce()
        y, _, _, saved = self._forward(x, xp, save=True, reduce=reduce,
                                       overwrite=ctx.owns_input)
        weight, bias = self.weight, self.bias
        if saved is None:  # (save=True always saves: for the type checker)
            raise AssertionError

        def backprop(dy: Array) -> Array | None:
            # x − μ is this closure's own (called once): ∂L/∂x is built in its storage.
            dx, dweight, dbias = batch_norm_backward(
                dy, saved, input_grad=input_grad,
                weight_grad=weight is not None and weight.requires_grad,
                bias_grad=bias is not None and bias.requires_grad, overwrite=True,
                reduce=reduce, xp=xp,
            )
            if weight is not None and dweight is not None:
                weight.accumulate_grad(dweight)
            if bias is not None and dbias is not None:
                bias.accumulate_grad(dbias)
            return dx

        return y, backprop

    def infer(self, x: Array, ctx: Context) -> Array:
        self._check_shape(x)
        return self._forward(x, ctx.xp, save=False, reduce=self._reduce(),
                             overwrite=ctx.owns_input).y

    def _reduce(self) -> Reduce | None:
        """The sum over the ranks of the batch statistics (None: this process's batch)."""
        return None

    def _forward(self, x: Array, xp: Namespace, *, save: bool,
                 reduce: Reduce | None = None, overwrite: bool = False) -> BatchNormForward:
        """The functional forward with this layer's state; in training, the running statistics
        and the count stored back (after the forward succeeded); x spent when ``overwrite``."""
        weight, bias = self.weight, self.bias
        update = self.training and self.running_mean is not None
        count = None
        if update and self.momentum is None:  # the count including this batch, on the device
            count = self.num_batches_tracked + 1
        out = batch_norm_forward(
            x, self.running_mean, self.running_var,
            None if weight is None else weight.data, None if bias is None else bias.data,
            self.training, self.momentum, self.eps, num_batches_tracked=count, save=save,
            reduce=reduce, overwrite=overwrite, xp=xp, caller=repr(self),
        )
        if update:
            mutable = library_of(xp).mutable_views
            self._store("running_mean", out.running_mean, mutable)
            self._store("running_var", out.running_var, mutable)
            if mutable:
                self.num_batches_tracked += 1  # in place, a 0-d array still
            else:
                self.num_batches_tracked = count if count is not None else \
                    self.num_batches_tracked + 1
        return out

    def _store(self, name: str, value: Array, mutable: bool) -> None:
        """A new buffer value: copied in place where arrays are mutable (references to the
        buffer stay valid), else rebound."""
        if mutable:
            getattr(self, name)[...] = value
        else:
            setattr(self, name, value)


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) inputs, over N (and L) for each channel C,
    as ``torch.nn.BatchNorm1d``."""

    _layouts = ((), ("L",))
    _ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) inputs, over N, H and W for each channel C, as
    ``torch.nn.BatchNorm2d``."""

    _layouts = (("H", "W"),)
    _ranks = (4,)


# The parameters and notes, written once (in _BatchNorm's docstring), in each public class's.
_SHARED_DOC = (_BatchNorm.__doc__ or "").split("\n", 1)[1]
BatchNorm1d.__doc__ = (BatchNorm1d.__doc__ or "") + "\n" + _SHARED_DOC
BatchNorm2d.__doc__ = (BatchNorm2d.__doc__ or "") + "\n" + _SHARED_DOC


# --------------------------------------------------------------------------------------------
# SyncBatchNorm: batch statistics of the global batch of a data-parallel group


class SyncBatchNorm(_BatchNorm):
    """Batch normalisation over the global batch of a data-parallel group, as
    ``torch.nn.SyncBatchNorm``: inputs (N, C, ...) of any rank ≥ 2.

    In training, each channel's mean and variance are those of every rank's shard together:
    per-channel sums are added over the ranks with ``comm.all_reduce`` (two calls in the
    forward, [Σ x, n] then Σ (x − μ)²; one in the backward, [Σ δ, Σ δ (x − μ)]: see
    "Synchronised statistics" in :mod:`nnbackend.functional.normalization`), so every rank
    normalises as one process would on the concatenated batch, and every rank's running
    statistics are the same (bit for bit: the ranks share the sums). ∂L/∂γ and ∂L/∂β are this
    rank's sums, which the data-parallel wrapper's gradient all-reduce adds (it also scales
    each rank's ∂L/∂y by n_r / B, so the backward's cross-rank sums are those of the global
    loss). A rank's shard may have one row (or none) when the global batch has more.
    Evaluation uses the running statistics and never communicates; in a group of one (or
    without a launcher) the layer is :class:`BatchNorm2d`'s computation exactly, with no call.

    Parameters
    ----------
    num_features, eps, momentum, affine, track_running_stats, bias, dtype, backend
        As :class:`BatchNorm2d`'s (the same parameters, buffers and state-dict names: a
        BatchNorm's state dict loads).
    comm : Communicator, optional
        The group whose ranks share the statistics; None: ``nnbackend.distributed.world()``,
        looked up at each training forward (so a layer built before the job's communicator,
        or rebuilt from a description, which records no communicator, uses the job's).

    Notes
    -----
    Every rank must run the same training forwards and backwards in the same order (each is a
    collective). A global batch of one value per channel is not refused (that would read the
    count back to the host): it gives a NaN running variance.
    """

    _layouts = (("...",),)
    _ranks = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        *,
        comm: Communicator | None = None,
        bias: bool = True,
        dtype: Any = None,
        backend: Any = None,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, bias=bias,
                         dtype=dtype, backend=backend)
        self.comm = comm

    def _check_shape(self, x: Array) -> None:
        """Raise :class:`InputLayoutError` unless x is (N, C, ...) with C channels."""
        if x.ndim < 2 or x.shape[1] != self.num_features:
            raise InputLayoutError(repr(self), f"(N, {self.num_features}, ...)", tuple(x.shape))

    def _communicator(self) -> Communicator:
        if self.comm is not None:
            return self.comm
        from ..distributed.world import world  # lazily: layers do not import distributed

        return world()

    def _reduce(self) -> Reduce | None:
        """``comm.all_reduce`` in training in a group of several ranks, else None."""
        if not self.training:
            return None
        comm = self._communicator()
        return comm.all_reduce if comm.size > 1 else None

    @classmethod
    def convert_sync_batchnorm(cls, module: Module, comm: Communicator | None = None) -> Module:
        """``module`` with every BatchNorm1d and BatchNorm2d in it replaced by a SyncBatchNorm,
        as ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``.

        Each replacement holds the replaced layer's parameters (the same
        :class:`~nnbackend.layers.Parameter` objects: an optimizer built on them still
        updates them), buffers and training flag, under the same names and in the same
        place (so state-dict keys and order are unchanged); containers are modified in place
        and returned.

        Parameters
        ----------
        module : Module
            A layer or a model (any container: Sequential, Residual, Parallel, ...).
        comm : Communicator, optional
            The replacements' group (None: the job's, looked up at each forward).

        Returns
        -------
        Module
            ``module`` itself, or its replacement when it is itself a BatchNorm1d/2d.
        """
        if not isinstance(module, Module):
            msg = (f"SyncBatchNorm.convert_sync_batchnorm: expected a Module, got "
                   f"{type(module).__name__}")
            raise TypeError(msg)
        if isinstance(module, BatchNorm1d | BatchNorm2d):
            return cls._from_batch_norm(module, comm)
        for name, child in list(module.named_children()):
            converted = cls.convert_sync_batchnorm(child, comm)
            if converted is not child:
                _replace_child(module, name, child, converted)
        return module

    @classmethod
    def _from_batch_norm(cls, layer: _BatchNorm, comm: Communicator | None) -> SyncBatchNorm:
        config = layer.config()
        config["comm"] = comm
        new = cls(**config, backend=layer.backend)  # γ and β where the layer has them
        for name in ("weight", "bias"):  # the same Parameter objects, in the same order
            parameter = getattr(layer, name)
            if parameter is not None:
                new.__dict__["_parameters"][name] = parameter
                object.__setattr__(new, name, parameter)
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            setattr(new, name, getattr(layer, name))
        new.train(layer.training)
        return new


def _replace_child(parent: Module, name: str, old: Module, new: Module) -> None:
    """``new`` in ``old``'s place in ``parent``: the same key of its registry (the order of
    its children, so of its state dict, unchanged), its attribute, and the tuples or lists of
    layers a container keeps beside the registry (``Sequential.layers``,
    ``Parallel.branches``)."""
    parent.__dict__["_modules"][name] = new
    object.__setattr__(parent, name, new)
    for attribute, value in list(parent.__dict__.items()):
        if isinstance(value, tuple | list) and any(item is old for item in value):
            replaced = [new if item is old else item for item in value]
            object.__setattr__(parent, attribute,
                               tuple(replaced) if isinstance(value, tuple) else replaced)


# --------------------------------------------------------------------------------------------
# LayerNorm and RMSNorm: per sample, over the trailing axes


class _TrailingNorm(Module):
    """Normalisation of each sample over its trailing ``normalized_shape`` axes."""

    _centered: ClassVar[bool]
    normalized_shape: tuple[int, ...]
    eps: float | None
    elementwise_affine: bool
    weight: Parameter | None
    bias: Parameter | None

    def _init_parameters(self, normalized_shape: Any, elementwise_affine: bool, bias: bool,
                         dtype: Any, backend: Any) -> None:
        kind = type(self).__name__
        self.normalized_shape = _normalized_shape(normalized_shape, kind)
        self.elementwise_affine = check_flag(elementwise_affine, caller=kind,
                                             name="elementwise_affine")
        be = get_backend(backend)
        dt = be.dtype(dtype)
        self._dtype_name = dtype_name(dt)
        shape = self.normalized_shape
        self.weight = Parameter(be.xp.ones(shape, dtype=dt, device=be.device), "weight") \
            if elementwise_affine else None
        self.bias = Parameter(be.zeros(shape, dtype=dt), "bias") \
            if elementwise_affine and bias else None

    def _reference_array(self) -> Array | None:
        weight = self.weight
        return None if weight is None else weight.data

    def _check_shape(self, x: Array) -> None:
        """Raise :class:`InputLayoutError` unless x ends in ``normalized_shape``."""
        k = len(self.normalized_shape)
        if x.ndim < k or tuple(x.shape[x.ndim - k:]) != self.normalized_shape:
            expected = "(..., " + ", ".join(map(str, self.normalized_shape)) + ")"
            raise InputLayoutError(repr(self), expected, tuple(x.shape))

    def check_input(self, x: Array, ctx: Context) -> None:
        self._check_shape(x)

    def _forward(self, x: Array, xp: Namespace, save: bool) -> Any:
        weight, bias = self.weight, self.bias
        w = None if weight is None else weight.data
        if self._centered:
            return layer_norm_forward(x, self.normalized_shape, w,
                                      None if bias is None else bias.data, self.eps or 0.0,
                                      save=save, xp=xp, caller=repr(self))
        return rms_norm_forward(x, self.normalized_shape, w, self.eps, save=save, xp=xp,
                                caller=repr(self))

    def infer(self, x: Array, ctx: Context) -> Array:
        self._check_shape(x)
        return self._forward(x, ctx.xp, False)[0]

    def forward_pass(self, x: Array, ctx: Context) -> tuple[Array, Backprop]:
        self._check_shape(x)
        xp, input_grad = ctx.xp, ctx.input_grad
        y, saved = self._forward(x, xp, True)
        weight, bias = self.weight, self.bias

        def backprop(dy: Array) -> Array | None:
            dx, dweight, dbias = layer_norm_backward(
                dy, saved, input_grad=input_grad,
                weight_grad=weight is not None and weight.requires_grad,
                bias_grad=bias is not None and bias.requires_grad, xp=xp)
            if weight is not None and dweight is not None:
                weight.accumulate_grad(dweight)
            if bias is not None and dbias is not None:
                bias.accumulate_grad(dbias)
            return dx

        return y, backprop

    def _dtype_now(self) -> str:
        ref = self._reference_array()
        return self._dtype_name if ref is None else dtype_name(ref.dtype)


def _shape_config(shape: tuple[int, ...]) -> int | list[int]:
    return shape[0] if len(shape) == 1 else list(shape)


class LayerNorm(_TrailingNorm):
    """y = (x − μ) / √(σ² + ε) · γ + β over the trailing ``normalized_shape`` axes of each
    sample, as ``torch.nn.LayerNorm``.

    μ and the biased σ² are taken over the D = prod(normalized_shape) trailing values of each
    sample (two passes: no cancellation); the same statistics in training and evaluation
    (no running statistics, no mode).

    Parameters
    ----------
    normalized_shape : int or tuple of int
        The trailing shape normalised over: inputs (..., ``*normalized_shape``).
    eps : float
        ε ≥ 0 added to the variance (PyTorch's 1e-5).
    elementwise_affine : bool
        Learn γ (``weight``, ones) and β (``bias``, zeros), each of shape normalized_shape.
    bias : bool
        With ``elementwise_affine``, learn β too (False: γ only), as PyTorch's.
    dtype : optional
        float32 (default) or float64: of γ and β.
    backend : optional
        Where the parameters live (see :func:`nnbackend.get_backend`; default: the current one).

    Notes
    -----
    Backward, g = δ γ and means over each sample's D values: ∂L/∂x = (g − mean g − x̂ mean(g x̂))
    / √(σ² + ε), ∂L/∂γ = Σ δ x̂, ∂L/∂β = Σ δ (sums over every leading position). Without
    ``elementwise_affine`` the layer has no parameters and takes floating inputs of any dtype.
    """

    _centered = True

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        *,
        dtype: Any = None,
        backend: Any = None,
    ) -> None:
        super().__init__()
        self.eps = check_nonnegative(eps, caller="LayerNorm", name="eps")
        self._init_parameters(normalized_shape, elementwise_affine,
                              check_flag(bias, caller="LayerNorm", name="bias"), dtype, backend)

    def config(self) -> dict[str, Any]:
        """The constructor's arguments (see :mod:`nnbackend.layers.description`)."""
        return {"normalized_shape": _shape_config(self.normalized_shape), "eps": self.eps,
                "elementwise_affine": self.elementwise_affine, "bias": self.bias is not None,
                "dtype": self._dtype_now()}

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}"
                + ("" if self.bias is not None or not self.elementwise_affine else ", bias=False"))


class RMSNorm(_TrailingNorm):
    """y = x / √(mean x² + ε) · γ over the trailing ``normalized_shape`` axes of each sample,
    as ``torch.nn.RMSNorm``.

    Parameters
    ----------
    normalized_shape : int or tuple of int
        The trailing shape normalised over: inputs (..., ``*normalized_shape``).
    eps : float, optional
        ε ≥ 0 added to the mean square; None (PyTorch's default): ``finfo(dtype).eps`` of the
        input's dtype.
    elementwise_affine : bool
        Learn γ (``weight``, ones, of shape normalized_shape).
    dtype : optional
        float32 (default) or float64: of γ.
    backend : optional
        Where the parameters live (see :func:`nnbackend.get_backend`; default: the current one).

    Notes
    -----
    Backward, g = δ γ, x̂ = x r with r = 1 / √(mean x² + ε): ∂L/∂x = r (g − x̂ mean(g x̂)),
    ∂L/∂γ = Σ δ x̂.
    """

    _centered = False

    def __init__(
        self,
        normalized_shape: int | tuple[int, ...],
        eps: float | None = None,
        elementwise_affine: bool = True,
        *,
        dtype: Any = None,
        backend: Any = None,
    ) -> None:
        super().__init__()
        self.eps = None if eps is None else check_nonnegative(eps, caller="RMSNorm", name="eps")
        self._init_parameters(normalized_shape, elementwise_affine, False, dtype, backend)

    def config(self) -> dict[str, Any]:
        """The constructor's arguments (see :mod:`nnbackend.layers.description`)."""
        return {"normalized_shape": _shape_config(self.normalized_shape), "eps": self.eps,
                "elementwise_affine": self.elementwise_affine, "dtype": self._dtype_now()}

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}")
