"""Parallel-in-time evaluation of linear recurrences with ``jax.lax.associative_scan``.

A diagonal (elementwise) linear recurrence ``h_t = a_t * h_{t-1} + b_t`` is a
composition of affine maps, and composing affine maps is associative:

    (a_i, b_i) o (a_j, b_j) = (a_j * a_i, a_j * b_i + b_j)     (apply i, then j)

so all T states come out of a parallel prefix scan in O(log T) depth
(Blelloch 1990; used by S5 and the LRU). ``affine_scan`` is the bare kernel;
``associative_unroll`` is ``rnnjax.unroll(..., method="associative")``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

from rnnjax import _validate as v


def _combine(left, right):
    """Elementwise affine composition: ``left`` applied first, then ``right``."""
    a_l, b_l = left
    a_r, b_r = right
    a = jax.tree.map(lambda x, y: y * x, a_l, a_r)
    b = jax.tree.map(lambda x, y, z: x * y + z, a_r, b_l, b_r)
    return a, b


def affine_scan(a: Any, b: Any, h0: Any, *, reverse: bool = False) -> Any:
    """All states of ``h_t = a_t * h_{t-1} + b_t`` by a parallel prefix scan.

    Args:
      a, b: pytrees of the carry's structure, each leaf ``(T,) + leaf_shape``
        (real or complex), combined elementwise.
      h0: initial state (carry structure, leaves ``leaf_shape``).
      reverse: run from ``t = T-1`` down to 0 (``h_t = a_t * h_{t+1} + b_t``
        with ``h_T = h0``).

    Returns:
      ``hs``: the states after each step, leaves ``(T,) + leaf_shape``
      (``hs[t]`` is the state after consuming index ``t``).
    """
    first = -1 if reverse else 0
    # Fold the initial state into the first step: b_first <- a_first * h0 + b_first.
    b = jax.tree.map(lambda a_, b_, h: b_.at[first].add(a_[first] * h), a, b, h0)
    _, hs = jax.lax.associative_scan(_combine, (a, b), reverse=reverse)
    return hs


def _check_coefficients(cell, a, b, carry, time):
    carry_def = jax.tree.structure(carry)
    for name, tree in (("a", a), ("b", b)):
        if jax.tree.structure(tree) != carry_def:
            raise ValueError(
                f"linear_recurrence of cell {cell.name!r}: {name} must have the carry's structure "
                f"{carry_def}, got {jax.tree.structure(tree)}"
            )
        for leaf, c in zip(jax.tree.leaves(tree), jax.tree.leaves(carry)):
            expected = (time,) + tuple(jnp.shape(c))
            if tuple(jnp.shape(leaf)) != expected:
                raise ValueError(
                    f"linear_recurrence of cell {cell.name!r}: {name} leaves must have shape (time,) + "
                    f"carry leaf shape = {expected}, got {tuple(jnp.shape(leaf))}"
                )


def associative_unroll(cell, params, xs, carry, *, length=None, reverse=False, **options) -> tuple[Any, Any]:
    """``rnnjax.unroll(..., method="associative")``: the unroll of a linear-recurrence cell in O(log T) depth.

    Same semantics as the sequential scan: ``length`` valid steps (a Python
    int or a traced integer scalar), the carry frozen and outputs zero after
    them, the final carry taken after step ``length - 1``; ``reverse`` runs
    over the valid prefix backwards and writes each output at its own index.

    Args:
      cell: a ``Cell`` with ``linear_recurrence`` (``rnnjax.lru``,
        ``rnnjax.mingru``, ``rnnjax.minlstm``).
      params: the cell's parameters.
      xs: ``(time, input_size)``, already validated and promoted by ``unroll``.
      carry: the initial carry.
      length: None, a Python int in ``[0, time]`` or a traced integer scalar.
      reverse: process the valid prefix from its end.
      **options: none are accepted.

    Returns:
      ``(final_carry, ys)`` with ``ys: (time, output_size)``.

    Raises:
      ValueError: if ``cell`` has no ``linear_recurrence`` (a nonlinear cell;
        use ``method="scan"`` or ``method="deer"``).
    """
    if options:
        raise TypeError(f"method_options: method 'associative' takes none, got {sorted(options)}")
    if cell.linear_recurrence is None:
        raise ValueError(
            f"method='associative': cell {cell.name!r} has no linear_recurrence (its carry update is not "
            "linear in the carry, e.g. a tanh Elman, LSTM or GRU cell); use method='scan', or method='deer' "
            "for Newton iterations that are parallel over time"
        )
    time = xs.shape[0]
    if time == 0:  # nothing to scan: the scan's empty outputs and the initial carry
        return jax.lax.scan(functools.partial(cell.step, params), carry, xs)
    a, b, readout = cell.linear_recurrence(params, xs)
    _check_coefficients(cell, a, b, carry, time)
    # Keep the carry's dtype (e.g. complex) where the coefficients are narrower.
    a = jax.tree.map(lambda x, c: x.astype(jnp.result_type(x, c)), a, carry)
    b = jax.tree.map(lambda x, c: x.astype(jnp.result_type(x, c)), b, carry)
    carry = jax.tree.map(lambda c, x: c.astype(x.dtype), carry, b)

    if length is None or (isinstance(length, int) and length == time):
        valid = None
    else:
        valid = jnp.arange(time) < jnp.clip(length, 0, time)

    def mask_steps(tree, fill):
        # Invalid steps become the identity map (a = 1, b = 0): the carry is frozen.
        def leaf(x):
            v = valid.reshape((time,) + (1,) * (x.ndim - 1))
            return jnp.where(v, x, jnp.full_like(x, fill))

        return jax.tree.map(leaf, tree)

    if valid is not None:
        # With reverse=True the invalid steps t >= length come first in scan
        # order, as identities, so the prefix runs length-1, ..., 0 from carry.
        a, b = mask_steps(a, 1), mask_steps(b, 0)
    hs = affine_scan(a, b, carry, reverse=reverse)
    final = jax.tree.map(lambda h: h[0] if reverse else h[-1], hs)
    ys = readout(params, hs, xs)
    v.check_output(cell, ys, time)
    if valid is not None:
        ys = mask_steps(ys, 0)
    return final, ys
