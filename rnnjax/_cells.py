"""Recurrent cells as named tuples of pure functions.

A cell is unbatched: ``step`` maps one carry and one input vector to the next
carry and an output vector. Batch with ``jax.vmap``; unroll over time with
``rnnjax.unroll`` (``jax.lax.scan``). Weight matrices use PyTorch's layout
``(out, in)`` and gate order, so PyTorch weights load without reshuffling.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import initializers as inits

Params = Any
Carry = Any
Weights = Any


class Parametrization(NamedTuple):
    """How a cell's step weights are derived from its parameters, once per unroll.

    Attributes:
      prepare: ``prepare(params) -> weights``: the weights the step reads
        (e.g. an orthogonal ``expm(a - a.T)`` from an unconstrained ``a``, or a
        clipped recurrent vector). ``rnnjax.unroll`` calls it once, outside the
        ``jax.lax.scan``, so its cost is paid once per sequence (once per batch
        under ``jax.vmap`` with shared params) and ``jax.grad`` flows through it.
      step: ``step(weights, carry, x) -> (carry, y)``, the cell's step on
        prepared weights. The cell's own ``step(params, carry, x)`` must equal
        ``step(prepare(params), carry, x)`` (``parametrized_cell`` builds it so).
    """

    prepare: Callable[[Params], Weights]
    step: Callable[[Weights, Carry, jax.Array], tuple[Carry, jax.Array]]


class Cell(NamedTuple):
    """A recurrent cell: three pure functions and its sizes.

    Attributes:
      init: ``init(key) -> params``, a named pytree of arrays.
      initial_carry: ``initial_carry() -> carry``, the unbatched zero state.
      step: ``step(params, carry, x) -> (carry, y)`` with ``x: (input_size,)``,
        ``y: (output_size,)``; carry first, as ``jax.lax.scan`` wants, so
        ``functools.partial(cell.step, params)`` is a scan body.
      input_size: width of ``x``.
      output_size: width of ``y``.
      name: a short label used by diagnostics and the command line.
      linear_recurrence: optional, for cells whose carry obeys an elementwise
        linear recurrence ``h_t = a_t * h_{t-1} + b_t`` with ``(a_t, b_t)``
        depending on ``x_t`` only (LRU, minGRU, minLSTM):
        ``linear_recurrence(params, xs) -> (a, b, readout)`` with
        ``xs: (T, input_size)``; ``a`` and ``b`` are pytrees with the carry's
        structure whose leaves are ``(T,) + carry_leaf.shape`` (real or
        complex, multiplied elementwise); ``readout(params, hs, xs) -> ys``
        maps the stacked carries ``hs`` (``hs[t]`` = carry after step t) to
        ``ys: (T, output_size)``, and must agree with ``step``:
        ``step(params, h_{t-1}, xs[t]) == (hs[t], ys[t])``. It enables
        ``unroll(..., method="associative")``; it reads the raw ``params``.
      parametrization: optional ``Parametrization(prepare, step)`` for cells
        whose step weights are a function of the parameters worth computing
        once per unroll (expRNN's ``expm``, IndRNN's clip): ``step`` stays
        correct on raw params, and ``rnnjax.unroll``, the layers and
        ``rnnjax.gradflow`` run ``parametrization.step`` on
        ``parametrization.prepare(params)`` instead. Build such a cell with
        ``rnnjax.parametrized_cell``; ``rnnjax.prepare(cell, params)`` gives the
        prepared form for a loop of your own. A wrapper that replaces ``step``
        must wrap ``parametrization.step`` alike (or set it to None), or the
        unroll runs the unwrapped step.
    """

    init: Callable[[jax.Array], Params]
    initial_carry: Callable[[], Carry]
    step: Callable[[Params, Carry, jax.Array], tuple[Carry, jax.Array]]
    input_size: int
    output_size: int
    name: str = "cell"
    linear_recurrence: Callable | None = None
    parametrization: Parametrization | None = None


def parametrized_cell(
    init: Callable[[jax.Array], Params],
    initial_carry: Callable[[], Carry],
    prepare: Callable[[Params], Weights],
    step: Callable[[Weights, Carry, jax.Array], tuple[Carry, jax.Array]],
    input_size: int,
    output_size: int,
    name: str = "cell",
    linear_recurrence: Callable | None = None,
) -> Cell:
    """A ``Cell`` whose step reads weights derived from its params once per unroll.

    ``cell.step(params, carry, x) == step(prepare(params), carry, x)``, so
    every caller of ``cell.step`` stays right; ``rnnjax.unroll`` (every
    ``method``, ``remat``, ``length``, ``reverse``, the fast backward),
    ``rnnjax.stack``, the layers and ``rnnjax.gradflow`` call ``prepare`` once
    and scan ``step``. Gradients flow through ``prepare``: optimise the raw
    params, and the constraint it imposes holds after any update.

    Example (an Elman cell whose recurrent matrix is always orthogonal)::

        def prepare(p):
            return p._replace(w_rec=jax.scipy.linalg.expm(p.w_rec - p.w_rec.T))

        def step(w, h, x):
            h = jnp.tanh(w.w_in @ x + w.w_rec @ h + w.b)
            return h, h

        base = rnnjax.elman(3, 16)
        cell = rnnjax.parametrized_cell(base.init, base.initial_carry, prepare, step, 3, 16, "orth-elman")

    Args:
      init: ``init(key) -> params`` (raw, what the optimiser updates).
      initial_carry: ``initial_carry() -> carry``.
      prepare: ``prepare(params) -> weights``, a pure JAX function of the params only.
      step: ``step(weights, carry, x) -> (carry, y)``.
      input_size, output_size, name, linear_recurrence: as in ``Cell``
        (``linear_recurrence`` reads the raw params).

    Returns:
      A ``Cell`` with ``parametrization=Parametrization(prepare, step)``.
    """
    for arg, fn in (("prepare", prepare), ("step", step)):
        if not callable(fn):
            raise TypeError(f"{arg}: expected a callable, got {fn!r}")

    def raw_step(params, carry, x):
        return step(prepare(params), carry, x)

    return Cell(init, initial_carry, raw_step, input_size, output_size, name, linear_recurrence,
                Parametrization(prepare, step))


def _build_step_cell(cell: Cell) -> Cell:
    par = cell.parametrization

    def init(key):
        return par.prepare(cell.init(key))

    # The prepared cell's "params" are the weights; linear_recurrence reads raw params, so it is dropped.
    return cell._replace(init=init, step=par.step, linear_recurrence=None, parametrization=None)


@functools.lru_cache(maxsize=256)
def _cached_step_cell(cell: Cell) -> Cell:
    return _build_step_cell(cell)


def step_cell(cell: Cell) -> Cell:
    """The cell that steps on prepared weights (``cell`` itself without a parametrization).

    The same object for equal cells, so it can be a static ``jax.jit`` argument
    without retracing.
    """
    if cell.parametrization is None:
        return cell
    try:
        return _cached_step_cell(cell)
    except TypeError:  # an unhashable field: build it afresh
        return _build_step_cell(cell)


def prepare(cell: Cell, params: Params) -> tuple[Cell, Weights]:
    """``(step_cell, weights)``: a cell's step on prepared weights, for a loop of your own.

    ``step_cell.step(weights, carry, x) == cell.step(params, carry, x)`` with
    ``weights = cell.parametrization.prepare(params)`` computed here, once;
    ``step_cell`` has no parametrization (``step_cell.init(key)`` returns
    prepared weights). For a cell without a parametrization this is
    ``(cell, params)``. ``rnnjax.unroll`` does this itself.

    Example::

        step, w = rnnjax.prepare(cell, params)
        carry, ys = jax.lax.scan(functools.partial(step.step, w), step.initial_carry(), xs)

    Args:
      cell: a ``Cell``.
      params: its raw parameters (``cell.init(key)``).

    Returns:
      ``(step_cell, weights)``.
    """
    if cell.parametrization is None:
        return cell, params
    return step_cell(cell), cell.parametrization.prepare(params)


class ElmanParams(NamedTuple):
    """Elman cell parameters: ``w_in (H, I)``, ``w_rec (H, H)``, ``b (H,)``.

    ``b_rec (H,)`` exists only for cells built with ``recurrent_bias=True``
    (PyTorch keeps two biases for cuDNN; their sum is what matters).
    """

    w_in: jax.Array
    w_rec: jax.Array
    b: jax.Array
    b_rec: jax.Array | None = None


class LSTMParams(NamedTuple):
    """LSTM parameters in PyTorch's gate order i, f, g, o.

    ``w_in (4H, I)``, ``w_rec (4H, H)``, ``b (4H,)``; ``b_rec (4H,)`` only with
    ``recurrent_bias=True``. With ``proj_size=P`` (PyTorch's ``proj_size``,
    Sak et al. 2014), ``w_proj (P, H)`` maps ``o * tanh(c)`` to the hidden
    state ``h (P,)`` and ``w_rec`` is ``(4H, P)``; otherwise ``w_proj`` is None.
    """

    w_in: jax.Array
    w_rec: jax.Array
    b: jax.Array
    b_rec: jax.Array | None = None
    w_proj: jax.Array | None = None


class LSTMState(NamedTuple):
    """LSTM carry: hidden state ``h (H,)`` (``(P,)`` with a projection) and cell state ``c (H,)``."""

    h: jax.Array
    c: jax.Array


class GRUParams(NamedTuple):
    """GRU parameters in PyTorch's layout and gate order r, z, n.

    ``w_in (3H, I)``, ``w_rec (3H, H)``, ``b (3H,)`` (PyTorch ``bias_ih``) and
    ``b_rec (3H,)`` (``bias_hh``). The candidate's hidden bias ``b_rec[2H:]``
    sits inside the reset gate's product and cannot be folded into ``b``.
    """

    w_in: jax.Array
    w_rec: jax.Array
    b: jax.Array
    b_rec: jax.Array


def _relu_grad(a):
    return (a > 0).astype(a.dtype)


# name -> (phi, phi', sup |phi'|)
ACTIVATIONS: dict[str, tuple[Callable, Callable, float]] = {
    "tanh": (jnp.tanh, lambda a: 1.0 - jnp.tanh(a) ** 2, 1.0),
    "relu": (jax.nn.relu, _relu_grad, 1.0),
    "linear": (lambda a: a, jnp.ones_like, 1.0),
}


def _check_size(name: str, value) -> int:
    """``value`` as a Python int if it is a positive integer (Python or NumPy, not bool), else raise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def default_dtype() -> np.dtype:
    """JAX's default float dtype now: float64 under ``jax_enable_x64``, else float32 (as ``jnp.zeros``)."""
    return jax.dtypes.canonicalize_dtype(jnp.float64)


def _check_dtype(dtype):
    """A floating parameter dtype; ``None`` is JAX's default float dtype (``default_dtype()``), read now."""
    if dtype is None:
        return default_dtype()
    dtype = jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"dtype: expected a floating dtype (float32, float64, ...), got {dtype}")
    if dtype == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            "dtype: float64 needs 64-bit mode; call jax.config.update('jax_enable_x64', True) first"
        )
    return dtype


def _check_function(name: str, fn) -> Callable:
    if not callable(fn):
        raise TypeError(f"{name}: expected a callable acting elementwise on arrays (e.g. jnp.tanh), got {fn!r}")
    return fn


def _gated_cell(cell: Cell, gate_fn: Callable, activation_fn: Callable) -> Cell:
    cell.step._gate_functions = (gate_fn, activation_fn)  # read by gate_functions(cell)
    return cell


def gate_functions(cell: Cell) -> tuple[Callable, Callable] | None:
    """``(gate_fn, activation_fn)`` of a cell built by ``rnnjax.lstm`` or ``rnnjax.gru``, else None.

    Exporters read it: PyTorch's LSTM and GRU have no slot for other functions
    than the defaults ``(jax.nn.sigmoid, jnp.tanh)``; Flax's cells have.
    """
    return getattr(cell.step, "_gate_functions", None)


def _matvec(w, x):
    """``w @ x`` for ``w (out, in)``, written as ``x @ w.T``: under ``jax.vmap`` the batch stays the
    leading axis of the product (``(B, out)``, one plain GEMM per step) instead of becoming its last
    (``w @ x.T``, whose transposed layout costs XLA:CPU up to 20 % of a large-batch forward pass)."""
    return jax.lax.dot_general(x, w, (((x.ndim - 1,), (1,)), ((), ())))


def elman(
    input_size: int,
    hidden_size: int,
    *,
    activation: str = "tanh",
    in_init: inits.Initializer | None = None,
    rec_init: inits.Initializer | None = None,
    bias_init: inits.Initializer | None = None,
    recurrent_bias: bool = False,
    dtype=None,
    name: str | None = None,
) -> Cell:
    """Elman (vanilla) RNN: ``h' = phi(W_in x + W_rec h + b)``, ``y = h'``.

    Args:
      input_size: I, width of each input vector.
      hidden_size: H, width of the state.
      activation: ``"tanh"``, ``"relu"`` or ``"linear"`` (phi).
      in_init: initialiser of ``w_in (H, I)``; default LeCun normal.
      rec_init: initialiser of ``w_rec (H, H)``; default orthogonal (gain 1).
      bias_init: initialiser of ``b (H,)``; default zeros.
      recurrent_bias: also create ``b_rec`` (PyTorch's second bias).
      dtype: parameter and state dtype; default (None) JAX's default float
        dtype, float64 under ``jax_enable_x64``, else float32.
      name: label; defaults to ``"elman-<activation>"``.

    Returns:
      A ``Cell`` with ``ElmanParams`` and carry ``h: (H,)``.

    References:
      Elman, "Finding structure in time", Cognitive Science 1990.
    """
    input_size = _check_size("input_size", input_size)
    hidden_size = _check_size("hidden_size", hidden_size)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {sorted(ACTIVATIONS)}, got {activation!r}")
    dtype = _check_dtype(dtype)
    phi = ACTIVATIONS[activation][0]
    in_init = inits.lecun_normal() if in_init is None else in_init
    rec_init = inits.orthogonal() if rec_init is None else rec_init
    bias_init = inits.zeros() if bias_init is None else bias_init

    def init(key):
        k_in, k_rec, k_b = jax.random.split(key, 3)
        return ElmanParams(
            w_in=in_init(k_in, (hidden_size, input_size), dtype),
            w_rec=rec_init(k_rec, (hidden_size, hidden_size), dtype),
            b=bias_init(k_b, (hidden_size,), dtype),
            b_rec=jnp.zeros((hidden_size,), dtype) if recurrent_bias else None,
        )

    def initial_carry():
        return jnp.zeros((hidden_size,), dtype)

    def step(params, h, x):
        a = _matvec(params.w_in, x) + _matvec(params.w_rec, h) + params.b
        if params.b_rec is not None:
            a = a + params.b_rec
        h = phi(a)
        return h, h

    return Cell(init, initial_carry, step, input_size, hidden_size, name or f"elman-{activation}")


def irnn(
    input_size: int,
    hidden_size: int,
    *,
    gain: float = 1.0,
    input_scale: float = 0.001,
    dtype=None,
) -> Cell:
    """IRNN: ReLU Elman cell with ``W_rec = gain * I``, zero bias, small input weights.

    Args:
      input_size: I.
      hidden_size: H.
      gain: scale of the identity recurrent matrix.
      input_scale: standard deviation of the Gaussian input weights (the
        paper used 0.001).
      dtype: parameter and state dtype; default JAX's default float dtype.

    References:
      Le, Jaitly & Hinton, "A simple way to initialize recurrent networks of
      rectified linear units", arXiv:1504.00941, 2015.
    """
    return elman(
        input_size,
        hidden_size,
        activation="relu",
        in_init=inits.normal(inits.check_positive("input_scale", input_scale)),
        rec_init=inits.identity(inits.check_positive("gain", gain)),
        dtype=dtype,
        name="irnn",
    )


def lstm(
    input_size: int,
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    in_init: inits.Initializer | None = None,
    rec_init: inits.Initializer | None = None,
    bias_init: inits.Initializer | None = None,
    recurrent_bias: bool = False,
    proj_size: int | None = None,
    proj_init: inits.Initializer | None = None,
    gate_fn: Callable = jax.nn.sigmoid,
    activation_fn: Callable = jnp.tanh,
    dtype=None,
) -> Cell:
    """Long short-term memory cell (PyTorch's equations and gate order i, f, g, o).

    ``i, f, o = sigmoid(.)``, ``g = tanh(.)`` of ``W_in x + W_rec h + b``;
    ``c' = f * c + i * g``; ``h' = o * tanh(c')``; ``y = h'``. With
    ``proj_size=P``: ``h' = W_proj (o * tanh(c'))`` of width P (PyTorch's
    ``nn.LSTM(proj_size=P)``). ``gate_fn`` replaces sigmoid and
    ``activation_fn`` both tanh's, as in Flax's ``LSTMCell``.

    Args:
      input_size: I.
      hidden_size: H.
      forget_bias: added to the forget-gate bias at initialisation (1.0
        following Jozefowicz et al. 2015; with 0 the gate starts at 0.5).
      in_init: initialiser applied to each gate's ``(H, I)`` input block;
        default LeCun normal.
      rec_init: initialiser applied to each gate's ``(H, H)`` recurrent block;
        default orthogonal.
      bias_init: initialiser of the whole ``(4H,)`` bias, e.g.
        ``initializers.chrono(t_max)``; default zeros. ``forget_bias`` is added.
      recurrent_bias: also create ``b_rec`` (PyTorch's second bias).
      proj_size: P, width of a linear projection of the hidden state
        (``None``: no projection); must be smaller than ``hidden_size``, as in
        PyTorch.
      proj_init: initialiser of ``w_proj (P, H)``; default LeCun normal.
      gate_fn: elementwise function of the i, f, o gates; default
        ``jax.nn.sigmoid`` (Flax's ``gate_fn``).
      activation_fn: elementwise function of the candidate ``g`` and of
        ``c'`` in ``h'``; default ``jnp.tanh`` (Flax's ``activation_fn``).
        PyTorch has only the defaults: ``rnnjax.interop.to_torch`` refuses
        other functions.
      dtype: parameter and state dtype; default JAX's default float dtype.

    Returns:
      A ``Cell`` with ``LSTMParams`` and carry ``LSTMState(h, c)``;
      ``output_size`` is P with a projection, H otherwise.

    References:
      Hochreiter & Schmidhuber, Neural Computation 1997; Gers et al. 2000;
      Sak, Senior & Beaufays, "Long short-term memory recurrent neural network
      architectures for large scale acoustic modeling", Interspeech 2014 (projection).
    """
    input_size = _check_size("input_size", input_size)
    hidden_size = _check_size("hidden_size", hidden_size)
    if proj_size is not None:
        proj_size = _check_size("proj_size", proj_size)
        if proj_size >= hidden_size:
            raise ValueError(f"proj_size: expected a value smaller than hidden_size={hidden_size}, got {proj_size}")
    dtype = _check_dtype(dtype)
    gate_fn, act = _check_function("gate_fn", gate_fn), _check_function("activation_fn", activation_fn)
    in_init = inits.blockwise(inits.lecun_normal() if in_init is None else in_init, 4)
    rec_init = inits.blockwise(inits.orthogonal() if rec_init is None else rec_init, 4)
    bias_init = inits.zeros() if bias_init is None else bias_init
    proj_init = inits.lecun_normal() if proj_init is None else proj_init
    h_ = hidden_size
    p_ = hidden_size if proj_size is None else proj_size

    def init(key):
        k_in, k_rec, k_b = jax.random.split(key, 3)  # as without projection: same draws
        b = bias_init(k_b, (4 * h_,), dtype)
        b = b.at[h_ : 2 * h_].add(jnp.asarray(forget_bias, dtype))
        return LSTMParams(
            w_in=in_init(k_in, (4 * h_, input_size), dtype),
            w_rec=rec_init(k_rec, (4 * h_, p_), dtype),
            b=b,
            b_rec=jnp.zeros((4 * h_,), dtype) if recurrent_bias else None,
            w_proj=None if proj_size is None else proj_init(jax.random.fold_in(key, 4), (p_, h_), dtype),
        )

    def initial_carry():
        return LSTMState(jnp.zeros((p_,), dtype), jnp.zeros((h_,), dtype))

    def step(params, carry, x):
        z = _matvec(params.w_in, x) + _matvec(params.w_rec, carry.h) + params.b
        if params.b_rec is not None:
            z = z + params.b_rec
        i, f, g, o = jnp.split(z, 4)
        c = gate_fn(f) * carry.c + gate_fn(i) * act(g)
        h = gate_fn(o) * act(c)
        if params.w_proj is not None:
            h = _matvec(params.w_proj, h)
        return LSTMState(h, c), h

    # Read by rnnjax._cudnn: this step is cuDNN's LSTM exactly unless the blocker (last field) names why not.
    step._cudnn_lstm = (input_size, hidden_size, "proj_size" if proj_size is not None else
                        None if (gate_fn is jax.nn.sigmoid and act is jnp.tanh) else "gate_fn/activation_fn")
    return _gated_cell(Cell(init, initial_carry, step, input_size, p_, "lstm"), gate_fn, act)


def gru(
    input_size: int,
    hidden_size: int,
    *,
    in_init: inits.Initializer | None = None,
    rec_init: inits.Initializer | None = None,
    bias_init: inits.Initializer | None = None,
    gate_fn: Callable = jax.nn.sigmoid,
    activation_fn: Callable = jnp.tanh,
    dtype=None,
) -> Cell:
    """Gated recurrent unit in PyTorch's formulation (gate order r, z, n).

    ``r = sigmoid(W_ir x + b_ir + W_hr h + b_hr)``,
    ``z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)``,
    ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))``,
    ``h' = (1 - z) * n + z * h``; ``y = h'``. The reset gate multiplies after
    the hidden matmul, so PyTorch and Flax linen GRUs load exactly.
    ``gate_fn`` replaces sigmoid and ``activation_fn`` tanh, as in Flax's ``GRUCell``.

    Args:
      input_size: I.
      hidden_size: H.
      in_init: initialiser of each gate's ``(H, I)`` input block; default LeCun normal.
      rec_init: initialiser of each gate's ``(H, H)`` recurrent block; default orthogonal.
      bias_init: initialiser of ``b`` and ``b_rec`` (each ``(3H,)``); default zeros.
      gate_fn: elementwise function of the r and z gates; default ``jax.nn.sigmoid``.
      activation_fn: elementwise function of the candidate ``n``; default
        ``jnp.tanh``. PyTorch has only the defaults: ``rnnjax.interop.to_torch``
        refuses other functions.
      dtype: parameter and state dtype; default JAX's default float dtype.

    Returns:
      A ``Cell`` with ``GRUParams`` and carry ``h: (H,)``.

    References:
      Cho et al., "Learning phrase representations using RNN encoder-decoder", 2014.
    """
    input_size = _check_size("input_size", input_size)
    hidden_size = _check_size("hidden_size", hidden_size)
    dtype = _check_dtype(dtype)
    gate_fn, act = _check_function("gate_fn", gate_fn), _check_function("activation_fn", activation_fn)
    in_init = inits.blockwise(inits.lecun_normal() if in_init is None else in_init, 3)
    rec_init = inits.blockwise(inits.orthogonal() if rec_init is None else rec_init, 3)
    bias_init = inits.zeros() if bias_init is None else bias_init
    h_ = hidden_size

    def init(key):
        k_in, k_rec, k_b, k_br = jax.random.split(key, 4)
        return GRUParams(
            w_in=in_init(k_in, (3 * h_, input_size), dtype),
            w_rec=rec_init(k_rec, (3 * h_, h_), dtype),
            b=bias_init(k_b, (3 * h_,), dtype),
            b_rec=bias_init(k_br, (3 * h_,), dtype),
        )

    def initial_carry():
        return jnp.zeros((h_,), dtype)

    def step(params, h, x):
        gi = _matvec(params.w_in, x) + params.b
        gh = _matvec(params.w_rec, h) + params.b_rec
        i_r, i_z, i_n = jnp.split(gi, 3)
        h_r, h_z, h_n = jnp.split(gh, 3)
        r = gate_fn(i_r + h_r)
        z = gate_fn(i_z + h_z)
        n = act(i_n + r * h_n)
        h = (1.0 - z) * n + z * h
        return h, h

    return _gated_cell(Cell(init, initial_carry, step, input_size, hidden_size, "gru"), gate_fn, act)


def torch_init(cell_factory: Callable[..., Cell], input_size: int, hidden_size: int, **kwargs) -> Cell:
    """Build a cell with PyTorch's default initialisation (every tensor U(+-1/sqrt(H))).

    Example: ``torch_init(rnnjax.lstm, 3, 64, forget_bias=0.0)`` (PyTorch adds
    no forget bias, so pass ``forget_bias=0.0`` for an exact match in distribution).
    """
    u = inits.torch_uniform(hidden_size)
    return cell_factory(input_size, hidden_size, in_init=u, rec_init=u, bias_init=u, **kwargs)

