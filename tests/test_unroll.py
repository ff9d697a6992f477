"""rnnjax.unroll against independent truth: a Python loop of ``step``, finite differences."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnjax

I, H, T = 3, 5, 9

CELLS = {
    "elman-tanh": lambda dt: rnnjax.elman(I, H, activation="tanh", dtype=dt),
    "elman-relu": lambda dt: rnnjax.elman(I, H, activation="relu", dtype=dt),
    "elman-linear": lambda dt: rnnjax.elman(I, H, activation="linear", rec_init=rnnjax.initializers.orthogonal(0.9), dtype=dt),
    "irnn": lambda dt: rnnjax.irnn(I, H, input_scale=0.5, dtype=dt),
    "lstm": lambda dt: rnnjax.lstm(I, H, dtype=dt),
    "gru": lambda dt: rnnjax.gru(I, H, bias_init=rnnjax.initializers.normal(0.3), dtype=dt),
}
# The unroll machinery (options, masking, reverse, gradients) does not depend on the Elman activation:
# each carry structure once (plain vector with tanh, ReLU via the IRNN, LSTM's pair, GRU's split gates);
# every activation's step is checked against the Python loop in test_unroll_equals_python_loop.
MACHINERY = ["elman-tanh", "irnn", "lstm", "gru"]


def _setup(name, dtype=jnp.float64, seed=0):
    cell = CELLS[name](dtype)
    k_p, k_x, k_b = jax.random.split(jax.random.key(seed), 3)
    params = cell.init(k_p)
    # Nonzero biases everywhere so that no term is trivially absent.
    params = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(k_b, p.shape, p.dtype) if p.ndim == 1 else p, params)
    xs = jax.random.normal(k_x, (T, I), dtype)
    return cell, params, xs


def _loop(cell, params, xs, carry=None):
    carry = cell.initial_carry() if carry is None else carry
    ys = []
    for t in range(xs.shape[0]):
        carry, y = cell.step(params, carry, xs[t])
        ys.append(y)
    return carry, jnp.stack(ys)


def _loop_masked(cell, params, xs, length, reverse):
    """Independent reference for ``length``/``reverse``: loop over the valid prefix only."""
    carry = cell.initial_carry()
    ys = [None] * xs.shape[0]
    order = range(length - 1, -1, -1) if reverse else range(length)
    for t in order:
        carry, ys[t] = cell.step(params, carry, xs[t])
    zero = jnp.zeros((cell.output_size,), xs.dtype)
    return carry, jnp.stack([zero if y is None else y for y in ys])


@pytest.mark.parametrize("name", sorted(CELLS))
def test_unroll_equals_python_loop(name):
    cell, params, xs = _setup(name)
    want_c, want_y = _loop(cell, params, xs)
    got_c, got_y = jax.jit(functools.partial(rnnjax.unroll, cell))(params, xs)
    chex.assert_trees_all_close(got_y, want_y, atol=1e-12, rtol=1e-12)
    chex.assert_trees_all_close(got_c, want_c, atol=1e-12, rtol=1e-12)
    chex.assert_shape(got_y, (T, H))


@pytest.mark.parametrize("name", MACHINERY)
def test_unroll_options_same_values_and_grads(name):
    cell, params, xs = _setup(name)

    def loss(p, x, **kw):
        c, ys = rnnjax.unroll(cell, p, x, **kw)
        return jnp.sum(ys**2) + sum(jnp.sum(leaf) for leaf in jax.tree.leaves(c))

    ref_l, ref_g = jax.jit(jax.value_and_grad(loss))(params, xs)
    variants = ({"unroll": 4}, {"remat": True}, {"unroll": 3, "remat": True}, {"remat": 3}, {"remat": 2, "unroll": 2})
    # all variants in one program: one XLA compilation instead of five (~12 % less compile time)
    every = jax.jit(lambda p, x: [jax.value_and_grad(functools.partial(loss, **kw))(p, x) for kw in variants])
    for l, g in every(params, xs):
        chex.assert_trees_all_close(l, ref_l, atol=1e-12, rtol=1e-12)
        chex.assert_trees_all_close(g, ref_g, atol=1e-12, rtol=1e-12)


@functools.cache
def _segment_remat_programs(reverse):
    """The LSTM's params and jitted ``value_and_grad`` programs, shared by every segment length of one direction.

    The plain-autodiff reference (``remat=False``) compiles once per length here, not once per test case.
    """
    cell, params, xs = _setup("lstm")

    def loss(p, n, remat):
        c, ys = rnnjax.unroll(cell, p, xs, length=n, reverse=reverse, remat=remat, backward="autodiff")
        return jnp.sum(ys**2 * jnp.arange(1, T + 1)[:, None]) + jnp.sum(c.c)

    traced = jax.jit(jax.value_and_grad(loss), static_argnums=2)  # one program per remat, not per eager scan
    static = {n: jax.jit(jax.value_and_grad(lambda p, r, n=n: loss(p, n, r)), static_argnums=1) for n in (T, T - 3)}
    return params, traced, static


@pytest.mark.parametrize("segment, reverse", [(1, False), (3, True), (4, False), (T, True), (100, False)])
def test_segment_remat_with_lengths(segment, reverse):
    """remat=k (checkpointed segments, incl. a shorter last one) = plain autodiff, static and traced lengths."""
    params, traced, static = _segment_remat_programs(reverse)
    for n in (T, T - 3, jnp.asarray(T - 2)):
        vg = traced if isinstance(n, jax.Array) else static[n]
        args = (params, n) if isinstance(n, jax.Array) else (params,)
        want = vg(*args, False)
        chex.assert_trees_all_close(vg(*args, segment), want, atol=1e-12, rtol=1e-12)


def test_segment_remat_stores_fewer_carries():
    """The point of remat=k: XLA's buffers for T=400 shrink well below per-step remat's (carry stack O(T))."""
    cell = rnnjax.lstm(I, 32)
    params = cell.init(jax.random.key(0))
    xs = jnp.zeros((400, I), jnp.float32)

    def peak(remat):
        fn = jax.grad(lambda p: jnp.sum(rnnjax.unroll(cell, p, xs, remat=remat)[1]))
        stats = jax.jit(fn).lower(params).compile().memory_analysis()
        return stats.temp_size_in_bytes

    # per-step remat keeps the (h, c) carry of every step; h doubles as the output stack ys, which both keep
    cell_stack = 400 * 32 * 4
    assert peak(True) - peak(20) > 0.8 * cell_stack


@pytest.mark.parametrize("bad", [0, -2, 1.5, "sqrt"])
def test_remat_argument_is_checked(bad):
    cell, params, xs = _setup("elman-tanh")
    with pytest.raises(ValueError, match="remat: expected True/False .* or a positive int k"):
        rnnjax.unroll(cell, params, xs, remat=bad)


@pytest.mark.parametrize("name", MACHINERY)
@pytest.mark.parametrize("reverse", [False, True])
def test_length_semantics_static_and_traced(name, reverse):
    cell, params, xs = _setup(name)
    run = jax.jit(lambda p, x, n: rnnjax.unroll(cell, p, x, length=n, reverse=reverse))  # one program, traced n
    for length in (0, 1, 4, T):
        want_c, want_y = _loop_masked(cell, params, xs, length, reverse)
        got_c, got_y = rnnjax.unroll(cell, params, xs, length=length, reverse=reverse)
        chex.assert_trees_all_close(got_y, want_y, atol=1e-12)
        chex.assert_trees_all_close(got_c, want_c, atol=1e-12)
        got_c, got_y = run(params, xs, jnp.asarray(length))
        chex.assert_trees_all_close(got_y, want_y, atol=1e-12)
        chex.assert_trees_all_close(got_c, want_c, atol=1e-12)


@pytest.mark.parametrize("name", ["elman-tanh", "lstm", "gru"])
def test_vmap_with_a_length_per_sequence(name):
    cell, params, _ = _setup(name)
    xs = jax.random.normal(jax.random.key(7), (4, T, I))
    lengths = jnp.array([0, 3, T, 6])
    for reverse in (False, True):
        c, ys = jax.jit(
            jax.vmap(lambda x, n: rnnjax.unroll(cell, params, x, length=n, reverse=reverse))
        )(xs, lengths)
        c2, ys2 = rnnjax.unroll_batch(cell, params, xs, lengths=lengths, reverse=reverse)
        chex.assert_trees_all_close(ys, ys2, atol=1e-12)
        for b in range(4):
            want_c, want_y = _loop_masked(cell, params, xs[b], int(lengths[b]), reverse)
            chex.assert_trees_all_close(ys[b], want_y, atol=1e-12)
            chex.assert_trees_all_close(jax.tree.map(lambda a: a[b], c), want_c, atol=1e-12)


def test_padding_does_not_leak_into_gradients():
    """Garbage (even NaN) in padded steps changes neither outputs nor gradients."""
    cell, params, xs = _setup("lstm")
    padded = xs.at[5:].set(jnp.nan)

    def loss(p, x, n):
        _, ys = rnnjax.unroll(cell, p, x, length=n)
        return jnp.sum(ys**2)

    g_clean = jax.grad(loss)(params, xs[:5], 5)
    g_pad = jax.jit(jax.grad(loss))(params, padded, jnp.asarray(5))
    chex.assert_tree_all_finite(g_pad)
    chex.assert_trees_all_close(g_pad, g_clean, atol=1e-12)


@pytest.mark.parametrize("name", MACHINERY)
def test_gradients_match_finite_differences(name):
    cell, params, xs = _setup(name)
    h0 = jax.tree.map(lambda c: c + 0.1, cell.initial_carry())

    def f(p, x, c):
        carry, ys = rnnjax.unroll(cell, p, x, c)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(carry))

    check_grads(jax.jit(f), (params, xs, h0), order=2, modes=("rev",), atol=1e-5, rtol=1e-5, eps=1e-5)


def test_gradients_with_traced_length_match_finite_differences():
    cell, params, xs = _setup("gru")
    f = lambda p, x: jnp.sum(rnnjax.unroll(cell, p, x, length=jnp.asarray(6), reverse=True)[1] ** 3)
    check_grads(jax.jit(f), (params, xs), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)


def test_float32_and_float64_end_to_end():
    cell32 = rnnjax.lstm(I, H, dtype=jnp.float32)
    p32 = cell32.init(jax.random.key(0))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(p32))
    _, ys = rnnjax.unroll(cell32, p32, jnp.ones((T, I), jnp.float32))
    assert ys.dtype == jnp.float32
    cell64 = rnnjax.lstm(I, H, dtype=jnp.float64)
    p64 = cell64.init(jax.random.key(0))
    g = jax.grad(lambda p: jnp.sum(rnnjax.unroll(cell64, p, jnp.ones((T, I)))[1]))(p64)
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(g))
    # float64 inputs with float32 params compute in float64 rather than failing.
    _, ys = rnnjax.unroll(cell32, p32, jnp.ones((T, I), jnp.float64))
    assert ys.dtype == jnp.float64


def test_no_retracing_for_equal_shapes():
    cell, params, xs = _setup("lstm")

    @jax.jit
    @chex.assert_max_traces(n=1)
    def run(p, x):
        return rnnjax.unroll(cell, p, x)[1]

    for seed in range(4):
        run(params, xs + seed)
    @jax.jit
    @chex.assert_max_traces(n=1)
    def grad_fn(p, x):
        return jax.grad(lambda q: jnp.sum(rnnjax.unroll(cell, q, x)[1]))(p)

    for seed in range(3):
        grad_fn(params, xs * seed)


def test_custom_user_cell():
    """A cell written by a user from scratch goes through the same machinery."""

    def init(key):
        return {"a": jax.random.normal(key, (2,))}

    def step(p, c, x):
        c = p["a"] * c + x
        return c, 2.0 * c

    cell = rnnjax.Cell(init, lambda: jnp.zeros(2), step, input_size=2, output_size=2, name="leaky")
    params = {"a": jnp.array([0.5, -0.3])}
    xs = jnp.arange(10.0).reshape(5, 2)
    _, ys = rnnjax.unroll(cell, params, xs)
    want = []
    c = np.zeros(2)
    for x in np.asarray(xs):
        c = np.array([0.5, -0.3]) * c + x
        want.append(2 * c)
    np.testing.assert_allclose(ys, np.stack(want), rtol=1e-12)


def _wide_step_cell(declared, width):
    """A cell declaring ``output_size=declared`` whose step returns ``y`` of ``width``."""
    init = lambda key: {"w": jax.random.normal(key, (width, 2))}
    step = lambda p, c, x: (c + x, p["w"] @ (c + x))
    return rnnjax.Cell(init, lambda: jnp.zeros(2), step, input_size=2, output_size=declared, name="wide")


def test_step_output_width_is_checked_against_output_size():
    cell = _wide_step_cell(8, 16)
    params, xs = cell.init(jax.random.key(0)), jnp.ones((5, 2))
    msg = r"cell 'wide': its step returned y of shape \(16,\), but the cell declares output_size=8"
    for kwargs in ({}, {"length": 3}, {"length": jnp.asarray(3)}, {"backward": "autodiff"}, {"remat": 2},
                   {"method": "deer"}):
        with pytest.raises(ValueError, match=msg):
            rnnjax.unroll(cell, params, xs, **kwargs)
    with pytest.raises(ValueError, match=msg):  # at trace time, under jit and grad too
        jax.jit(jax.grad(lambda p: jnp.sum(rnnjax.unroll(cell, p, xs)[1])))(params)
    with pytest.raises(ValueError, match=msg):
        rnnjax.unroll(cell, params, jnp.ones((0, 2)))  # an empty sequence still traces the step
    _, ys = rnnjax.unroll(_wide_step_cell(16, 16), params, xs)
    chex.assert_shape(ys, (5, 16))


def test_non_floating_params_are_refused_naming_the_leaf():
    cell = rnnjax.lstm(I, H, dtype=jnp.float32)
    params = cell.init(jax.random.key(0))
    xs = jnp.ones((T, I))
    with pytest.raises(TypeError, match=r"params\.w_rec: expected floating-point parameters, got int32"):
        rnnjax.unroll(cell, params._replace(w_rec=params.w_rec.astype(jnp.int32)), xs)
    user = rnnjax.Cell(lambda k: {"a": jnp.ones(2)}, lambda: jnp.zeros(2), lambda p, c, x: (p["a"] * c + x, c), 2, 2)
    with pytest.raises(TypeError, match=r"params\['a'\]: expected floating-point parameters, got int"):
        rnnjax.unroll(user, {"a": np.array([1, 2])}, jnp.ones((3, 2)))


def test_reverse_must_be_a_bool():
    cell, params, xs = _setup("gru")
    for bad in ("yes", 1, None):
        with pytest.raises(TypeError, match=f"reverse: expected a bool, got {bad!r}"):
            rnnjax.unroll(cell, params, xs, reverse=bad)
    _, ys = rnnjax.unroll(cell, params, xs, reverse=np.bool_(True), unroll=np.int64(2))  # NumPy scalars are fine
    chex.assert_trees_all_close(ys, rnnjax.unroll(cell, params, xs, reverse=True)[1], rtol=1e-12)


@pytest.mark.parametrize("with_lengths", [False, True])
def test_unroll_batch_of_an_empty_batch(with_lengths):
    cell = rnnjax.lstm(I, H, dtype=jnp.float64)
    params = cell.init(jax.random.key(0))
    lengths = {"lengths": np.zeros((0,), np.int32)} if with_lengths else {}
    final, ys = rnnjax.unroll_batch(cell, params, jnp.zeros((0, T, I)), **lengths)
    chex.assert_shape(ys, (0, T, H))
    chex.assert_shape([final.h, final.c], [(0, H), (0, H)])
