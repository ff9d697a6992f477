"""The accelerator path of the built-in LSTM: ``unroll_batch(..., method="cudnn")``.

On a CUDA GPU, ``jax.experimental.rnn.lstm`` is cuDNN's fused LSTM (a custom
call with its own ``custom_vjp``). It takes a batch-first ``x (B, T, I)``,
``h_0, c_0 (1, B, H)``, one flat weight vector in cuDNN's layout
``[W_ih, W_hh, b_ih, b_hh]`` (PyTorch's gate order i, f, g, o) and per-sequence
lengths; it zero-fills the outputs past each length and returns the state after
each sequence's last valid step. ``cudnn_lstm_weights`` packs ``LSTMParams``
into that vector with differentiable reshapes (``b_rec=None``: zeros), so
``jax.grad`` flows back through the custom VJP to the params. The wrapper
matches ``rnnjax.unroll``'s semantics around the kernel: a length-0 sequence
runs one step whose results are discarded (``jnp.where`` picks the initial
carry and zero outputs), ``reverse`` flips each valid prefix before and after
the call, and inputs past a length are masked so their gradient is zero
whatever the kernel writes there. Anything the kernel cannot do exactly falls
back to the vmapped scan with a ``CudnnFallbackWarning`` naming the reason.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import rnn as jrnn

from rnnjax import _validate as v
from rnnjax._cells import Cell, LSTMParams, LSTMState


class CudnnFallbackWarning(UserWarning):
    """``unroll_batch(..., method="cudnn")`` ran the ordinary scan instead; the message says why.

    Python's default warning filter shows each distinct message once per call
    site; ``warnings.simplefilter("error", rnnjax.CudnnFallbackWarning)`` makes
    a fallback an error (e.g. in a benchmark that must time cuDNN).
    """


def cudnn_lstm_weights(params: LSTMParams) -> jax.Array:
    """``LSTMParams`` as cuDNN's flat LSTM weight vector (one layer, one direction).

    ``concat(w_in.ravel(), w_rec.ravel(), b, b_rec)`` with ``b_rec = 0`` when
    the cell has one bias: the layout ``jax.experimental.rnn.lstm`` reads
    (``unpack_lstm_weights`` inverts it). Differentiable: gradients with respect
    to the vector flow back to each field.

    Args:
      params: ``LSTMParams`` with ``w_in (4H, I)``, ``w_rec (4H, H)``, ``b (4H,)``,
        ``b_rec (4H,)`` or None, and ``w_proj`` None (cuDNN's path has no projection).

    Returns:
      ``(get_num_params_in_lstm(I, H, 1, False),)`` = ``(4H (I + H + 2),)``.
    """
    if not isinstance(params, LSTMParams):
        raise TypeError(f"params: expected rnnjax.LSTMParams, got {type(params).__name__}")
    if params.w_proj is not None:
        raise ValueError("params: cuDNN's LSTM has no projection; got w_proj of shape "
                         f"{tuple(np.shape(params.w_proj))} (a cell built with proj_size)")
    w_in_shape = tuple(np.shape(params.w_in))
    if len(w_in_shape) != 2 or w_in_shape[0] % 4:
        raise ValueError(f"params.w_in: expected shape (4H, I), got {w_in_shape}")
    four_h = w_in_shape[0]
    b_rec = jnp.zeros_like(params.b) if params.b_rec is None else params.b_rec
    for name, value, want in (("w_rec", params.w_rec, (four_h, four_h // 4)), ("b", params.b, (four_h,)),
                              ("b_rec", b_rec, (four_h,))):
        if tuple(np.shape(value)) != want:
            raise ValueError(f"params.{name}: expected shape {want} (H={four_h // 4}), got {tuple(np.shape(value))}")
    dtype = jnp.result_type(params.w_in, params.w_rec, params.b, b_rec)
    return jnp.concatenate([jnp.ravel(a).astype(dtype) for a in (params.w_in, params.w_rec, params.b, b_rec)])


def reference_lstm(x, h_0, c_0, weights, seq_lengths, input_size, hidden_size, num_layers, dropout, bidirectional,
                   precision=None):
    """``jax.experimental.rnn.lstm``'s contract computed by JAX's pure-JAX ``lstm_ref``: any backend and float dtype.

    Same arguments and results as ``jax.experimental.rnn.lstm`` (``precision``
    is ignored); for ``lstm_fn`` of ``unroll_batch(..., method="cudnn")``, so the
    wrapper's own code runs on CPU. ``lstm_ref`` scans every step and then masks
    the outputs past each length and picks the state at step ``length - 1``
    (wrong for ``length == 0``: it picks the last step; the wrapper never passes 0).
    """
    del precision
    w_ih, w_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(weights, input_size, hidden_size, num_layers, bidirectional)
    return jrnn.lstm_ref(x, h_0, c_0, w_ih, w_hh, b_ih, b_hh, seq_lengths, input_size, hidden_size, num_layers,
                         dropout, bidirectional)


def cudnn_lstm_batch(
    params: LSTMParams,
    xs: jax.Array,
    h0: jax.Array,
    c0: jax.Array,
    lengths: jax.Array | None = None,
    *,
    reverse: bool = False,
    lstm_fn: Callable | None = None,
) -> tuple[LSTMState, jax.Array]:
    """One-layer LSTM over a batch through a cuDNN-style kernel, with ``rnnjax.unroll``'s semantics.

    Args:
      params: ``LSTMParams`` without projection.
      xs: ``(B, T, I)`` with ``T >= 1``.
      h0, c0: ``(B, H)`` initial state.
      lengths: ``(B,)`` integers (clipped to ``[0, T]``) or None (all ``T``).
        Steps ``t >= length`` leave the state unchanged and output zeros; a
        length of 0 returns ``(h0, c0)`` and all-zero outputs.
      reverse: run each valid prefix backwards, each output at its own index.
      lstm_fn: a function with ``jax.experimental.rnn.lstm``'s signature and
        semantics; default that (cuDNN, CUDA only). ``reference_lstm`` runs anywhere.

    Returns:
      ``(LSTMState(h (B, H), c (B, H)), ys (B, T, H))``.
    """
    lstm_fn = jrnn.lstm if lstm_fn is None else lstm_fn
    batch, time, input_size = xs.shape
    hidden_size = h0.shape[-1]
    weights = cudnn_lstm_weights(params)
    t = jnp.arange(time, dtype=jnp.int32)
    if lengths is None:
        n = jnp.full((batch,), time, jnp.int32)
        valid = None
    else:
        n = jnp.clip(lengths, 0, time).astype(jnp.int32)
        valid = t[None, :] < n[:, None]  # (B, T)
        xs = jnp.where(valid[..., None], xs, jnp.zeros((), xs.dtype))
    if reverse:
        # x'[t] = x[n-1-t] inside the valid prefix, padding left in place; an involution.
        perm = jnp.where(t[None, :] < n[:, None], n[:, None] - 1 - t[None, :], t[None, :])
        xs = jnp.take_along_axis(xs, perm[..., None], axis=1)
    ys, h_n, c_n = lstm_fn(xs, h0[None], c0[None], weights, jnp.maximum(n, 1), input_size=input_size,
                           hidden_size=hidden_size, num_layers=1, dropout=0.0, bidirectional=False)
    h_n, c_n = h_n[0], c_n[0]
    if reverse:
        ys = jnp.take_along_axis(ys, perm[..., None], axis=1)
    if valid is not None:
        empty = (n == 0)[:, None]
        h_n, c_n = jnp.where(empty, h0, h_n), jnp.where(empty, c0, c_n)
        ys = jnp.where(valid[..., None], ys, jnp.zeros((), ys.dtype))  # also the step run for length 0
    return LSTMState(h_n, c_n), ys


def _backend_reason() -> str | None:
    backend = jax.default_backend()
    if backend != "gpu":
        return f"JAX's default backend is {backend!r}, not a CUDA GPU"
    try:
        from jax.extend import backend as jax_backend

        version = str(jax_backend.get_backend().platform_version).lower()
    except Exception:  # noqa: BLE001 - only an extra check
        version = ""
    if "rocm" in version:
        return "the GPU is a ROCm device; this path is built and tested for CUDA's cuDNN only"
    try:
        from jax._src.lib import gpu_rnn
    except ImportError:
        gpu_rnn = None
    if getattr(gpu_rnn, "compute_rnn_workspace_reserve_space_sizes", None) is None:
        return "jaxlib has no cuDNN RNN kernels (install jax[cuda12] matching the jax version)"
    return None


def _cell_reason(cell: Cell, params: Any) -> str | None:
    marker = getattr(cell.step, "_cudnn_lstm", None)
    if marker is None:
        return f"cell {cell.name!r} is not one built by rnnjax.lstm (only its step is known to be cuDNN's LSTM)"
    input_size, hidden_size, blocker = marker
    if blocker == "proj_size":
        return f"the LSTM has a projection (proj_size={cell.output_size}), which cuDNN's path here lacks"
    if blocker is not None:
        return "the LSTM has a gate_fn/activation_fn other than jax.nn.sigmoid/jnp.tanh"
    if cell.parametrization is not None or (cell.input_size, cell.output_size) != (input_size, hidden_size):
        return f"cell {cell.name!r} was changed after rnnjax.lstm built it (parametrization or sizes)"
    if not isinstance(params, LSTMParams) or params.w_proj is not None:
        return f"params are not plain LSTMParams without projection (got {type(params).__name__})"
    return None


def cudnn_unroll_batch(
    cell: Cell,
    params: Any,
    xs: jax.Array,
    carry: Any = None,
    *,
    lengths: jax.Array | None = None,
    reverse: bool = False,
    unroll: int = 1,
    remat: bool | int = False,
    backward: str | None = None,
    lstm_fn: Callable | None = None,
    **method_options,
) -> tuple[Any, jax.Array]:
    """``rnnjax.unroll_batch(..., method="cudnn")``: cuDNN's LSTM when it computes the same thing, else the scan.

    Called by ``rnnjax.unroll_batch`` after its own checks of ``xs``,
    ``lengths`` and the carry's batch axis. Falls back to
    ``unroll_batch(..., method="scan")`` with the same options, warning a
    ``CudnnFallbackWarning`` that lists every reason: a backend that is not a
    CUDA GPU, a cell other than ``rnnjax.lstm``'s plain one (a user cell, even
    named "lstm"; ``proj_size``; ``gate_fn``/``activation_fn``), a computation
    dtype other than float32, ``remat`` (cuDNN keeps its own reserve space), a
    ``backward`` (it names a reverse mode of the scan), an empty batch or
    sequence. ``unroll`` is accepted and ignored (a loop-unrolling hint of the
    scan: the values do not depend on it); it is used by the fallback.

    Args:
      cell, params, xs, carry, lengths, reverse, unroll, remat, backward: as in
        ``rnnjax.unroll_batch``/``rnnjax.unroll``.
      lstm_fn: replaces ``jax.experimental.rnn.lstm`` (same signature and
        semantics), e.g. ``rnnjax._cudnn.reference_lstm`` to run this exact
        wrapper on CPU in any float dtype; with it, the backend and dtype
        checks (cuDNN's limits) are skipped.

    Returns:
      ``(LSTMState(h (B, H), c (B, H)), ys (B, T, H))``, as ``unroll_batch``.
    """
    from rnnjax._unroll import BACKWARDS, _check_remat, unroll_batch

    if method_options:
        raise TypeError(f"method_options: method 'cudnn' takes none, got {sorted(method_options)}")
    reverse, unroll = v.check_loop_options(reverse, unroll)
    remat_options = _check_remat(remat)
    if backward is not None and backward not in BACKWARDS:
        raise ValueError(f"backward: expected one of {BACKWARDS} or None, got {backward!r}")
    if lstm_fn is not None and not callable(lstm_fn):
        raise TypeError(f"lstm_fn: expected a function like jax.experimental.rnn.lstm, got {lstm_fn!r}")
    v.check_params(cell, params)
    batch, time = xs.shape[:2]
    reasons = []
    if batch == 0 or time == 0:
        reasons.append(f"xs has no sequences or no steps (shape {tuple(xs.shape)})")
    cell_reason = _cell_reason(cell, params)
    if cell_reason:
        reasons.append(cell_reason)
    if remat_options != (False, None):
        reasons.append(f"remat={remat!r} asks for rematerialisation, which cuDNN's kernel cannot do")
    if backward is not None:
        reasons.append(f"backward={backward!r} selects a reverse mode of the scan (cuDNN has its own)")
    leaves = [xs, *jax.tree.leaves(params), *jax.tree.leaves(carry)]
    dtype = jnp.result_type(*leaves)
    if lstm_fn is None:
        if jnp.issubdtype(dtype, jnp.floating) and dtype != jnp.float32:
            reasons.append(f"the computation dtype is {jnp.dtype(dtype).name}; cuDNN's LSTM here is float32 only")
        backend = _backend_reason()
        if backend:
            reasons.append(backend)
    if reasons:
        warnings.warn(
            "unroll_batch(method='cudnn') runs the scan instead (same semantics): " + "; ".join(reasons),
            CudnnFallbackWarning, stacklevel=3,
        )
        return unroll_batch(cell, params, xs, carry, lengths=lengths, reverse=reverse, unroll=unroll, remat=remat,
                            backward=backward)
    v.check_xs(cell, xs[0])  # floating, (T, I)
    if carry is None:
        carry = jax.tree.map(lambda a: jnp.broadcast_to(a, (batch,) + a.shape), cell.initial_carry())
    else:
        v.check_carry(cell, jax.tree.map(lambda a: a[0], carry))
    dtype = jnp.finfo(dtype).dtype
    params = jax.tree.map(lambda a: jnp.asarray(a, dtype), params)
    return cudnn_lstm_batch(params, xs.astype(dtype), carry.h.astype(dtype), carry.c.astype(dtype), lengths,
                            reverse=reverse, lstm_fn=lstm_fn)
