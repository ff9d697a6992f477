"""Default dtype: cells follow JAX's default float dtype (float64 under ``jax_enable_x64``), explicit dtypes win."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnjax
from rnnjax import initializers as inits

I, H, T = 2, 3, 4


def _dtypes(tree):
    return {jnp.dtype(leaf.dtype) for leaf in jax.tree.leaves(tree)}


def test_default_dtype_follows_jax_and_is_read_when_the_factory_is_called():
    key = jax.random.key(0)
    with jax.enable_x64(True):
        assert _dtypes(rnnjax.lstm(3, 5).init(key)) == {jnp.dtype(jnp.float64)}
        assert inits.orthogonal()(key, (3, 3)).dtype == jnp.float64  # as jax.nn.initializers
        assert rnnjax.lru(3, 5).initial_carry().dtype == jnp.complex128
        assert _dtypes(rnnjax.lstm(3, 5, dtype=jnp.float32).init(key)) == {jnp.dtype(jnp.float32)}  # explicit wins
        cell64 = rnnjax.gru(3, 5)
    with jax.enable_x64(False):
        cell32 = rnnjax.gru(3, 5)
        assert _dtypes(cell32.init(key)) == {jnp.dtype(jnp.float32)}
        assert inits.constant(1)(key, (2,)).dtype == jnp.float32  # a float, not the int of the value
    with jax.enable_x64(True):
        # The dtype is fixed when the cell is built, not when it is initialised.
        assert _dtypes(cell32.init(key)) == {jnp.dtype(jnp.float32)}
        assert _dtypes(cell64.init(key)) == {jnp.dtype(jnp.float64)}


@pytest.mark.parametrize("name", sorted(rnnjax.CELLS))
def test_every_registered_cell_is_float64_and_passes_check_grads(name):
    with jax.enable_x64(True):
        cell = rnnjax.make_cell(name, I, H)  # no dtype argument
        params = cell.init(jax.random.key(1))
        assert _dtypes(params) == {jnp.dtype(jnp.float64)}
        # Vectors (biases) moved by 0.5 keep finite differences off ReLU's kink at 0 (IRNN starts with zero
        # biases and 0.001 input weights, so its pre-activations would sit within eps of it).
        params = jax.tree.map(lambda p: p + 0.5 if p.ndim == 1 else p, params)
        xs = jnp.asarray(np.random.default_rng(0).normal(size=(T, I)))

        def loss(p):
            _, ys = rnnjax.unroll(cell, p, xs)
            return jnp.sum(jnp.sin(ys))

        assert loss(params).dtype == jnp.float64
        check_grads(jax.jit(loss), (params,), order=1, modes=["rev"], rtol=1e-6)  # jitted: eager runs op by op
