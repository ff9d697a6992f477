"""method="deer" (Newton over the sequence) against the sequential scan, its gradients and its failure reports."""

import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnjax
from rnnjax import initializers as inits

I = 2


def _setup(cell, time, seed=0):
    k_p, k_x, k_c = jax.random.split(jax.random.key(seed), 3)
    params = cell.init(k_p)
    xs = jax.random.normal(k_x, (time, I), jnp.float64)
    carry = jax.tree.map(lambda c: c + 0.1 * jax.random.normal(k_c, c.shape, jnp.float64).astype(c.dtype), cell.initial_carry())
    return params, xs, carry


def _loss(cell, method, **kw):
    def loss(params, xs, carry):
        final, ys = rnnjax.unroll(cell, params, xs, carry, method=method, **kw)
        return jnp.sum(jnp.sin(ys) * jnp.linspace(0, 1, ys.shape[0])[:, None]) + sum(
            jnp.sum(jnp.abs(c) ** 2) for c in jax.tree.leaves(final)
        )

    return loss


def _outputs_and_grads(cell, method, **kw):
    def f(params, xs, carry):
        out = rnnjax.unroll(cell, params, xs, carry, method=method, **kw)
        return out, jax.grad(_loss(cell, method, **kw), argnums=(0, 1, 2))(params, xs, carry)

    return jax.jit(f)


@pytest.mark.parametrize(
    "cell",
    [
        rnnjax.elman(I, 6, rec_init=inits.orthogonal(0.9), dtype=jnp.float64),
        rnnjax.gru(I, 6, bias_init=inits.normal(0.3), dtype=jnp.float64),
    ],
    ids=lambda c: c.name,
)
def test_deer_equals_scan_T300_with_gradients(cell):
    params, xs, carry = _setup(cell, 300)
    out_s, grads_s = _outputs_and_grads(cell, "scan")(params, xs, carry)
    out_d, grads_d = _outputs_and_grads(cell, "deer")(params, xs, carry)
    chex.assert_trees_all_equal_shapes_and_dtypes(out_d, out_s)
    chex.assert_trees_all_close(out_d, out_s, atol=1e-7, rtol=0)
    chex.assert_trees_all_close(grads_d, grads_s, atol=1e-7, rtol=0)
    _, _, info = rnnjax.unroll(cell, params, xs, carry, method="deer", return_info=True)
    assert bool(info.converged) and 1 <= int(info.iterations) <= 20
    assert float(info.residual) <= 1e-10


@pytest.mark.parametrize(
    "length, reverse, quasi",
    [(13, False, False), ("traced", True, True)],
)
def test_deer_lstm_pytree_carry_length_reverse_quasi(length, reverse, quasi):
    cell = rnnjax.lstm(I, 3, dtype=jnp.float64)
    params, xs, carry = _setup(cell, 40, seed=1)

    def f(method, **kw):
        def run(params, xs, carry, n):
            return rnnjax.unroll(
                cell, params, xs, carry, length=n if length == "traced" else length, reverse=reverse, method=method, **kw
            )

        return jax.jit(run)(params, xs, carry, jnp.int32(21))

    chex.assert_trees_all_close(f("deer", quasi=quasi, max_iter=40), f("scan"), atol=1e-8, rtol=0)


def test_deer_complex_carry_lru():
    cell = rnnjax.lru(I, 3, dtype=jnp.float64)
    params, xs, carry = _setup(cell, 30, seed=2)
    out_s, grads_s = _outputs_and_grads(cell, "scan")(params, xs, carry)
    out_d, grads_d = _outputs_and_grads(cell, "deer")(params, xs, carry)
    chex.assert_trees_all_close(out_d, out_s, atol=1e-10, rtol=0)
    chex.assert_trees_all_close(grads_d, grads_s, atol=1e-9, rtol=0)


def test_deer_gradients_match_finite_differences():
    cell = rnnjax.elman(I, 3, rec_init=inits.orthogonal(0.8), dtype=jnp.float64)
    params, xs, carry = _setup(cell, 12, seed=3)
    check_grads(jax.jit(_loss(cell, "deer")), (params, xs, carry), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_deer_gradient_is_implicit_not_through_iterations():
    # The backward pass is one linear solve: it contains no while loop (the iterations are not differentiated).
    cell = rnnjax.elman(I, 3, dtype=jnp.float64)
    params, xs, carry = _setup(cell, 8)
    loss, vjp = jax.vjp(lambda q: _loss(cell, "deer")(q, xs, carry), params)
    assert "while" in str(jax.make_jaxpr(lambda q: _loss(cell, "deer")(q, xs, carry))(params))
    assert "while" not in str(jax.make_jaxpr(vjp)(jnp.ones_like(loss)))


def test_deer_non_convergence_is_reported():
    cell = rnnjax.elman(I, 4, rec_init=inits.orthogonal(1.5), dtype=jnp.float64)
    params, xs, carry = _setup(cell, 60)
    with pytest.warns(RuntimeWarning, match="did not converge for cell 'elman-tanh'"):
        _, ys, info = rnnjax.unroll(cell, params, xs, carry, method="deer", max_iter=2, return_info=True)
        jax.block_until_ready(ys)
    assert int(info.iterations) == 2 and not bool(info.converged) and float(info.residual) > 1e-10
    _, ys = rnnjax.unroll(cell, params, xs, carry, method="deer", max_iter=2, on_failure="nan")
    assert bool(jnp.all(jnp.isnan(ys)))
    with pytest.raises(Exception, match="did not converge"):
        jax.block_until_ready(rnnjax.unroll(cell, params, xs, carry, method="deer", max_iter=2, on_failure="raise"))
    # Enough iterations: no warning, same values as the scan.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, ys = rnnjax.unroll(cell, params, xs, carry, method="deer", max_iter=60)
        jax.block_until_ready(ys)
    np.testing.assert_allclose(ys, rnnjax.unroll(cell, params, xs, carry)[1], atol=1e-8)


def test_deer_rejects_bad_options():
    cell = rnnjax.gru(I, 3)
    params = cell.init(jax.random.key(0))
    xs = jnp.zeros((5, I))
    with pytest.raises(TypeError, match="unknown.*'tolerance'"):
        rnnjax.unroll(cell, params, xs, method="deer", tolerance=1e-3)
    with pytest.raises(ValueError, match="max_iter"):
        rnnjax.unroll(cell, params, xs, method="deer", max_iter=0)
    with pytest.raises(ValueError, match="on_failure"):
        rnnjax.unroll(cell, params, xs, method="deer", on_failure="ignore")
    with pytest.raises(ValueError, match="tol"):
        rnnjax.unroll(cell, params, xs, method="deer", tol=-1.0)


def test_deer_batched_lengths_and_info():
    cell = rnnjax.gru(I, 3, dtype=jnp.float64)
    params, _, _ = _setup(cell, 1)
    xs = jax.random.normal(jax.random.key(4), (3, 50, I), jnp.float64)
    lengths = jnp.array([50, 10, 0])
    final, ys, info = rnnjax.unroll_batch(cell, params, xs, lengths=lengths, method="deer", return_info=True)
    chex.assert_trees_all_close((final, ys), rnnjax.unroll_batch(cell, params, xs, lengths=lengths), atol=1e-9, rtol=0)
    chex.assert_shape([info.iterations, info.residual, info.converged], (3,))
    assert bool(jnp.all(info.converged)) and int(info.iterations[2]) == 0
