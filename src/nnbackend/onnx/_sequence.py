"""ONNX converters of the sequence layers: ``Embedding``, ``MultiheadAttention``,
``TransformerEncoderLayer``, ``TransformerLM``, ``RNN``/``LSTM``/``GRU`` and
``RecurrentOutput`` (and so the ready-made ``gpt`` and ``char_lstm`` of
:mod:`nnbackend.models`).

Embedding
    ``Gather(W, ids, axis=0)`` with int64 ids (the graph's integer input); ``padding_idx``
    changes nothing in the forward pass (its row is looked up as it is).

MultiheadAttention (self-attention of one input x, or ``(query, key, value)``)::

    Q, K, V = split(x W_inᵀ + b_in)             one MatMul (separate thirds for a tuple input)
    heads   = Softmax(Q/√d Kᵀ + B) V            per head: (N, H, L, d)
    y       = concat(heads) W_oᵀ + b_o

with B the causal bias (0 where key j ≤ query i, −∞ elsewhere) when the layer was built with
``is_causal``, made for the inputs' *dynamic* lengths: ``Trilu`` (lower) of an all-true (L, S)
mask from ``ConstantOfShape``, then ``Where`` (top-left aligned, as the layer's mask, also when
L ≠ S; no row is fully masked, so the softmax never meets a row of −∞ only).
``need_weights`` adds the softmax weights as a second output (averaged over the heads with
``ReduceMean`` when ``average_attn_weights``). Refused (UnsupportedLayerError, naming the layer
and its path): a ``key_padding_mask`` or ``attn_mask`` input (tuples of 4 or 5 arrays). The
layer stores no mask of its own, and a mask given with the data can leave a query no key,
which the layer answers with zeros and ONNX's Softmax with NaN; the causal mask of
``is_causal`` (never empty) is what is exported. Dropout is the identity (eval mode).

TransformerEncoderLayer
    The self-attention above and the feed-forward block from the converters of ``Linear``,
    ``LayerNorm`` and the activation (exact GELU through ``Erf``: opset 17 has no ``Gelu``),
    pre- or post-norm as the layer is built, the dropouts identities. A tuple input
    ``(src, src_mask[, src_key_padding_mask])`` is refused as the attention's masks are.

TransformerLM (the GPT of ``nnbackend train --model transformer``)::

    h = Gather(E, ids) + Slice(P, 0, T)         T = Shape(ids)[1]: the dynamic length
    h = layers(h);  z = LayerNorm(h) Transpose(E)

The output projection reads the token embedding's initializer: one initializer ``E`` serves
both uses (the tie), transposed by a node. A sequence longer than the positional table fails
in the runtime (the Slice stops at C and the Add cannot broadcast), as the model refuses it.

RNN, LSTM, GRU: ONNX's own ``RNN``/``LSTM``/``GRU`` operators, one per stacked layer, with
``W`` (D, G·H, I), ``R`` (D, G·H, H) and ``B`` (D, 2·G·H) = [W_b, R_b] built on the host from
PyTorch's layouts, the gate blocks reordered:

========  =====================  ==========================================
layer     PyTorch's gate rows    ONNX's
========  =====================  ==========================================
LSTM      i, f, g, o             i, o, f, c (c = PyTorch's g)
GRU       r, z, n                z, r, h, with ``linear_before_reset=1``
                                 (PyTorch's n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)))
RNN       one gate               one gate, ``activations`` Tanh or Relu
========  =====================  ==========================================

ONNX's Y (T, D, N, H) becomes PyTorch's (T, N, D·H) by a Transpose and a Reshape
(``direction="bidirectional"`` for D = 2), which feeds the next layer; the final states of
the layers are concatenated into PyTorch's (L·D, N, H) (layer 0 forward, layer 0 reverse,
layer 1 ...). ``batch_first`` is a Transpose on each side; one unbatched (T, I) sequence an
Unsqueeze/Squeeze. The dropout between layers is the identity (eval mode). Initial states
are graph inputs when the example input holds them: ``(x, h0)``, ``(x, (h0, c0))`` or the flat
``(x, h0, c0)``; otherwise ONNX's zeros. The outputs are PyTorch's ``(output, h_n)`` or
``(output, (h_n, c_n))``, flattened into the graph's outputs in that order.

RecurrentOutput
    The recurrent layer's output sequence as it is, or its last step (``Slice`` from −1 on the
    time axis, then ``Squeeze``).

Float64 graphs (``export(..., dtype="float64")``) are valid ONNX, but onnxruntime's CPU
kernels of ``LSTM``, ``GRU`` and ``RNN`` (and ``Erf``, the exact GELU's) take float32 only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..layers.attention import MultiheadAttention
from ..layers.embedding import Embedding
from ..layers.language_model import TransformerLM
from ..layers.recurrent import GRU, LSTM, RNN, RecurrentOutput
from ..layers.transformer import TransformerEncoderLayer
from ._deps import require
from ._graph import Dim, GraphBuilder, Value
from ._registry import UnsupportedLayerError, attach, backend_input, convert, converter

__all__: list[str] = []

_INTEGER_TYPES = (6, 7)  # onnx.TensorProto.INT32, INT64


# ---------------------------------------------------------------------- helpers


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _where(module: Any, path: str) -> str:
    return f"{type(module).__name__} at {path!r}" if path else f"{type(module).__name__}"


def _refuse(module: Any, path: str, what: str) -> UnsupportedLayerError:
    msg = f"ONNX export: {_where(module, path)} ({module!r}): {what}"
    return UnsupportedLayerError(msg)


def _tensor(v: Value, module: Any, path: str, what: str) -> Value:
    if v.is_tuple:
        raise _refuse(module, path, f"expected one array as {what}, got a tuple of "
                      f"{len(v.parts)}")
    return v


def _with_example(g: GraphBuilder, y: Value, module: Any, x: Value, module_input: Any,
                  path: str) -> Value:
    """``y`` with the module's output on ``module_input`` attached: a tuple output, and an
    LSTM's flat (x, h0, c0) input that the layer takes as (x, (h0, c0)))."""
    first = x.parts[0] if x.is_tuple else x
    return attach(y, module(module_input), first, g.elem_type, path=path,
                  layer=type(module).__name__)


def _add(g: GraphBuilder, a: Value, b: Value, hint: str) -> Value:
    """a + b (the residual connections), with its example."""
    name = g.node("Add", [a.name, b.name], hint=hint)
    return attach(a.derive(name), a.array + b.array, a, g.elem_type)


def _host(param: Any, g: GraphBuilder) -> np.ndarray:
    """A parameter's values on the host in the export dtype (the explicit transfer)."""
    from ..backend import to_numpy

    return np.asarray(to_numpy(param.data), dtype=g.dtype)


# ---------------------------------------------------------------------- Embedding


@converter(Embedding)
def _embedding(g: GraphBuilder, module: Embedding, x: Value, path: str) -> Value:
    """y = W[ids]: ids (...) int64, y (..., E)."""
    x = _tensor(x, module, path, "its input (token ids)")
    if x.elem_type not in _INTEGER_TYPES:
        raise _refuse(module, path, "takes integer token ids; the graph's input here is "
                      f"not integer (ONNX element type {x.elem_type})")
    weight = g.parameter(module.weight, _join(path, "weight"))
    y = g.node("Gather", [weight, x.name], axis=0, hint=path or "embedding")
    return x.derive(y, shape=(*x.dims(), module.embedding_dim), elem_type=g.elem_type)


# ---------------------------------------------------------------------- attention


def _causal_bias(g: GraphBuilder, query: str, key: str, seq_axis: int, hint: str) -> str:
    """The (L, S) additive causal bias for the inputs' dynamic lengths: 0 where j ≤ i, −∞
    elsewhere (the layer's mask, top-left aligned): ``Trilu`` of an (L, S) all-true mask."""
    onnx = require("onnx")
    size = g.node("Concat", [g.node("Shape", [query], start=seq_axis, end=seq_axis + 1,
                                    hint=hint),
                             g.node("Shape", [key], start=seq_axis, end=seq_axis + 1,
                                    hint=hint)], axis=0, hint=hint)
    true = onnx.helper.make_tensor("true", onnx.TensorProto.BOOL, [1], [True])
    allowed = g.node("Trilu", [g.node("ConstantOfShape", [size], value=true, hint=hint)],
                     upper=0, hint=hint)
    return str(g.node("Where", [allowed, g.scalar(0.0), g.scalar(-math.inf)], hint=hint))


def _project(g: GraphBuilder, x: str, weight: str, bias: str | None, hint: str) -> str:
    y = g.node("MatMul", [x, g.node("Transpose", [weight], perm=[1, 0], hint=hint)], hint=hint)
    return str(y if bias is None else g.node("Add", [y, bias], hint=hint))


def _attention(g: GraphBuilder, m: MultiheadAttention, parts: Sequence[Value],
               path: str) -> Value:
    """The nodes of ``m`` on one input (self-attention) or (query, key, value); the output
    Value(s) without examples."""
    e, h, d = m.embed_dim, m.num_heads, m.head_dim
    hint = path or "attention"
    qdims, kdims = parts[0].dims(), parts[1 if len(parts) > 1 else 0].dims()
    unbatched = len(qdims) == 2
    batch_axis, seq_axis = (0, 1) if m.batch_first else (1, 0)
    names = [p.name for p in parts]
    if unbatched:
        names = [str(g.node("Unsqueeze", [n, g.constant([batch_axis])], hint=hint))
                 for n in names]
    weight = g.parameter(m.in_proj_weight, _join(path, "in_proj_weight"))
    bias = None if m.in_proj_bias is None else g.parameter(m.in_proj_bias,
                                                           _join(path, "in_proj_bias"))
    to_heads = [0, 2, 1, 3] if m.batch_first else [1, 2, 0, 3]
    if len(parts) == 1:  # one projection GEMM, as the layer's packed path
        qkv = g.node("Reshape", [_project(g, names[0], weight, bias, hint),
                                 g.constant([0, 0, 3, h * d])], hint=hint)
        # (A, B, 3, E) -> 3 × (A, B, 1, E) -> (A, B, H, d) -> (N, H, L, d); A, B = N, L
        # (batch_first) or L, N
        thirds = g.node("Split", [qkv], outputs=3, axis=2, num_outputs=3, hint=hint) \
            if g.opset >= 18 else g.node("Split", [qkv, g.constant([1, 1, 1])], outputs=3,
                                         axis=2, hint=hint)
        q, k, v = (g.node("Transpose", [g.node("Reshape", [t, g.constant([0, 0, h, d])],
                                               hint=hint)], perm=to_heads, hint=hint)
                   for t in thirds)
    else:
        weights = g.node("Split", [weight], outputs=3, axis=0, num_outputs=3, hint=hint) \
            if g.opset >= 18 else g.node("Split", [weight, g.constant([e, e, e])], outputs=3,
                                         axis=0, hint=hint)
        biases: list[str | None] = [None] * 3
        if bias is not None:
            biases = list(g.node("Split", [bias], outputs=3, axis=0, num_outputs=3, hint=hint)
                          if g.opset >= 18 else
                          g.node("Split", [bias, g.constant([e, e, e])], outputs=3, axis=0,
                                 hint=hint))
        q, k, v = (g.node("Transpose", [g.node("Reshape", [
            _project(g, n, w, b, hint), g.constant([0, 0, h, d])], hint=hint)],
            perm=to_heads, hint=hint) for n, w, b in zip(names, weights, biases, strict=True))
    q = g.node("Mul", [q, g.scalar(1.0 / math.sqrt(d))], hint=hint)  # (q · s) kᵀ, as the layer
    scores = g.node("MatMul", [q, g.node("Transpose", [k], perm=[0, 1, 3, 2], hint=hint)],
                    hint=hint)
    if m.is_causal:
        key = names[1] if len(names) > 1 else names[0]
        scores = g.node("Add", [scores, _causal_bias(g, names[0], key, seq_axis, hint)],
                        hint=hint)
    probs = g.node("Softmax", [scores], axis=-1, hint=hint)
    heads = g.node("MatMul", [probs, v], hint=hint)
    merged = g.node("Reshape", [g.node("Transpose", [heads], perm=[0, 2, 1, 3] if m.batch_first
                                       else [2, 0, 1, 3], hint=hint),
                                g.constant([0, 0, e])], hint=hint)
    out_bias = None if m.out_proj.bias is None else g.parameter(
        m.out_proj.bias, _join(path, "out_proj.bias"))
    y = _project(g, merged, g.parameter(m.out_proj.weight, _join(path, "out_proj.weight")),
                 out_bias, hint)
    if unbatched:
        y = str(g.node("Squeeze", [y, g.constant([batch_axis])], hint=hint))
    output = parts[0].derive(y, shape=qdims)
    if not m.need_weights:
        return output
    weights_out = probs  # (N, H, L, S)
    if m.average_attn_weights:
        weights_out = g.node("ReduceMean", [probs, g.constant([1])], keepdims=0, hint=hint) \
            if g.opset >= 18 else g.node("ReduceMean", [probs], axes=[1], keepdims=0,
                                         hint=hint)
    length, keys = qdims[0 if unbatched else seq_axis], kdims[0 if unbatched else seq_axis]
    shape: list[Dim | None] = [length, keys]
    if not m.average_attn_weights:
        shape.insert(0, h)
    if unbatched:
        weights_out = g.node("Squeeze", [weights_out, g.constant([0])], hint=hint)
    else:
        shape.insert(0, qdims[batch_axis])
    return Value.tuple_of(output, parts[0].derive(weights_out, shape=shape))


@converter(MultiheadAttention)
def _multihead_attention(g: GraphBuilder, module: MultiheadAttention, x: Value,
                         path: str) -> Value:
    """y (L, N, E) or (N, L, E) (and the weights with ``need_weights``) from x, or from
    (query, key, value)."""
    parts = x.parts if x.is_tuple else (x,)
    if len(parts) != 1 and len(parts) != 3:
        raise _refuse(module, path, "exports the self-attention of one input, or a (query, "
                      "key, value) tuple; a key_padding_mask or attn_mask input is not "
                      f"exported (got a tuple of {len(parts)}); the causal mask of "
                      "is_causal=True is")
    for p in parts:
        _tensor(p, module, path, "query, key or value")
    y = _attention(g, module, parts, path)
    if x.is_tuple or y.is_tuple:  # the registry runs a module on a single array only
        return _with_example(g, y, module, x, backend_input(x), path)
    return y


# ---------------------------------------------------------------------- transformer


def _feed_forward(g: GraphBuilder, m: TransformerEncoderLayer, h: Value, path: str) -> Value:
    """linear2(activation(linear1(h))) (the dropouts: identities in eval mode)."""
    h = convert(g, m.linear1, h, _join(path, "linear1"))
    h = convert(g, m.activation, h, _join(path, "activation"))
    return convert(g, m.linear2, h, _join(path, "linear2"))


@converter(TransformerEncoderLayer)
def _encoder_layer(g: GraphBuilder, module: TransformerEncoderLayer, x: Value,
                   path: str) -> Value:
    """Pre-norm x + f(norm(x)) or post-norm norm(x + f(x)) for the attention and the
    feed-forward block in turn (shape of src kept)."""
    if x.is_tuple:
        raise _refuse(module, path, "exports the layer on src alone (with the causal mask of "
                      "is_causal=True); a src_mask or src_key_padding_mask input is not "
                      f"exported (got a tuple of {len(x.parts)})")
    hint = path or "layer"
    attn_path = _join(path, "self_attn")
    if module.norm_first:
        a = convert(g, module.self_attn, convert(g, module.norm1, x, _join(path, "norm1")),
                    attn_path)
        h = _add(g, x, a, hint)
        return _add(g, h, _feed_forward(g, module, convert(g, module.norm2, h,
                                                           _join(path, "norm2")), path), hint)
    h = convert(g, module.norm1, _add(g, x, convert(g, module.self_attn, x, attn_path), hint),
                _join(path, "norm1"))
    return convert(g, module.norm2, _add(g, h, _feed_forward(g, module, h, path), hint),
                   _join(path, "norm2"))


@converter(TransformerLM)
def _transformer_lm(g: GraphBuilder, module: TransformerLM, x: Value, path: str) -> Value:
    """Logits (N, T, V) from ids (N, T), T dynamic up to the positional table's C."""
    x = _tensor(x, module, path, "its input (token ids (N, T))")
    if x.ndim != 2:
        raise _refuse(module, path, f"takes token ids (N, T), got rank {x.ndim}")
    hint = path or "lm"
    tokens = convert(g, module.token_embedding, x, _join(path, "token_embedding"))
    length = g.node("Shape", [x.name], start=1, end=2, hint=hint)  # T, dynamic
    table = g.parameter(module.position_embedding.weight,
                        _join(path, "position_embedding.weight"))
    zero = g.constant([0])
    positions = g.node("Slice", [table, zero, length, zero], hint=hint)  # P[0:T]
    steps = x.static_shape[1]
    h = attach(tokens.derive(g.node("Add", [tokens.name, positions], hint=hint)),
               tokens.array + module.position_embedding.weight.data[:steps, :], tokens,
               g.elem_type)
    for i, layer in enumerate(module.layers.children()):
        h = convert(g, layer, h, _join(path, f"layers.{i}"))
    h = convert(g, module.norm, h, _join(path, "norm"))
    # The tie: lm_head.weight is the token embedding's Parameter, so g.parameter returns the
    # one initializer the Gather reads.
    table_t = g.node("Transpose", [g.parameter(module.lm_head.weight,
                                               _join(path, "lm_head.weight"))],
                     perm=[1, 0], hint=hint)
    logits = g.node("MatMul", [h.name, table_t], hint=hint)
    return h.derive(logits, shape=(*h.dims()[:-1], module.vocab_size))


# ---------------------------------------------------------------------- recurrent layers

# PyTorch's gate blocks in ONNX's order: LSTM (i, f, g, o) -> (i, o, f, c); GRU (r, z, n)
# -> (z, r, h).
_GATE_ORDER = {"LSTM": (0, 3, 1, 2), "GRU": (1, 0, 2), "RNN_TANH": (0,), "RNN_RELU": (0,)}
_OPS = {"LSTM": "LSTM", "GRU": "GRU", "RNN_TANH": "RNN", "RNN_RELU": "RNN"}


def _reordered(w: np.ndarray, mode: str, hidden: int) -> np.ndarray:
    blocks = [w[k * hidden:(k + 1) * hidden] for k in range(len(_GATE_ORDER[mode]))]
    return np.concatenate([blocks[k] for k in _GATE_ORDER[mode]], axis=0)


def _recurrent_inputs(module: Any, x: Value, path: str) -> tuple[Value, Value | None,
                                                                  Value | None, Any]:
    """(input, h0, c0, the module's input as it takes it) from ``x``: an array, (x, h0),
    (x, (h0, c0)) or the flat (x, h0, c0)."""
    lstm = module.mode == "LSTM"
    if not x.is_tuple:
        return x, None, None, x.array
    parts = x.parts
    if lstm and len(parts) == 2 and parts[1].is_tuple and len(parts[1].parts) == 2:
        parts = (parts[0], *parts[1].parts)
    want = 3 if lstm else 2
    form = "(x, (h0, c0)) or (x, h0, c0)" if lstm else "(x, h0)"
    if len(parts) != want or any(p.is_tuple for p in parts):
        raise _refuse(module, path, f"takes an array or {form}; got a tuple of "
                      f"{len(x.parts)}")
    arrays = [p.array for p in parts]
    module_input = (arrays[0], (arrays[1], arrays[2])) if lstm else (arrays[0], arrays[1])
    return parts[0], parts[1], parts[2] if lstm else None, module_input


def _layer_weights(g: GraphBuilder, module: Any, layer: int, path: str) -> list[str]:
    """The names of W, R and B (or "") of ONNX's op for stacked layer ``layer``."""
    mode, hidden = module.mode, module.hidden_size
    params = dict(module.named_parameters())
    directions = 2 if module.bidirectional else 1
    ws, rs, bs = [], [], []
    for d in range(directions):
        suffix = f"_l{layer}" + ("_reverse" if d else "")

        def host(name: str, suffix: str = suffix) -> np.ndarray:
            return _reordered(_host(params[name + suffix], g), mode, hidden)

        ws.append(host("weight_ih"))
        rs.append(host("weight_hh"))
        if module.bias:
            bs.append(np.concatenate([host("bias_ih"), host("bias_hh")]))
    names = [g.initializer(np.stack(ws), _join(path, f"W_l{layer}")),
             g.initializer(np.stack(rs), _join(path, f"R_l{layer}"))]
    names.append(g.initializer(np.stack(bs), _join(path, f"B_l{layer}")) if bs else "")
    return names


@converter(RNN, LSTM, GRU)
def _recurrent(g: GraphBuilder, module: Any, x: Value, path: str) -> Value:
    """PyTorch's (output, h_n) or (output, (h_n, c_n)): output (T, N, D·H) ((N, T, D·H) with
    batch_first), states (L·D, N, H); one ONNX op per stacked layer."""
    inputs, h0, c0, module_input = _recurrent_inputs(module, x, path)
    mode, hidden = module.mode, module.hidden_size
    directions = 2 if module.bidirectional else 1
    lstm = mode == "LSTM"
    hint = path or mode.lower()
    dims = inputs.dims()
    unbatched = len(dims) == 2
    seq = inputs.name
    # ONNX's layout 0: (T, N, I); one unbatched sequence (T, I) is a batch of one.
    if unbatched:
        seq = g.node("Unsqueeze", [seq, g.constant([1])], hint=hint)
    elif module.batch_first:
        seq = g.node("Transpose", [seq], perm=[1, 0, 2], hint=hint)
    states: list[str | None] = []
    for state in (h0, c0):
        if state is None:
            states.append(None)
        elif unbatched:
            states.append(g.node("Unsqueeze", [state.name, g.constant([1])], hint=hint))
        else:
            states.append(state.name)
    attributes: dict[str, Any] = {
        "hidden_size": hidden, "direction": "bidirectional" if directions == 2 else "forward"}
    if mode == "GRU":
        attributes["linear_before_reset"] = 1  # PyTorch's r ⊙ (W_hn h + b_hn)
    elif not lstm:
        attributes["activations"] = ["Tanh" if mode == "RNN_TANH" else "Relu"] * directions
    finals: list[list[str]] = [[], []]
    for layer in range(module.num_layers):
        op_inputs = [seq, *_layer_weights(g, module, layer, path), ""]  # sequence_lens: all T
        for initial in states if lstm else states[:1]:
            if initial is None:
                op_inputs.append("")  # ONNX's zeros
            else:
                op_inputs.append(g.node("Slice", [initial, g.constant([layer * directions]),
                                                  g.constant([(layer + 1) * directions]),
                                                  g.constant([0])], hint=hint))
        while op_inputs[-1] == "":
            op_inputs.pop()
        outs = g.node(_OPS[mode], op_inputs, outputs=3 if lstm else 2, hint=hint,
                      **attributes)
        # Y (T, D, N, H) -> (T, N, D·H): the next layer's input and the output sequence
        if directions == 1:
            seq = g.node("Squeeze", [outs[0], g.constant([1])], hint=hint)
        else:
            seq = g.node("Reshape", [g.node("Transpose", [outs[0]], perm=[0, 2, 1, 3],
                                            hint=hint), g.constant([0, 0, 2 * hidden])],
                         hint=hint)
        finals[0].append(outs[1])
        if lstm:
            finals[1].append(outs[2])
    if unbatched:
        seq = g.node("Squeeze", [seq, g.constant([1])], hint=hint)
    elif module.batch_first:
        seq = g.node("Transpose", [seq], perm=[1, 0, 2], hint=hint)
    count = module.num_layers * directions
    state_shape: tuple[Dim | None, ...] = (count, hidden) if unbatched else (
        count, dims[0 if module.batch_first else 1], hidden)
    state_values = []
    for names in finals[:2 if lstm else 1]:
        name = names[0] if len(names) == 1 else g.node("Concat", names, axis=0, hint=hint)
        if unbatched:
            name = g.node("Squeeze", [name, g.constant([1])], hint=hint)
        state_values.append(inputs.derive(name, shape=state_shape))
    output = inputs.derive(seq, shape=(*dims[:-1], directions * hidden))
    final = Value.tuple_of(*state_values) if lstm else state_values[0]
    return _with_example(g, Value.tuple_of(output, final), module, x, module_input, path)


@converter(RecurrentOutput)
def _recurrent_output(g: GraphBuilder, module: RecurrentOutput, x: Value, path: str) -> Value:
    """The output sequence of an (output, state) tuple, or its last step (N, D·H)."""
    if not x.is_tuple or len(x.parts) != 2 or x.parts[0].is_tuple:
        raise _refuse(module, path, "takes a recurrent layer's (output, state) tuple")
    output = x.parts[0]
    if module.keep == "sequence":
        return output
    dims = output.dims()
    axis = 1 if len(dims) == 3 and module.batch_first else 0
    hint = path or "last"
    last = g.node("Squeeze", [g.node("Slice", [output.name, g.constant([-1]),
                                               g.constant([np.iinfo(np.int64).max]),
                                               g.constant([axis])], hint=hint),
                              g.constant([axis])], hint=hint)
    y = output.derive(last, shape=[d for i, d in enumerate(dims) if i != axis])
    return _with_example(g, y, module, x, backend_input(x), path)
