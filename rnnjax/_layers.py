"""Composition: stacked cells, sequence layers (bidirectional, deep with dropout), linear readout."""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import _validate as v
from rnnjax import initializers as inits
from rnnjax._carry import carry_size, flatten_carry
from rnnjax._cells import Cell, Parametrization, _check_dtype, _check_size, step_cell
from rnnjax._unroll import unroll


def stack(*cells: Cell) -> Cell:
    """A deep RNN as one ``Cell``: layer ``k`` reads the output of layer ``k - 1`` at the same step.

    Params and carry are tuples with one entry per layer; the output is the
    last layer's output. For dropout between layers or bidirectional layers
    use ``sequential`` of ``layer``/``bidirectional``. If any layer has a
    ``parametrization`` (expRNN, IndRNN, ...), the stack has one too: its
    ``prepare`` prepares every such layer's weights (the others pass through),
    so an unroll of the stack computes each layer's weights once.

    Args:
      *cells: one or more cells; ``cells[k].output_size`` must equal
        ``cells[k + 1].input_size``.

    Returns:
      A ``Cell`` with ``input_size = cells[0].input_size`` and
      ``output_size = cells[-1].output_size``.
    """
    if not cells:
        raise ValueError("cells: expected at least one Cell")
    for k, c in enumerate(cells):
        if not isinstance(c, Cell):
            raise TypeError(f"cells[{k}]: expected an rnnjax.Cell, got {type(c).__name__}")
    for k in range(len(cells) - 1):
        if cells[k].output_size != cells[k + 1].input_size:
            raise ValueError(
                f"cells[{k + 1}]: expected input_size {cells[k].output_size} (the output of cells[{k}]), "
                f"got {cells[k + 1].input_size}"
            )

    def init(key):
        keys = jax.random.split(key, len(cells))
        return tuple(c.init(k) for c, k in zip(cells, keys))

    def initial_carry():
        return tuple(c.initial_carry() for c in cells)

    def step(params, carry, x):
        new = []
        for c, p, h in zip(cells, params, carry):
            h, x = c.step(p, h, x)
            new.append(h)
        return tuple(new), x

    name = "stack(" + ",".join(c.name for c in cells) + ")"
    parametrization = None
    if any(c.parametrization is not None for c in cells):
        steppers = tuple(step_cell(c) for c in cells)

        def prepare(params):
            return tuple(p if c.parametrization is None else c.parametrization.prepare(p) for c, p in zip(cells, params))

        def weights_step(weights, carry, x):
            new = []
            for c, w, h in zip(steppers, weights, carry):
                h, x = c.step(w, h, x)
                new.append(h)
            return tuple(new), x

        parametrization = Parametrization(prepare, weights_step)
    return Cell(init, initial_carry, step, cells[0].input_size, cells[-1].output_size, name,
                parametrization=parametrization)


class Layer(NamedTuple):
    """A sequence layer: maps a whole sequence to a sequence.

    Attributes:
      init: ``init(key) -> params``.
      initial_carry: ``initial_carry() -> carry`` (unbatched).
      apply: ``apply(params, xs, carry=None, *, length=None, key=None,
        deltas=None) -> (final_carry, ys)`` with ``xs: (time, input_size)``,
        ``ys: (time, output_size)``; ``key`` enables dropout (None: no
        dropout); ``deltas``, a pytree like the carry with leaves
        ``(time,) + leaf.shape``, is added to the carry entering each step
        (zeros: a probe whose gradient is ``dL/dc_t``, see
        ``rnnjax.gradflow.hidden_grad_norms``).
      input_size, output_size: widths.
      backward_size: the last ``backward_size`` output units come from a pass
        backwards in time (their summary of the sequence sits at ``t = 0``,
        where ``many_to_one`` reads them).
      backward_carry: a pytree of bools shaped like ``initial_carry()``, True
        on the leaves of backward passes; None: all forward. A layer with a
        backward leaf is not causal (``ys[t]`` reads ``xs[t:]``).
    """

    init: Callable[[jax.Array], Any]
    initial_carry: Callable[[], Any]
    apply: Callable[..., tuple[Any, jax.Array]]
    input_size: int
    output_size: int
    backward_size: int = 0
    backward_carry: Any = None


def backward_leaves(rec: Cell | Layer) -> Any:
    """``rec.backward_carry`` with None filled in: a pytree of bools shaped like the carry (all False for a Cell)."""
    marks = rec.backward_carry if isinstance(rec, Layer) else None
    if marks is None:
        return jax.tree.map(lambda _: False, jax.eval_shape(rec.initial_carry))
    return marks


def is_causal(rec: Cell | Layer) -> bool:
    """True unless ``rec`` is a ``Layer`` with a backward pass (``reverse``, ``bidirectional``)."""
    return not any(jax.tree.leaves(backward_leaves(rec)))


@functools.lru_cache(maxsize=64)
def _probed(cell: Cell) -> Cell:
    """``cell`` reading ``[x, flat(delta)]``, adding ``delta`` to its carry before the step."""
    unflatten = flatten_carry(cell.initial_carry())[1]
    width = cell.input_size

    def probed(step_fn):
        def step(params, carry, xd):
            carry = jax.tree.map(jnp.add, carry, unflatten(xd[width:]))
            return step_fn(params, carry, xd[:width])

        return step

    par = cell.parametrization  # kept, so a probed unroll still prepares the weights once
    par = None if par is None else Parametrization(par.prepare, probed(par.step))
    return Cell(cell.init, cell.initial_carry, probed(cell.step), width + carry_size(cell), cell.output_size,
                cell.name, parametrization=par)


def probe(cell: Cell, xs: jax.Array, deltas: Any) -> tuple[Cell, jax.Array]:
    """A cell and inputs whose unroll adds ``deltas[..., t]`` to the carry entering step ``t``.

    Differentiating a loss with respect to zero ``deltas`` gives ``dL/dc_t``
    for every step in one backward pass (masking and ``reverse`` apply to the
    deltas as to the inputs).

    Args:
      cell: a ``Cell``.
      xs: ``(..., time, input_size)``.
      deltas: a pytree like ``cell.initial_carry()`` with leaves
        ``(..., time) + leaf.shape``.

    Returns:
      ``(probed_cell, xs_and_deltas)`` with ``xs_and_deltas: (..., time,
      input_size + carry_size(cell))``: unroll the first on the second.
    """
    lead = xs.shape[:-1]
    expected = jax.eval_shape(cell.initial_carry)
    if jax.tree.structure(deltas) != jax.tree.structure(expected) or any(
        d.shape != lead + e.shape for d, e in zip(jax.tree.leaves(deltas), jax.tree.leaves(expected))
    ):
        want = jax.tree.map(lambda e: lead + e.shape, expected)
        got = jax.tree.map(jnp.shape, deltas)
        raise ValueError(f"deltas: expected a carry-like pytree with leaf shapes {want}, got {got}")
    parts = []
    for d in jax.tree.leaves(deltas):
        d = d.reshape(lead + (-1,))
        parts += [jnp.real(d), jnp.imag(d)] if jnp.iscomplexobj(d) else [d]
    return _probed(cell), jnp.concatenate([xs, *parts], axis=-1)


def _unroll(cell, params, xs, carry, length, deltas, reverse, options):
    if deltas is not None:
        cell, xs = probe(cell, xs, deltas)
    return unroll(cell, params, xs, carry, length=length, reverse=reverse, **options)


def layer(cell: Cell, *, reverse: bool = False, **unroll_options) -> Layer:
    """A ``Layer`` that unrolls ``cell`` (backwards over the valid prefix if ``reverse``)."""
    v.check_cell(cell)

    def apply(params, xs, carry=None, *, length=None, key=None, deltas=None):
        del key
        return _unroll(cell, params, xs, carry, length, deltas, reverse, unroll_options)

    marks = jax.tree.map(lambda _: bool(reverse), jax.eval_shape(cell.initial_carry))
    back = cell.output_size if reverse else 0
    return Layer(cell.init, cell.initial_carry, apply, cell.input_size, cell.output_size, back, marks)


class BidirectionalParams(NamedTuple):
    forward: Any
    backward: Any


def bidirectional(forward: Cell, backward: Cell | None = None, **unroll_options) -> Layer:
    """Forward and backward passes over one sequence, outputs concatenated.

    The backward pass runs over the valid prefix ``xs[length-1], ..., xs[0]``
    and writes each output at its own time index, so ``ys[t] =
    concat(forward_y[t], backward_y[t])`` for ``t < length`` and zero after.

    Args:
      forward: cell of the forward direction.
      backward: cell of the backward direction (default: the same
        architecture as ``forward``, with its own parameters).
      **unroll_options: ``unroll``, ``remat`` ... passed to ``rnnjax.unroll``.

    Returns:
      A ``Layer`` with params ``BidirectionalParams(forward, backward)``, carry
      ``(forward_carry, backward_carry)`` and ``output_size`` the sum of both.
    """
    backward = forward if backward is None else backward
    v.check_cell(forward)
    v.check_cell(backward)
    if forward.input_size != backward.input_size:
        raise ValueError(
            f"backward: expected input_size {forward.input_size} (as forward), got {backward.input_size}"
        )

    def init(key):
        k_f, k_b = jax.random.split(key)
        return BidirectionalParams(forward.init(k_f), backward.init(k_b))

    def initial_carry():
        return (forward.initial_carry(), backward.initial_carry())

    def apply(params, xs, carry=None, *, length=None, key=None, deltas=None):
        del key
        c_f, c_b = (None, None) if carry is None else carry
        d_f, d_b = (None, None) if deltas is None else deltas
        c_f, y_f = _unroll(forward, params.forward, xs, c_f, length, d_f, False, unroll_options)
        c_b, y_b = _unroll(backward, params.backward, xs, c_b, length, d_b, True, unroll_options)
        return (c_f, c_b), jnp.concatenate([y_f, y_b], axis=-1)

    marks = (backward_leaves(forward), jax.tree.map(lambda _: True, jax.eval_shape(backward.initial_carry)))
    width = forward.output_size + backward.output_size
    return Layer(init, initial_carry, apply, forward.input_size, width, backward.output_size, marks)


def _as_layer(item, k) -> Layer:
    if isinstance(item, Layer):
        return item
    if isinstance(item, Cell):
        return layer(item)
    raise TypeError(f"layers[{k}]: expected an rnnjax.Cell or rnnjax.Layer, got {type(item).__name__}")


def sequential(*layers: Cell | Layer, dropout: float = 0.0) -> Layer:
    """Layers applied one after another over whole sequences, with dropout between them.

    Dropout (rate ``dropout``, inverted scaling, an independent mask per step
    and unit, as PyTorch's ``nn.LSTM(dropout=...)``) acts on the outputs of
    every layer but the last, and only when ``apply`` gets a ``key``.

    Args:
      *layers: ``Cell``s (unrolled forwards) or ``Layer``s such as ``bidirectional(...)``.
      dropout: drop probability in ``[0, 1)``.

    Returns:
      A ``Layer``; params and carry are tuples with one entry per layer.
    """
    if not layers:
        raise ValueError("layers: expected at least one Cell or Layer")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout}")
    ls = tuple(_as_layer(item, k) for k, item in enumerate(layers))
    for k in range(len(ls) - 1):
        if ls[k].output_size != ls[k + 1].input_size:
            raise ValueError(
                f"layers[{k + 1}]: expected input_size {ls[k].output_size} (the output of layers[{k}]), "
                f"got {ls[k + 1].input_size}"
            )

    def init(key):
        keys = jax.random.split(key, len(ls))
        return tuple(lay.init(k) for lay, k in zip(ls, keys))

    def initial_carry():
        return tuple(lay.initial_carry() for lay in ls)

    def apply(params, xs, carry=None, *, length=None, key=None, deltas=None):
        carry = (None,) * len(ls) if carry is None else carry
        deltas = (None,) * len(ls) if deltas is None else deltas
        keys = [(None, None)] * len(ls) if key is None else jax.random.split(key, (len(ls), 2))
        finals = []
        for k, (lay, p, c, d) in enumerate(zip(ls, params, carry, deltas)):
            c, xs = lay.apply(p, xs, c, length=length, key=keys[k][0], deltas=d)
            finals.append(c)
            if dropout > 0.0 and key is not None and k < len(ls) - 1:
                keep = jax.random.bernoulli(keys[k][1], 1.0 - dropout, xs.shape)
                xs = jnp.where(keep, xs / (1.0 - dropout), jnp.zeros_like(xs))
        return tuple(finals), xs

    marks = tuple(backward_leaves(lay) for lay in ls)
    return Layer(init, initial_carry, apply, ls[0].input_size, ls[-1].output_size, ls[-1].backward_size, marks)


class LinearParams(NamedTuple):
    """Affine map parameters: ``w (out, in)``, ``b (out,)``."""

    w: jax.Array
    b: jax.Array


class Linear(NamedTuple):
    """A linear readout ``y = w @ x + b`` as an (init, apply) pair; ``apply`` accepts ``x: (..., in)``."""

    init: Callable[[jax.Array], LinearParams]
    apply: Callable[[LinearParams, jax.Array], jax.Array]
    input_size: int
    output_size: int


def linear(
    input_size: int,
    output_size: int,
    *,
    w_init: inits.Initializer | None = None,
    b_init: inits.Initializer | None = None,
    dtype=jnp.float32,
) -> Linear:
    """A linear readout ``y = W x + b`` (default init: LeCun normal ``W``, zero ``b``)."""
    input_size = _check_size("input_size", input_size)
    output_size = _check_size("output_size", output_size)
    dtype = _check_dtype(dtype)
    w_init = inits.lecun_normal() if w_init is None else w_init
    b_init = inits.zeros() if b_init is None else b_init

    def init(key):
        k_w, k_b = jax.random.split(key)
        return LinearParams(w_init(k_w, (output_size, input_size), dtype), b_init(k_b, (output_size,), dtype))

    def apply(params, x):
        if x.shape[-1] != input_size:
            raise ValueError(f"x: expected last axis {input_size}, got shape {tuple(x.shape)}")
        return x @ params.w.T + params.b

    return Linear(init, apply, input_size, output_size)
