"""Unrolling a cell over time with ``jax.lax.scan``; autodiff of it is BPTT."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import _fastgrad
from rnnjax._cells import Cell, prepare
from rnnjax._shard_map import match_varying, varying_axes
from rnnjax import _validate as v

METHODS = ("scan", "associative", "deer", "cudnn")
BACKWARDS = ("fast", "autodiff")


def unroll(
    cell: Cell,
    params: Any,
    xs: jax.Array,
    carry: Any = None,
    *,
    length: int | jax.Array | None = None,
    reverse: bool = False,
    unroll: int = 1,
    remat: bool | int = False,
    method: str = "scan",
    backward: str | None = None,
    **method_options,
) -> tuple[Any, ...]:
    """Run ``cell`` over one sequence; differentiate it for BPTT.

    ``ys[t] = y_t`` where ``(c_{t+1}, y_t) = cell.step(params, c_t, xs[t])``.

    A cell with a ``parametrization`` (expRNN, IndRNN, AntisymmetricRNN, or a
    user's ``rnnjax.parametrized_cell``) has its weights prepared once here,
    outside the loop, and the loop runs the prepared step; gradients flow
    back through the preparation to the raw ``params``.

    Args:
      cell: a ``Cell``.
      params: the cell's parameters (``cell.init(key)``).
      xs: ``(time, input_size)``, one sequence. Batch with
        ``jax.vmap(lambda x: rnnjax.unroll(cell, params, x))(xs)`` or
        ``rnnjax.unroll_batch``.
      carry: initial carry (unbatched); default ``cell.initial_carry()``.
      length: number of valid steps (Python int or integer scalar, traced or
        not). Steps ``t >= length`` leave the carry unchanged and output zeros;
        the final carry is the carry after step ``length - 1``; ``length=0``
        returns the initial carry. A concrete value outside ``[0, time]``
        raises; a traced one is clipped to that range.
      reverse: a bool; run over the valid prefix backwards (``xs[length-1],
        ..., xs[0]``), writing each output at its own time index so that
        forward and backward outputs line up (bidirectional layers).
      unroll: steps per scan iteration (``jax.lax.scan``'s ``unroll``);
        ``method="scan"`` only.
      remat: trade compute for memory in the backward pass, same values and
        gradients. ``True``: rematerialise each step (``jax.checkpoint`` on
        the cell), memory O(time * carry) instead of O(time * intermediates).
        An int ``k``: checkpoint segments of ``k`` steps (Chen et al. 2016):
        only the carry at each segment start is kept, and the backward pass
        re-runs one segment at a time, so the stored carries drop to
        O(time / k + k) (``k ≈ sqrt(time)`` is the classic choice; e.g. 100 at
        T = 10000), for about one extra forward pass. ``method="scan"`` only.
      method: ``"scan"`` (sequential), ``"associative"`` (parallel prefix
        scan, cells with a ``linear_recurrence`` only) or ``"deer"`` (Newton
        iterations over the whole sequence, any cell). ``"cudnn"`` is for
        ``unroll_batch`` only (one cuDNN call per batch); here it raises.
      backward: reverse mode of ``method="scan"`` without ``remat`` (other
        methods refuse it: theirs is fixed): ``"fast"`` (default) takes
        every weight gradient after the backward loop as one matmul over all
        steps (``rnnjax._fastgrad``; derived
        automatically for any cell, same numbers up to float summation
        order); ``"autodiff"`` is plain ``jax.grad`` of ``jax.lax.scan``, the
        reference the fast path is tested against.
      **method_options: options of the chosen method (``method="deer"``:
        ``quasi``, ``tol``, ``max_iter``, ``on_failure``, ``return_info``;
        see ``rnnjax._deer.deer_unroll``); the others take none.

    Returns:
      ``(final_carry, ys)`` with ``ys: (time, output_size)``; only
      ``method="deer", return_info=True`` returns a triple
      ``(final_carry, ys, rnnjax.DeerInfo)``.

    Raises:
      ValueError, TypeError: at trace time, naming the argument: a bad shape
        of ``xs``, ``carry`` or ``params``, non-floating ``params``, a step
        whose ``y`` is not ``(output_size,)``, ``reverse`` not a bool, or an
        option the chosen ``method`` does not use (``remat``, ``unroll`` or
        ``backward`` with ``"associative"`` or ``"deer"``).
    """
    v.check_cell(cell)
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if method == "cudnn":
        raise ValueError(
            "method: 'cudnn' runs a whole batch in one cuDNN call and has no per-sequence form (nor a vmap rule); "
            "use rnnjax.unroll_batch(cell, params, xs[None], ..., method='cudnn') for one sequence"
        )
    v.check_params(cell, params)
    xs = v.check_xs(cell, xs)
    time = xs.shape[0]
    carry = cell.initial_carry() if carry is None else v.check_carry(cell, carry)
    # Compute in the promoted dtype of inputs, params and carry (float64 inputs
    # with float32 params run in float64 instead of failing on a carry mismatch).
    dtype = jnp.result_type(xs.dtype, *jax.tree.leaves(params), *jax.tree.leaves(carry))
    # A complex carry (LRU) keeps complex leaves; inputs stay real.
    dtype = jnp.finfo(dtype).dtype
    xs = xs.astype(dtype)
    carry = jax.tree.map(lambda c: jnp.asarray(c, jnp.result_type(c, dtype)), carry)
    length = v.check_length(length, time)
    reverse, unroll = v.check_loop_options(reverse, unroll)
    remat_options = _check_remat(remat)
    if method != "associative":  # linear_recurrence reads the raw params
        cell, params = prepare(cell, params)  # once per unroll, outside the loop
    cell = cell._replace(step=v.checked_step(cell))  # y's width is checked when the step is traced
    if method == "scan":
        if method_options:
            raise TypeError(f"method_options: method 'scan' takes none, got {sorted(method_options)}")
        backward = "fast" if backward is None else backward
        if backward not in BACKWARDS:
            raise ValueError(f"backward: expected one of {BACKWARDS}, got {backward!r}")
        return _scan_unroll(cell, params, xs, carry, length, reverse, unroll, remat_options, backward)
    # The parallel methods have no sequential loop to unroll or rematerialise, and their own reverse mode.
    for option, value, ignored in (("remat", remat, remat_options != (False, None)), ("unroll", unroll, unroll != 1),
                                   ("backward", backward, backward is not None)):
        if ignored:
            raise ValueError(
                f"{option}: method={method!r} does not use it (an option of method='scan' only); "
                f"remove {option}={value!r} or use method='scan'"
            )
    if method == "associative":
        from rnnjax._parallel import associative_unroll

        return associative_unroll(cell, params, xs, carry, length=length, reverse=reverse, **method_options)
    from rnnjax._deer import deer_unroll

    return deer_unroll(cell, params, xs, carry, length=length, reverse=reverse, **method_options)


def unroll_batch(
    cell: Cell,
    params: Any,
    xs: jax.Array,
    carry: Any = None,
    *,
    lengths: jax.Array | None = None,
    **kwargs,
) -> tuple[Any, Any]:
    """``unroll`` over a batch: ``jax.vmap`` with shape and length checks.

    ``method="cudnn"`` runs ``rnnjax.lstm``'s plain cell (no projection,
    sigmoid/tanh) as one call of cuDNN's fused LSTM (``jax.experimental.rnn.lstm``,
    CUDA GPUs, float32) with the scan's semantics: ``lengths`` (0 included,
    traced or not), ``reverse``, an initial ``carry``, gradients to the params
    through cuDNN's own backward. Where cuDNN cannot compute the same thing
    (another backend or cell, ``proj_size``, ``gate_fn``, float64, ``remat``,
    ``backward``) it runs the scan instead and warns a
    ``rnnjax.CudnnFallbackWarning`` naming the reason; ``unroll`` is ignored.
    It has no ``jax.vmap``/forward-mode rule (cuDNN's custom VJP): call it on
    the whole batch. Details: ``rnnjax._cudnn.cudnn_unroll_batch``, docs/performance.md.

    Args:
      cell, params: as in ``unroll`` (shared by the batch).
      xs: ``(batch, time, input_size)``.
      carry: batched initial carry (leading axis ``batch``) or None.
      lengths: ``(batch,)`` valid steps per sequence, or None.
      **kwargs: ``reverse``, ``unroll``, ``remat``, ``method``... of ``unroll``
        (``method="cudnn"`` also takes ``lstm_fn``, a stand-in for
        ``jax.experimental.rnn.lstm``, e.g. ``rnnjax._cudnn.reference_lstm`` on CPU).

    Returns:
      ``(final_carry, ys)`` with a leading batch axis: ``ys: (batch, time, output_size)``.
    """
    v.check_cell(cell)
    xs = jnp.asarray(xs) if not isinstance(xs, jax.Array) else xs
    if xs.ndim != 3 or xs.shape[-1] != cell.input_size:
        raise ValueError(
            f"xs: expected shape (batch, time, {cell.input_size}) for {cell.name}, got {tuple(xs.shape)}"
        )
    batch, time = xs.shape[:2]
    if lengths is not None:
        lengths = jnp.asarray(lengths)
        if lengths.shape != (batch,) or not jnp.issubdtype(lengths.dtype, jnp.integer):
            raise ValueError(
                f"lengths: expected integers of shape ({batch},), got {lengths.dtype} {tuple(lengths.shape)}"
            )
        if not isinstance(lengths, jax.core.Tracer):
            bad = np.asarray(lengths)
            if bad.size and (bad.min() < 0 or bad.max() > time):
                raise ValueError(f"lengths: expected values in [0, {time}], got min {bad.min()} max {bad.max()}")
    if carry is not None:
        for leaf in jax.tree.leaves(carry):
            if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != batch:
                raise ValueError(
                    f"carry: expected a batched carry with leading axis {batch}, got a leaf of shape {jnp.shape(leaf)}"
                )
    if kwargs.get("method") == "cudnn":
        from rnnjax._cudnn import cudnn_unroll_batch

        kwargs.pop("method")
        return cudnn_unroll_batch(cell, params, xs, carry, lengths=lengths, **kwargs)
    run = functools.partial(unroll, cell, params, **kwargs)
    if lengths is None:
        if carry is None:
            return jax.vmap(lambda x: run(x))(xs)
        return jax.vmap(lambda x, c: run(x, c))(xs, carry)
    if carry is None:
        return jax.vmap(lambda x, n: run(x, length=n))(xs, lengths)
    return jax.vmap(lambda x, c, n: run(x, c, length=n))(xs, carry, lengths)


def _check_remat(remat) -> tuple[bool, int | None]:
    """``(checkpoint every step, segment length or None)`` for ``unroll``'s ``remat``."""
    if isinstance(remat, (bool, np.bool_)):
        return bool(remat), None
    if isinstance(remat, (int, np.integer)) and remat >= 1:
        return False, int(remat)
    raise ValueError(
        f"remat: expected True/False (per-step checkpointing) or a positive int k (checkpoint every k steps), "
        f"got {remat!r}"
    )


def _segment_scan(f, carry, xs, k, reverse, unroll):
    """``jax.lax.scan(f, carry, xs, reverse=reverse)`` in checkpointed segments of ``k`` steps.

    The outer scan keeps only each segment's initial carry; the backward pass
    recomputes a segment's steps (with their residuals) just before it needs
    them. A last, shorter segment takes the ``time % k`` leftover steps
    (the first ones when ``reverse``, which are scanned last).
    """
    time = jax.tree.leaves(xs)[0].shape[0]
    k = min(int(k), time)
    if k == 0:
        return jax.lax.scan(f, carry, xs, reverse=reverse)
    segment = jax.checkpoint(
        lambda c, seg: jax.lax.scan(f, c, seg, reverse=reverse, unroll=min(unroll, k)), prevent_cse=False
    )
    n, rest = divmod(time, k)
    cut = rest if reverse else n * k
    main = jax.tree.map(lambda a: a[cut:] if reverse else a[:cut], xs)
    tail = jax.tree.map(lambda a: a[:cut] if reverse else a[cut:], xs)
    main = jax.tree.map(lambda a: a.reshape((n, k) + a.shape[1:]), main)
    carry, ys = jax.lax.scan(segment, carry, main, reverse=reverse)
    ys = jax.tree.map(lambda y: y.reshape((n * k,) + y.shape[2:]), ys)
    if rest:
        carry, ys_tail = segment(carry, tail)
        join = (lambda a, b: jnp.concatenate([b, a])) if reverse else (lambda a, b: jnp.concatenate([a, b]))
        ys = jax.tree.map(join, ys, ys_tail)
    return carry, ys


def _scan_unroll(cell, params, xs, carry, length, reverse, unroll, remat_options, backward="fast"):
    per_step, segments = remat_options  # from _check_remat
    step = jax.checkpoint(cell.step) if per_step else cell.step
    carry = match_varying(carry, params, xs, length)  # inside shard_map: a per-device carry
    # Inside shard_map, JAX 0.10 cannot linearise the fast path of a cell whose only parameter matmuls
    # read the input (LRU, minGRU, minLSTM: the scan's DCE rejects the carry's varying axes); those cells
    # gain little from it anyway (no recurrent matmul), so they take plain autodiff there.
    in_shard_map = bool(varying_axes(carry))
    fast = (backward == "fast" and not per_step and segments is None
            and not (in_shard_map and cell.linear_recurrence is not None))

    def scan(fn, carry, xs, aux=None, reverse=False):
        # ``fn(params, carry, x, aux) -> (carry, y)``; params stay explicit for the fast backward.
        if fast:
            return _fastgrad.scan(fn, params, carry, xs, aux, reverse=reverse, unroll=unroll)
        if segments is not None:
            return _segment_scan(lambda c, x: fn(params, c, x, aux), carry, xs, segments, reverse, unroll)
        return jax.lax.scan(lambda c, x: fn(params, c, x, aux), carry, xs, reverse=reverse, unroll=unroll)

    def body(p, c, x, _):
        return step(p, c, x)

    time = xs.shape[0]
    if length is None or (isinstance(length, int) and length == time):
        return scan(body, carry, xs, reverse=reverse)
    if isinstance(length, int):
        # Static length: scan the valid prefix only, pad the outputs with zeros.
        carry, ys = scan(body, carry, xs[:length], reverse=reverse)
        ys = jax.tree.map(lambda y: jnp.concatenate([y, jnp.zeros((time - length,) + y.shape[1:], y.dtype)]), ys)
        return carry, ys
    # Traced length: mask steps t >= length.
    length = jnp.clip(length, 0, time)
    t = jnp.arange(time)
    perm = jnp.where(t < length, length - 1 - t, t) if reverse else None
    if reverse:
        xs = xs[perm]

    def masked(p, c, inp, n):
        x, ti = inp
        valid = ti < n
        x = jnp.where(valid, x, jnp.zeros_like(x))
        c_new, y = step(p, c, x)
        c_new = jax.tree.map(lambda a, b: jnp.where(valid, a, b), c_new, c)
        y = jax.tree.map(lambda a: jnp.where(valid, a, jnp.zeros_like(a)), y)
        return c_new, y

    carry, ys = scan(masked, carry, (xs, t), length)
    if reverse:
        ys = jax.tree.map(lambda y: y[perm], ys)
    return carry, ys
