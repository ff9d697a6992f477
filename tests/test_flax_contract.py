"""Flax's recurrent-cell contract, kept by rnnjax's Flax front ends.

The behaviours asserted by Flax 0.12.8's own recurrent tests
(``tests/linen/linen_recurrent_test.py``, ``tests/nnx/nn/recurrent_test.py``),
written anew: an rnnjax cell inside ``rnnjax.interop.linen.RNNCell`` /
``rnnjax.interop.nnx.RNNCell`` where Flax uses its own cell, checked against a
Python loop over ``cell.step`` and, where the numbers can be compared, against
Flax's own cell. The comment above each test names its origins in Flax's files.
Not ported: ``ConvLSTMCell`` (rnnjax has no convolutional cell),
``flip_sequences`` and ``CudnnLSTM`` (Flax internals), and the NNX tests of a
hand-written Flax cell and of recurrent dropout in an ``OptimizedLSTMCell``
subclass (they test Flax's cells, not a front end).
"""

import functools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rnnjax
from rnnjax.interop import carry_from_flax, carry_to_flax, from_flax, to_flax
from rnnjax.interop.linen import RNNCell as LinenCell
from rnnjax.interop.nnx import RNNCell as NNXCell

B, T, I, H = 2, 3, 3, 4
F32 = jnp.float32
KEY = jax.random.key(0)
# Shared by every test, so the few kernels they need compile once (the file runs in seconds).
LSTM, GRU = rnnjax.lstm(I, H, dtype=F32), rnnjax.gru(I, H, dtype=F32)
XS = jax.random.normal(jax.random.key(1), (B, T, I), F32)


@functools.partial(jax.jit, static_argnames=("cell", "reverse"))
def _loop(cell, params, xs, reverse=False, lengths=None):
    """The truth: a Python loop of ``cell.step`` over time, vmapped over the batch axes of ``xs (*batch, T, I)``.

    Returns ``(final carry, ys (*batch, T, out))`` with ``ys`` in processing order (as Flax's ``reverse=True``);
    with ``lengths (batch,)``, each sequence's carry after its own last step.
    """
    batch = xs.shape[:-2]
    flat = xs.reshape((-1,) + xs.shape[-2:])  # one batch axis, however many Flax was given
    step = jax.vmap(cell.step, in_axes=(None, 0, 0))
    carry = jax.tree.map(lambda c: jnp.broadcast_to(c, flat.shape[:1] + c.shape), cell.initial_carry())
    carries, ys = [], []
    for t in reversed(range(xs.shape[-2])) if reverse else range(xs.shape[-2]):
        carry, y = step(params, carry, flat[:, t])
        carries.append(carry)
        ys.append(y)
    if lengths is not None:
        carry = jax.tree.map(lambda *cs: jnp.stack(cs)[lengths - 1, jnp.arange(flat.shape[0])], *carries)
    return jax.tree.map(lambda a: a.reshape(batch + a.shape[1:]), (carry, jnp.stack(ys, 1)))


def _params(cell):
    """The cell's parameters with every entry shifted off its initial value (nonzero biases fill every Flax slot)."""
    return jax.tree.map(lambda a: a + 0.5, cell.init(jax.random.key(2)))


def _close(got, want, atol=1e-6):
    """Same structure, same values to float32 rounding (``rtol`` ~ 8 eps)."""
    chex.assert_trees_all_equal_structs(got, want)
    chex.assert_trees_all_close(got, want, atol=atol, rtol=1e-6)


# ---------------------------------------------------------------- linen front end (linen_recurrent_test.py)


# Flax: test_rnn_basic_forward, test_rnn_multiple_batch_dims, test_rnn_unroll, test_rnn_time_major
@pytest.mark.parametrize(
    "batch, options", [((B,), {}), ((2, 1), {}), ((B,), {"unroll": 2}), ((B,), {"time_major": True})],
    ids=["basic", "batch_dims", "unroll", "time_major"],
)
def test_linen_rnn_runs_an_rnnjax_lstm(batch, options):
    cell = LSTM
    rnn = nn.RNN(LinenCell(cell), return_carry=True, **options)
    xs = XS.reshape(batch + (T, I))
    feed = xs.swapaxes(0, 1) if options.get("time_major") else xs
    (carry, ys), variables = rnn.init_with_output(KEY, feed)
    params = variables["params"]["cell"]["cell"]
    chex.assert_shape([params.w_in, params.w_rec, params.b], [(4 * H, I), (4 * H, H), (4 * H,)])
    want_carry, want_ys = _loop(cell, params, xs)
    _close((carry, ys), (want_carry, want_ys.swapaxes(0, 1) if options.get("time_major") else want_ys))
    chex.assert_shape(list(carry), [batch + (H,)] * 2)
    assert all(np.all(leaf != 0) for leaf in carry)


# Flax: test_numerical_equivalence, test_numerical_equivalence_single_batch_jax_scan
def test_linen_cell_steps_match_the_rnn():
    cell = LSTM
    adapter = LinenCell(cell)
    xs = XS
    (carry, ys), variables = nn.RNN(adapter, return_carry=True).init_with_output(KEY, xs)
    cell_vars = {"params": variables["params"]["cell"]}
    step, step_carry = jax.jit(adapter.apply), adapter.initialize_carry(KEY, xs[:, 0].shape)
    for t in range(T):
        step_carry, y = step(cell_vars, step_carry, xs[:, t])
        _close(y, ys[:, t])
    _close(step_carry, carry)
    scan_carry, scan_ys = jax.lax.scan(functools.partial(adapter.apply, cell_vars), adapter.initialize_carry(KEY, (B, I)),
                                       xs.swapaxes(0, 1))
    _close((scan_carry, scan_ys.swapaxes(0, 1)), (carry, ys))


# Flax: test_numerical_equivalence_with_mask, test_basic_seq_lengths
def test_linen_seq_lengths_stop_each_carry_at_its_length():
    cell = LSTM
    xs = XS
    lengths = jnp.array([T, 1])
    (carry, ys), variables = nn.RNN(LinenCell(cell), return_carry=True).init_with_output(KEY, xs, seq_lengths=lengths)
    params = variables["params"]["cell"]["cell"]
    want_carry, want_ys = _loop(cell, params, xs, lengths=lengths)
    _close(carry, want_carry)
    for b, n in enumerate(lengths.tolist()):  # Flax leaves the padded steps' outputs unspecified
        _close(ys[b, :n], want_ys[b, :n])


# Flax: test_numerical_equivalence_single_batch_nn_scan
def test_linen_nn_scan_lifts_the_front_end():
    cell = LSTM
    scanned = nn.scan(LinenCell, in_axes=1, out_axes=1, variable_broadcast="params", split_rngs={"params": False})(cell)
    xs = XS
    carry0 = scanned.initialize_carry(KEY, xs[:, 0].shape)
    (carry, ys), variables = scanned.init_with_output(KEY, carry0, xs)
    _close((carry, ys), _loop(cell, variables["params"]["cell"], xs))


# Flax: test_reverse, test_reverse_but_keep_order
@pytest.mark.parametrize("keep_order", [False, True])
def test_linen_reverse(keep_order):
    cell = LSTM
    xs = XS
    rnn = nn.RNN(LinenCell(cell), return_carry=True, reverse=True, keep_order=keep_order)
    (carry, ys), variables = rnn.init_with_output(KEY, xs)
    want_carry, want_ys = _loop(cell, variables["params"]["cell"]["cell"], xs, reverse=True)
    _close((carry, ys), (want_carry, want_ys[:, ::-1] if keep_order else want_ys))


# Flax: test_bidirectional, test_shared_cell, test_custom_merge_fn, test_return_carry
def test_linen_bidirectional():
    cell = LSTM
    xs = XS
    shared = LinenCell(cell)
    for fwd, bwd, merge in ((LinenCell(cell), LinenCell(cell), None), (shared, shared, lambda a, b: a + b)):
        kwargs = {} if merge is None else {"merge_fn": merge}
        bi = nn.Bidirectional(nn.RNN(fwd), nn.RNN(bwd), return_carry=True, **kwargs)
        (carry, ys), variables = bi.init_with_output(KEY, xs)
        p = variables["params"]
        assert ("backward_rnn" in p) == (fwd is not bwd)  # a shared cell has one set of parameters
        c_f, y_f = _loop(cell, p["forward_rnn"]["cell"]["cell"], xs)
        c_b, y_b = _loop(cell, p.get("backward_rnn", p["forward_rnn"])["cell"]["cell"], xs, reverse=True)
        want_ys = jnp.concatenate([y_f, y_b[:, ::-1]], -1) if merge is None else y_f + y_b[:, ::-1]
        _close((carry, ys), ((c_f, c_b), want_ys))
        chex.assert_shape(jax.tree.leaves(carry), [(B, H)] * 4)


# Flax: TestRecurrentDeprecation.test_constructor, TestRecurrentDeprecation.test_initialize_carry
def test_linen_front_end_needs_its_cell_and_flax_signature():
    with pytest.raises(TypeError, match="cell"):
        LinenCell()
    with pytest.raises(TypeError):
        LinenCell(LSTM).initialize_carry(KEY, (2,), 3)  # the old (rng, batch_dims, size) signature


# ---------------------------------------------------------------- NNX front end (nnx/nn/recurrent_test.py)


# Flax: test_basic, test_lstm_sequence, test_lstm_stateful, test_lstm_with_different_dtypes, test_rnn_with_different_dtypes
def test_nnx_cell_steps_and_keeps_the_dtype():
    cell = LSTM
    module = NNXCell(cell, rngs=nnx.Rngs(0))
    xs = XS
    step, carry, ys = jax.jit(module.__call__), module.initialize_carry((B, I), nnx.Rngs(0)), []
    for t in range(T):  # the module keeps no state between calls: the carry is threaded
        carry, y = step(carry, xs[:, t])
        ys.append(y)
    want = _loop(cell, module.param_values(), xs)
    _close((carry, jnp.stack(ys, 1)), want)
    low = NNXCell(rnnjax.lstm(I, H, dtype=jnp.bfloat16),
                  params=jax.tree.map(lambda a: a.astype(jnp.bfloat16), module.param_values()))
    carry, ys = nnx.RNN(low, return_carry=True)(xs.astype(jnp.bfloat16))
    assert all(a.dtype == jnp.bfloat16 for a in jax.tree.leaves((carry, ys))) and ys.shape == (B, T, H)
    _close(jax.tree.map(lambda a: a.astype(F32), (carry, ys)), want, atol=3e-2)  # bfloat16 rounding (eps 2^-8)


# Flax: test_rnn_with_lstm_cell, test_rnn_with_gru_cell, test_rnn_time_major, test_rnn_reverse, test_rnn_with_keep_order, test_rnn_with_unroll, test_rnn_with_variable_batch_size; linen's test_numerical_equivalence_single_batch
@pytest.mark.parametrize(
    "kind, options",
    [("lstm", {}), ("gru", {}), ("lstm", {"time_major": True}), ("lstm", {"reverse": True}),
     ("gru", {"reverse": True, "keep_order": True}), ("gru", {"unroll": 2})],
    ids=["lstm", "gru", "time_major", "reverse", "keep_order", "unroll"],
)
def test_nnx_rnn_options_match_the_loop(kind, options):
    cell = {"lstm": LSTM, "gru": GRU}[kind]
    module = NNXCell(cell, rngs=nnx.Rngs(0))
    rnn = nnx.RNN(module, return_carry=True, **options)
    for batch in (B, 1) if kind == "lstm" and not options else (B,):
        xs = XS[:batch]
        feed = xs.swapaxes(0, 1) if options.get("time_major") else xs
        carry, ys = rnn(feed, initial_carry=module.initialize_carry((batch, I), nnx.Rngs(0)))
        want_carry, want_ys = _loop(cell, module.param_values(), xs, reverse=options.get("reverse", False))
        want_ys = want_ys[:, ::-1] if options.get("keep_order") else want_ys
        _close((carry, ys), (want_carry, want_ys.swapaxes(0, 1) if options.get("time_major") else want_ys))


# Flax: test_lstm_with_variable_sequence_length, test_rnn_with_seq_lengths
def test_nnx_seq_lengths_stop_each_carry_at_its_length():
    cell = LSTM
    module = NNXCell(cell, rngs=nnx.Rngs(0))
    xs = XS
    lengths = jnp.array([2, T])
    carry, ys = nnx.RNN(module, return_carry=True)(xs, seq_lengths=lengths)
    want_carry, want_ys = _loop(cell, module.param_values(), xs, lengths=lengths)
    _close(carry, want_carry)
    for b, n in enumerate(lengths.tolist()):  # Flax leaves the padded steps' outputs unspecified
        _close(ys[b, :n], want_ys[b, :n])
    _close(module.unroll(xs, lengths=lengths)[0], carry)  # rnnjax's own padded unroll agrees


# Flax: test_lstm_initialize_carry
def test_initialize_carry_takes_carry_init_as_flax_does():
    cell = LSTM
    module = NNXCell(cell, rngs=nnx.Rngs(0))
    ones = module.initialize_carry((1, I), nnx.Rngs(0), carry_init=nnx.initializers.ones)
    chex.assert_trees_all_equal(ones, rnnjax.LSTMState(jnp.ones((1, H), F32), jnp.ones((1, H), F32)))
    # A random carry_init draws the keys Flax's own LSTMCell draws from the same stream (c, then h).
    normal = nnx.initializers.normal(1.0)
    flax_cell = nnx.eval_shape(lambda: nnx.LSTMCell(I, H, rngs=nnx.Rngs(0)))  # its weights play no part
    chex.assert_trees_all_equal(module.initialize_carry((B, I), nnx.Rngs(3), carry_init=normal),
                                carry_from_flax(flax_cell.initialize_carry((B, I), nnx.Rngs(3), carry_init=normal)))
    # linen: carry_init is an attribute, the key is split per leaf (used whole for one leaf) as in Flax's cells.
    for ours_cell, flax_linen in ((cell, nn.LSTMCell(H, carry_init=normal)), (GRU, nn.GRUCell(H, carry_init=normal))):
        chex.assert_trees_all_equal(LinenCell(ours_cell, carry_init=normal).initialize_carry(KEY, (B, I)),
                                    carry_from_flax(flax_linen.initialize_carry(KEY, (B, I))))
    zeros = jnp.zeros((B, H), F32)
    chex.assert_trees_all_equal(LinenCell(cell).initialize_carry(KEY, (B, I)), rnnjax.LSTMState(zeros, zeros))
    with pytest.raises(ValueError, match="rngs: expected nnx.Rngs or an nnx.RngStream to draw carry_init's keys"):
        module.initialize_carry((B, I), carry_init=normal)
    with pytest.raises(ValueError, match=r"rng: expected a PRNG key \(jax.random.key\) to draw carry_init's keys"):
        LinenCell(cell, carry_init=normal).initialize_carry(None, (B, I))
    with pytest.raises(TypeError, match="carry_init: expected an initializer"):
        module.initialize_carry((B, I), nnx.Rngs(0), carry_init=1.0)
    with pytest.raises(ValueError, match=r"input_shape: expected \(\*batch, 3\)"):
        module.initialize_carry((B, I + 1))


# Flax: test_lstm_initialize_carry, test_rnn_with_lstm_cell (the rngs they pass)
def test_initialize_carry_draws_from_rngs_as_flax_does():
    module = NNXCell(LSTM, rngs=nnx.Rngs(0))
    flax_cell = nnx.eval_shape(lambda: nnx.LSTMCell(I, H, rngs=nnx.Rngs(0)))
    ours, theirs = nnx.Rngs(3), nnx.Rngs(3)
    for rngs in (lambda r: r, lambda r: r.carry):  # nnx.Rngs or an RngStream (what nnx.RNN passes)
        chex.assert_trees_all_equal(module.initialize_carry((B, I), rngs(ours)),
                                    carry_from_flax(flax_cell.initialize_carry((B, I), rngs(theirs))))
        np.testing.assert_array_equal(jax.random.key_data(ours()), jax.random.key_data(theirs()))  # streams in step
    with pytest.raises(TypeError, match="rngs: expected nnx.Rngs, an nnx.RngStream or None, got int"):
        module.initialize_carry((B, I), 0)


# Flax: test_lstm_with_custom_activations
def test_custom_gate_and_activation_functions_match_flax():
    fns = {"gate_fn": jax.nn.relu, "activation_fn": jax.nn.elu}
    x, (c, h) = XS[:, 0], jax.random.normal(KEY, (2, B, H), F32)
    for ours, flax_carry in ((rnnjax.lstm(I, H, dtype=F32, **fns), (c, h)), (rnnjax.gru(I, H, dtype=F32, **fns), h)):
        flax_cell, variables = to_flax(ours, _params(ours))  # Flax's own cell, with the functions
        assert (flax_cell.gate_fn, flax_cell.activation_fn) == (jax.nn.relu, jax.nn.elu)
        cell, params = from_flax(flax_cell, variables)  # and back into rnnjax
        carry, y = jax.jit(NNXCell(cell, params=params).__call__)(carry_from_flax(flax_carry), x)
        _close((carry_to_flax(carry), y), jax.jit(flax_cell.apply)(variables, flax_carry, x))
    with pytest.raises(ValueError, match=r"flax_cell\.gate_fn: expected relu \(the rnnjax cell's gate_fn\), got sig"):
        to_flax(cell, params, nn.GRUCell(H))


# Flax: test_lstm_equivalence_with_flax_linen, test_rnn_equivalence_with_flax_linen
def test_front_ends_match_flax_given_a_converted_flax_carry_and_name_the_converter():
    cell, params, xs = LSTM, _params(LSTM), XS
    flax_cell, cell_vars = to_flax(cell, params)  # Flax's own LSTMCell holding the same weights
    flax_carry0 = tuple(jax.random.normal(KEY, (2, B, H), F32))  # Flax's (c, h), nonzero
    flax_vars = {"params": {"cell": cell_vars["params"]}}
    want = nn.RNN(flax_cell, return_carry=True).apply(flax_vars, xs, initial_carry=flax_carry0)
    module = NNXCell(cell, params=params)
    carry0 = carry_from_flax(flax_carry0)
    c1, y1 = module(carry0, xs[:, 0])
    _close((carry_to_flax(c1), y1), flax_cell.apply(cell_vars, flax_carry0, xs[:, 0]))
    carry, ys = nnx.RNN(module, return_carry=True)(xs, initial_carry=carry0)
    _close((carry_to_flax(carry), ys), want)
    linen_rnn = nn.RNN(LinenCell(cell), return_carry=True)
    linen_vars = {"params": {"cell": {"cell": params}}}
    carry, ys = linen_rnn.apply(linen_vars, xs, initial_carry=carry0)
    _close((carry_to_flax(carry), ys), want)
    for run in (lambda: module(flax_carry0, xs[:, 0]), lambda: nnx.RNN(module)(xs, initial_carry=flax_carry0),
                lambda: LinenCell(cell).apply({"params": {"cell": params}}, flax_carry0, xs[:, 0])):
        with pytest.raises(TypeError, match=r"carry: expected the rnnjax carry of cell 'lstm' for batch \(2,\), "
                           r"LSTMState\(h=float32\(2, 4\), c=float32\(2, 4\)\), got \(float32\(2, 4\), float32\(2, 4\)\); "
                           r"convert a Flax carry .* with rnnjax\.interop\.carry_from_flax") as info:
            run()
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"carry: expected the rnnjax carry .*got LSTMState\(h=float32\(2, 5\)"):
        module(rnnjax.LSTMState(jnp.zeros((B, H + 1), F32), jnp.zeros((B, H), F32)), xs[:, 0])
