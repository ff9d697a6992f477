"""Hand-written backpropagation through time for the Elman network — no autodiff.

This module exists as an independent truth: the textbook adjoint recursion,
written out step by step, against which ``jax.grad`` of ``rnnjax.unroll`` is
tested. Use ``jax.grad`` in real code.

Forward: ``a_t = W_in x_t + W_rec h_{t-1} + b``, ``h_t = phi(a_t)``, ``y_t = h_t``.
Backward, given ``g_t = dL/dy_t`` (explicit dependence) for t = T-1, ..., 0:
``dh_t = g_t + W_rec^T da_{t+1}``, ``da_t = phi'(a_t) * dh_t``,
``dW_in += da_t x_t^T``, ``dW_rec += da_t h_{t-1}^T``, ``db += da_t``;
finally ``dL/dh_{-1} = W_rec^T da_0``.

References:
  Werbos, "Backpropagation through time: what it does and how to do it", 1990.
  Pascanu, Mikolov & Bengio, ICML 2013, eq. (3)-(5).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._cells import ACTIVATIONS, ElmanParams


class ElmanGrads(NamedTuple):
    """Gradients of the loss: ``params`` (an ``ElmanParams``) and ``h0`` (initial state)."""

    params: ElmanParams
    h0: jax.Array


def elman_forward(params: ElmanParams, xs: jax.Array, h0: jax.Array, activation: str = "tanh"):
    """Forward pass keeping what BPTT needs.

    Args:
      params: Elman parameters (``w_in (H, I)``, ``w_rec (H, H)``, ``b (H,)``).
      xs: ``(T, I)`` inputs.
      h0: ``(H,)`` initial state.
      activation: ``"tanh"``, ``"relu"`` or ``"linear"``.

    Returns:
      ``(pre, hs)``: pre-activations ``a_t`` and states ``h_t``, each ``(T, H)``.
    """
    phi = ACTIVATIONS[activation][0]
    b = params.b if params.b_rec is None else params.b + params.b_rec
    pre, hs, h = [], [], h0
    for t in range(xs.shape[0]):
        a = params.w_in @ xs[t] + params.w_rec @ h + b
        h = phi(a)
        pre.append(a)
        hs.append(h)
    return jnp.stack(pre), jnp.stack(hs)


def elman_bptt(
    params: ElmanParams, xs: jax.Array, h0: jax.Array, dys: jax.Array, activation: str = "tanh"
) -> ElmanGrads:
    """Gradients of a loss ``L(y_0, ..., y_{T-1})`` by the adjoint recursion.

    Args:
      params: Elman parameters.
      xs: ``(T, I)`` inputs.
      h0: ``(H,)`` initial state.
      dys: ``(T, H)`` with ``dys[t] = dL/dy_t`` (the loss's direct dependence on each output).
      activation: ``"tanh"``, ``"relu"`` or ``"linear"``.

    Returns:
      ``ElmanGrads(params=dL/dparams, h0=dL/dh0)``.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if dys.shape != (xs.shape[0], params.w_rec.shape[0]):
        raise ValueError(f"dys: expected shape {(xs.shape[0], params.w_rec.shape[0])}, got {tuple(dys.shape)}")
    dphi = ACTIVATIONS[activation][1]
    pre, hs = elman_forward(params, xs, h0, activation)
    h_prev = jnp.concatenate([h0[None], hs[:-1]], axis=0)
    d_w_in = jnp.zeros_like(params.w_in)
    d_w_rec = jnp.zeros_like(params.w_rec)
    d_b = jnp.zeros_like(params.b)
    d_next = jnp.zeros_like(h0)  # W_rec^T da_{t+1}
    for t in reversed(range(xs.shape[0])):
        dh = dys[t] + d_next
        da = dphi(pre[t]) * dh
        d_w_in = d_w_in + jnp.outer(da, xs[t])
        d_w_rec = d_w_rec + jnp.outer(da, h_prev[t])
        d_b = d_b + da
        d_next = params.w_rec.T @ da
    d_b_rec = None if params.b_rec is None else d_b
    return ElmanGrads(ElmanParams(d_w_in, d_w_rec, d_b, d_b_rec), d_next)
