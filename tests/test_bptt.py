"""Autodiff BPTT equals the hand-written adjoint recursion (rnnjax.bptt)."""

import chex
import jax
import jax.numpy as jnp
import pytest

import rnnjax
from rnnjax.bptt import elman_bptt, elman_forward


@pytest.mark.parametrize("activation", ["tanh", "relu", "linear"])
@pytest.mark.parametrize("recurrent_bias", [False, True])
def test_hand_written_bptt_equals_jax_grad(activation, recurrent_bias):
    i, h, t = 4, 6, 25
    gain = 0.95 if activation == "linear" else 1.2
    cell = rnnjax.elman(
        i, h, activation=activation, rec_init=rnnjax.initializers.orthogonal(gain),
        bias_init=rnnjax.initializers.normal(0.2), recurrent_bias=recurrent_bias, dtype=jnp.float64,
    )
    k_p, k_x, k_h, k_w, k_r = jax.random.split(jax.random.key(1), 5)
    params = cell.init(k_p)
    if recurrent_bias:
        params = params._replace(b_rec=0.1 * jax.random.normal(k_r, (h,), jnp.float64))
    xs = jax.random.normal(k_x, (t, i), jnp.float64)
    h0 = 0.5 * jax.random.normal(k_h, (h,), jnp.float64)
    targets = jax.random.normal(k_w, (t, h), jnp.float64)

    def loss_of_outputs(ys):  # a loss touching every step
        return 0.5 * jnp.sum((ys - targets) ** 2 * jnp.linspace(0.1, 1.0, t)[:, None])

    def loss(p, c0):
        _, ys = rnnjax.unroll(cell, p, xs, c0)
        return loss_of_outputs(ys)

    g_params, g_h0 = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, h0)  # jitted: eager grad runs op by op
    _, hs = elman_forward(params, xs, h0, activation)
    dys = jax.grad(loss_of_outputs)(hs)
    manual = elman_bptt(params, xs, h0, dys, activation)
    chex.assert_trees_all_close(manual.params, g_params, atol=1e-10, rtol=1e-10)
    chex.assert_trees_all_close(manual.h0, g_h0, atol=1e-10, rtol=1e-10)
    # The hand-written forward is itself the unroll.
    chex.assert_trees_all_close(hs, rnnjax.unroll(cell, params, xs, h0)[1], atol=1e-12)


def test_bptt_rejects_bad_arguments():
    cell = rnnjax.elman(2, 3, dtype=jnp.float64)
    p = cell.init(jax.random.key(0))
    with pytest.raises(ValueError, match="dys"):
        elman_bptt(p, jnp.ones((4, 2)), jnp.zeros(3), jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="activation"):
        elman_bptt(p, jnp.ones((4, 2)), jnp.zeros(3), jnp.ones((4, 3)), activation="gelu")
