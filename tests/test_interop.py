"""Interop tests: PyTorch and Flax weights in and out, compared against the frameworks themselves."""

import subprocess
import sys

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rnnjax
from rnnjax.interop import carry_from_flax, carry_to_flax, from_flax, from_torch, to_flax, to_torch

torch = pytest.importorskip("torch")

B, T, I, H, P = 2, 5, 3, 4, 2
MODULES = {
    "rnn_tanh": (torch.nn.RNN, {}),
    "rnn_relu": (torch.nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (torch.nn.LSTM, {}),
    "lstm_proj": (torch.nn.LSTM, {"proj_size": P}),
    "gru": (torch.nn.GRU, {}),
}
# (num_layers, bidirectional, batch_first): together every option for every module.
LAYOUTS = [(1, False, False), (2, True, True), (2, False, True)]


def _torch_module(name, num_layers, bidirectional, batch_first, dtype=torch.float64, seed=0, **extra):
    cls, kwargs = MODULES[name]
    m = cls(I, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first, **kwargs, **extra)
    m = m.double() if dtype == torch.float64 else m.float()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # every tensor random: nonzero, distinct biases
        for p in m.parameters():
            p.uniform_(-0.9, 0.9, generator=gen)
    return m.eval()


def _run_torch(m, x, state=None):
    """x: (batch, time, I) -> (output (batch, time, .), final state with batch on axis 1)."""
    out, st = m(x if m.batch_first else x.transpose(0, 1), state)
    out = out if m.batch_first else out.transpose(0, 1)
    return out.detach().numpy(), jax.tree.map(lambda t: t.detach().numpy(), st)


def _final_state_batch_major(st):
    # torch (L*D, B, H) -> per-sequence (B, L*D, H), as fn returns for one sequence under vmap.
    return jax.tree.map(lambda a: np.swapaxes(a, 0, 1), st)


def _torch_inputs(dtype, seed=1):
    return torch.randn(B, T, I, dtype=dtype, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda v: f"L{v[0]}-bi{int(v[1])}-bf{int(v[2])}")
@pytest.mark.parametrize("name", list(MODULES))
def test_from_torch_matches_torch_float64(name, layout):
    m = _torch_module(name, *layout)
    x = _torch_inputs(torch.float64)
    out, st = _run_torch(m, x)
    fn, params = from_torch(m)
    assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(params))
    ys, fs = jax.jit(jax.vmap(fn, in_axes=(None, 0)))(params, jnp.asarray(x.numpy()))
    chex.assert_trees_all_close(ys, out, atol=1e-10, rtol=0)
    if name.startswith("lstm"):
        fs = tuple(fs)
    chex.assert_trees_all_close(fs, _final_state_batch_major(st), atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", ["rnn_relu", "lstm_proj", "gru"])
def test_from_torch_matches_torch_float32(name):
    m = _torch_module(name, 2, True, False, dtype=torch.float32)
    x = _torch_inputs(torch.float32)
    out, st = _run_torch(m, x)
    fn, params = from_torch(m)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    ys, fs = jax.vmap(fn, in_axes=(None, 0))(params, jnp.asarray(x.numpy()))
    assert ys.dtype == jnp.float32
    chex.assert_trees_all_close(ys, out, atol=1e-5, rtol=0)
    chex.assert_trees_all_close(tuple(fs) if name.startswith("lstm") else fs, _final_state_batch_major(st), atol=1e-5, rtol=0)
    back = to_torch(params, nonlinearity=getattr(m, "nonlinearity", "tanh"))
    assert all(a.dtype == torch.float32 and torch.equal(a, b) for a, b in zip(back.state_dict().values(), m.state_dict().values()))


@pytest.mark.parametrize("name", ["lstm_proj", "gru"])
def test_from_torch_initial_state_and_padded_lengths(name):
    m = _torch_module(name, 2, True, True)
    x = _torch_inputs(torch.float64)
    gen = torch.Generator().manual_seed(3)
    h0 = torch.randn(4, B, P if name == "lstm_proj" else H, dtype=torch.float64, generator=gen)
    state = (h0, torch.randn(4, B, H, dtype=torch.float64, generator=gen)) if name == "lstm_proj" else h0
    fn, params = from_torch(m)
    out, st = _run_torch(m, x, state)
    states = jax.tree.map(lambda t: jnp.asarray(np.swapaxes(t.numpy(), 0, 1)), state)  # (B, L*D, .)
    ys, fs = jax.vmap(fn, in_axes=(None, 0, 0))(params, jnp.asarray(x.numpy()), states)
    chex.assert_trees_all_close(ys, out, atol=1e-10, rtol=0)
    chex.assert_trees_all_close(tuple(fs) if name == "lstm_proj" else fs, _final_state_batch_major(st), atol=1e-10, rtol=0)
    # Padded batch through a PackedSequence: outputs past the length are zero, the
    # backward direction starts at the last valid step.
    lengths = torch.tensor([T, 3])
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True)
    out_p, st_p = m(packed)
    out_p, _ = torch.nn.utils.rnn.pad_packed_sequence(out_p, batch_first=True, total_length=T)
    st_p = jax.tree.map(lambda t: t.detach().numpy(), st_p)
    ys, fs = jax.vmap(lambda xb, n: fn(params, xb, length=n))(jnp.asarray(x.numpy()), jnp.asarray(lengths.numpy()))
    chex.assert_trees_all_close(ys, out_p.detach().numpy(), atol=1e-10, rtol=0)
    chex.assert_trees_all_close(tuple(fs) if name == "lstm_proj" else fs, _final_state_batch_major(st_p), atol=1e-10, rtol=0)


@pytest.mark.parametrize("layout", [(1, False, False), (2, True, True)])
@pytest.mark.parametrize("name", list(MODULES))
def test_torch_round_trip_is_exact(name, layout):
    m = _torch_module(name, *layout)
    _, params = from_torch(m)
    nonlinearity = getattr(m, "nonlinearity", "tanh")
    for back in (to_torch(params, nonlinearity=nonlinearity, batch_first=m.batch_first),
                 to_torch(params, _torch_module(name, *layout, seed=7))):
        assert type(back) is type(m) and back.batch_first == m.batch_first
        assert getattr(back, "nonlinearity", None) == getattr(m, "nonlinearity", None)
        sd, sd_back = m.state_dict(), back.state_dict()
        assert list(sd) == list(sd_back)
        for key in sd:
            assert sd[key].dtype == sd_back[key].dtype and torch.equal(sd[key], sd_back[key]), key


def test_torch_round_trip_without_bias_is_exact():
    m = torch.nn.GRU(I, H, num_layers=2, bias=False).double()
    _, params = from_torch(m)
    back = to_torch(params)
    assert not back.bias
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), back.state_dict().values()))


def test_to_torch_of_native_rnnjax_params_runs_the_same_network():
    # An rnnjax LSTM without recurrent_bias: loads with bias_hh = 0 and computes the same outputs.
    cell = rnnjax.lstm(I, H, bias_init=rnnjax.initializers.uniform(0.5), dtype=jnp.float64)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (T, I), jnp.float64)
    carry, ys = rnnjax.unroll(cell, params, xs)
    m = to_torch(params)
    assert m.weight_hh_l0.dtype == torch.float64 and torch.all(m.bias_hh_l0 == 0)
    out, (h_n, c_n) = m(torch.from_numpy(np.array(xs)))
    chex.assert_trees_all_close(out.detach().numpy(), ys, atol=1e-12, rtol=0)
    chex.assert_trees_all_close((h_n[0].detach().numpy(), c_n[0].detach().numpy()), (carry.h, carry.c), atol=1e-12, rtol=0)


_FIELDS = {"weight_ih": "w_in", "weight_hh": "w_rec", "bias_ih": "b", "bias_hh": "b_rec", "weight_hr": "w_proj"}


@pytest.mark.parametrize("name, layout", [("lstm_proj", (2, True, False)), ("gru", (1, True, False))])
def test_gradients_match_torch_autograd(name, layout):
    m = _torch_module(name, *layout)
    x = _torch_inputs(torch.float64)[0]  # one sequence, (time, I)
    gen = torch.Generator().manual_seed(5)
    out, st = m(x)
    h_n = st[0] if name.startswith("lstm") else st
    w_out, w_h = torch.randn(out.shape, dtype=torch.float64, generator=gen), torch.randn(h_n.shape, dtype=torch.float64, generator=gen)
    ((out * w_out).sum() + (h_n * w_h).sum() ** 2).backward()

    fn, params = from_torch(m)
    w_out_j, w_h_j = jnp.asarray(w_out.numpy()), jnp.asarray(w_h.numpy())

    def loss(p):
        ys, fs = fn(p, jnp.asarray(x.numpy()))
        h = fs[0] if name.startswith("lstm") else fs
        return (ys * w_out_j).sum() + (h * w_h_j).sum() ** 2

    grads = jax.grad(loss)(params)
    for pname, p in m.named_parameters():
        base, rest = pname.rsplit("_l", 1)
        k = int(rest.split("_")[0])
        g = grads[k].backward if rest.endswith("_reverse") else grads[k].forward
        np.testing.assert_allclose(getattr(g, _FIELDS[base]), p.grad.numpy(), atol=1e-10, rtol=0, err_msg=pname)


def test_from_torch_errors():
    lstm = torch.nn.LSTM(I, H, num_layers=2, dropout=0.5)
    with pytest.raises(ValueError, match=r"module: .*training mode.*eval\(\)"):
        from_torch(lstm)
    from_torch(lstm.eval())  # fine in evaluation mode
    from_torch(torch.nn.LSTM(I, H, dropout=0.0))  # no dropout: fine in training mode
    with pytest.raises(TypeError, match="module: expected a torch.nn.RNN"):
        from_torch(torch.nn.Linear(3, 4))
    fn, params = from_torch(torch.nn.GRU(I, H, num_layers=2).double())
    with pytest.raises(ValueError, match=r"state: expected h_0 of shape \(2, 4\)"):
        fn(params, jnp.zeros((T, I)), jnp.zeros((1, H)))
    with pytest.raises(ValueError, match="xs: expected input width 3"):
        fn(params, jnp.zeros((T, I + 1)))
    fn, params = from_torch(torch.nn.LSTM(I, H).double())
    with pytest.raises(ValueError, match=r"state: expected a pair"):
        fn(params, jnp.zeros((T, I)), jnp.zeros((1, H)))


def test_to_torch_errors():
    _, params = from_torch(torch.nn.LSTM(I, H, num_layers=2).double())
    bad = (params[0], params[1]._replace(w_in=params[1].w_in[:, :2]))
    with pytest.raises(ValueError, match=r"params\[1\]\.w_in: expected shape \(16, 4\), got \(16, 2\)"):
        to_torch(bad)
    with pytest.raises(ValueError, match=r"module: does not match params; .*num_layers=1 vs 2"):
        to_torch(params, torch.nn.LSTM(I, H).double())
    with pytest.raises(ValueError, match="bias: bias=False"):
        to_torch(params, bias=False)
    with pytest.raises(TypeError, match=r"params\[0\]: expected ElmanParams"):
        to_torch((rnnjax.LinearParams(jnp.zeros((2, 2)), jnp.zeros(2)),))
    with pytest.raises(ValueError, match="nonlinearity: expected 'tanh' or 'relu'"):
        to_torch(from_torch(torch.nn.RNN(I, H))[1], nonlinearity="linear")


def test_import_rnnjax_does_not_import_torch_and_float64_needs_x64():
    code = (
        "import sys, rnnjax, rnnjax.interop\n"
        "assert 'torch' not in sys.modules\n"
        "import torch\n"
        "try:\n"
        "    rnnjax.interop.from_torch(torch.nn.GRU(2, 3).double())\n"
        "except ValueError as err:\n"
        "    assert 'module: the module holds float64 weights' in str(err), err\n"
        "else:\n"
        "    raise AssertionError('no error without jax_enable_x64')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------- Flax


def _randomise(tree, key):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(treedef, [jax.random.uniform(k, a.shape, a.dtype, -0.9, 0.9) for k, a in zip(keys, leaves)])


def _exactly_equal(a, b):
    chex.assert_trees_all_equal_structs(a, b)
    chex.assert_trees_all_equal(a, b)
    chex.assert_trees_all_equal_dtypes(a, b)


LINEN_CELLS = {
    "lstm": lambda dt: nn.LSTMCell(H, param_dtype=dt),
    "optimized_lstm": lambda dt: nn.OptimizedLSTMCell(H, param_dtype=dt),
    "gru": lambda dt: nn.GRUCell(H, param_dtype=dt),
    "simple_tanh": lambda dt: nn.SimpleCell(H, param_dtype=dt),
    "simple_relu": lambda dt: nn.SimpleCell(H, param_dtype=dt, activation_fn=nn.relu),
}


@pytest.mark.parametrize(
    "name, dtype, tol",
    [(n, jnp.float64, 1e-10) for n in LINEN_CELLS] + [(n, jnp.float32, 1e-5) for n in ("optimized_lstm", "gru")],
    ids=[f"{n}-f64" for n in LINEN_CELLS] + ["optimized_lstm-f32", "gru-f32"],
)
def test_from_flax_linen_matches_flax_rnn_and_round_trips(name, dtype, tol):
    flax_cell = LINEN_CELLS[name](dtype)
    xs = jax.random.normal(jax.random.key(1), (B, T, I), dtype)
    rnn = nn.RNN(flax_cell, return_carry=True)
    variables = _randomise(rnn.init(jax.random.key(0), xs), jax.random.key(2))
    carry, ys = rnn.apply(variables, xs)
    cell_vars = {"params": variables["params"]["cell"]}

    cell, params = from_flax(flax_cell, cell_vars)
    assert all(a.dtype == dtype for a in jax.tree.leaves(params))
    our_carry, our_ys = rnnjax.unroll_batch(cell, params, xs)
    chex.assert_trees_all_close(our_ys, ys, atol=tol, rtol=0)
    chex.assert_trees_all_close(carry_to_flax(our_carry), carry, atol=tol, rtol=0)
    chex.assert_trees_all_close(carry_from_flax(carry), our_carry, atol=tol, rtol=0)

    _, back = to_flax(cell, params, flax_cell)
    _exactly_equal(back, cell_vars)
    default_cell, back_default = to_flax(cell, params)  # a new linen cell of the matching kind
    assert type(default_cell) is (nn.LSTMCell if "lstm" in name else type(flax_cell))
    chex.assert_trees_all_close(nn.RNN(default_cell).apply({"params": {"cell": back_default["params"]}}, xs), ys, atol=tol, rtol=0)


NNX_CELLS = {
    "lstm": nnx.LSTMCell,
    "optimized_lstm": nnx.OptimizedLSTMCell,
    "gru": nnx.GRUCell,
    "simple": nnx.SimpleCell,
}


@pytest.mark.parametrize("name", list(NNX_CELLS))
def test_from_flax_nnx_matches_flax_rnn_and_round_trips(name):
    dt = jnp.float64
    flax_cell = NNX_CELLS[name](I, H, param_dtype=dt, dtype=dt, rngs=nnx.Rngs(0))
    nnx.update(flax_cell, _randomise(nnx.state(flax_cell, nnx.Param), jax.random.key(2)))
    state = nnx.state(flax_cell, nnx.Param)
    xs = jax.random.normal(jax.random.key(1), (B, T, I), dt)
    carry, ys = nnx.RNN(flax_cell, return_carry=True)(xs)

    cell, params = from_flax(flax_cell)
    our_carry, our_ys = rnnjax.unroll_batch(cell, params, xs)
    chex.assert_trees_all_close(our_ys, ys, atol=1e-10, rtol=0)
    chex.assert_trees_all_close(carry_to_flax(our_carry), carry, atol=1e-10, rtol=0)

    other = NNX_CELLS[name](I, H, param_dtype=dt, dtype=dt, rngs=nnx.Rngs(9))
    module, back = to_flax(cell, params, other)
    _exactly_equal(jax.tree.map(lambda v: v[...], back), jax.tree.map(lambda v: v[...], state))
    chex.assert_trees_all_close(nnx.RNN(module)(xs), ys, atol=1e-10, rtol=0)
    # from_flax with an explicit state reads the state, not the module's weights.
    _, params_again = from_flax(other, state)
    _exactly_equal(params_again, params)


def test_torch_gru_to_linen_gru_keeps_b_hn_and_nnx_gru_refuses_it():
    m = _torch_module("gru", 1, False, True)
    x = _torch_inputs(torch.float64)
    out, _ = _run_torch(m, x)
    fn, params = from_torch(m)
    cell = rnnjax.gru(I, H, dtype=jnp.float64)
    flax_cell, variables = to_flax(cell, params[0])
    ys = nn.RNN(flax_cell).apply({"params": {"cell": variables["params"]}}, jnp.asarray(x.numpy()))
    chex.assert_trees_all_close(ys, out, atol=1e-10, rtol=0)
    nnx_gru = nnx.GRUCell(I, H, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"params\.b_rec: flax\.nnx\.GRUCell has no slot for PyTorch's b_hn"):
        to_flax(cell, params[0], nnx_gru)
    zero_hn = params[0]._replace(b_rec=params[0].b_rec.at[2 * H :].set(0.0))
    module, _ = to_flax(cell, zero_hn, nnx_gru)  # the r and z hidden biases fold into the input bias
    chex.assert_trees_all_close(nnx.RNN(module)(jnp.asarray(x.numpy())), rnnjax.unroll_batch(cell, zero_hn, jnp.asarray(x.numpy()))[1], atol=1e-10, rtol=0)


def test_flax_errors():
    xs = jnp.zeros((B, T, I), jnp.float32)
    with pytest.raises(ValueError, match="flax_cell.residual"):
        simple = nn.SimpleCell(H, residual=True)
        from_flax(simple, nn.RNN(simple).init(jax.random.key(0), xs)["params"]["cell"])
    odd = nn.LSTMCell(H, gate_fn=jnp.tanh)  # the cell's functions come along; a target must have them too
    odd_cell, odd_params = from_flax(odd, nn.RNN(odd).init(jax.random.key(0), xs)["params"]["cell"])
    with pytest.raises(ValueError, match=r"flax_cell\.gate_fn: expected tanh \(the rnnjax cell's gate_fn\), got sigmoid"):
        to_flax(odd_cell, odd_params, nn.LSTMCell(H))
    with pytest.raises(TypeError, match="flax_cell: linen MGUCell is not supported"):
        mgu = nn.MGUCell(H)
        from_flax(mgu, nn.RNN(mgu).init(jax.random.key(0), xs)["params"]["cell"])
    lstm_vars = nn.RNN(nn.LSTMCell(H)).init(jax.random.key(0), xs)["params"]["cell"]
    with pytest.raises(ValueError, match=r"flax_params: hi/kernel: expected shape \(5, 5\), got \(4, 4\)"):
        from_flax(nn.LSTMCell(H + 1), lstm_vars)
    with pytest.raises(ValueError, match="flax_params: a linen cell keeps no weights"):
        from_flax(nn.GRUCell(H))
    with pytest.raises(TypeError, match="flax_cell: expected a flax.linen or flax.nnx"):
        from_flax(rnnjax.gru(I, H), None)
    cell = rnnjax.lstm(I, H, proj_size=P)
    with pytest.raises(ValueError, match=r"params\.w_proj: Flax LSTM cells have no projection"):
        to_flax(cell, cell.init(jax.random.key(0)))
    cell = rnnjax.gru(I, H)
    with pytest.raises(ValueError, match=r"flax_cell\.features: expected 4"):
        to_flax(cell, cell.init(jax.random.key(0)), nn.GRUCell(H + 1))
    with pytest.raises(TypeError, match="flax_cell: expected LSTMCell or OptimizedLSTMCell"):
        to_flax(rnnjax.lstm(I, H), rnnjax.lstm(I, H).init(jax.random.key(0)), nn.GRUCell(H))
    with pytest.raises(ValueError, match=r"flax_cell: expected in_features=3, hidden_features=4"):
        to_flax(cell, cell.init(jax.random.key(0)), nnx.GRUCell(I + 1, H, rngs=nnx.Rngs(0)))


def test_elman_and_irnn_to_flax_keep_their_activation():
    xs = jax.random.normal(jax.random.key(1), (T, I), jnp.float64)
    for cell in (rnnjax.elman(I, H, activation="linear", bias_init=rnnjax.initializers.uniform(0.5), recurrent_bias=True,
                              dtype=jnp.float64), rnnjax.irnn(I, H, dtype=jnp.float64)):
        params = cell.init(jax.random.key(0))
        if params.b_rec is not None:
            params = params._replace(b_rec=jnp.full((H,), 0.3))
        flax_cell, variables = to_flax(cell, params)
        ys = nn.RNN(flax_cell).apply({"params": {"cell": variables["params"]}}, xs[None])[0]
        chex.assert_trees_all_close(ys, rnnjax.unroll(cell, params, xs)[1], atol=1e-12, rtol=0)


# ---------------------------------------------------------------- LSTM projection in the core cell


def test_lstm_projection_shapes_and_errors():
    cell = rnnjax.lstm(I, H, proj_size=P)
    params = cell.init(jax.random.key(0))
    chex.assert_shape([params.w_in, params.w_rec, params.w_proj], [(4 * H, I), (4 * H, P), (P, H)])
    assert cell.output_size == P
    chex.assert_shape(list(cell.initial_carry()), [(P,), (H,)])
    plain = rnnjax.lstm(I, H).init(jax.random.key(0))
    assert plain.w_proj is None
    chex.assert_trees_all_equal(params.w_in, plain.w_in)  # the projection leaves the other draws unchanged
    with pytest.raises(ValueError, match="proj_size: expected a value smaller than hidden_size=4"):
        rnnjax.lstm(I, H, proj_size=H)


# ---------------------------------------------------------------- Flax front ends


def test_nnx_front_end_runs_any_rnnjax_cell_in_nnx_rnn():
    from rnnjax.interop.nnx import RNNCell

    cell = rnnjax.stack(rnnjax.lstm(I, H, proj_size=P), rnnjax.gru(P, H))
    module = RNNCell(cell, rngs=nnx.Rngs(0))
    xs = jax.random.normal(jax.random.key(1), (B, T, I), jnp.float32)
    ys = nnx.RNN(module)(xs)
    params = module.param_values()
    chex.assert_trees_all_close(ys, rnnjax.unroll_batch(cell, params, xs)[1], atol=1e-6, rtol=0)
    lengths = jnp.array([T, 2])
    chex.assert_trees_all_close(module.unroll(xs, lengths=lengths), rnnjax.unroll_batch(cell, params, xs, lengths=lengths))

    def loss_nnx(m):
        return jnp.sum(nnx.RNN(m)(xs) ** 2)

    grads = nnx.grad(loss_nnx)(module)
    holder = nnx.clone(module)
    nnx.update(holder, grads)  # the gradient State in the module's layout
    expected = jax.grad(lambda p: jnp.sum(rnnjax.unroll_batch(cell, p, xs)[1] ** 2))(params)
    chex.assert_trees_all_close(holder.param_values(), expected, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="params: these parameters do not belong"):
        RNNCell(rnnjax.gru(I, H), params=rnnjax.lstm(I, H).init(jax.random.key(0)))
    with pytest.raises(ValueError, match="rngs: expected nnx.Rngs"):
        RNNCell(rnnjax.gru(I, H))


def test_linen_front_end_runs_a_converted_torch_lstm():
    from rnnjax.interop.linen import RNNCell

    m = _torch_module("lstm_proj", 1, False, True)
    x = _torch_inputs(torch.float64)
    out, _ = _run_torch(m, x)
    _, params = from_torch(m)
    cell = rnnjax.lstm(I, H, proj_size=P, recurrent_bias=True, dtype=jnp.float64)
    rnn = nn.RNN(RNNCell(cell))
    variables = rnn.init(jax.random.key(0), jnp.asarray(x.numpy()))
    chex.assert_trees_all_equal_shapes(variables["params"]["cell"]["cell"], params[0])
    ys = rnn.apply({"params": {"cell": {"cell": params[0]}}}, jnp.asarray(x.numpy()))
    chex.assert_trees_all_close(ys, out, atol=1e-10, rtol=0)
