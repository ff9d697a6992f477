"""Sequence models for the four input/output patterns, as pure functions around a ``Cell``.

A ``Model`` is a NamedTuple of pure functions (``init``, ``apply``, ``loss``,
``evaluate``, ``initial_carry``); its parameters are a named pytree. Every
function takes a whole batch (leading axis B) and masks padded steps with the
batch's ``input_lengths`` / ``target_lengths``:

- ``many_to_one``: ``inputs (B, T, I) -> (B, O)``, a readout of the last valid output.
- ``many_to_many``: ``inputs (B, T, I) -> (B, T, O)``, a readout at every step.
- ``one_to_many``: ``inputs (B, V) -> (B, T, O)``, a sequence generated from one vector
  (the vector sets the initial state through a linear map and/or is fed at each step).
- ``seq2seq``: ``inputs (B, T_in, I) -> (B, T_out, O)``, an encoder whose final state
  starts a decoder; teacher forcing for training, greedy decoding for evaluation.

``many_to_one`` and ``many_to_many`` also take a ``Layer`` (``rnnjax.bidirectional``,
``rnnjax.sequential(..., dropout=p)``); dropout acts only when ``loss`` gets a ``key``.
``grad_profile`` gives the per-step gradient norms ``||dL/dc_t||`` of a model's own loss.

Losses are ``"mse"`` (float targets, mean over valid steps and output units) or
``"xent"`` (integer class targets, mean cross-entropy over valid steps).

Truncated BPTT: ``tbptt=K`` runs the recurrence in chunks of K steps and stops
the gradient of the carry at every chunk boundary (the forward values are
unchanged). With a carry passed to ``loss`` (streaming tasks) the state also
continues across batches, its gradient stopped at the batch boundary.

References:
  Williams & Peng, "An efficient gradient-based algorithm for on-line training of
  recurrent network trajectories", Neural Computation 1990 (truncated BPTT).
  Sutskever, Vinyals & Le, "Sequence to sequence learning with neural networks", NeurIPS 2014.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import _validate as v
from rnnjax._batch import Batch
from rnnjax._carry import flatten_carry
from rnnjax._cells import Cell, prepare
from rnnjax._layers import Layer, LinearParams, backward_leaves, is_causal, layer, linear, probe, sequential, stack
from rnnjax._layers import bidirectional as _bidirectional
from rnnjax._unroll import unroll, unroll_batch
from rnnjax.gradflow import carry_grad_norms

LOSSES = ("mse", "xent")
ONE_TO_MANY_FEEDS = ("state", "input", "both")


class ModelParams(NamedTuple):
    """Parameters of ``many_to_one`` / ``many_to_many``: ``cell`` and the ``readout`` (O, H)."""

    cell: Any
    readout: LinearParams


class OneToManyParams(NamedTuple):
    """Parameters of ``one_to_many``: ``cell``, ``readout`` and ``init_map`` (vector -> initial carry, or None)."""

    cell: Any
    readout: LinearParams
    init_map: LinearParams | None


class Seq2SeqParams(NamedTuple):
    """Parameters of ``seq2seq``: ``encoder`` cell, ``decoder`` cell and ``readout`` of the decoder outputs."""

    encoder: Any
    decoder: Any
    readout: LinearParams


class Model(NamedTuple):
    """A sequence model: pure functions of a named parameter pytree.

    Attributes:
      init: ``init(key) -> params``.
      apply: ``apply(params, inputs, lengths=None) -> predictions`` (float
        predictions or logits; shapes by pattern, see the module docstring).
        ``seq2seq`` and ``one_to_many`` generate greedily (``apply(params,
        inputs, lengths=None, *, out_len)``).
      loss: ``loss(params, batch, carry=None, *, key=None) -> (loss, aux)``
        with ``aux`` a dict holding ``"accuracy"`` (``"xent"`` only) and, when
        ``carry`` is given, ``"carry"``: the final batched carry (gradient
        stopped). ``key`` switches on the dropout of a ``sequential(...,
        dropout=p)`` layer (ignored by models without dropout); ``apply`` and
        ``evaluate`` never drop.
      evaluate: ``evaluate(params, batch) -> dict`` with ``"loss"`` and
        ``"accuracy"`` (``"xent"``) — for ``seq2seq`` the accuracy (and, for
        ``"mse"``, a ``"greedy_loss"``) comes from greedy decoding.
      initial_carry: ``initial_carry(batch_size) -> carry``, the batched zero state.
      pattern: one of ``rnnjax.tasks.PATTERNS``.
      loss_name: ``"mse"`` or ``"xent"``.
      cell: the recurrence: a ``Cell``, or for ``many_to_one``/``many_to_many``
        a ``Layer`` (``bidirectional``, ``sequential``); the encoder of ``seq2seq``.
      perturbed_loss: ``perturbed_loss(params, batch, deltas) -> loss``, the
        loss (no dropout) with ``deltas`` (leaves ``(B, T) + carry leaf``)
        added to the carry entering each step; its gradient at zero is
        ``dL/dc_t`` (``grad_profile``). None for ``one_to_many``/``seq2seq``.
    """

    init: Callable[[jax.Array], Any]
    apply: Callable[..., jax.Array]
    loss: Callable[..., tuple[jax.Array, dict]]
    evaluate: Callable[[Any, Batch], dict]
    initial_carry: Callable[[int], Any]
    pattern: str
    loss_name: str
    cell: Cell | Layer
    perturbed_loss: Callable[..., jax.Array] | None = None


# ------------------------------------------------------------------------------------------- losses
def step_mask(lengths: jax.Array | None, batch: int, time: int) -> jax.Array:
    """``(B, T)`` float mask, 1 on valid steps ``t < lengths[b]`` (all ones when ``lengths`` is None)."""
    if lengths is None:
        return jnp.ones((batch, time), jnp.float32)
    return (jnp.arange(time)[None, :] < jnp.asarray(lengths)[:, None]).astype(jnp.float32)


def masked_mse(predictions: jax.Array, targets: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean squared error over valid positions and output units.

    Args:
      predictions: ``(..., O)``.
      targets: ``(..., O)``.
      mask: ``(...)`` weights (1 valid, 0 padded), or None (all valid).

    Returns:
      ``sum(mask * mean_O (p - y)^2) / max(sum(mask), 1)``, a scalar.
    """
    if predictions.shape != targets.shape:
        raise ValueError(
            f"targets: expected shape {tuple(predictions.shape)} (as predictions), got {tuple(targets.shape)}"
        )
    err = jnp.mean(jnp.square(predictions - targets.astype(predictions.dtype)), axis=-1)
    return _masked_mean(err, mask)


def masked_xent(logits: jax.Array, targets: jax.Array, mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Mean softmax cross-entropy (nats) and accuracy over valid positions.

    Args:
      logits: ``(..., C)``.
      targets: ``(...)`` integer classes in ``[0, C)``.
      mask: ``(...)`` weights, or None.

    Returns:
      ``(loss, accuracy)``, scalars.
    """
    if logits.shape[:-1] != targets.shape or not jnp.issubdtype(targets.dtype, jnp.integer):
        raise ValueError(
            f"targets: expected integer classes of shape {tuple(logits.shape[:-1])}, "
            f"got {targets.dtype} {tuple(targets.shape)}"
        )
    logp = jax.nn.log_softmax(logits, axis=-1)
    nll = -jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    correct = (jnp.argmax(logits, axis=-1) == targets).astype(logits.dtype)
    return _masked_mean(nll, mask), _masked_mean(correct, mask)


def _masked_mean(values, mask):
    if mask is None:
        return jnp.mean(values)
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _loss_and_metrics(loss_name, outputs, targets, mask):
    if loss_name == "mse":
        return masked_mse(outputs, targets, mask), {}
    loss, acc = masked_xent(outputs, targets, mask)
    return loss, {"accuracy": acc}


# ------------------------------------------------------------------------------------- the recurrence
def batch_carry(cell: Cell | Layer, batch_size: int) -> Any:
    """The zero carry of ``cell`` (a ``Cell`` or ``Layer``) repeated over a leading batch axis of ``batch_size``."""
    return jax.tree.map(lambda c: jnp.broadcast_to(c, (batch_size,) + jnp.shape(c)), cell.initial_carry())


def run_cell(
    cell: Cell | Layer,
    params: Any,
    xs: jax.Array,
    carry: Any = None,
    *,
    lengths: jax.Array | None = None,
    tbptt: int | None = None,
    key: jax.Array | None = None,
    deltas: Any = None,
) -> tuple[Any, jax.Array]:
    """Unroll a cell or layer over a batch, optionally with truncated BPTT.

    With ``tbptt=K`` the sequence is split into chunks of K steps (the last one
    padded and masked); the carry entering each chunk passes through
    ``jax.lax.stop_gradient``, so gradients flow back at most K steps inside a
    chunk. Forward values equal those of the untruncated unroll (without dropout).

    Args:
      cell: a ``Cell``, or a ``Layer`` (``rnnjax.bidirectional``,
        ``rnnjax.sequential``...; with ``tbptt`` a causal one only).
      params: its parameters.
      xs: ``(B, T, I)``.
      carry: batched initial carry, or None for zeros.
      lengths: ``(B,)`` valid steps, or None.
      tbptt: chunk length K, or None for full BPTT.
      key: dropout key of a ``Layer`` (split over the batch, and folded with
        the chunk index under ``tbptt``), or None: no dropout.
      deltas: a pytree like the batched carry with leaves ``(B, T) + leaf
        shape``, added to the carry entering each step (a gradient probe), or None.

    Returns:
      ``(final_carry, ys)`` with ``ys: (B, T, output_size)`` (zeros on padded steps).
    """
    _check_recurrence(cell)
    if not isinstance(cell, Layer):
        if deltas is not None:  # the deltas ride along as extra input columns
            cell, xs = probe(cell, xs, deltas)
            deltas = None
    if tbptt is None:
        return _run_batch(cell, params, xs, carry, lengths, key, deltas)
    _check_tbptt(cell, tbptt)
    batch, time = xs.shape[:2]
    n = math.ceil(time / tbptt)
    dtype = jnp.result_type(xs.dtype, *jax.tree.leaves(params))
    carry = batch_carry(cell, batch) if carry is None else carry
    carry = jax.tree.map(lambda c: jnp.asarray(c, jnp.result_type(dtype, c.dtype)), carry)
    xs = xs.astype(jnp.result_type(dtype, *jax.tree.leaves(carry)))
    masked = lengths is not None or n * tbptt != time
    if masked:
        lengths = jnp.full((batch,), time, jnp.int32) if lengths is None else jnp.asarray(lengths, jnp.int32)

    def chunked(a):  # (B, T, ...) -> (n, B, K, ...)
        a = jnp.pad(a, [(0, 0), (0, n * tbptt - time)] + [(0, 0)] * (a.ndim - 2))
        return jnp.swapaxes(a.reshape((batch, n, tbptt) + a.shape[2:]), 0, 1)

    def body(c, inp):
        x, d, i = inp
        c = jax.lax.stop_gradient(c)
        k = None if key is None else jax.random.fold_in(key, i)
        lens = jnp.clip(lengths - i * tbptt, 0, tbptt) if masked else None
        return _run_batch(cell, params, x, c, lens, k, d)

    carry, ys = jax.lax.scan(body, carry, (chunked(xs), jax.tree.map(chunked, deltas), jnp.arange(n)))
    ys = jnp.swapaxes(ys, 0, 1).reshape(batch, n * tbptt, -1)[:, :time]
    return carry, ys


def _run_batch(cell, params, xs, carry, lengths, key, deltas):
    """A ``Cell`` through ``unroll_batch``; a ``Layer``'s ``apply`` vmapped over the batch (None stays None)."""
    if not isinstance(cell, Layer):
        return unroll_batch(cell, params, xs, carry, lengths=lengths)
    keys = None if key is None else jax.random.split(key, xs.shape[0])

    def one(x, c, n, k, d):
        return cell.apply(params, x, c, length=n, key=k, deltas=d)

    return jax.vmap(one)(xs, carry, lengths, keys, deltas)


def _check_recurrence(cell):
    if not isinstance(cell, (Cell, Layer)):
        raise TypeError(
            "cell: expected an rnnjax.Cell or rnnjax.Layer (e.g. rnnjax.lstm(3, 64), "
            f"rnnjax.bidirectional(rnnjax.lstm(3, 64))), got {type(cell).__name__}"
        )


def _check_tbptt(cell, tbptt):
    if isinstance(tbptt, bool) or not isinstance(tbptt, int) or tbptt < 1:
        raise ValueError(f"tbptt: expected a positive integer (steps per chunk) or None, got {tbptt!r}")
    if not is_causal(cell):
        raise ValueError(
            "tbptt: truncated BPTT runs the sequence in chunks and needs a causal recurrence; "
            "this layer has a backward pass (bidirectional/reverse), which reads the whole sequence"
        )


def _last_valid(ys, lengths, backward_size=0):
    """``ys (B, T, H)`` -> ``(B, H)``: the output at step ``lengths - 1`` (the last step if None).

    The last ``backward_size`` units (a backward pass) are read at ``t = 0``,
    where that pass has seen the whole valid sequence.
    """
    if lengths is None:
        last = ys[:, -1]
    else:
        idx = jnp.clip(jnp.asarray(lengths) - 1, 0, ys.shape[1] - 1)
        last = jnp.take_along_axis(ys, idx[:, None, None].astype(jnp.int32), axis=1)[:, 0]
    if backward_size:
        cut = ys.shape[-1] - backward_size
        last = jnp.concatenate([last[:, :cut], ys[:, 0, cut:]], axis=-1)
    return last


def _param_dtype(cell: Cell):
    """The floating dtype of ``cell``'s parameters (readouts are created in it)."""
    leaves = jax.tree.leaves(jax.eval_shape(cell.init, jax.random.key(0)))
    dtype = jnp.result_type(*[leaf.dtype for leaf in leaves]) if leaves else jnp.float32
    return jnp.finfo(dtype).dtype if jnp.issubdtype(dtype, jnp.inexact) else jnp.float32


def _evaluate(loss_fn):
    """``evaluate(params, batch) -> {"loss", **aux}`` from ``loss_fn(params, batch) -> (loss, aux)``."""

    def evaluate(params, batch):
        value, aux = loss_fn(params, batch)
        return {"loss": value, **aux}

    return evaluate


def _check_loss(loss):
    if loss not in LOSSES:
        raise ValueError(f"loss: expected one of {LOSSES}, got {loss!r}")


def _check_inputs(name, x, ndim, width):
    if x.ndim != ndim or x.shape[-1] != width:
        want = "(B, T, {})".format(width) if ndim == 3 else "(B, {})".format(width)
        raise ValueError(f"{name}: expected shape {want}, got {tuple(x.shape)}")


# ------------------------------------------------------------------------------------------ patterns
def _readout_model(cell: Cell | Layer, output_size: int, loss: str, tbptt: int | None, pattern: str) -> Model:
    """``many_to_one`` (readout of the last valid output) or ``many_to_many`` (readout at every step)."""
    _check_recurrence(cell)
    _check_loss(loss)
    if tbptt is not None:
        _check_tbptt(cell, tbptt)
    readout = linear(cell.output_size, output_size, dtype=_param_dtype(cell))
    per_step = pattern == "many_to_many"
    back = cell.backward_size if isinstance(cell, Layer) else 0

    def init(key):
        k_c, k_r = jax.random.split(key)
        return ModelParams(cell.init(k_c), readout.init(k_r))

    def forward(params, inputs, lengths, carry, key=None, deltas=None):
        _check_inputs("inputs", inputs, 3, cell.input_size)
        carry, ys = run_cell(cell, params.cell, inputs, carry, lengths=lengths, tbptt=tbptt, key=key, deltas=deltas)
        return carry, readout.apply(params.readout, ys if per_step else _last_valid(ys, lengths, back))

    def apply(params, inputs, lengths=None):
        return forward(params, inputs, lengths, None)[1]

    def loss_fn(params, batch, carry=None, *, key=None):
        return _loss(params, batch, carry, key, None)

    def _loss(params, batch, carry, key, deltas):
        if carry is not None and not is_causal(cell):
            raise ValueError("carry: a layer with a backward pass cannot continue its state across batches; "
                             "pass carry=None")
        new_carry, out = forward(params, batch.inputs, batch.input_lengths, carry, key, deltas)
        mask = None
        if per_step and batch.input_lengths is not None:
            mask = step_mask(batch.input_lengths, *out.shape[:2])
        value, aux = _loss_and_metrics(loss, out, batch.targets, mask)
        if carry is not None:
            aux["carry"] = jax.lax.stop_gradient(new_carry)
        return value, aux

    def perturbed_loss(params, batch, deltas):
        return _loss(params, batch, None, None, deltas)[0]

    return Model(init, apply, loss_fn, _evaluate(loss_fn), lambda b: batch_carry(cell, b), pattern, loss, cell,
                 perturbed_loss)


def many_to_one(cell: Cell | Layer, output_size: int, *, loss: str = "mse", tbptt: int | None = None) -> Model:
    """Classifier/regressor on the last valid output: ``y = W h_{len-1} + b``.

    For a ``Layer`` whose last pass runs backwards (``bidirectional``), its
    units are read at ``t = 0``, after that pass has seen the whole sequence:
    ``h = concat(forward_y[len-1], backward_y[0])`` (PyTorch's ``h_n`` of
    both directions).

    Args:
      cell: the recurrent cell (input ``I``, output ``H``), or a ``Layer``
        (``rnnjax.bidirectional``, ``rnnjax.sequential(..., dropout=p)``).
      output_size: O (number of classes for ``"xent"``).
      loss: ``"mse"`` (targets ``(B, O)``) or ``"xent"`` (targets ``(B,)`` int).
      tbptt: truncated-BPTT chunk length, or None (a causal recurrence only).

    Returns:
      A ``Model`` with ``ModelParams``; ``apply(params, inputs (B, T, I), lengths) -> (B, O)``.
    """
    return _readout_model(cell, output_size, loss, tbptt, "many_to_one")


def many_to_many(cell: Cell | Layer, output_size: int, *, loss: str = "xent", tbptt: int | None = None) -> Model:
    """Per-step readout ``y_t = W h_t + b`` (language model, tagging, forecasting).

    Args:
      cell: the recurrent cell, or a ``Layer`` (``rnnjax.bidirectional``,
        ``rnnjax.sequential(..., dropout=p)``).
      output_size: O.
      loss: ``"xent"`` (targets ``(B, T)`` int) or ``"mse"`` (targets ``(B, T, O)``).
      tbptt: truncated-BPTT chunk length, or None (a causal recurrence only).

    Returns:
      A ``Model`` with ``ModelParams``; ``apply(params, inputs (B, T, I), lengths) -> (B, T, O)``.
      Steps ``t >= input_lengths[b]`` are masked in the loss.
    """
    return _readout_model(cell, output_size, loss, tbptt, "many_to_many")


def _check_cell_only(name: str, cell, pattern: str) -> None:
    if isinstance(cell, Layer):
        raise TypeError(
            f"{name}: {pattern} steps its recurrence itself and needs an rnnjax.Cell (rnnjax.stack for "
            "depth), got a Layer; layers (bidirectional, sequential with dropout) work with many_to_one "
            "and many_to_many"
        )
    v.check_cell(cell)


def one_to_many(
    cell: Cell,
    vector_size: int,
    output_size: int,
    *,
    loss: str = "mse",
    feed: str = "both",
    tbptt: int | None = None,
) -> Model:
    """Generate a sequence from one vector ``v``.

    ``feed="state"``: ``c_0 = unravel(A v + a)`` (a linear map onto the whole
    carry, real and imaginary parts of a complex carry alike), inputs zero; ``feed="input"``: ``c_0 = 0`` and ``x_t = v`` at every
    step; ``feed="both"``: both. Outputs ``y_t = W h_t + b`` for ``t < T``
    (T: the targets' length).

    Args:
      cell: the recurrent cell; its ``input_size`` must equal ``vector_size``
        when ``feed`` is ``"input"`` or ``"both"``.
      vector_size: V, width of the conditioning vector.
      output_size: O.
      loss: ``"mse"`` (targets ``(B, T, O)``) or ``"xent"`` (targets ``(B, T)``).
      feed: ``"state"``, ``"input"`` or ``"both"``.
      tbptt: truncated-BPTT chunk length, or None.

    Returns:
      A ``Model`` with ``OneToManyParams``; ``apply(params, inputs (B, V), lengths=None, *, out_len) -> (B, T, O)``.
      Steps ``t >= target_lengths[b]`` are masked in the loss.
    """
    _check_cell_only("cell", cell, "one_to_many")
    _check_loss(loss)
    if feed not in ONE_TO_MANY_FEEDS:
        raise ValueError(f"feed: expected one of {ONE_TO_MANY_FEEDS}, got {feed!r}")
    if feed != "state" and cell.input_size != vector_size:
        raise ValueError(
            f"cell: with feed={feed!r} the cell's input_size must equal vector_size={vector_size}, "
            f"got {cell.input_size}"
        )
    readout = linear(cell.output_size, output_size, dtype=_param_dtype(cell))
    # One real vector for the whole carry (a complex leaf, e.g. the LRU's, gives real then imaginary parts).
    flat_carry, unravel = flatten_carry(cell.initial_carry())
    init_map = linear(vector_size, flat_carry.shape[0], dtype=_param_dtype(cell)) if feed != "input" else None

    def init(key):
        k_c, k_r, k_m = jax.random.split(key, 3)
        return OneToManyParams(cell.init(k_c), readout.init(k_r), None if init_map is None else init_map.init(k_m))

    def apply(params, inputs, lengths=None, *, out_len):
        _check_inputs("inputs", inputs, 2, vector_size)
        batch = inputs.shape[0]
        if init_map is None:
            carry = batch_carry(cell, batch)
        else:
            carry = jax.vmap(unravel)(init_map.apply(params.init_map, inputs))
        if feed == "state":
            xs = jnp.zeros((batch, out_len, cell.input_size), inputs.dtype)
        else:
            xs = jnp.broadcast_to(inputs[:, None, :], (batch, out_len, vector_size))
        _, ys = run_cell(cell, params.cell, xs, carry, lengths=lengths, tbptt=tbptt)
        return readout.apply(params.readout, ys)

    def loss_fn(params, batch, carry=None, *, key=None):
        del key  # no dropout in this pattern (its cells are stepped one by one)
        if carry is not None:
            raise ValueError("carry: one_to_many builds its initial state from the input vector; pass carry=None")
        out_len = batch.targets.shape[1]
        out = apply(params, batch.inputs, batch.target_lengths, out_len=out_len)
        mask = None if batch.target_lengths is None else step_mask(batch.target_lengths, *out.shape[:2])
        return _loss_and_metrics(loss, out, batch.targets, mask)

    return Model(init, apply, loss_fn, _evaluate(loss_fn), lambda b: batch_carry(cell, b), "one_to_many", loss, cell)


def seq2seq(encoder: Cell, decoder: Cell, output_size: int, *, loss: str = "xent", tbptt: int | None = None) -> Model:
    """Encoder–decoder: the encoder's final carry (after the last valid input) starts the decoder.

    The decoder reads the previous target: for ``"xent"`` a one-hot vector of
    width ``output_size + 1`` whose last slot is the start token; for
    ``"mse"`` the previous target vector (zeros at the start). Training uses
    teacher forcing (``loss``); ``apply`` and ``evaluate`` decode greedily,
    feeding back the argmax (``"xent"``) or the prediction (``"mse"``).

    Args:
      encoder: cell reading ``inputs (B, T_in, I)``.
      decoder: cell with the same carry layout as ``encoder`` and ``input_size``
        ``output_size + 1`` (``"xent"``) or ``output_size`` (``"mse"``).
      output_size: O (vocabulary size for ``"xent"``).
      loss: ``"xent"`` (targets ``(B, T_out)`` int) or ``"mse"`` (targets ``(B, T_out, O)``).
      tbptt: truncated-BPTT chunk length for the encoder, or None.

    Returns:
      A ``Model`` with ``Seq2SeqParams``; ``apply(params, inputs, lengths=None, *, out_len)``
      returns greedy logits/predictions ``(B, T_out, O)``.
    """
    _check_cell_only("encoder", encoder, "seq2seq")
    _check_cell_only("decoder", decoder, "seq2seq")
    _check_loss(loss)
    dec_in = output_size + 1 if loss == "xent" else output_size
    if decoder.input_size != dec_in:
        raise ValueError(
            f"decoder: expected input_size {dec_in} for loss {loss!r} and output_size {output_size}, "
            f"got {decoder.input_size}"
        )
    enc_c, dec_c = encoder.initial_carry(), decoder.initial_carry()
    if jax.tree.structure(enc_c) != jax.tree.structure(dec_c) or [jnp.shape(a) for a in jax.tree.leaves(enc_c)] != [
        jnp.shape(a) for a in jax.tree.leaves(dec_c)
    ]:
        raise ValueError("decoder: expected the same carry layout as the encoder (same cell type and hidden size)")
    readout = linear(decoder.output_size, output_size, dtype=_param_dtype(decoder))

    def init(key):
        k_e, k_d, k_r = jax.random.split(key, 3)
        return Seq2SeqParams(encoder.init(k_e), decoder.init(k_d), readout.init(k_r))

    def encode(params, inputs, lengths):
        _check_inputs("inputs", inputs, 3, encoder.input_size)
        carry, _ = run_cell(encoder, params.encoder, inputs, None, lengths=lengths, tbptt=tbptt)
        return carry

    def teacher_inputs(targets, dtype):
        batch = targets.shape[0]
        if loss == "xent":
            prev = jnp.concatenate([jnp.full((batch, 1), output_size, jnp.int32), targets[:, :-1].astype(jnp.int32)], 1)
            return jax.nn.one_hot(prev, dec_in, dtype=dtype)
        start = jnp.zeros((batch, 1, output_size), dtype)
        return jnp.concatenate([start, targets[:, :-1].astype(dtype)], 1)

    def loss_fn(params, batch, carry=None, *, key=None):
        del key  # no dropout in this pattern (its cells are stepped one by one)
        if carry is not None:
            raise ValueError("carry: seq2seq starts the decoder from the encoder; pass carry=None")
        c = encode(params, batch.inputs, batch.input_lengths)
        xs = teacher_inputs(batch.targets, batch.inputs.dtype)
        _, ys = unroll_batch(decoder, params.decoder, xs, c, lengths=batch.target_lengths)
        out = readout.apply(params.readout, ys)
        mask = None if batch.target_lengths is None else step_mask(batch.target_lengths, *out.shape[:2])
        return _loss_and_metrics(loss, out, batch.targets, mask)

    def apply(params, inputs, lengths=None, *, out_len):
        c = encode(params, inputs, lengths)
        batch = inputs.shape[0]
        if loss == "xent":
            x0 = jax.nn.one_hot(jnp.full((batch,), output_size), dec_in, dtype=inputs.dtype)
        else:
            x0 = jnp.zeros((batch, output_size), inputs.dtype)

        step_cell, weights = prepare(decoder, params.decoder)  # once per decode, not per step

        def body(state, _):
            c, x = state
            c, y = jax.vmap(step_cell.step, in_axes=(None, 0, 0))(weights, c, x)
            out = readout.apply(params.readout, y)
            if loss == "xent":
                x = jax.nn.one_hot(jnp.argmax(out, -1), dec_in, dtype=x.dtype)
            else:
                x = out.astype(x.dtype)
            return (c, x), out

        _, outs = jax.lax.scan(body, (c, x0), None, length=out_len)
        return jnp.swapaxes(outs, 0, 1)

    def evaluate(params, batch):
        value, _ = loss_fn(params, batch)
        out = apply(params, batch.inputs, batch.input_lengths, out_len=batch.targets.shape[1])
        mask = None if batch.target_lengths is None else step_mask(batch.target_lengths, *out.shape[:2])
        greedy, aux = _loss_and_metrics(loss, out, batch.targets, mask)
        if loss == "mse":
            aux = {"greedy_loss": greedy}
        return {"loss": value, **aux}

    return Model(init, apply, loss_fn, evaluate, lambda b: batch_carry(encoder, b), "seq2seq", loss, encoder)


def for_task(
    task,
    cell_factory: Callable[[int, int], Cell],
    hidden_size: int,
    *,
    tbptt: int | None = None,
    bidirectional: bool = False,
    layers: int = 1,
    dropout: float = 0.0,
    remat: int = 0,
) -> Model:
    """The model that fits ``task.pattern``, with cells built by ``cell_factory(input_size, hidden_size)``.

    ``layers`` cells deep: without dropout and bidirectionality an
    ``rnnjax.stack`` (a ``Cell``: every pattern); otherwise an
    ``rnnjax.sequential`` of ``layers`` layers (``rnnjax.bidirectional`` ones
    if ``bidirectional``) with ``dropout`` between them (``many_to_one`` and
    ``many_to_many`` only). Layer ``k + 1`` reads layer ``k``'s output (``2H``
    wide when bidirectional).

    Args:
      task: an ``rnnjax.tasks.Task``.
      cell_factory: ``(input_size, hidden_size) -> Cell``, e.g.
        ``functools.partial(rnnjax.make_cell, "lstm", init_gain=1.0)``.
      hidden_size: H.
      tbptt: truncated-BPTT chunk length, or None (not with ``bidirectional``).
      bidirectional: every layer runs forwards and backwards, outputs concatenated.
      layers: number of stacked recurrent layers, >= 1.
      dropout: drop probability between layers in ``[0, 1)`` (needs ``layers >= 2``;
        active when ``loss`` gets a ``key``).
      remat: recompute the recurrence in the backward pass, in checkpointed
        segments of ``remat`` steps (``rnnjax.unroll(remat=k)``; each layer
        becomes an ``rnnjax.layer``); 0 = off. ``many_to_one`` and ``many_to_many`` only.

    Returns:
      ``many_to_one`` / ``many_to_many`` / ``one_to_many`` (``feed="both"``) /
      ``seq2seq`` (decoder built with the input width it needs).
    """
    if not isinstance(bidirectional, bool):
        raise TypeError(f"bidirectional: expected True or False, got {bidirectional!r}")
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise ValueError(f"layers: expected a positive integer (stacked recurrent layers), got {layers!r}")
    if not (isinstance(dropout, (int, float)) and 0.0 <= dropout < 1.0):
        raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
    if dropout > 0 and layers == 1:
        raise ValueError(f"dropout: acts between layers and needs layers >= 2, got dropout={dropout} with layers=1")
    if isinstance(remat, bool) or not isinstance(remat, int) or remat < 0:
        raise ValueError(f"remat: expected a non-negative integer (segment length, 0 = off), got {remat!r}")
    if task.pattern in ("one_to_many", "seq2seq") and (bidirectional or dropout > 0 or remat):
        name = "bidirectional" if bidirectional else "dropout" if dropout > 0 else "remat"
        raise ValueError(
            f"{name}: the {task.pattern} pattern steps a causal Cell itself; bidirectional layers and dropout "
            "work with many_to_one and many_to_many tasks"
        )
    options = {"remat": remat} if remat else {}

    def recurrence(input_size):
        items, width = [], input_size
        for _ in range(layers):
            cell = cell_factory(width, hidden_size)
            items.append(_bidirectional(cell, **options) if bidirectional else cell)
            width = items[-1].output_size
        if bidirectional or dropout > 0:
            items = [item if isinstance(item, Layer) or not remat else layer(item, **options) for item in items]
            return items[0] if layers == 1 else sequential(*items, dropout=dropout)
        cell = items[0] if layers == 1 else stack(*items)
        return layer(cell, **options) if remat else cell

    I, O = task.input_size, task.output_size
    if task.pattern == "many_to_one":
        return many_to_one(recurrence(I), O, loss=task.loss, tbptt=tbptt)
    if task.pattern == "many_to_many":
        return many_to_many(recurrence(I), O, loss=task.loss, tbptt=tbptt)
    if task.pattern == "one_to_many":
        return one_to_many(recurrence(I), I, O, loss=task.loss, feed="both", tbptt=tbptt)
    if task.pattern == "seq2seq":
        dec_in = O + 1 if task.loss == "xent" else O
        return seq2seq(recurrence(I), recurrence(dec_in), O, loss=task.loss, tbptt=tbptt)
    raise ValueError(f"task: unknown pattern {task.pattern!r}")


def grad_profile(model: Model, params: Any, batch: Batch) -> jax.Array:
    """Per-step gradient norms of a model's own loss: ``mean_b ||dL_b/dc_t||``.

    ``L_b = model.loss(params, batch_b)`` is the loss on the one-sequence batch
    ``b`` (same readout, masking and truncated BPTT; no dropout), and ``c_t``
    the carry entering step ``t`` (``c_0`` the initial one), the whole carry
    of a stack. Zero perturbations are added to the carry before every step
    (``model.perturbed_loss``) and differentiated in one backward pass, as in
    ``rnnjax.gradflow.hidden_grad_norms``. Padded steps ``t >= length`` give 0.

    Args:
      model: a ``many_to_one`` or ``many_to_many`` model.
      params: its parameters.
      batch: a ``Batch`` with ``inputs (B, T, I)``.

    Returns:
      ``(T,)``; for a recurrence with backward passes (``bidirectional``)
      ``(2, T)``: row 0 over the carries of forward passes, row 1 over those
      of backward passes (there ``c_t`` is the carry that reads ``xs[t]``, so
      the gradient flows from large ``t`` to small). Pure and jittable
      (``jax.jit(grad_profile, static_argnums=0)``).
    """
    if not isinstance(model, Model) or model.perturbed_loss is None:
        got = model.pattern if isinstance(model, Model) else type(model).__name__
        raise ValueError(f"model: grad_profile supports many_to_one and many_to_many models, got {got}")
    _check_inputs("batch.inputs", batch.inputs, 3, model.cell.input_size)
    time = batch.inputs.shape[1]
    dtype = jnp.result_type(batch.inputs.dtype, *jax.tree.leaves(params))

    def one(seq):
        seq = jax.tree.map(lambda a: a[None], seq)
        deltas = jax.tree.map(
            lambda c: jnp.zeros((1, time) + c.shape[1:], jnp.result_type(c.dtype, dtype)), model.initial_carry(1)
        )
        grads = jax.grad(lambda d: model.perturbed_loss(params, seq, d))(deltas)
        return carry_grad_norms(jax.tree.map(lambda g: g[0], grads), backward_leaves(model.cell))

    return jnp.mean(jax.vmap(one)(batch), axis=0)


def generate(
    model: Model,
    params: ModelParams,
    key: jax.Array,
    prime: jax.Array,
    length: int,
    *,
    temperature: float = 1.0,
) -> jax.Array:
    """Sample tokens from a ``many_to_many`` ``"xent"`` model on one-hot inputs (a character LM).

    The model reads ``prime`` (at least one token), then feeds back each sampled
    token: ``x_{t+1} = onehot(s_t)``, ``s_t ~ softmax(logits_t / temperature)``
    (``temperature=0``: argmax).

    Args:
      model: a ``many_to_many`` model with ``loss="xent"`` whose cell reads
        one-hot vectors (``input_size == output_size``).
      params: its parameters.
      key: PRNG key.
      prime: ``(P,)`` int tokens, ``P >= 1``.
      length: number of tokens to generate (static).
      temperature: softmax temperature (>= 0).

    Returns:
      ``(length,)`` int32 sampled tokens (the prime excluded).
    """
    cell = model.cell
    if model.pattern != "many_to_many" or model.loss_name != "xent":
        raise ValueError(f"model: expected a many_to_many xent model, got {model.pattern} {model.loss_name}")
    if not isinstance(cell, Cell):
        raise ValueError("model: generate steps the model's Cell one token at a time; its recurrence is a Layer")
    vocab = params.readout.w.shape[0]
    if cell.input_size != vocab:
        raise ValueError(f"model: the cell must read one-hot tokens (input_size {vocab}), got {cell.input_size}")
    prime = jnp.asarray(prime, jnp.int32)
    if prime.ndim != 1 or prime.shape[0] < 1:
        raise ValueError(f"prime: expected a non-empty 1-D token array, got shape {tuple(prime.shape)}")
    if not temperature >= 0:
        raise ValueError(f"temperature: expected >= 0, got {temperature!r}")
    dtype = params.readout.w.dtype
    xs = jax.nn.one_hot(prime[:-1], vocab, dtype=dtype)
    carry = cell.initial_carry()
    step_cell, weights = prepare(cell, params.cell)  # a parametrised matrix is built once, not per token
    if prime.shape[0] > 1:
        carry, _ = jax.lax.scan(lambda c, x: (step_cell.step(weights, c, x)[0], None), carry, xs)

    def body(state, k):
        c, tok = state
        c, y = step_cell.step(weights, c, jax.nn.one_hot(tok, vocab, dtype=dtype))
        logits = params.readout.w @ y + params.readout.b
        if temperature == 0:
            nxt = jnp.argmax(logits).astype(jnp.int32)
        else:
            nxt = jax.random.categorical(k, logits / temperature).astype(jnp.int32)
        return (c, nxt), nxt

    _, toks = jax.lax.scan(body, (carry, prime[-1]), jax.random.split(key, length))
    return toks
