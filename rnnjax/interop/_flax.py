"""Exact conversion between Flax recurrent cells (linen and NNX) and rnnjax cells.

Flax keeps one ``Dense``/``Linear`` per gate with kernels ``(in, out)`` (the
transpose of rnnjax's ``(out, in)``), LSTM carries ``(c, h)`` where rnnjax has
``LSTMState(h, c)``, and:

- ``LSTMCell``/``OptimizedLSTMCell``: input kernels ``ii, if, ig, io`` without
  bias, hidden ``hi, hf, hg, ho`` with bias (rnnjax ``b``).
- ``GRUCell`` (linen): ``ir, iz, in`` with bias, ``hr, hz`` without, ``hn`` with
  bias, so ``b = (ir, iz, in)`` biases and ``b_rec = (0, 0, hn)``.
- ``nnx.GRUCell``: one input ``Linear`` with bias, one hidden ``Linear``
  without: it cannot hold PyTorch's ``b_hn`` (``b_rec[2H:]``).
- ``SimpleCell``: ``i`` with bias, ``h`` without.

An LSTM's or GRU's ``gate_fn``/``activation_fn`` carry over both ways (the
rnnjax cell keeps them). The front ends (``linen.RNNCell``,
``nnx.RNNCell``) make and check their carries here too.

Flax is imported inside the functions, so ``import rnnjax.interop`` stays cheap.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import _validate as v
from rnnjax._cells import Cell, ElmanParams, GRUParams, LSTMParams, LSTMState, elman, gate_functions, gru, lstm
from rnnjax.interop._batching import batched_carry


def _identity(x):
    """Identity activation (rnnjax's ``"linear"`` Elman cell) for ``flax SimpleCell(activation_fn=...)``."""
    return x


def _activation_name(fn, name: str, allowed: tuple[str, ...]) -> str:
    import flax.linen as nn

    table = {
        "tanh": (nn.tanh, jnp.tanh, jax.nn.tanh, np.tanh),
        "relu": (nn.relu, jax.nn.relu),
        "linear": (_identity,),
    }
    for key in allowed:
        if any(fn is f for f in table[key]):
            return key
    raise ValueError(f"{name}: expected one of {allowed} (flax/jax functions), got {fn!r}")


def _linen_variables(flax_params, name="flax_params") -> dict:
    if flax_params is None:
        raise ValueError(f"{name}: a linen cell keeps no weights; pass its variables (cell.init(...) output)")
    try:
        params = flax_params["params"] if "params" in flax_params else flax_params
    except TypeError as err:
        raise TypeError(
            f"{name}: expected the linen variables dict {{'params': ...}}, got {type(flax_params).__name__}"
        ) from err
    return params


def _get(tree: dict, key: str, leaf: str, where: str):
    try:
        return jnp.asarray(tree[key][leaf])
    except (KeyError, TypeError) as err:
        raise ValueError(f"{where}: missing {key}/{leaf}") from err


def _check_kernel(k, shape, where):
    if tuple(k.shape) != shape:
        raise ValueError(f"{where}: expected shape {shape}, got {tuple(k.shape)}")


def _flax_gate_functions(flax_cell) -> dict:
    """A Flax LSTM/GRU cell's ``gate_fn`` and ``activation_fn``, as keyword arguments of ``rnnjax.lstm``/``gru``."""
    return {"gate_fn": flax_cell.gate_fn, "activation_fn": flax_cell.activation_fn}


def _cell_gate_functions(cell: Cell) -> dict:
    """An rnnjax LSTM/GRU cell's gate and activation functions (PyTorch's sigmoid and tanh if it keeps none)."""
    gate_fn, activation_fn = gate_functions(cell) or (jax.nn.sigmoid, jnp.tanh)
    return {"gate_fn": gate_fn, "activation_fn": activation_fn}


def _check_gate_functions(flax_cell, fns: dict) -> None:
    for attr, want in fns.items():
        got = getattr(flax_cell, attr)
        if got is not want:
            raise ValueError(
                f"flax_cell.{attr}: expected {getattr(want, '__name__', want)!s} (the rnnjax cell's {attr}), "
                f"got {getattr(got, '__name__', got)!s}"
            )


def _nnx_value(var):
    return jnp.asarray(var[...])


def from_flax(flax_cell, flax_params=None) -> tuple[Cell, Any]:
    """Convert a Flax recurrent cell and its weights into an rnnjax cell and parameters.

    Supported: ``flax.linen.LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell``,
    ``SimpleCell`` (tanh, relu or identity activation, ``residual=False``) and
    their NNX counterparts ``flax.nnx.LSTMCell``, ``OptimizedLSTMCell``,
    ``GRUCell``, ``SimpleCell``. ``rnnjax.unroll(cell, params, xs)`` returns the
    same outputs as ``flax.linen.RNN(flax_cell)`` on ``xs``; the final carry of
    an LSTM is ``LSTMState(h, c)`` where Flax returns ``(c, h)`` (see
    ``carry_from_flax``). An LSTM's or GRU's ``gate_fn`` and
    ``activation_fn`` become the rnnjax cell's.

    Args:
      flax_cell: a linen cell (module definition) or an NNX cell (module with
        its weights).
      flax_params: for a linen cell, its variables (``{"params": {...}}`` or
        the inner ``params`` dict); for an NNX cell, None (read the module) or
        an ``nnx.State`` of its ``nnx.Param``s to use instead.

    Returns:
      ``(cell, params)``: an ``rnnjax.lstm``, ``rnnjax.gru`` or
      ``rnnjax.elman`` cell and its ``LSTMParams``/``GRUParams``/``ElmanParams``
      in the weights' dtype (kernels transposed, nothing else changed).
    """
    import flax.linen as nn
    from flax import nnx

    if isinstance(flax_cell, nn.Module):
        return _from_linen(flax_cell, _linen_variables(flax_params))
    if isinstance(flax_cell, nnx.Module):
        if flax_params is not None:
            flax_cell = nnx.clone(flax_cell)
            nnx.update(flax_cell, flax_params)
        return _from_nnx(flax_cell)
    raise TypeError(
        "flax_cell: expected a flax.linen or flax.nnx LSTMCell, OptimizedLSTMCell, GRUCell or SimpleCell, "
        f"got {type(flax_cell).__name__}"
    )


def _lstm_from_blocks(ks_in, ks_rec, bs, features, fns):
    i_size = int(ks_in[0].shape[0])
    for k, where in zip(ks_rec, ("hi", "hf", "hg", "ho")):
        _check_kernel(k, (features, features), f"flax_params: {where}/kernel")
    for k, where in zip(ks_in, ("ii", "if", "ig", "io")):
        _check_kernel(k, (i_size, features), f"flax_params: {where}/kernel")
    for k, where in zip(bs, ("hi", "hf", "hg", "ho")):
        _check_kernel(k, (features,), f"flax_params: {where}/bias")
    w_in = jnp.concatenate([k.T for k in ks_in], axis=0)
    w_rec = jnp.concatenate([k.T for k in ks_rec], axis=0)
    b = jnp.concatenate(bs)
    cell = lstm(i_size, features, forget_bias=0.0, dtype=w_in.dtype, **fns)
    return cell, LSTMParams(w_in, w_rec, b)


def _from_linen(flax_cell, p):
    import flax.linen as nn

    name = type(flax_cell).__name__
    if isinstance(flax_cell, (nn.LSTMCell, nn.OptimizedLSTMCell)):
        gates = "ifgo"
        ks_in = [_get(p, f"i{g}", "kernel", "flax_params") for g in gates]
        ks_rec = [_get(p, f"h{g}", "kernel", "flax_params") for g in gates]
        bs = [_get(p, f"h{g}", "bias", "flax_params") for g in gates]
        return _lstm_from_blocks(ks_in, ks_rec, bs, flax_cell.features, _flax_gate_functions(flax_cell))
    if isinstance(flax_cell, nn.GRUCell):
        h = flax_cell.features
        ks_in = [_get(p, f"i{g}", "kernel", "flax_params") for g in "rzn"]
        ks_rec = [_get(p, f"h{g}", "kernel", "flax_params") for g in "rzn"]
        i_size = ks_in[0].shape[0]
        for k, g in zip(ks_in, "rzn"):
            _check_kernel(k, (i_size, h), f"flax_params: i{g}/kernel")
        for k, g in zip(ks_rec, "rzn"):
            _check_kernel(k, (h, h), f"flax_params: h{g}/kernel")
        b = jnp.concatenate([_get(p, f"i{g}", "bias", "flax_params") for g in "rzn"])
        b_hn = _get(p, "hn", "bias", "flax_params")
        b_rec = jnp.concatenate([jnp.zeros((2 * h,), b_hn.dtype), b_hn])
        w_in = jnp.concatenate([k.T for k in ks_in])
        w_rec = jnp.concatenate([k.T for k in ks_rec])
        cell = gru(int(i_size), h, dtype=w_in.dtype, **_flax_gate_functions(flax_cell))
        return cell, GRUParams(w_in, w_rec, b, b_rec)
    if isinstance(flax_cell, nn.SimpleCell):
        return _simple(flax_cell, _get(p, "i", "kernel", "flax_params"), _get(p, "i", "bias", "flax_params"),
                       _get(p, "h", "kernel", "flax_params"), flax_cell.features)
    raise TypeError(
        f"flax_cell: linen {name} is not supported; expected LSTMCell, OptimizedLSTMCell, GRUCell or SimpleCell"
    )


def _simple(flax_cell, k_in, b, k_rec, features):
    if flax_cell.residual:
        raise ValueError("flax_cell.residual: residual SimpleCells (h' = phi(W_i x + b + W_h h + h)) are not supported")
    act = _activation_name(flax_cell.activation_fn, "flax_cell.activation_fn", ("tanh", "relu", "linear"))
    _check_kernel(k_rec, (features, features), "flax_params: h/kernel")
    cell = elman(int(k_in.shape[0]), features, activation=act, dtype=k_in.dtype)
    return cell, ElmanParams(k_in.T, k_rec.T, b)


def _from_nnx(m):
    from flax import nnx

    if isinstance(m, nnx.LSTMCell):
        ks_in = [_nnx_value(getattr(m, a).kernel) for a in ("ii", "if_", "ig", "io")]
        ks_rec = [_nnx_value(getattr(m, a).kernel) for a in ("hi", "hf", "hg", "ho")]
        bs = [_nnx_value(getattr(m, a).bias) for a in ("hi", "hf", "hg", "ho")]
        return _lstm_from_blocks(ks_in, ks_rec, bs, m.hidden_features, _flax_gate_functions(m))
    if isinstance(m, nnx.OptimizedLSTMCell):
        w_in, w_rec = _nnx_value(m.dense_i.kernel).T, _nnx_value(m.dense_h.kernel).T
        b = _nnx_value(m.dense_h.bias)
        cell = lstm(int(w_in.shape[1]), m.hidden_features, forget_bias=0.0, dtype=w_in.dtype,
                    **_flax_gate_functions(m))
        return cell, LSTMParams(w_in, w_rec, b)
    if isinstance(m, nnx.GRUCell):
        w_in, w_rec = _nnx_value(m.dense_i.kernel).T, _nnx_value(m.dense_h.kernel).T
        b = _nnx_value(m.dense_i.bias)
        cell = gru(int(w_in.shape[1]), m.hidden_features, dtype=w_in.dtype, **_flax_gate_functions(m))
        return cell, GRUParams(w_in, w_rec, b, jnp.zeros_like(b))
    if isinstance(m, nnx.SimpleCell):
        return _simple(m, _nnx_value(m.dense_i.kernel), _nnx_value(m.dense_i.bias), _nnx_value(m.dense_h.kernel),
                       m.hidden_features)
    raise TypeError(
        f"flax_cell: NNX {type(m).__name__} is not supported; "
        "expected LSTMCell, OptimizedLSTMCell, GRUCell or SimpleCell"
    )


def _elman_activation(cell: Cell) -> str:
    if cell.name.startswith("elman-"):
        act = cell.name[len("elman-") :]
        if act in ("tanh", "relu", "linear"):
            return act
    if cell.name == "irnn":
        return "relu"
    raise ValueError(
        f"cell: cannot tell the activation of Elman cell {cell.name!r}; expected a cell from "
        "rnnjax.elman (name 'elman-<activation>') or rnnjax.irnn"
    )


def _fold(b, b_rec):
    return b if b_rec is None else b + b_rec


def to_flax(cell: Cell, params, flax_cell=None) -> tuple[Any, Any]:
    """Convert an rnnjax LSTM, GRU or Elman cell and its parameters into a Flax cell and weights.

    The reverse of ``from_flax``: ``to_flax(*from_flax(c, v), flax_cell=c)``
    reproduces ``v`` exactly. PyTorch's second biases are folded where Flax
    has one slot (LSTM: ``b + b_rec``; GRU r and z gates; Elman); a GRU's
    ``b_rec[2H:]`` (``b_hn``) maps to linen's ``hn`` bias.

    Args:
      cell: an ``rnnjax.lstm`` (without projection), ``rnnjax.gru``,
        ``rnnjax.elman`` or ``rnnjax.irnn`` cell.
      params: its parameters.
      flax_cell: optional target: a linen cell definition or an NNX cell
        whose type and sizes fit; default a new linen ``LSTMCell``,
        ``GRUCell`` or ``SimpleCell`` with ``param_dtype`` the parameters' dtype.

    Returns:
      ``(flax_cell, flax_params)``: for linen, the cell (a default one gets
      the rnnjax cell's ``gate_fn``/``activation_fn``) and its variables
      ``{"params": {...}}``; for NNX, a new NNX cell holding the weights (the
      target is left unchanged) and its ``nnx.State`` of ``nnx.Param``s.

    Raises:
      ValueError: ``params.w_proj`` is set (Flax has no LSTM projection), the
        target's ``gate_fn``/``activation_fn`` are not the cell's, or an
        ``nnx.GRUCell`` is asked to hold a nonzero ``b_rec[2H:]`` (PyTorch's
        ``b_hn``; it has no slot for it: use ``flax.linen.GRUCell``).
    """
    import flax.linen as nn
    from flax import nnx

    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected an rnnjax.Cell, got {type(cell).__name__}")
    if isinstance(params, LSTMParams):
        kind = "lstm"
        if params.w_proj is not None:
            raise ValueError(
                f"params.w_proj: Flax LSTM cells have no projection; got w_proj {tuple(params.w_proj.shape)}"
            )
        h = params.w_in.shape[0] // 4
    elif isinstance(params, GRUParams):
        kind = "gru"
        h = params.w_in.shape[0] // 3
    elif isinstance(params, ElmanParams):
        kind = "elman"
        h = params.w_in.shape[0]
        act = _elman_activation(cell)
    else:
        raise TypeError(f"params: expected LSTMParams, GRUParams or ElmanParams, got {type(params).__name__}")
    i_size = params.w_in.shape[1]
    if params.w_rec.shape != (params.w_in.shape[0], h):
        raise ValueError(f"params.w_rec: expected shape {(params.w_in.shape[0], h)}, got {tuple(params.w_rec.shape)}")
    dtype = params.w_in.dtype

    if flax_cell is None:
        if kind == "lstm":
            flax_cell = nn.LSTMCell(features=h, param_dtype=dtype, **_cell_gate_functions(cell))
        elif kind == "gru":
            flax_cell = nn.GRUCell(features=h, param_dtype=dtype, **_cell_gate_functions(cell))
        else:
            fn = {"tanh": nn.tanh, "relu": nn.relu, "linear": _identity}[act]
            flax_cell = nn.SimpleCell(features=h, activation_fn=fn, param_dtype=dtype)

    if isinstance(flax_cell, nn.Module):
        want = {"lstm": (nn.LSTMCell, nn.OptimizedLSTMCell), "gru": (nn.GRUCell,), "elman": (nn.SimpleCell,)}[kind]
        if not isinstance(flax_cell, want):
            names = " or ".join(c.__name__ for c in want)
            raise TypeError(f"flax_cell: expected {names} for {kind} params, got {type(flax_cell).__name__}")
        if flax_cell.features != h:
            raise ValueError(f"flax_cell.features: expected {h} (the hidden size of params), got {flax_cell.features}")
        _check_target_functions(flax_cell, cell, kind, act if kind == "elman" else None)
        return flax_cell, {"params": _linen_tree(kind, params, h)}
    if isinstance(flax_cell, nnx.Module):
        return _to_nnx(kind, params, h, i_size, flax_cell, act if kind == "elman" else None, cell)
    raise TypeError(f"flax_cell: expected a flax.linen or flax.nnx cell, got {type(flax_cell).__name__}")


def _check_target_functions(flax_cell, cell, kind, act):
    if kind == "elman":
        _check_simple_target(flax_cell, act)
    else:
        _check_gate_functions(flax_cell, _cell_gate_functions(cell))


def _check_simple_target(flax_cell, act):
    if flax_cell.residual:
        raise ValueError("flax_cell.residual: expected False (rnnjax's Elman cell has no residual term)")
    got = _activation_name(flax_cell.activation_fn, "flax_cell.activation_fn", ("tanh", "relu", "linear"))
    if got != act:
        raise ValueError(f"flax_cell.activation_fn: expected {act} (the cell's activation), got {got}")


def _linen_tree(kind, p, h):
    if kind == "lstm":
        b = _fold(p.b, p.b_rec)
        tree = {}
        for j, g in enumerate("ifgo"):
            rows = slice(j * h, (j + 1) * h)
            tree[f"i{g}"] = {"kernel": p.w_in[rows].T}
            tree[f"h{g}"] = {"kernel": p.w_rec[rows].T, "bias": b[rows]}
        return tree
    if kind == "gru":
        tree = {}
        for j, g in enumerate("rzn"):
            rows = slice(j * h, (j + 1) * h)
            b_i = p.b[rows] if g == "n" else p.b[rows] + p.b_rec[rows]
            tree[f"i{g}"] = {"kernel": p.w_in[rows].T, "bias": b_i}
            tree[f"h{g}"] = {"kernel": p.w_rec[rows].T}
        tree["hn"]["bias"] = p.b_rec[2 * h :]
        return tree
    return {"i": {"kernel": p.w_in.T, "bias": _fold(p.b, p.b_rec)}, "h": {"kernel": p.w_rec.T}}


def _to_nnx(kind, p, h, i_size, target, act, cell):
    from flax import nnx

    want = {"lstm": (nnx.LSTMCell, nnx.OptimizedLSTMCell), "gru": (nnx.GRUCell,), "elman": (nnx.SimpleCell,)}[kind]
    if not isinstance(target, want):
        names = " or ".join(c.__name__ for c in want)
        raise TypeError(f"flax_cell: expected nnx {names} for {kind} params, got {type(target).__name__}")
    if (target.in_features, target.hidden_features) != (i_size, h):
        raise ValueError(
            f"flax_cell: expected in_features={i_size}, hidden_features={h} (from params), "
            f"got {target.in_features}, {target.hidden_features}"
        )
    _check_target_functions(target, cell, kind, act)
    m = nnx.clone(target)

    def put(var, value):
        var[...] = jnp.asarray(value, var[...].dtype)

    if kind == "lstm":
        b = _fold(p.b, p.b_rec)
        if isinstance(m, nnx.OptimizedLSTMCell):
            put(m.dense_i.kernel, p.w_in.T)
            put(m.dense_h.kernel, p.w_rec.T)
            put(m.dense_h.bias, b)
        else:
            for j, (a_in, a_h) in enumerate(zip(("ii", "if_", "ig", "io"), ("hi", "hf", "hg", "ho"))):
                rows = slice(j * h, (j + 1) * h)
                put(getattr(m, a_in).kernel, p.w_in[rows].T)
                put(getattr(m, a_h).kernel, p.w_rec[rows].T)
                put(getattr(m, a_h).bias, b[rows])
    elif kind == "gru":
        b_hn = np.asarray(p.b_rec[2 * h :])
        if np.any(b_hn != 0):
            raise ValueError(
                "params.b_rec: flax.nnx.GRUCell has no slot for PyTorch's b_hn (b_rec[2H:], inside the reset "
                f"gate's product); got max |b_hn| = {float(np.max(np.abs(b_hn))):.3g}. Use flax.linen.GRUCell, "
                "which holds it as the hn bias"
            )
        put(m.dense_i.kernel, p.w_in.T)
        put(m.dense_h.kernel, p.w_rec.T)
        put(m.dense_i.bias, jnp.concatenate([p.b[: 2 * h] + p.b_rec[: 2 * h], p.b[2 * h :]]))
    else:
        put(m.dense_i.kernel, p.w_in.T)
        put(m.dense_h.kernel, p.w_rec.T)
        put(m.dense_i.bias, _fold(p.b, p.b_rec))
    return m, nnx.state(m, nnx.Param)


def carry_from_flax(carry):
    """A Flax carry as an rnnjax carry: an LSTM's ``(c, h)`` becomes ``LSTMState(h, c)``; others unchanged."""
    if isinstance(carry, tuple) and not isinstance(carry, LSTMState) and len(carry) == 2:
        c, h = carry
        return LSTMState(h, c)
    return carry


def carry_to_flax(carry):
    """An rnnjax carry as a Flax carry: ``LSTMState(h, c)`` becomes ``(c, h)``; others unchanged."""
    if isinstance(carry, LSTMState):
        return (carry.c, carry.h)
    return carry


# ---------------------------------------------------------------- carries of the Flax front ends


def _batched_spec(cell: Cell, batch: tuple[int, ...]):
    expected = v._expected_carry(cell)
    return jax.tree.map(lambda c: jax.ShapeDtypeStruct(batch + tuple(c.shape), c.dtype), expected)


def _layout(tree) -> str:
    return v._describe(tree).replace("'", "")


def check_front_end_carry(cell: Cell, carry, batch: tuple[int, ...]) -> None:
    """Raise a one-line error unless ``carry`` is ``cell.initial_carry()`` with leading axes ``batch``.

    Runs at trace time (structure and shapes are static). The message names
    the expected rnnjax layout and ``carry_from_flax``, which turns a Flax
    carry (an LSTM's ``(c, h)``) into it.
    """
    if v._expected_carry(cell) is None:
        return
    expected = _batched_spec(cell, tuple(batch))
    if v._same_layout(expected, carry):
        return
    err = TypeError if jax.tree.structure(expected) != jax.tree.structure(carry) else ValueError
    raise err(
        f"carry: expected the rnnjax carry of cell {cell.name!r} for batch {tuple(batch)}, "
        f"{_layout(expected)}, got {_layout(carry)}; convert a Flax carry (an LSTM's (c, h)) "
        "with rnnjax.interop.carry_from_flax"
    )


def front_end_carry(cell: Cell, input_shape, carry_init, keys) -> Any:
    """The carry of ``cell`` for inputs ``input_shape (*batch, input_size)``, as Flax's cells make it.

    Args:
      cell: an rnnjax cell.
      input_shape: the shape of one step's input; the carry gets its leading axes.
      carry_init: None (``cell.initial_carry()``, broadcast) or a Flax/JAX
        initialiser ``carry_init(key, shape, dtype)`` applied to every carry
        leaf in the leaf's dtype.
      keys: ``keys(n) -> n PRNG keys``, called once with the number of carry
        leaves (also without ``carry_init``, so a stream advances as Flax's
        cells advance it); None only without ``carry_init``. The keys go to
        the leaves in Flax's order (an LSTM's ``c`` first, then ``h``), so a
        Flax cell with the same initialiser and keys makes the same carry
        (after ``carry_from_flax``).

    Returns:
      The batched rnnjax carry.
    """
    if not isinstance(input_shape, (tuple, list)) or not input_shape or not all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) for d in input_shape
    ):
        raise TypeError(f"input_shape: expected a tuple of ints (*batch, {cell.input_size}), got {input_shape!r}")
    if input_shape[-1] != cell.input_size:
        raise ValueError(
            f"input_shape: expected (*batch, {cell.input_size}) for cell {cell.name!r}, got {tuple(input_shape)}"
        )
    if carry_init is not None and not callable(carry_init):
        raise TypeError(f"carry_init: expected an initializer carry_init(key, shape, dtype), got {carry_init!r}")
    base = batched_carry(cell, tuple(input_shape))
    leaves, treedef = jax.tree.flatten(carry_to_flax(base))
    drawn = None if keys is None else keys(len(leaves))
    if carry_init is None:
        return base
    filled = [jnp.asarray(carry_init(k, leaf.shape, leaf.dtype), leaf.dtype) for k, leaf in zip(drawn, leaves)]
    for got, leaf in zip(filled, leaves):
        if got.shape != leaf.shape:
            raise ValueError(f"carry_init: expected an array of shape {leaf.shape}, got {got.shape}")
    flax_carry = jax.tree.unflatten(treedef, filled)
    return LSTMState(flax_carry[1], flax_carry[0]) if isinstance(base, LSTMState) else flax_carry
