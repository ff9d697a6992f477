"""rnnjax.dynamics against closed forms, numpy.linalg and finite differences (float64 where it matters)."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax
from rnnjax import dynamics as dyn
from rnnjax import gradflow as gf
from rnnjax import initializers as inits


@pytest.fixture(autouse=True)
def x64():
    with jax.enable_x64(True):
        yield


def _xstar():
    x = 1.0
    for _ in range(200):  # x = tanh(2x): a contraction near the positive root
        x = np.tanh(2 * x)
    return x


@functools.cache  # one cell object: its compiled programs are reused across tests
def _tanh_2i():
    cell = rnnjax.elman(1, 3, dtype=jnp.float64)
    p = cell.init(jax.random.key(0))
    return cell, p._replace(w_in=jnp.zeros_like(p.w_in), w_rec=2.0 * jnp.eye(3, dtype=jnp.float64),
                            b=jnp.zeros(3, jnp.float64))


def test_tanh_2i_has_27_fixed_points_8_stable():
    cell, p = _tanh_2i()
    init = jax.random.uniform(jax.random.key(1), (512, 3), jnp.float64, -1.5, 1.5)
    fp = dyn.fixed_points(cell, p, initial_carries=init)
    xs = _xstar()
    assert abs(xs - 0.9575) < 1e-4 and abs(xs - np.tanh(2 * xs)) < 1e-15
    expected = {tuple(c) for c in itertools.product((-xs, 0.0, xs), repeat=3)}
    assert len(fp.q) == 27 and fp.points.shape == (27, 3)
    assert np.all(fp.q < 1e-12) and np.all(fp.fixed)
    found = set()
    for pt, stable, eig in zip(fp.points, fp.stable, fp.eigenvalues):
        match = min(expected, key=lambda e: np.max(np.abs(np.asarray(e) - pt)))
        np.testing.assert_allclose(pt, match, atol=1e-10)
        found.add(match)
        no_zero = all(abs(c) > 0.5 for c in match)
        assert bool(stable) == no_zero
        # J = diag(2 (1 - tanh(2 c)^2)) at a fixed point: 2 (1 - x*^2) on nonzero, 2 on zero coordinates
        want = sorted([2.0 if abs(c) < 0.5 else 2.0 * (1 - xs**2) for c in match], reverse=True)
        np.testing.assert_allclose(np.sort(eig.real)[::-1], want, atol=1e-10)
        np.testing.assert_allclose(eig.imag, 0.0, atol=1e-12)
    assert found == expected
    assert int(fp.stable.sum()) == 8
    np.testing.assert_allclose(np.abs(fp.eigenvalues[fp.stable]), 2 * (1 - xs**2), atol=1e-10)
    assert abs(2 * (1 - xs**2) - 0.1664) < 1e-3
    s = fp.summary()
    assert s["count"] == 27 and s["stable_count"] == 8 and len(s["points"]) == 27
    # the carries pytree holds the same points
    np.testing.assert_array_equal(np.asarray(fp.carries), fp.points)


def test_linear_cell_matches_numpy_linalg():
    cell = rnnjax.elman(2, 5, activation="linear", rec_init=inits.random_gain(0.8),
                        bias_init=inits.normal(1.0), dtype=jnp.float64)
    p = cell.init(jax.random.key(3))
    x = jnp.array([0.3, -0.7], jnp.float64)
    init = jax.random.normal(jax.random.key(4), (16, 5), jnp.float64)
    fp = dyn.fixed_points(cell, p, x, initial_carries=init)
    w = np.asarray(p.w_rec)
    c_star = np.linalg.solve(np.eye(5) - w, np.asarray(p.w_in) @ np.asarray(x) + np.asarray(p.b))
    assert fp.points.shape == (1, 5)
    np.testing.assert_allclose(fp.points[0], c_star, rtol=1e-12, atol=1e-12)
    eig = np.linalg.eigvals(w)
    eig = eig[np.argsort(-np.abs(eig), kind="stable")]
    np.testing.assert_allclose(np.sort_complex(fp.eigenvalues[0]), np.sort_complex(eig), atol=1e-12)
    np.testing.assert_allclose(np.abs(fp.eigenvalues[0]), np.abs(eig), atol=1e-12)
    assert bool(fp.stable[0]) == bool(np.max(np.abs(eig)) < 1)
    assert fp.q[0] < 1e-20


def test_lstm_pytree_carry_and_speed():
    cell = rnnjax.lstm(2, 3, dtype=jnp.float64)
    p = cell.init(jax.random.key(5))
    init = jax.tree.map(lambda a: 0.3 * jax.random.normal(jax.random.key(6), (8,) + a.shape, jnp.float64),
                        cell.initial_carry())
    fp = dyn.fixed_points(cell, p, initial_carries=init)
    assert len(fp.q) >= 1 and fp.points.shape[1] == 6 and fp.eigenvalues.shape == (len(fp.q), 6)
    assert isinstance(fp.carries, rnnjax.LSTMState) and fp.carries.h.shape == (len(fp.q), 3)
    step_jac = jax.jit(jax.jacrev(lambda v: jnp.concatenate(
        cell.step(p, rnnjax.LSTMState(v[:3], v[3:]), jnp.zeros(2, jnp.float64))[0])))
    for i in range(len(fp.q)):
        carry = jax.tree.map(lambda a: a[i], fp.carries)
        new, _ = cell.step(p, carry, jnp.zeros(2, jnp.float64))  # a fixed point of the real step
        np.testing.assert_allclose(np.concatenate([new.h, new.c]), fp.points[i], atol=1e-9)
        assert float(dyn.speed(cell, p, carry)) == pytest.approx(fp.q[i], abs=1e-18)
        # eigenvalues vs numpy on the reverse-mode Jacobian of the cell's own step
        jac = np.asarray(step_jac(jnp.asarray(fp.points[i])))
        np.testing.assert_allclose(np.sort_complex(np.linalg.eigvals(jac)), np.sort_complex(fp.eigenvalues[i]),
                                   atol=1e-10)


def test_slow_points_and_initial_carries_from_states():
    cell, p = _tanh_2i()
    xs = jax.random.normal(jax.random.key(7), (4, 10, 1), jnp.float64)
    init = dyn.initial_carries_from_states(cell, p, xs, 64, key=jax.random.key(8), noise=0.0)
    assert init.shape == (64, 3)
    visited = np.asarray(rnnjax.unroll_batch(cell, p, xs)[1]).reshape(-1, 3)  # y = h' for Elman
    for c in np.asarray(init):
        assert np.min(np.max(np.abs(visited - c), axis=1)) < 1e-15
    noisy = dyn.initial_carries_from_states(cell, p, xs, 64, key=jax.random.key(8), noise=0.5)
    assert 0.2 < float(jnp.std(noisy - init)) < 0.8
    # a nearly-converged optimisation: slow points kept with fixed=False, fixed ones with fixed=True
    start = jax.random.uniform(jax.random.key(9), (64, 3), jnp.float64, -1.5, 1.5)
    fp = dyn.fixed_points(cell, p, initial_carries=start, steps=5, newton_steps=0, tol=1e-14, slow_tol=1.0,
                          merge_tol=1e-9)
    assert np.all(fp.q < 1.0) and np.any(~fp.fixed)
    np.testing.assert_array_equal(fp.fixed, fp.q < 1e-14)
    assert np.all(np.diff(fp.q) >= 0)


def test_flossing_loss_matches_lyapunov_spectrum_and_finite_differences():
    cell = rnnjax.elman(2, 4, dtype=jnp.float64)
    p = cell.init(jax.random.key(10))
    xs = jax.random.normal(jax.random.key(11), (12, 2), jnp.float64)
    lam = gf.lyapunov_spectrum(cell, p, xs, k=2, transient=3)
    loss = jax.jit(lambda q: dyn.flossing_loss(cell, q, xs, 2, transient=3))
    assert float(loss(p)) == pytest.approx(float(jnp.sum(lam**2)), rel=1e-12)
    g = jax.jit(jax.grad(lambda q: dyn.flossing_loss(cell, q, xs, 2, transient=3)))(p)
    eps = 1e-6
    for seed in range(3):  # central differences along random directions
        keys = jax.random.split(jax.random.key(12 + seed), len(jax.tree.leaves(p)))
        d = jax.tree.unflatten(jax.tree.structure(p), [jax.random.normal(k, a.shape, a.dtype)
                                                        for k, a in zip(keys, jax.tree.leaves(p))])
        plus = jax.tree.map(lambda a, b: a + eps * b, p, d)
        minus = jax.tree.map(lambda a, b: a - eps * b, p, d)
        fd = (float(loss(plus)) - float(loss(minus))) / (2 * eps)
        directional = float(sum(jnp.sum(a * b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(d))))
        assert directional == pytest.approx(fd, rel=1e-7, abs=1e-12)
        assert abs(directional) > 1e-4


def test_flossing_brings_lambda1_of_a_chaotic_tanh_network_to_zero():
    H = 32
    cell = rnnjax.elman(1, H, rec_init=inits.random_gain(2.0), dtype=jnp.float64)
    p = cell.init(jax.random.key(1))
    h_train = 0.5 * jax.random.normal(jax.random.key(9), (H,), jnp.float64)
    h_test = 0.5 * jax.random.normal(jax.random.key(10), (H,), jnp.float64)
    xs, long = jnp.zeros((200, 1), jnp.float64), jnp.zeros((2000, 1), jnp.float64)
    before = float(gf.lyapunov_spectrum(cell, p, long, k=1, transient=200, carry=h_test)[0])
    assert before > 0.05  # chaotic
    opt = optax.adam(1e-2)

    @jax.jit
    def step(p, s):
        g = jax.grad(lambda q: dyn.flossing_loss(cell, q, xs, 1, transient=50, carry=h_train))(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s

    s = opt.init(p)
    for _ in range(200):
        p, s = step(p, s)
    after = float(gf.lyapunov_spectrum(cell, p, long, k=1, transient=200, carry=h_test)[0])
    assert abs(after) < 0.05, (before, after)


def test_bad_inputs_raise_named_errors():
    cell, p = _tanh_2i()
    init = jnp.zeros((4, 3), jnp.float64)
    with pytest.raises(ValueError, match="initial_carries"):
        dyn.fixed_points(cell, p, initial_carries=jnp.zeros((4, 2)))
    with pytest.raises(ValueError, match="initial_carries"):
        dyn.fixed_points(cell, p, initial_carries=jnp.zeros(3))
    with pytest.raises(ValueError, match="x: expected"):
        dyn.fixed_points(cell, p, jnp.zeros(2), initial_carries=init)
    with pytest.raises(ValueError, match="tol"):
        dyn.fixed_points(cell, p, initial_carries=init, tol=-1.0)
    with pytest.raises(ValueError, match="slow_tol"):
        dyn.fixed_points(cell, p, initial_carries=init, tol=1e-6, slow_tol=1e-7)
    with pytest.raises(ValueError, match="steps"):
        dyn.fixed_points(cell, p, initial_carries=init, steps=-1)
    with pytest.raises(TypeError, match="optimizer"):
        dyn.fixed_points(cell, p, initial_carries=init, optimizer="adam")
    with pytest.raises(ValueError, match="params"):
        dyn.fixed_points(cell, rnnjax.elman(1, 4).init(jax.random.key(0)), initial_carries=init)
    with pytest.raises(TypeError, match="cell"):
        dyn.fixed_points(rnnjax.bidirectional(cell), p, initial_carries=init)
    xs = jnp.zeros((10, 1), jnp.float64)
    with pytest.raises(ValueError, match="k: expected an integer in \\[1, 3\\]"):
        dyn.flossing_loss(cell, p, xs, 4)
    with pytest.raises(ValueError, match="transient"):
        dyn.flossing_loss(cell, p, xs, 1, transient=10)
    with pytest.raises(ValueError, match="xs"):
        dyn.flossing_loss(cell, p, jnp.zeros((10, 2)), 1)
    with pytest.raises(ValueError, match="xs: expected floats of shape \\(B, T, 1\\)"):
        dyn.initial_carries_from_states(cell, p, xs, 4, key=jax.random.key(0))
    with pytest.raises(ValueError, match="num"):
        dyn.initial_carries_from_states(cell, p, xs[None], 0, key=jax.random.key(0))
    with pytest.raises(ValueError, match="noise"):
        dyn.initial_carries_from_states(cell, p, xs[None], 4, key=jax.random.key(0), noise=-1.0)
