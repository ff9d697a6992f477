"""method="associative" against the sequential scan (values and gradients), and its errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax
from rnnjax._parallel import affine_scan

I, H, T = 3, 4, 23
NAMES = ["lru", "mingru", "minlstm"]


def _setup(name, seed=0):
    cell = rnnjax.make_cell(name, I, H, dtype=jnp.float64)
    k_p, k_x, k_c = jax.random.split(jax.random.key(seed), 3)
    params = cell.init(k_p)
    xs = jax.random.normal(k_x, (T, I), jnp.float64)
    c = cell.initial_carry()
    carry = c + jax.random.normal(k_c, c.shape, jnp.float64).astype(c.dtype)
    return cell, params, xs, carry


def _loss(cell, method, length, reverse):
    def loss(params, xs, carry):
        final, ys = rnnjax.unroll(cell, params, xs, carry, length=length, reverse=reverse, method=method)
        return jnp.sum(jnp.sin(ys) * jnp.arange(1, T + 1)[:, None]) + jnp.sum(jnp.abs(final) ** 2)

    return loss


def test_affine_scan_matches_python_loop():
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    a = jax.random.uniform(k1, (T, 2, 3), jnp.float64, -1, 1)
    b = jax.random.normal(k2, (T, 2, 3), jnp.float64)
    h0 = jax.random.normal(k3, (2, 3), jnp.float64)
    for reverse in (False, True):
        h, expected = h0, [None] * T
        for t in reversed(range(T)) if reverse else range(T):
            h = a[t] * h + b[t]
            expected[t] = h
        hs = jax.jit(affine_scan, static_argnames="reverse")(a, b, h0, reverse=reverse)
        np.testing.assert_allclose(hs, jnp.stack(expected), rtol=1e-12)


CASES = [(None, False), (None, True), (15, False), ("traced", True)]


def _run(cell, method, length, reverse):
    """One jitted function: unroll outputs and the gradients of a loss (w.r.t. params, xs, carry)."""
    traced = length == "traced"

    def f(params, xs, carry, n):
        n = n if traced else length
        out = rnnjax.unroll(cell, params, xs, carry, length=n, reverse=reverse, method=method)
        grads = jax.grad(_loss(cell, method, n, reverse), argnums=(0, 1, 2))(params, xs, carry)
        return out, grads

    return jax.jit(f)


@pytest.mark.parametrize(
    "name, length, reverse",
    # Every case for minGRU; the complex LRU and minLSTM without and with a (traced) length.
    [("mingru", *c) for c in CASES] + [("mingru", 0, True)] + [(n, *c) for n in ("lru", "minlstm") for c in CASES[::3]],
)
def test_associative_equals_scan_with_gradients(name, length, reverse):
    cell, params, xs, carry = _setup(name)
    n = jnp.int32(11)
    (final_s, ys_s), grads_s = _run(cell, "scan", length, reverse)(params, xs, carry, n)
    (final_a, ys_a), grads_a = _run(cell, "associative", length, reverse)(params, xs, carry, n)
    chex.assert_trees_all_equal_shapes_and_dtypes((final_a, ys_a), (final_s, ys_s))
    chex.assert_trees_all_close((final_a, ys_a), (final_s, ys_s), atol=1e-9, rtol=0)
    chex.assert_trees_all_close(grads_a, grads_s, atol=1e-9, rtol=0)
    if length == 0:
        chex.assert_trees_all_close(final_a, carry, atol=0, rtol=0)
        np.testing.assert_array_equal(ys_a, 0.0)
    if length is not None:
        valid = 11 if length == "traced" else length
        np.testing.assert_array_equal(ys_a[valid:], 0.0)


def test_associative_unroll_batch_with_lengths():
    cell, params, _, _ = _setup("mingru")
    xs = jax.random.normal(jax.random.key(9), (3, T, I), jnp.float64)
    lengths = jnp.array([T, 5, 0])
    run = lambda method: jax.jit(
        lambda p, x, n: rnnjax.unroll_batch(cell, p, x, lengths=n, reverse=True, method=method)
    )(params, xs, lengths)
    out_s, out_a = run("scan"), run("associative")
    chex.assert_trees_all_close(out_a, out_s, atol=1e-9, rtol=0)


def test_associative_float32_close_to_scan():
    cell = rnnjax.lru(I, 8, dtype=jnp.float32)
    params = cell.init(jax.random.key(2))
    xs = jax.random.normal(jax.random.key(3), (256, I), jnp.float32)
    run = lambda method: jax.jit(lambda p, x: rnnjax.unroll(cell, p, x, method=method))(params, xs)
    (final_s, ys_s), (final_a, ys_a) = run("scan"), run("associative")
    assert ys_a.dtype == jnp.float32 and final_a.dtype == jnp.complex64
    chex.assert_trees_all_close((final_a, ys_a), (final_s, ys_s), atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("cell", [rnnjax.elman(I, H), rnnjax.gru(I, H), rnnjax.lstm(I, H)], ids=lambda c: c.name)
def test_associative_rejects_nonlinear_cell(cell):
    params = cell.init(jax.random.key(0))
    xs = jnp.zeros((T, I))
    with pytest.raises(ValueError, match=f"cell '{cell.name}' has no linear_recurrence.*method='deer'"):
        rnnjax.unroll(cell, params, xs, method="associative")


def test_associative_rejects_options_and_bad_coefficients():
    cell, params, xs, _ = _setup("mingru")
    with pytest.raises(TypeError, match="method 'associative' takes none"):
        rnnjax.unroll(cell, params, xs, method="associative", quasi=True)

    def bad(params, xs):
        a, b, readout = cell.linear_recurrence(params, xs)
        return a[:, :2], b, readout

    broken = cell._replace(linear_recurrence=bad, name="broken")
    with pytest.raises(ValueError, match="broken.*a leaves must have shape"):
        rnnjax.unroll(broken, params, xs, method="associative")


@pytest.mark.parametrize("method", ["associative", "deer"])
def test_empty_sequence_returns_initial_carry(method):
    cell, params, _, carry = _setup("lru")
    final, ys = rnnjax.unroll(cell, params, jnp.zeros((0, I)), carry, method=method)
    chex.assert_trees_all_equal(final, carry)
    chex.assert_shape(ys, (0, H))


@pytest.mark.parametrize("method", ["associative", "deer"])
@pytest.mark.parametrize("option", [dict(remat=True), dict(remat=3), dict(unroll=2), dict(backward="fast"),
                                    dict(backward="autodiff")], ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_parallel_methods_refuse_the_scan_options_they_would_ignore(method, option):
    cell, params, xs, carry = _setup("mingru")
    (name, value), = option.items()
    with pytest.raises(ValueError, match=rf"{name}: method='{method}' does not use it.*remove {name}={value!r}"):
        jax.eval_shape(lambda p: rnnjax.unroll(cell, p, xs, carry, method=method, **option), params)


def test_parallel_methods_accept_the_no_op_values_of_scan_options():
    cell, params, xs, carry = _setup("mingru")
    want = rnnjax.unroll(cell, params, xs[:5], carry)
    for method in ("associative", "deer"):
        got = rnnjax.unroll(cell, params, xs[:5], carry, method=method, remat=False, unroll=1)
        chex.assert_trees_all_close(got, want, atol=1e-9, rtol=0)


def test_associative_readout_width_is_checked_against_output_size():
    cell, params, xs, carry = _setup("lru")
    wrong = cell._replace(output_size=H + 1)
    with pytest.raises(ValueError, match=rf"linear_recurrence readout returned y of shape \({T}, {H}\).*output_size={H + 1}"):
        jax.eval_shape(lambda p: rnnjax.unroll(wrong, p, xs, carry, method="associative"), params)
