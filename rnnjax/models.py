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

Losses are ``"mse"`` (float targets, mean over valid steps and output units),
``"xent"`` (integer class targets, mean cross-entropy over valid steps) or
``"bce"`` (multi-label 0/1 targets: Bernoulli negative log-likelihood summed over
the output units, mean over valid steps — e.g. nats per piano-roll frame).

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

LOSSES = ("mse", "xent", "bce")
ONE_TO_MANY_FEEDS = ("state", "input", "both")
POOLS = ("last", "mean")


class ModelParams(NamedTuple):
    """Parameters of ``many_to_one`` / ``many_to_many``: ``cell``, the ``readout`` (O, H) and the
    ``embedding`` (V, E) of a model built with ``vocab_size`` (None otherwise)."""

    cell: Any
    readout: LinearParams
    embedding: jax.Array | None = None


class OneToManyParams(NamedTuple):
    """Parameters of ``one_to_many``: ``cell``, ``readout`` and ``init_map`` (vector -> initial carry, or None)."""

    cell: Any
    readout: LinearParams
    init_map: LinearParams | None


class AttentionParams(NamedTuple):
    """Luong attention of ``seq2seq(..., attention=True)``: ``score (H_dec, H_enc)`` (the "general" score
    ``h^T W_a e``) and ``combine``, the linear map ``[context; h] (H_enc + H_dec) -> H_dec``."""

    score: jax.Array
    combine: LinearParams


class Seq2SeqParams(NamedTuple):
    """Parameters of ``seq2seq``: ``encoder`` cell, ``decoder`` cell, ``readout`` of the decoder outputs
    and ``attention`` (``AttentionParams``, or None without attention)."""

    encoder: Any
    decoder: Any
    readout: LinearParams
    attention: AttentionParams | None = None


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
      input_size: I, the width of the inputs the model reads: the embedding's
        vocabulary V for a model with one, else None (``cell.input_size``).
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
    input_size: int | None = None


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


def masked_bce(logits: jax.Array, targets: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Bernoulli negative log-likelihood (nats) summed over units, mean over valid positions.

    With ``p = sigmoid(z)``, each position scores
    ``-sum_k [y_k log p_k + (1 - y_k) log(1 - p_k)] = sum_k softplus(z_k) - y_k z_k``
    (the multi-label loss of polyphonic music models, Boulanger-Lewandowski et al., ICML 2012).

    Args:
      logits: ``(..., K)``.
      targets: ``(..., K)`` in ``[0, 1]`` (0/1 labels).
      mask: ``(...)`` weights, or None.

    Returns:
      The scalar ``sum(mask * nll) / max(sum(mask), 1)``.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"targets: expected 0/1 labels of shape {tuple(logits.shape)} (as logits), "
                         f"got {tuple(targets.shape)}")
    y = targets.astype(logits.dtype)
    nll = jnp.sum(jax.nn.softplus(logits) - y * logits, axis=-1)
    return _masked_mean(nll, mask)


def _masked_mean(values, mask):
    if mask is None:
        return jnp.mean(values)
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def _loss_and_metrics(loss_name, outputs, targets, mask):
    if loss_name == "mse":
        return masked_mse(outputs, targets, mask), {}
    if loss_name == "bce":
        return masked_bce(outputs, targets, mask), {}
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


def read_tokens(inputs: jax.Array, width: int, embedding: jax.Array | None = None, *, name: str = "inputs",
                dtype=jnp.float32) -> jax.Array:
    """The vectors a recurrence reads from sequence inputs: one-hot/float steps or integer token ids.

    Integer ``inputs (B, T)`` are token ids in ``[0, width)``: without an
    ``embedding`` they become one-hot vectors ``(B, T, width)``; with one
    ``(V, E)`` (``width == V``) the rows ``embedding[ids]``, ``(B, T, E)``
    (a gather: no one-hot is built). Float ``inputs (B, T, width)`` pass
    through, or are multiplied by the embedding (``inputs @ embedding``; on
    one-hot vectors the same rows).

    Args:
      inputs: ``(B, T)`` integer ids or ``(B, T, width)`` floats.
      width: I, the vocabulary size V (or input width).
      embedding: ``(V, E)`` or None.
      name: the argument named in errors.
      dtype: dtype of the one-hot vectors.

    Returns:
      ``(B, T, I)`` (no embedding) or ``(B, T, E)``.
    """
    if jnp.issubdtype(inputs.dtype, jnp.integer):
        if inputs.ndim != 2:
            raise ValueError(f"{name}: integer token ids must have shape (B, T), got {tuple(inputs.shape)}")
        if embedding is None:
            return jax.nn.one_hot(inputs, width, dtype=dtype)
        return jnp.take(embedding, inputs, axis=0)
    _check_inputs(name, inputs, 3, width)
    return inputs if embedding is None else inputs.astype(embedding.dtype) @ embedding


# ------------------------------------------------------------------------------------------ patterns
def _readout_model(cell: Cell | Layer, output_size: int, loss: str, tbptt: int | None, pattern: str,
                   vocab_size: int | None = None, pool: str = "last") -> Model:
    """``many_to_one`` (readout of the last valid output, or of the mean) or ``many_to_many`` (every step)."""
    _check_recurrence(cell)
    _check_loss(loss)
    if tbptt is not None:
        _check_tbptt(cell, tbptt)
    if pool not in POOLS:
        raise ValueError(f"pool: expected one of {POOLS}, got {pool!r}")
    if vocab_size is not None and (isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 1):
        raise ValueError(f"vocab_size: expected a positive integer (tokens to embed) or None, got {vocab_size!r}")
    dtype = _param_dtype(cell)
    readout = linear(cell.output_size, output_size, dtype=dtype)
    per_step = pattern == "many_to_many"
    back = cell.backward_size if isinstance(cell, Layer) else 0
    width = cell.input_size if vocab_size is None else vocab_size

    def init(key):
        k_c, k_r = jax.random.split(key)
        if vocab_size is None:
            return ModelParams(cell.init(k_c), readout.init(k_r))
        # N(0, 1) rows, as torch.nn.Embedding; its own key, so models without one keep their initialisation
        emb = jax.random.normal(jax.random.fold_in(key, 2), (vocab_size, cell.input_size), dtype)
        return ModelParams(cell.init(k_c), readout.init(k_r), emb)

    def forward(params, inputs, lengths, carry, key=None, deltas=None):
        xs = read_tokens(inputs, width, params.embedding, dtype=dtype)
        carry, ys = run_cell(cell, params.cell, xs, carry, lengths=lengths, tbptt=tbptt, key=key, deltas=deltas)
        if per_step:
            return carry, readout.apply(params.readout, ys)
        if pool == "mean":
            mask = step_mask(lengths, *ys.shape[:2]).astype(ys.dtype)[..., None]
            h = jnp.sum(ys * mask, axis=1) / jnp.maximum(jnp.sum(mask, axis=1), 1.0)
        else:
            h = _last_valid(ys, lengths, back)
        return carry, readout.apply(params.readout, h)

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
                 perturbed_loss, vocab_size)


def many_to_one(cell: Cell | Layer, output_size: int, *, loss: str = "mse", tbptt: int | None = None,
                vocab_size: int | None = None, pool: str = "last") -> Model:
    """Classifier/regressor on the last valid output, ``y = W h_{len-1} + b``, or on the mean of the valid ones.

    For a ``Layer`` whose last pass runs backwards (``bidirectional``), its
    units are read at ``t = 0``, after that pass has seen the whole sequence:
    ``h = concat(forward_y[len-1], backward_y[0])`` (PyTorch's ``h_n`` of
    both directions). ``pool="mean"`` reads ``h = (1/len) sum_{t<len} y_t``
    instead (mean-pooling over valid steps, both directions alike).

    Args:
      cell: the recurrent cell (input ``I``, output ``H``), or a ``Layer``
        (``rnnjax.bidirectional``, ``rnnjax.sequential(..., dropout=p)``).
      output_size: O (number of classes for ``"xent"``).
      loss: ``"mse"`` (targets ``(B, O)``) or ``"xent"`` (targets ``(B,)`` int).
      tbptt: truncated-BPTT chunk length, or None (a causal recurrence only).
      vocab_size: V: the model embeds tokens, ``x_t = E[id_t]`` with a learnt
        ``E (V, I)`` (``ModelParams.embedding``, N(0, 1) at init); the cell reads
        ``I``-wide embeddings. None: inputs go to the cell as they are.
      pool: ``"last"`` (last valid output) or ``"mean"`` (mean over valid steps).

    Returns:
      A ``Model`` with ``ModelParams``; ``apply(params, inputs, lengths) -> (B, O)``
      with ``inputs (B, T, I)`` floats, or ``(B, T)`` integer token ids
      (one-hot of width ``cell.input_size``, or embedded: ``rnnjax.models.read_tokens``).
    """
    return _readout_model(cell, output_size, loss, tbptt, "many_to_one", vocab_size, pool)


def many_to_many(cell: Cell | Layer, output_size: int, *, loss: str = "xent", tbptt: int | None = None,
                 vocab_size: int | None = None) -> Model:
    """Per-step readout ``y_t = W h_t + b`` (language model, tagging, forecasting).

    Args:
      cell: the recurrent cell, or a ``Layer`` (``rnnjax.bidirectional``,
        ``rnnjax.sequential(..., dropout=p)``).
      output_size: O.
      loss: ``"xent"`` (targets ``(B, T)`` int) or ``"mse"`` (targets ``(B, T, O)``).
      tbptt: truncated-BPTT chunk length, or None (a causal recurrence only).
      vocab_size: V, to embed the tokens (as in ``many_to_one``), or None.

    Returns:
      A ``Model`` with ``ModelParams``; ``apply(params, inputs, lengths) -> (B, T, O)`` with
      ``inputs (B, T, I)`` floats or ``(B, T)`` integer token ids.
      Steps ``t >= input_lengths[b]`` are masked in the loss.
    """
    return _readout_model(cell, output_size, loss, tbptt, "many_to_many", vocab_size)


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
    teacher_forcing: bool = False,
) -> Model:
    """Generate a sequence from one vector ``v``.

    ``feed="state"``: ``c_0 = unravel(A v + a)`` (a linear map onto the whole
    carry, real and imaginary parts of a complex carry alike), inputs zero; ``feed="input"``: ``c_0 = 0`` and ``x_t = v`` at every
    step; ``feed="both"``: both. Outputs ``y_t = W h_t + b`` for ``t < T``
    (T: the targets' length).

    ``teacher_forcing=True`` (``"xent"`` only; a conditioned decoder, as in
    image captioning, Vinyals et al. 2015) also feeds the previous token:
    ``x_t = [v; onehot(y_{t-1})]`` (``feed="state"``: ``onehot(y_{t-1})``), a
    one-hot of width ``O + 1`` whose last slot is the start token ``y_{-1}``.
    ``loss`` reads the true previous targets (teacher forcing); ``apply``
    decodes greedily, feeding back the argmax; ``evaluate`` reports the
    teacher-forced ``"loss"`` and, from greedy decoding, ``"accuracy"``
    (valid tokens) and ``"sequence_accuracy"`` (sequences right at every valid step).

    Args:
      cell: the recurrent cell; its ``input_size`` must equal ``vector_size``
        when ``feed`` is ``"input"`` or ``"both"`` (plus ``output_size + 1``
        with ``teacher_forcing``; ``output_size + 1`` alone for ``feed="state"``).
      vector_size: V, width of the conditioning vector.
      output_size: O.
      loss: ``"mse"`` (targets ``(B, T, O)``), ``"xent"`` (targets ``(B, T)``)
        or ``"bce"`` (0/1 targets ``(B, T, O)``).
      feed: ``"state"``, ``"input"`` or ``"both"``.
      tbptt: truncated-BPTT chunk length, or None.
      teacher_forcing: feed the previous token (see above).

    Returns:
      A ``Model`` with ``OneToManyParams``; ``apply(params, inputs (B, V), lengths=None, *, out_len) -> (B, T, O)``.
      Steps ``t >= target_lengths[b]`` are masked in the loss.

    References:
      Vinyals, Toshev, Bengio & Erhan, "Show and tell: a neural image caption generator", CVPR 2015.
    """
    _check_cell_only("cell", cell, "one_to_many")
    _check_loss(loss)
    if feed not in ONE_TO_MANY_FEEDS:
        raise ValueError(f"feed: expected one of {ONE_TO_MANY_FEEDS}, got {feed!r}")
    if not isinstance(teacher_forcing, bool):
        raise TypeError(f"teacher_forcing: expected True or False, got {teacher_forcing!r}")
    if teacher_forcing and loss != "xent":
        raise ValueError(f"teacher_forcing: feeds back tokens and needs loss='xent', got loss={loss!r}")
    token_width = output_size + 1 if teacher_forcing else 0
    width = (0 if feed == "state" else vector_size) + token_width
    if (feed != "state" or teacher_forcing) and cell.input_size != width:
        want = " + ".join(([] if feed == "state" else [f"vector_size {vector_size}"])
                          + ([f"output_size + 1 = {token_width}"] if teacher_forcing else []))
        raise ValueError(
            f"cell: with feed={feed!r}{' and teacher_forcing' if teacher_forcing else ''} the cell's input_size "
            f"must be {want} = {width}, got {cell.input_size}"
        )
    readout = linear(cell.output_size, output_size, dtype=_param_dtype(cell))
    # One real vector for the whole carry (a complex leaf, e.g. the LRU's, gives real then imaginary parts).
    flat_carry, unravel = flatten_carry(cell.initial_carry())
    init_map = linear(vector_size, flat_carry.shape[0], dtype=_param_dtype(cell)) if feed != "input" else None

    def init(key):
        k_c, k_r, k_m = jax.random.split(key, 3)
        return OneToManyParams(cell.init(k_c), readout.init(k_r), None if init_map is None else init_map.init(k_m))

    def start(params, inputs):
        _check_inputs("inputs", inputs, 2, vector_size)
        if init_map is None:
            return batch_carry(cell, inputs.shape[0])
        return jax.vmap(unravel)(init_map.apply(params.init_map, inputs))

    def feed_inputs(inputs, out_len, tokens=None):
        """``(B, out_len, cell.input_size)``: ``v`` at every step and/or one-hot previous ``tokens (B, out_len)``."""
        batch = inputs.shape[0]
        parts = [] if feed == "state" else [jnp.broadcast_to(inputs[:, None, :], (batch, out_len, vector_size))]
        if teacher_forcing:
            parts.append(jax.nn.one_hot(tokens, token_width, dtype=inputs.dtype))
        if not parts:
            return jnp.zeros((batch, out_len, cell.input_size), inputs.dtype)
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)

    def apply(params, inputs, lengths=None, *, out_len):
        carry = start(params, inputs)
        if not teacher_forcing:
            _, ys = run_cell(cell, params.cell, feed_inputs(inputs, out_len), carry, lengths=lengths, tbptt=tbptt)
            return readout.apply(params.readout, ys)
        step_cell, weights = prepare(cell, params.cell)  # once per decode, not per step

        def body(state, _):  # greedy decoding: feed back the argmax
            c, tok = state
            x = feed_inputs(inputs, 1, tok[:, None])[:, 0]
            c, y = jax.vmap(step_cell.step, in_axes=(None, 0, 0))(weights, c, x)
            out = readout.apply(params.readout, y)
            return (c, jnp.argmax(out, -1).astype(jnp.int32)), out

        first = jnp.full((inputs.shape[0],), output_size, jnp.int32)  # the start token
        _, outs = jax.lax.scan(body, (carry, first), None, length=out_len)
        return jnp.swapaxes(outs, 0, 1)

    def loss_fn(params, batch, carry=None, *, key=None):
        del key  # no dropout in this pattern (its cells are stepped one by one)
        if carry is not None:
            raise ValueError("carry: one_to_many builds its initial state from the input vector; pass carry=None")
        out_len = batch.targets.shape[1]
        if teacher_forcing:
            start_tok = jnp.full((batch.targets.shape[0], 1), output_size, jnp.int32)
            prev = jnp.concatenate([start_tok, batch.targets[:, :-1].astype(jnp.int32)], axis=1)
            _, ys = run_cell(cell, params.cell, feed_inputs(batch.inputs, out_len, prev), start(params, batch.inputs),
                             lengths=batch.target_lengths, tbptt=tbptt)
            out = readout.apply(params.readout, ys)
        else:
            out = apply(params, batch.inputs, batch.target_lengths, out_len=out_len)
        mask = None if batch.target_lengths is None else step_mask(batch.target_lengths, *out.shape[:2])
        return _loss_and_metrics(loss, out, batch.targets, mask)

    def evaluate(params, batch):
        value, aux = loss_fn(params, batch)
        if not teacher_forcing:
            return {"loss": value, **aux}
        out = apply(params, batch.inputs, out_len=batch.targets.shape[1])
        mask = None if batch.target_lengths is None else step_mask(batch.target_lengths, *out.shape[:2])
        _, greedy = _loss_and_metrics(loss, out, batch.targets, mask)
        right = jnp.argmax(out, -1) == batch.targets
        if mask is not None:
            right = right | (mask == 0)
        return {"loss": value, **greedy, "sequence_accuracy": jnp.mean(jnp.all(right, axis=1).astype(out.dtype))}

    return Model(init, apply, loss_fn, evaluate, lambda b: batch_carry(cell, b), "one_to_many", loss, cell)


def seq2seq(encoder: Cell, decoder: Cell, output_size: int, *, loss: str = "xent", tbptt: int | None = None,
            attention: bool = False) -> Model:
    """Encoder–decoder: the encoder's final carry (after the last valid input) starts the decoder.

    The decoder reads the previous target: for ``"xent"`` a one-hot vector of
    width ``output_size + 1`` whose last slot is the start token; for
    ``"mse"`` the previous target vector (zeros at the start). Training uses
    teacher forcing (``loss``); ``apply`` and ``evaluate`` decode greedily,
    feeding back the argmax (``"xent"``) or the prediction (``"mse"``).
    ``evaluate`` also reports, for ``"xent"``, ``"sequence_accuracy"``: the
    share of sequences whose greedy decoding is right at every valid step.

    With ``attention=True`` each decoder output ``h_t`` attends over the
    encoder outputs ``e_s`` of the valid input steps (Luong et al. 2015, global
    attention with the "general" score, no input feeding):
    ``a_t = softmax_s(h_t^T W_a e_s)``, ``c_t = sum_s a_ts e_s``,
    ``h~_t = tanh(W_c [c_t; h_t] + b_c)``, and the readout reads ``h~_t``.

    Args:
      encoder: cell reading ``inputs (B, T_in, I)``.
      decoder: cell with the same carry layout as ``encoder`` and ``input_size``
        ``output_size + 1`` (``"xent"``) or ``output_size`` (``"mse"``).
      output_size: O (vocabulary size for ``"xent"``).
      loss: ``"xent"`` (targets ``(B, T_out)`` int) or ``"mse"`` (targets ``(B, T_out, O)``).
      tbptt: truncated-BPTT chunk length for the encoder, or None.
      attention: Luong attention over the encoder outputs (``Seq2SeqParams.attention``).

    Returns:
      A ``Model`` with ``Seq2SeqParams``; ``apply(params, inputs, lengths=None, *, out_len)``
      returns greedy logits/predictions ``(B, T_out, O)``.

    References:
      Luong, Pham & Manning, "Effective approaches to attention-based neural machine translation", EMNLP 2015.
    """
    _check_cell_only("encoder", encoder, "seq2seq")
    _check_cell_only("decoder", decoder, "seq2seq")
    _check_loss(loss)
    if loss == "bce":
        raise ValueError("loss: seq2seq decodes with 'xent' (tokens) or 'mse' (vectors); "
                         "'bce' is for the other patterns")
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
    if not isinstance(attention, bool):
        raise TypeError(f"attention: expected True or False, got {attention!r}")
    dtype = _param_dtype(decoder)
    readout = linear(decoder.output_size, output_size, dtype=dtype)
    h_enc, h_dec = encoder.output_size, decoder.output_size
    combine = linear(h_enc + h_dec, h_dec, dtype=dtype)

    def init(key):
        k_e, k_d, k_r = jax.random.split(key, 3)
        if not attention:
            return Seq2SeqParams(encoder.init(k_e), decoder.init(k_d), readout.init(k_r))
        k_s, k_c = jax.random.split(jax.random.fold_in(key, 3))  # its own key: the rest is initialised as without
        score = jax.random.normal(k_s, (h_dec, h_enc), dtype) / math.sqrt(h_enc)
        return Seq2SeqParams(encoder.init(k_e), decoder.init(k_d), readout.init(k_r),
                             AttentionParams(score, combine.init(k_c)))

    def encode(params, inputs, lengths):
        """``(final carry, memory)``: memory = ``(encoder outputs (B, T_in, H_enc), (B, T_in) valid mask)`` or None."""
        xs = read_tokens(inputs, encoder.input_size, dtype=_param_dtype(encoder))
        carry, ys = run_cell(encoder, params.encoder, xs, None, lengths=lengths, tbptt=tbptt)
        return carry, ((ys, step_mask(lengths, *ys.shape[:2])) if attention else None)

    def attend(params, hs, memory):
        """Decoder outputs ``hs (B, T, H_dec)`` -> readout inputs (``h~`` with attention, else ``hs``)."""
        if memory is None:
            return hs
        ys, valid = memory
        return luong_attention(params.attention, hs, ys, valid)

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
        c, memory = encode(params, batch.inputs, batch.input_lengths)
        xs = teacher_inputs(batch.targets, _feed_dtype(batch.inputs, dtype))
        _, ys = unroll_batch(decoder, params.decoder, xs, c, lengths=batch.target_lengths)
        out = readout.apply(params.readout, attend(params, ys, memory))
        mask = None if batch.target_lengths is None else step_mask(batch.target_lengths, *out.shape[:2])
        return _loss_and_metrics(loss, out, batch.targets, mask)

    def apply(params, inputs, lengths=None, *, out_len):
        c, memory = encode(params, inputs, lengths)
        batch = inputs.shape[0]
        if loss == "xent":
            x0 = jax.nn.one_hot(jnp.full((batch,), output_size), dec_in, dtype=_feed_dtype(inputs, dtype))
        else:
            x0 = jnp.zeros((batch, output_size), _feed_dtype(inputs, dtype))

        step_cell, weights = prepare(decoder, params.decoder)  # once per decode, not per step

        def body(state, _):
            c, x = state
            c, y = jax.vmap(step_cell.step, in_axes=(None, 0, 0))(weights, c, x)
            out = readout.apply(params.readout, attend(params, y[:, None], memory)[:, 0])
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
        else:
            right = jnp.argmax(out, -1) == batch.targets
            if mask is not None:
                right = right | (mask == 0)
            aux["sequence_accuracy"] = jnp.mean(jnp.all(right, axis=1).astype(out.dtype))
        return {"loss": value, **aux}

    return Model(init, apply, loss_fn, evaluate, lambda b: batch_carry(encoder, b), "seq2seq", loss, encoder)


def _feed_dtype(inputs, dtype):
    """The decoder's input dtype: the inputs' when they are floats, the parameters' for token ids."""
    return inputs.dtype if jnp.issubdtype(inputs.dtype, jnp.inexact) else dtype


def luong_attention(params: AttentionParams, hs: jax.Array, memory: jax.Array, valid: jax.Array) -> jax.Array:
    """Luong global attention ("general" score): the attentional states of decoder outputs.

    ``a_ts = softmax_s(h_t^T W_a e_s)`` over the valid ``s``,
    ``c_t = sum_s a_ts e_s``, ``h~_t = tanh(W_c [c_t; h_t] + b_c)``.

    Args:
      params: ``AttentionParams(score (H_dec, H_enc), combine)``.
      hs: ``(B, T_out, H_dec)`` decoder outputs.
      memory: ``(B, T_in, H_enc)`` encoder outputs ``e_s``.
      valid: ``(B, T_in)`` 1 on valid input steps, 0 on padding (each row needs one valid step).

    Returns:
      ``(B, T_out, H_dec)``.

    References:
      Luong, Pham & Manning, "Effective approaches to attention-based neural machine translation", EMNLP 2015.
    """
    keys = jnp.einsum("hk,bsk->bsh", params.score, memory)  # W_a e_s
    scores = jnp.einsum("bth,bsh->bts", hs, keys)
    scores = jnp.where(valid[:, None, :] > 0, scores, -jnp.inf)
    weights = jax.nn.softmax(scores, axis=-1)
    context = jnp.einsum("bts,bsk->btk", weights, memory)
    w, b = params.combine
    return jnp.tanh(jnp.concatenate([context, hs], axis=-1) @ w.T + b)


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
    embed: int = 0,
    pool: str = "last",
    attention: bool = False,
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
      embed: E > 0: the model embeds the task's ``input_size`` tokens into
        ``E``-wide vectors (``vocab_size=task.input_size``; the first cell reads
        ``E``); 0: the cell reads the inputs as they are. ``many_to_one`` and ``many_to_many`` only.
      pool: ``many_to_one`` readout: ``"last"`` valid output or ``"mean"`` over valid steps.
      attention: ``seq2seq`` only: Luong attention over the encoder outputs.

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
    if isinstance(embed, bool) or not isinstance(embed, int) or embed < 0:
        raise ValueError(f"embed: expected a non-negative integer (embedding width, 0 = none), got {embed!r}")
    if embed and task.pattern not in ("many_to_one", "many_to_many"):
        raise ValueError(f"embed: token embeddings work with many_to_one and many_to_many tasks, not {task.pattern}")
    if pool not in POOLS:
        raise ValueError(f"pool: expected one of {POOLS}, got {pool!r}")
    if pool != "last" and task.pattern != "many_to_one":
        raise ValueError(f"pool: a readout pooling applies to many_to_one tasks, not {task.pattern}")
    if not isinstance(attention, bool):
        raise TypeError(f"attention: expected True or False, got {attention!r}")
    if attention and task.pattern != "seq2seq":
        raise ValueError(f"attention: attends over an encoder's outputs (seq2seq tasks), not {task.pattern}")
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
    vocab = {"vocab_size": I} if embed else {}
    if task.pattern == "many_to_one":
        return many_to_one(recurrence(embed or I), O, loss=task.loss, tbptt=tbptt, pool=pool, **vocab)
    if task.pattern == "many_to_many":
        return many_to_many(recurrence(embed or I), O, loss=task.loss, tbptt=tbptt, **vocab)
    if task.pattern == "one_to_many":  # a task with info["teacher_forcing"] (captions) also feeds the last token
        forcing = bool(task.info.get("teacher_forcing", False))
        return one_to_many(recurrence(I + (O + 1) * forcing), I, O, loss=task.loss, feed="both", tbptt=tbptt,
                           teacher_forcing=forcing)
    if task.pattern == "seq2seq":
        dec_in = O + 1 if task.loss == "xent" else O
        return seq2seq(recurrence(I), recurrence(dec_in), O, loss=task.loss, tbptt=tbptt, attention=attention)
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
    read_tokens(batch.inputs, model.input_size or model.cell.input_size, name="batch.inputs")  # shape check
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


def _feed_back(cell: Cell, params: ModelParams, prime_inputs, last, read, draw, key: jax.Array, length: int):
    """Autoregressive sampling shared by ``generate`` and ``generate_bernoulli``.

    The cell reads ``prime_inputs (P - 1, I)`` from its initial carry, then ``length`` times steps on
    ``read(s)`` of the last sample ``s`` (first ``last``, the prime's final element) and draws the next
    ``s = draw(k, W_out y + b_out)``. The cell's parametrisation is prepared once, not per step.
    Returns the ``length`` samples stacked.
    """
    step_cell, weights = prepare(cell, params.cell)
    carry = cell.initial_carry()
    if prime_inputs.shape[0] > 0:
        carry, _ = jax.lax.scan(lambda c, x: (step_cell.step(weights, c, x)[0], None), carry, prime_inputs)

    def body(state, k):
        c, sample = state
        c, y = step_cell.step(weights, c, read(sample))
        nxt = draw(k, params.readout.w @ y + params.readout.b)
        return (c, nxt), nxt

    _, samples = jax.lax.scan(body, (carry, last), jax.random.split(key, length))
    return samples


def generate(
    model: Model,
    params: ModelParams,
    key: jax.Array,
    prime: jax.Array,
    length: int,
    *,
    temperature: float = 1.0,
) -> jax.Array:
    """Sample tokens from a ``many_to_many`` ``"xent"`` language model (character or word level).

    The model reads ``prime`` (at least one token), then feeds back each sampled
    token: ``x_{t+1} = onehot(s_t)`` (or the embedding row ``E[s_t]`` of a model
    built with ``vocab_size``), ``s_t ~ softmax(logits_t / temperature)``
    (``temperature=0``: argmax).

    Args:
      model: a ``many_to_many`` model with ``loss="xent"`` reading one-hot
        vectors or embedding tokens (input width == ``output_size``).
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
    width = model.input_size or cell.input_size
    if width != vocab:
        raise ValueError(f"model: the model must read one-hot or embedded tokens (input_size {vocab}), got {width}")
    prime = jnp.asarray(prime, jnp.int32)
    if prime.ndim != 1 or prime.shape[0] < 1:
        raise ValueError(f"prime: expected a non-empty 1-D token array, got shape {tuple(prime.shape)}")
    if not temperature >= 0:
        raise ValueError(f"temperature: expected >= 0, got {temperature!r}")
    dtype = params.readout.w.dtype
    emb = getattr(params, "embedding", None)

    def token(t):  # x_t: one-hot, or the embedding row of a model built with vocab_size
        return jax.nn.one_hot(t, vocab, dtype=dtype) if emb is None else emb[t]

    def draw(k, logits):
        if temperature == 0:
            return jnp.argmax(logits).astype(jnp.int32)
        return jax.random.categorical(k, logits / temperature).astype(jnp.int32)

    return _feed_back(cell, params, token(prime[:-1]), prime[-1], token, draw, key, length)


def generate_bernoulli(
    model: Model,
    params: ModelParams,
    key: jax.Array,
    prime: jax.Array,
    length: int,
    *,
    temperature: float = 1.0,
) -> jax.Array:
    """Sample multi-label frames from a ``many_to_many`` ``"bce"`` model (a piano-roll model).

    The model reads ``prime`` (at least one frame), then feeds back each sampled
    frame: ``x_{t+1} = s_t`` with ``s_{t,k} ~ Bernoulli(sigmoid(z_{t,k} / temperature))``
    independently over the K units (the model's own factorisation);
    ``temperature=0`` thresholds ``z > 0``.

    Args:
      model: a ``many_to_many`` model with ``loss="bce"`` whose cell reads the
        frames it predicts (``input_size == output_size``).
      params: its parameters.
      key: PRNG key.
      prime: ``(P, K)`` 0/1 frames, ``P >= 1``.
      length: number of frames to generate (static).
      temperature: logit temperature (>= 0).

    Returns:
      ``(length, K)`` 0/1 frames in the parameters' dtype (the prime excluded).
    """
    cell = model.cell
    if model.pattern != "many_to_many" or model.loss_name != "bce":
        raise ValueError(f"model: expected a many_to_many bce model, got {model.pattern} {model.loss_name}")
    if not isinstance(cell, Cell):
        raise ValueError("model: generate_bernoulli steps the model's Cell one frame at a time; "
                         "its recurrence is a Layer")
    width = params.readout.w.shape[0]
    if cell.input_size != width:
        raise ValueError(f"model: the cell must read the frames it predicts (input_size {width}), "
                         f"got {cell.input_size}")
    dtype = params.readout.w.dtype
    prime = jnp.asarray(prime, dtype)
    if prime.ndim != 2 or prime.shape[0] < 1 or prime.shape[1] != width:
        raise ValueError(f"prime: expected frames of shape (P >= 1, {width}), got {tuple(prime.shape)}")
    if not temperature >= 0:
        raise ValueError(f"temperature: expected >= 0, got {temperature!r}")
    def draw(k, logits):
        if temperature == 0:
            return (logits > 0).astype(dtype)
        return jax.random.bernoulli(k, jax.nn.sigmoid(logits / temperature)).astype(dtype)

    return _feed_back(cell, params, prime[:-1], prime[-1], lambda frame: frame, draw, key, length)
