"""``unroll_batch(..., method="cudnn")`` on CPU, against rnnjax's scan as the independent truth.

cuDNN itself needs a CUDA GPU (``benchmarks/gpu.sh`` checks it there). Here:
the weight packing against JAX's own ``unpack_lstm_weights``; packing + JAX's
pure-JAX ``lstm_ref`` against the scan (values and every gradient); the
wrapper's length, zero-length, reverse and carry logic with the cuDNN call
replaced by ``lstm_ref`` (same wrapper code); every fallback reason.
"""

import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.experimental import rnn as jrnn

import rnnjax
from rnnjax._cudnn import reference_lstm

B, T, I, H = 4, 5, 3, 4
RAGGED = (0, T, 2, 1)  # a zero length, a full one, two in between
TOL = {jnp.float32: dict(rtol=2e-5, atol=2e-6), jnp.float64: dict(rtol=1e-11, atol=1e-12)}


def _setup(dtype=jnp.float32, recurrent_bias=True, seed=0, cell=None):
    cell = cell or rnnjax.lstm(I, H, recurrent_bias=recurrent_bias, dtype=dtype)
    k_p, k_b, k_x, k_h, k_c = jax.random.split(jax.random.key(seed), 5)
    params = cell.init(k_p)
    # Nonzero biases (b_rec included) so that no term is trivially absent.
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(k_b, p.shape, p.dtype) if p.ndim == 1 else p, params)
    xs = jax.random.normal(k_x, (B, T, I), dtype)
    carry = rnnjax.LSTMState(0.5 * jax.random.normal(k_h, (B, cell.output_size), dtype),
                             0.5 * jax.random.normal(k_c, (B, H), dtype))
    return cell, params, xs, carry


def _cotangents(dtype, seed=7):
    k_y, k_h, k_c = jax.random.split(jax.random.key(seed), 3)
    return (jax.random.normal(k_y, (B, T, H), dtype), jax.random.normal(k_h, (B, H), dtype),
            jax.random.normal(k_c, (B, H), dtype))


def _loss(run, dtype):
    """A scalar that reads every output (ys, h_n, c_n) with random weights, so every gradient is exercised."""
    r_y, r_h, r_c = _cotangents(dtype)

    def loss(params, xs, carry, lengths):
        final, ys = run(params, xs, carry, lengths)
        return jnp.sum(ys * r_y) + jnp.sum(final.h * r_h) + jnp.sum(final.c * r_c), (final, ys)

    return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))


# ----------------------------------------------------------------------------------------- the weight layout
@pytest.mark.parametrize("recurrent_bias", [False, True])
def test_weights_are_cudnn_layout(recurrent_bias):
    _, params, _, _ = _setup(jnp.float64, recurrent_bias)
    w = rnnjax.cudnn_lstm_weights(params)
    assert w.shape == (jrnn.get_num_params_in_lstm(I, H, 1, False),)
    w_ih, w_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(w, I, H, 1, False)
    np.testing.assert_array_equal(w_ih[0], params.w_in)
    np.testing.assert_array_equal(w_hh[0], params.w_rec)
    np.testing.assert_array_equal(b_ih[0], params.b)
    np.testing.assert_array_equal(b_hh[0], params.b_rec if recurrent_bias else np.zeros(4 * H))
    # The pullback of a cotangent vector is that vector unpacked into the fields (b_rec None: nothing).
    r = jax.random.normal(jax.random.key(3), w.shape, w.dtype)
    (grad,) = jax.vjp(rnnjax.cudnn_lstm_weights, params)[1](r)
    r_ih, r_hh, r_b, r_bh = jrnn.unpack_lstm_weights(r, I, H, 1, False)
    np.testing.assert_array_equal(grad.w_in, r_ih[0])
    np.testing.assert_array_equal(grad.w_rec, r_hh[0])
    np.testing.assert_array_equal(grad.b, r_b[0])
    if recurrent_bias:
        np.testing.assert_array_equal(grad.b_rec, r_bh[0])
    else:
        assert grad.b_rec is None


def test_weights_refuse_what_cudnn_lacks():
    proj = rnnjax.lstm(I, H, proj_size=2, dtype=jnp.float32).init(jax.random.key(0))
    with pytest.raises(ValueError, match="projection"):
        rnnjax.cudnn_lstm_weights(proj)
    with pytest.raises(TypeError, match="LSTMParams"):
        rnnjax.cudnn_lstm_weights(rnnjax.gru(I, H).init(jax.random.key(0)))
    bad = rnnjax.lstm(I, H).init(jax.random.key(0))._replace(b=jnp.zeros(3))
    with pytest.raises(ValueError, match=r"params\.b:"):
        rnnjax.cudnn_lstm_weights(bad)


# ------------------------------------------------------------------- packing + lstm_ref against the scan
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("recurrent_bias", [False, True])
def test_packed_reference_equals_scan(dtype, recurrent_bias):
    """Full-length batch: cudnn_lstm_weights -> unpack_lstm_weights -> lstm_ref, no rnnjax wrapper in between."""
    cell, params, xs, carry = _setup(dtype, recurrent_bias)
    full = jnp.full((B,), T, jnp.int32)

    def via_ref(params, xs, carry, lengths):
        w_ih, w_hh, b_ih, b_hh = jrnn.unpack_lstm_weights(rnnjax.cudnn_lstm_weights(params), I, H, 1, False)
        ys, h, c = jrnn.lstm_ref(xs, carry.h[None], carry.c[None], w_ih, w_hh, b_ih, b_hh, lengths, I, H, 1, 0.0,
                                 False)
        return rnnjax.LSTMState(h[0], c[0]), ys

    def via_scan(params, xs, carry, lengths):
        return rnnjax.unroll_batch(cell, params, xs, carry, backward="autodiff")

    got, want = _loss(via_ref, dtype)(params, xs, carry, full), _loss(via_scan, dtype)(params, xs, carry, full)
    chex.assert_trees_all_close(got, want, **TOL[dtype])
    assert jax.tree.structure(got[1][0]) == jax.tree.structure(params)  # a gradient for every LSTMParams leaf


def test_reference_picks_the_last_step_at_length_zero():
    """Why the wrapper never passes a zero length to the kernel: lstm_ref reads step length - 1 = -1."""
    _, params, xs, carry = _setup()
    w = rnnjax.cudnn_lstm_weights(params)
    zero, full = jnp.zeros((B,), jnp.int32), jnp.full((B,), T, jnp.int32)
    _, h0, _ = reference_lstm(xs, carry.h[None], carry.c[None], w, zero, I, H, 1, 0.0, False)
    _, h_full, _ = reference_lstm(xs, carry.h[None], carry.c[None], w, full, I, H, 1, 0.0, False)
    np.testing.assert_array_equal(h0, h_full)
    assert not np.allclose(h0[0], carry.h)


# --------------------------------------------------------------------- the wrapper, kernel = lstm_ref
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("lengths", ["none", "ragged"])
def test_wrapper_equals_scan(dtype, reverse, lengths):
    """Values and gradients (params, xs, carry) under jit, lengths traced, a zero length included."""
    cell, params, xs, carry = _setup(dtype)
    n = None if lengths == "none" else jnp.asarray(RAGGED, jnp.int32)

    def via_cudnn(params, xs, carry, n):
        with warnings.catch_warnings():
            warnings.simplefilter("error", rnnjax.CudnnFallbackWarning)
            return rnnjax.unroll_batch(cell, params, xs, carry, lengths=n, reverse=reverse, method="cudnn",
                                       lstm_fn=reference_lstm)

    def via_scan(params, xs, carry, n):
        return rnnjax.unroll_batch(cell, params, xs, carry, lengths=n, reverse=reverse, backward="autodiff")

    got, want = _loss(via_cudnn, dtype)(params, xs, carry, n), _loss(via_scan, dtype)(params, xs, carry, n)
    chex.assert_trees_all_close(got, want, **TOL[dtype])
    (_, (final, ys)), (_, g_xs, g_carry) = got
    if n is not None:  # the semantics themselves, not only agreement: zeros past each length, length 0 = carry
        for b, k in enumerate(RAGGED):
            np.testing.assert_array_equal(ys[b, k:], 0)
            np.testing.assert_array_equal(g_xs[b, k:], 0)
        np.testing.assert_array_equal(final.h[0], carry.h[0])
        np.testing.assert_array_equal(g_carry.h[0], _cotangents(dtype)[1][0])


def test_wrapper_concrete_lengths_default_carry_and_one_bias():
    """Eager (concrete lengths), carry None, cell with one bias (b_rec None -> zeros), made by make_cell."""
    cell = rnnjax.make_cell("lstm", I, H, dtype=jnp.float32)
    _, params, xs, _ = _setup(cell=cell)
    assert params.b_rec is None
    for reverse in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("error", rnnjax.CudnnFallbackWarning)
            got = rnnjax.unroll_batch(cell, params, xs, lengths=np.array(RAGGED), reverse=reverse, method="cudnn",
                                      lstm_fn=reference_lstm)
        want = rnnjax.unroll_batch(cell, params, xs, lengths=np.array(RAGGED), reverse=reverse)
        chex.assert_trees_all_close(got, want, **TOL[jnp.float32])


def test_wrapper_promotes_like_the_scan():
    """float32 params with bfloat16 inputs compute in float32, as the scan does."""
    cell, params, xs, carry = _setup()
    xs16 = xs.astype(jnp.bfloat16)
    got = rnnjax.unroll_batch(cell, params, xs16, carry, method="cudnn", lstm_fn=reference_lstm)
    want = rnnjax.unroll_batch(cell, params, xs16, carry)
    assert got[1].dtype == want[1].dtype == jnp.float32
    chex.assert_trees_all_close(got, want, **TOL[jnp.float32])


# ---------------------------------------------------------------------------------------- fallbacks
def _user_lstm():
    """A user's cell called "lstm" with the same maths: it must not pass for the built-in one."""
    base = rnnjax.lstm(I, H, dtype=jnp.float32)

    def step(p, carry, x):
        i, f, g, o = jnp.split(p.w_in @ x + p.w_rec @ carry.h + p.b, 4)
        c = jax.nn.sigmoid(f) * carry.c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return rnnjax.LSTMState(h, c), h

    return rnnjax.Cell(base.init, base.initial_carry, step, I, H, "lstm")


def _wrapped_lstm():
    base = rnnjax.lstm(I, H, dtype=jnp.float32)
    return base._replace(step=lambda p, c, x: base.step(p, c, x))


def _parametrized_lstm():
    base = rnnjax.lstm(I, H, dtype=jnp.float32)
    return base._replace(parametrization=rnnjax.Parametrization(lambda p: p, base.step))


NOT_BUILT_IN = "is not one built by rnnjax.lstm"
FALLBACKS = {
    # name: (cell factory, unroll_batch options, xs shape, the reason's words)
    "plain-lstm-on-cpu": (lambda: rnnjax.lstm(I, H, dtype=jnp.float32), {}, (B, T, I), "not a CUDA GPU"),
    "user-cell-named-lstm": (_user_lstm, {}, (B, T, I), NOT_BUILT_IN),
    "wrapped-step": (_wrapped_lstm, {}, (B, T, I), NOT_BUILT_IN),
    "gru": (lambda: rnnjax.gru(I, H, dtype=jnp.float32), {}, (B, T, I), "cell 'gru' " + NOT_BUILT_IN),
    "parametrization": (_parametrized_lstm, {}, (B, T, I), "changed after rnnjax.lstm built it"),
    "proj_size": (lambda: rnnjax.lstm(I, H, proj_size=2, dtype=jnp.float32), {}, (B, T, I), "proj_size=2"),
    "gate_fn": (lambda: rnnjax.lstm(I, H, gate_fn=jax.nn.hard_sigmoid, dtype=jnp.float32), {}, (B, T, I),
                "gate_fn/activation_fn"),
    "activation_fn": (lambda: rnnjax.lstm(I, H, activation_fn=jax.nn.soft_sign, dtype=jnp.float32), {}, (B, T, I),
                      "gate_fn/activation_fn"),
    "float64": (lambda: rnnjax.lstm(I, H, dtype=jnp.float64), {}, (B, T, I), "dtype is float64"),
    "remat": (lambda: rnnjax.lstm(I, H, dtype=jnp.float32), {"remat": True}, (B, T, I), "remat=True"),
    "remat-segments": (lambda: rnnjax.lstm(I, H, dtype=jnp.float32), {"remat": 2}, (B, T, I), "remat=2"),
    "backward": (lambda: rnnjax.lstm(I, H, dtype=jnp.float32), {"backward": "autodiff"}, (B, T, I),
                 "backward='autodiff'"),
    "no-steps": (lambda: rnnjax.lstm(I, H, dtype=jnp.float32), {}, (B, 0, I), "no sequences or no steps"),
}


@pytest.mark.parametrize("name", list(FALLBACKS))
def test_fallback_warns_its_reason_and_equals_the_scan(name):
    factory, options, shape, reason = FALLBACKS[name]
    cell = factory()
    params = cell.init(jax.random.key(0))
    dtype = jax.tree.leaves(params)[0].dtype
    xs = jax.random.normal(jax.random.key(1), shape, dtype)
    lengths = np.minimum(np.array(RAGGED), shape[1])
    with pytest.warns(rnnjax.CudnnFallbackWarning) as record:
        got = rnnjax.unroll_batch(cell, params, xs, lengths=lengths, reverse=True, method="cudnn", **options)
    (message,) = [str(w.message) for w in record if w.category is rnnjax.CudnnFallbackWarning]
    assert reason in message and "JAX's default backend is 'cpu'" in message, message
    want = rnnjax.unroll_batch(cell, params, xs, lengths=lengths, reverse=True, **options)
    jax.tree.map(np.testing.assert_array_equal, got, want)


@pytest.mark.parametrize("name", ["user-cell-named-lstm", "proj_size", "remat", "backward"])
def test_fallback_reasons_do_not_depend_on_the_backend(name):
    """With a stand-in kernel (no backend or dtype limit) the cell and option reasons still apply, alone."""
    factory, options, shape, reason = FALLBACKS[name]
    cell = factory()
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), shape, jnp.float32)
    with pytest.warns(rnnjax.CudnnFallbackWarning, match=reason) as record:
        got = rnnjax.unroll_batch(cell, params, xs, method="cudnn", lstm_fn=reference_lstm, **options)
    assert all("backend" not in str(w.message) for w in record)
    jax.tree.map(np.testing.assert_array_equal, got, rnnjax.unroll_batch(cell, params, xs, **options))


def test_unroll_option_is_accepted_and_ignored():
    """``unroll=k`` (a scan hint, same values) does not cause a fallback."""
    cell, params, xs, carry = _setup()
    with warnings.catch_warnings():
        warnings.simplefilter("error", rnnjax.CudnnFallbackWarning)
        got = rnnjax.unroll_batch(cell, params, xs, carry, unroll=4, method="cudnn", lstm_fn=reference_lstm)
    chex.assert_trees_all_close(got, rnnjax.unroll_batch(cell, params, xs, carry), **TOL[jnp.float32])


# -------------------------------------------------------------------------------------------- refusals
def test_single_sequence_unroll_refuses_cudnn():
    cell, params, xs, _ = _setup()
    with pytest.raises(ValueError, match=r"method: 'cudnn'.*rnnjax\.unroll_batch"):
        rnnjax.unroll(cell, params, xs[0], method="cudnn")


@pytest.mark.parametrize("bad,error,words", [
    ({"reverse": 1}, TypeError, "reverse: expected a bool"),
    ({"unroll": 0}, ValueError, "unroll: expected a positive integer"),
    ({"remat": -1}, ValueError, "remat: expected"),
    ({"backward": "sideways"}, ValueError, "backward: expected one of"),
    ({"quasi": True}, TypeError, "method_options: method 'cudnn' takes none"),
    ({"lstm_fn": 3}, TypeError, "lstm_fn: expected a function"),
    ({"lengths": np.array([1, 2])}, ValueError, r"lengths: expected integers of shape \(4,\)"),
    ({"lengths": np.array([1, 2, 3, T + 1])}, ValueError, r"lengths: expected values in \[0, 5\]"),
    ({"carry": rnnjax.LSTMState(jnp.zeros((B, H + 1)), jnp.zeros((B, H)))}, ValueError, "carry: expected"),
    ({"carry": rnnjax.LSTMState(jnp.zeros((B + 1, H)), jnp.zeros((B + 1, H)))}, ValueError,
     "carry: expected a batched"),
    ({"params": "other-size"}, ValueError, "params: these parameters do not belong"),
    ({"xs": "ints"}, TypeError, "xs: expected a floating-point array"),
    ({"xs": "wrong-width"}, ValueError, r"xs: expected shape \(batch, time, 3\)"),
])
def test_bad_input_names_the_argument(bad, error, words):
    cell, params, xs, _ = _setup()
    bad = dict(bad)
    if bad.get("params") == "other-size":
        bad["params"] = rnnjax.lstm(I, H + 1, dtype=jnp.float32).init(jax.random.key(0))
    if bad.get("xs") == "ints":
        bad["xs"] = jnp.ones((B, T, I), jnp.int32)
    if bad.get("xs") == "wrong-width":
        bad["xs"] = jnp.ones((B, T, I + 1), jnp.float32)
    args = {"params": params, "xs": xs, "carry": None, **bad}
    with pytest.raises(error, match=words):
        rnnjax.unroll_batch(cell, args.pop("params"), args.pop("xs"), args.pop("carry"), method="cudnn",
                            **{"lstm_fn": reference_lstm, **args})


def test_fallback_warning_is_public():
    assert issubclass(rnnjax.CudnnFallbackWarning, UserWarning)
    assert "CudnnFallbackWarning" in rnnjax.__all__ and "cudnn_lstm_weights" in rnnjax.__all__


def test_padded_inputs_get_zero_gradient_whatever_the_kernel_does():
    """The wrapper masks inputs past each length, so a kernel whose dx is not zero there cannot leak it."""

    def leaky(x, h_0, c_0, weights, seq_lengths, **kw):
        ys, h, c = reference_lstm(x, h_0, c_0, weights, seq_lengths, **kw)
        pad = jnp.arange(x.shape[1])[None, :, None] >= seq_lengths[:, None, None]
        leak = jnp.sum(jnp.where(pad, x - jax.lax.stop_gradient(x), 0.0))  # zero value, gradient 1 at padding
        return ys + leak, h, c

    cell, params, xs, carry = _setup()
    n = jnp.asarray(RAGGED, jnp.int32)
    g_leaky = jax.grad(lambda x: jnp.sum(rnnjax.unroll_batch(cell, params, x, carry, lengths=n, method="cudnn",
                                                             lstm_fn=leaky)[1]))(xs)
    g_scan = jax.grad(lambda x: jnp.sum(rnnjax.unroll_batch(cell, params, x, carry, lengths=n)[1]))(xs)
    chex.assert_trees_all_close(g_leaky, g_scan, **TOL[jnp.float32])
