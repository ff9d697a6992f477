"""Gradient flow through time: per-step gradient norms, step Jacobians, Lyapunov exponents.

Every function here works for any ``rnnjax.Cell``, whatever its carry: an
array, a tuple such as ``LSTMState(h, c)``, or any pytree, real or complex.
The carry is seen as one real vector ``c`` (leaves raveled in pytree order;
a complex leaf contributes its real parts, then its imaginary parts), so a
"norm over the carry" is the Euclidean norm over every leaf together and a
step Jacobian ``dc_{t+1}/dc_t`` is a real ``(n, n)`` matrix, ``n`` the number
of real numbers in the carry.

A stack (``rnnjax.stack``) is one cell whose carry holds every layer's.
``hidden_grad_norms`` also takes a ``Layer`` (``bidirectional``,
``sequential``) and reports its forward and backward passes apart; the
step-based functions need one direction's cell.

Conventions: ``c_t`` is the carry *entering* step ``t`` (``c_0`` is the
initial carry) and ``(c_{t+1}, y_t) = cell.step(params, c_t, xs[t])``.

References:
  Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent neural
  networks", ICML 2013 (eq. 5, Sec. 3; Alg. 1 for clipping).
  Engelken, Wolf & Abbott, "Lyapunov spectra of chaotic recurrent neural
  networks", arXiv:2006.02427 (QR method).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import _validate as v
from rnnjax._carry import carry_size, flatten_carry  # re-exported: the carry coordinates used here
from rnnjax._cells import ACTIVATIONS, Cell, ElmanParams, GRUParams, LSTMParams, prepare
from rnnjax._layers import Layer, backward_leaves
from rnnjax._longmemory import AntisymmetricWeights, CoRNNParams, ExpRNNWeights, IndRNNParams

__all__ = [
    "BlockDiagnostics",
    "RecurrentDiagnostics",
    "carry_grad_norms",
    "carry_size",
    "decay_rate",
    "flatten_carry",
    "hidden_grad_norms",
    "jacobian_product_norms",
    "jacobian_singular_values",
    "lyapunov_spectrum",
    "memory_horizon",
    "recurrent_diagnostics",
    "step_jacobians",
    "summary_dict",
]

SIGMOID_GAMMA = 0.25  # sup |sigmoid'| = 1/4


def _check_step_cell(cell, fn: str) -> None:
    if isinstance(cell, Layer):
        raise TypeError(
            f"cell: {fn} follows one Cell's step and a Layer has none; pass one direction's cell and params "
            "(e.g. the forward cell of rnnjax.bidirectional(forward) with params.forward), or use rnnjax.stack "
            "for depth"
        )
    v.check_cell(cell)


def _prepare(cell, params, xs, carry, fn: str):
    """Validate and promote: ``xs`` and real carry leaves to one float dtype (a ``Layer`` for ``hidden_grad_norms``)."""
    if isinstance(cell, Layer) and fn == "hidden_grad_norms":
        xs = jnp.asarray(xs)
        if xs.ndim != 2 or xs.shape[1] != cell.input_size or not jnp.issubdtype(xs.dtype, jnp.floating):
            raise ValueError(
                f"xs: expected floats of shape (time, {cell.input_size}) for one sequence, got {xs.dtype}{xs.shape}"
            )
        carry = cell.initial_carry() if carry is None else carry
    else:
        _check_step_cell(cell, fn)
        v.check_params(cell, params)
        xs = v.check_xs(cell, xs)
        carry = cell.initial_carry() if carry is None else v.check_carry(cell, carry)

    def real_dtype(x):
        d = jnp.result_type(x)
        return jnp.finfo(d).dtype if jnp.issubdtype(d, jnp.complexfloating) else d

    dtype = jnp.result_type(xs.dtype, *[real_dtype(p) for p in jax.tree.leaves(params) + jax.tree.leaves(carry)])

    def cast(c):
        c = jnp.asarray(c)
        if jnp.iscomplexobj(c):
            return c.astype(jnp.result_type(dtype, jnp.complex64))
        return c.astype(dtype)

    return xs.astype(dtype), jax.tree.map(cast, carry)


def _sq_norm(tree, axis_from: int = 0):
    """Sum of |leaf|^2 over all leaves, over axes >= ``axis_from``."""
    total = 0.0
    for leaf in jax.tree.leaves(tree):
        sq = jnp.abs(leaf) ** 2
        total = total + jnp.sum(sq, axis=tuple(range(axis_from, sq.ndim)))
    return total


def carry_grad_norms(grads: Any, backward: Any = None) -> jax.Array:
    """Per-step Euclidean norms of carry gradients, per direction when some leaves run backwards.

    Args:
      grads: a carry-like pytree with leaves ``(time,) + leaf.shape`` (real or complex).
      backward: a pytree of bools shaped like the carry (``Layer.backward_carry``),
        True on the leaves of backward passes; None: all forward.

    Returns:
      ``(time,)`` over every leaf, or ``(2, time)`` (forward leaves, backward
      leaves) when ``backward`` marks any leaf.
    """
    marks = jax.tree.leaves(backward) if backward is not None else []
    if not any(marks):
        return jnp.sqrt(_sq_norm(grads, axis_from=1))
    leaves = jax.tree.leaves(grads)
    if len(marks) != len(leaves):
        raise ValueError(f"backward: expected one flag per carry leaf ({len(leaves)}), got {len(marks)}")
    fwd = [g for g, b in zip(leaves, marks) if not b]
    bwd = [g for g, b in zip(leaves, marks) if b]
    zero = jnp.zeros(leaves[0].shape[:1], jnp.finfo(leaves[0].dtype).dtype)
    return jnp.sqrt(jnp.stack([_sq_norm(fwd, 1) + zero, _sq_norm(bwd, 1) + zero]))


# ---------------------------------------------------------------------------
# 1. Per-step gradient norms in one backward pass.


def hidden_grad_norms(
    cell: Cell,
    params: Any,
    xs: jax.Array,
    loss_fn: Callable[[Any], jax.Array],
    carry: Any = None,
) -> jax.Array:
    """Norms of the loss gradient with respect to every carry, in one backward pass.

    ``norms[t] = ||dL/dc_t||`` where ``c_t`` is the carry entering step ``t``
    (``c_0`` the initial carry) and the norm is Euclidean over the whole carry
    pytree (``sqrt(||dL/dh_t||^2 + ||dL/dc_t||^2)`` for an LSTM; every layer of
    an ``rnnjax.stack``). A zero perturbation ``delta_t`` is added to the carry
    before each step inside the scan; ``dL/d delta_t = dL/dc_t``, so one
    ``jax.grad`` gives every step.

    Args:
      cell: any ``Cell``, or a ``Layer`` (``layer``, ``bidirectional``,
        ``sequential``: the carries of all its layers at step ``t`` together,
        per direction; dropout off).
      params: its parameters.
      xs: ``(time, input_size)``, one sequence.
      loss_fn: ``loss_fn(ys) -> scalar`` with ``ys: (time, output_size)`` the
        cell outputs (close over targets and a readout as needed).
      carry: initial carry; default ``cell.initial_carry()``.

    Returns:
      ``norms: (time,)``, real; for a ``Layer`` with backward passes
      (``bidirectional``) ``(2, time)``: forward carries, then backward ones
      (whose ``c_t`` is the carry that reads ``xs[t]``). Pure and jittable. Called eagerly it compiles
      once per ``(cell, loss_fn)`` pair (both are static): reuse the same
      ``loss_fn`` object, or call it inside your own ``jax.jit``, when
      monitoring repeatedly.

    References:
      Pascanu, Mikolov & Bengio, ICML 2013, eq. 5.
    """
    xs, carry = _prepare(cell, params, xs, carry, "hidden_grad_norms")
    try:
        hash(loss_fn)
    except TypeError:  # an unhashable callable cannot be a static jit argument: run un-jitted
        return _hidden_grad_norms_impl(cell, loss_fn, params, xs, carry)
    return _hidden_grad_norms(cell, loss_fn, params, xs, carry)


def _hidden_grad_norms_impl(cell, loss_fn, params, xs, carry):
    time = xs.shape[0]
    deltas = jax.tree.map(lambda c: jnp.zeros((time,) + c.shape, c.dtype), carry)
    stepper, weights = (None, None) if isinstance(cell, Layer) else prepare(cell, params)  # once, outside the scan

    def body(c, inp):
        x, d = inp
        c = jax.tree.map(jnp.add, c, d)
        return stepper.step(weights, c, x)

    def loss_of_deltas(deltas):
        if isinstance(cell, Layer):
            ys = cell.apply(params, xs, carry, deltas=deltas)[1]
        else:
            ys = jax.lax.scan(body, carry, (xs, deltas))[1]
        loss = loss_fn(ys)
        if jnp.ndim(loss) != 0:
            raise ValueError(f"loss_fn: expected a scalar loss, got shape {jnp.shape(loss)}")
        return jnp.real(loss)

    grads = jax.grad(loss_of_deltas)(deltas)
    return carry_grad_norms(grads, backward_leaves(cell))


_hidden_grad_norms = jax.jit(_hidden_grad_norms_impl, static_argnums=(0, 1))


# ---------------------------------------------------------------------------
# 2. Step Jacobians, their singular values and products.


def _flat_step(cell, params, unflatten):
    """The step on flat carries; a parametrised cell's weights are prepared here, once (outside any scan)."""
    stepper, weights = prepare(cell, params)

    def f(vec, x):
        new, _ = stepper.step(weights, unflatten(vec), x)
        return flatten_carry(new)[0]

    return f


def step_jacobians(cell: Cell, params: Any, xs: jax.Array, carry: Any = None) -> jax.Array:
    """Jacobians ``J_t = dc_{t+1}/dc_t`` along the trajectory driven by ``xs``.

    Args:
      cell, params: a cell and its parameters.
      xs: ``(time, input_size)``.
      carry: initial carry; default ``cell.initial_carry()``.

    Returns:
      ``jacs: (time, n, n)`` real, ``n = carry_size(cell)``, in the flat carry
      coordinates of ``flatten_carry``. Computed with ``jax.jacfwd`` inside a
      scan; pure and jittable.
    """
    xs, carry = _prepare(cell, params, xs, carry, "step_jacobians")
    return _step_jacobians(cell, params, xs, carry)


@functools.partial(jax.jit, static_argnums=0)
def _step_jacobians(cell, params, xs, carry):
    vec, unflatten = flatten_carry(carry)
    f = _flat_step(cell, params, unflatten)

    def body(c, x):
        return f(c, x), jax.jacfwd(f)(c, x)

    _, jacs = jax.lax.scan(body, vec, xs)
    return jacs


def jacobian_singular_values(jacs: jax.Array) -> jax.Array:
    """Singular values of each step Jacobian, descending.

    Args:
      jacs: ``(time, n, n)`` from ``step_jacobians``.

    Returns:
      ``(time, n)``.
    """
    jacs = _check_jacs(jacs)
    return jnp.linalg.svd(jacs, compute_uv=False)


def _check_jacs(jacs):
    jacs = jnp.asarray(jacs)
    if jacs.ndim != 3 or jacs.shape[1] != jacs.shape[2]:
        raise ValueError(f"jacs: expected shape (time, n, n) from step_jacobians, got {tuple(jacs.shape)}")
    return jacs


def _renorm_product(mats, left: bool):
    """log ||prod|| of a sequence of matrices, as running renormalised products.

    ``left=True`` accumulates ``P <- P @ M_i`` (matrices applied to the right);
    returns the log spectral norm after each factor, ``(len(mats),)``.
    """
    n = mats.shape[-1]

    def body(state, m):
        p, log_scale = state
        q = p @ m if left else m @ p
        nrm = jnp.linalg.norm(q, ord=2)
        safe = jnp.where(nrm > 0, nrm, 1.0)
        log_now = log_scale + jnp.log(nrm)
        return (q / safe, log_now), log_now

    init = (jnp.eye(n, dtype=mats.dtype), jnp.zeros((), mats.dtype))
    _, logs = jax.lax.scan(body, init, mats)
    return logs


def jacobian_product_norms(jacs: jax.Array, span: int | None = None, *, log: bool = False) -> jax.Array:
    """Spectral norms of products of step Jacobians.

    Products are accumulated with a running renormalisation, so their logs
    stay finite where the products themselves would overflow or underflow.

    Args:
      jacs: ``(time, n, n)`` from ``step_jacobians`` (``jacs[t] = dc_{t+1}/dc_t``).
      span: ``None``: ``norms[t] = ||dc_T/dc_t|| = ||J_{T-1} ... J_t||`` for
        ``t = 0..T-1`` (how a perturbation of ``c_t`` reaches the end, the
        factor in the gradient of a loss on the last step). An integer ``s``:
        ``norms[t] = ||dc_{t+s}/dc_t|| = ||J_{t+s-1} ... J_t||`` for
        ``t = 0..T-s``.
      log: return natural logs of the norms.

    Returns:
      ``(time,)`` for ``span=None``, ``(time - span + 1,)`` otherwise.
    """
    jacs = _check_jacs(jacs)
    time = jacs.shape[0]
    if span is None:
        # P_t = P_{t+1} J_t, P_T = I: walk backwards, multiplying on the right.
        logs = _renorm_product(jacs[::-1], left=True)[::-1]
    else:
        if isinstance(span, bool) or not isinstance(span, int) or not 1 <= span <= time:
            raise ValueError(f"span: expected an integer in [1, {time}] (the number of steps), got {span!r}")
        windows = jnp.stack([jacs[s : time - span + 1 + s] for s in range(span)], axis=1)  # (W, span, n, n)
        # ||J_{t+s-1} ... J_t||: multiply new factors on the left.
        logs = jax.vmap(lambda w: _renorm_product(w, left=False)[-1])(windows)
    return logs if log else jnp.exp(logs)


def decay_rate(norms: jax.Array, *, start: int = 0, stop: int | None = None) -> jax.Array:
    """Per-step decay rate: least-squares slope of ``log norms[t]`` against ``t``.

    With ``norms = hidden_grad_norms(...)`` and a loss late in the sequence, a
    positive rate means the gradient shrinks by ``exp(-rate)`` per step back in
    time (vanishing); a negative rate means it grows (exploding). For the
    linear network ``W = g Q`` the rate is ``-log g``. Zero and non-finite
    norms are left out of the fit.

    Args:
      norms: ``(time,)``.
      start, stop: fit over ``norms[start:stop]``.

    Returns:
      Scalar slope (nats per step); NaN when fewer than two norms are usable.
    """
    norms = jnp.asarray(norms)
    if norms.ndim != 1:
        raise ValueError(f"norms: expected shape (time,), got {tuple(norms.shape)}")
    norms = norms[start:stop]
    t = jnp.arange(norms.shape[0], dtype=jnp.result_type(norms.dtype, jnp.float32))
    ok = jnp.isfinite(norms) & (norms > 0)
    y = jnp.log(jnp.where(ok, norms, 1.0))
    w = ok.astype(t.dtype)
    count = jnp.sum(w)
    t_mean = jnp.sum(w * t) / jnp.maximum(count, 1)
    y_mean = jnp.sum(w * y) / jnp.maximum(count, 1)
    cov = jnp.sum(w * (t - t_mean) * (y - y_mean))
    var = jnp.sum(w * (t - t_mean) ** 2)
    return jnp.where((count >= 2) & (var > 0), cov / jnp.where(var > 0, var, 1.0), jnp.nan)


def memory_horizon(norms: jax.Array, fraction: float = 0.01) -> jax.Array:
    """Effective memory horizon: steps back from the end until the gradient falls below a fraction.

    ``horizon = min{k >= 1 : norms[T-1-k] < fraction * norms[T-1]}``; when the
    gradient never falls that far (including exploding profiles) the result is
    ``T`` (read it as "at least T").

    Args:
      norms: ``(time,)``, e.g. from ``hidden_grad_norms`` with a loss on the last output.
      fraction: threshold relative to the last step's norm, in (0, 1).

    Returns:
      Integer scalar in ``[1, T]``.
    """
    norms = jnp.asarray(norms)
    if norms.ndim != 1 or norms.shape[0] < 1:
        raise ValueError(f"norms: expected shape (time,) with time >= 1, got {tuple(norms.shape)}")
    if not 0 < fraction < 1:
        raise ValueError(f"fraction: expected a number in (0, 1), got {fraction}")
    time = norms.shape[0]
    back = norms[::-1][1:]  # norms[T-2], norms[T-3], ... (k = 1, 2, ...)
    below = back < fraction * norms[-1]
    first = jnp.argmax(below)
    return jnp.where(jnp.any(below), first + 1, time)


# ---------------------------------------------------------------------------
# 3. Lyapunov spectrum by QR.


def lyapunov_spectrum(
    cell: Cell,
    params: Any,
    xs: jax.Array,
    *,
    k: int | None = None,
    transient: int = 0,
    carry: Any = None,
    key: jax.Array | None = None,
) -> jax.Array:
    """The ``k`` largest Lyapunov exponents of the trajectory driven by ``xs`` (QR method).

    ``Q_0`` is a random ``(n, k)`` orthonormal frame; each step
    ``Q_t R_t = qr(J_t Q_{t-1})`` (``J_t Q`` by ``k`` Jacobian-vector products,
    never the full Jacobian), with signs fixed so that ``diag(R_t) >= 0`` (a
    continuous, sign-consistent frame); ``lambda_i = mean_{t >= transient}
    log R_t[i, i]``. The frame is evolved through the transient steps too, so
    they align it without entering the average. With ``k = n`` and
    ``transient = 0`` the exponents sum to ``(1/T) log|det dc_T/dc_0|`` exactly.

    Args:
      cell, params: a cell and its parameters.
      xs: ``(time, input_size)`` driving inputs.
      k: number of exponents, ``1 <= k <= n = carry_size(cell)``; None for all.
      transient: leading steps left out of the average, ``0 <= transient < time``.
      carry: initial carry; default ``cell.initial_carry()``.
      key: PRNG key of the random initial frame; default ``jax.random.key(0)``.

    Returns:
      ``(k,)`` exponents in nats per step, sorted descending. An exactly
      singular step Jacobian direction (e.g. dead ReLU units) gives ``-inf``.

    References:
      Engelken, Wolf & Abbott, "Lyapunov spectra of chaotic recurrent neural
      networks", arXiv:2006.02427; Benettin et al., Meccanica 1980.
    """
    xs, carry = _prepare(cell, params, xs, carry, "lyapunov_spectrum")
    n, time = flatten_carry(carry)[0].shape[0], xs.shape[0]
    k = n if k is None else k
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"k: expected an integer in [1, {n}] (the carry has {n} real entries) or None, got {k!r}")
    if isinstance(transient, bool) or not isinstance(transient, int) or not 0 <= transient < time:
        raise ValueError(f"transient: expected an integer in [0, {time}) (xs has {time} steps), got {transient!r}")
    key = jax.random.key(0) if key is None else key
    return _lyapunov_spectrum(cell, k, transient, params, xs, carry, key)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _lyapunov_spectrum(cell, k, transient, params, xs, carry, key):
    vec, unflatten = flatten_carry(carry)
    n, time = vec.shape[0], xs.shape[0]
    q0, _ = jnp.linalg.qr(jax.random.normal(key, (n, k), vec.dtype))
    f = _flat_step(cell, params, unflatten)

    def body(state, inp):
        c, q = state
        x, t = inp
        c_next, lin = jax.linearize(lambda u: f(u, x), c)
        q, r = jnp.linalg.qr(jax.vmap(lin, in_axes=1, out_axes=1)(q))
        d = jnp.diagonal(r)
        sign = jnp.where(d < 0, -1.0, 1.0).astype(q.dtype)
        q = q * sign  # columns; diag(R) becomes |diag(R)|
        logs = jnp.where(t >= transient, jnp.log(jnp.abs(d)), 0.0)
        return (c_next, q), logs

    _, logs = jax.lax.scan(body, (vec, q0), (xs, jnp.arange(time)))
    exps = jnp.sum(logs, axis=0) / (time - transient)
    return jnp.sort(exps)[::-1]


# ---------------------------------------------------------------------------
# 4. Recurrent-matrix diagnostics.


class BlockDiagnostics(NamedTuple):
    """Diagnostics of one recurrent block ``W (H, H)``.

    Attributes:
      gate: block name (``"h"`` for Elman, expRNN, IndRNN, AntisymmetricRNN;
        ``"i", "f", "g", "o"`` for LSTM; ``"r", "z", "n"`` for GRU; ``"y", "z"``
        for coRNN; ``"0", "1", ...`` for other cells;
        prefixed ``"<layer>."`` in a stack).
      spectral_radius: max |eigenvalue| of W.
      sigma_max: largest singular value of W.
      gamma: sup |phi'| of the nonlinearity W feeds (1 tanh/relu/linear, 1/4 sigmoid).
      bound: ``gamma * sigma_max`` (Pascanu's bound; < 1 is sufficient for vanishing).
    """

    gate: str
    spectral_radius: float
    sigma_max: float
    gamma: float
    bound: float


class RecurrentDiagnostics(NamedTuple):
    """Recurrent-matrix diagnostics of a cell (Python floats; not jittable).

    Attributes:
      blocks: one ``BlockDiagnostics`` per ``(H, H)`` block of the recurrent
        matrix (``params.w_rec``, or the matrix a long-memory cell derives,
        see ``recurrent_diagnostics``; empty for cells without one).
      spectral_radius, sigma_max, pascanu_bound: for an Elman cell those of
        ``W_rec``; for gated cells the largest over the gate blocks (a summary:
        their carry Jacobian also has the additive path ``diag(f)``/``diag(z)``,
        so Pascanu's bound is not a vanishing criterion there); NaN without ``w_rec``.
      rest_spectral_radius, rest_sigma_max: of the step Jacobian ``dc_1/dc_0``
        at the zero carry with zero input, defined for every cell (for Elman
        ``diag(phi'(b)) W_rec``; for a diagonal linear recurrence its ``|lambda|``).
    """

    blocks: tuple[BlockDiagnostics, ...]
    spectral_radius: float
    sigma_max: float
    pascanu_bound: float
    rest_spectral_radius: float
    rest_sigma_max: float


def _elman_activation(name):
    if name == "irnn":
        return "relu"
    if name.startswith("elman-") and name[6:] in ACTIVATIONS:
        return name[6:]
    return None


def _stack_names(name: str) -> list[str] | None:
    """The layer names of an ``rnnjax.stack`` name: ``"stack(a,stack(b,c))"`` -> ``["a", "stack(b,c)"]``."""
    if not (name.startswith("stack(") and name.endswith(")")):
        return None
    parts, depth, start = [], 0, 6
    for i, ch in enumerate(name[6:-1], 6):
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            parts.append(name[start:i])
            start = i + 1
    return parts + [name[start:-1]]


def _blocks(name: str, params: Any, activation: str | None, prefix: str = "") -> list[BlockDiagnostics]:
    """``BlockDiagnostics`` of a cell named ``name``; a stack's layers get the prefixes ``"0."``, ``"1."``..."""
    names = _stack_names(name)
    if names is not None and type(params) is tuple and len(names) == len(params):
        return [b for k, (nm, p) in enumerate(zip(names, params)) for b in _blocks(nm, p, activation, f"{prefix}{k}.")]

    def block(gate, w, gamma):
        w = np.asarray(w, dtype=np.float64)
        rho = float(np.max(np.abs(np.linalg.eigvals(w))))
        smax = float(np.linalg.norm(w, 2))
        return BlockDiagnostics(prefix + gate, rho, smax, float(gamma), float(gamma) * smax)

    if isinstance(params, (ExpRNNWeights, AntisymmetricWeights)):
        return [block("h", params.w_rec, 1.0)]  # modReLU and tanh: sup |phi'| = 1
    if isinstance(params, IndRNNParams):
        return [block("h", jnp.diag(params.u), 1.0)]
    if isinstance(params, CoRNNParams):
        return [block("y", params.w_y, 1.0), block("z", params.w_z, 1.0)]
    w_rec = getattr(params, "w_rec", None)
    if isinstance(params, ElmanParams):
        act = activation or _elman_activation(name)
        if act not in ACTIVATIONS:
            raise ValueError(
                f"activation: cell {name!r} does not name its nonlinearity; pass one of "
                f"{sorted(ACTIVATIONS)}, got {act!r}"
            )
        return [block("h", w_rec, ACTIVATIONS[act][2])]
    if isinstance(params, (LSTMParams, GRUParams)):
        tanh_gamma = ACTIVATIONS["tanh"][2]
        if isinstance(params, LSTMParams):
            gates = (("i", SIGMOID_GAMMA), ("f", SIGMOID_GAMMA), ("g", tanh_gamma), ("o", SIGMOID_GAMMA))
        else:
            gates = (("r", SIGMOID_GAMMA), ("z", SIGMOID_GAMMA), ("n", tanh_gamma))
        return [block(gate, w, gamma) for (gate, gamma), w in zip(gates, jnp.split(w_rec, len(gates)))]
    if w_rec is not None and jnp.ndim(w_rec) == 2 and w_rec.shape[0] % w_rec.shape[1] == 0:
        m = w_rec.shape[0] // w_rec.shape[1]
        return [block(str(i), w, 1.0) for i, w in enumerate(jnp.split(w_rec, m))]
    return []


def recurrent_diagnostics(cell: Cell, params: Any, *, activation: str | None = None) -> RecurrentDiagnostics:
    """Spectral radius, largest singular value and Pascanu's bound of a cell's recurrent matrix.

    What "the recurrent matrix" is, per cell:

    - Elman/IRNN: ``W_rec (H, H)``; ``gamma`` from ``rnnjax.ACTIVATIONS``;
      ``bound = sigma_max * gamma`` (Pascanu 2013: ``< 1`` is sufficient for
      vanishing, ``> 1`` necessary for exploding).
    - LSTM: the four ``(H, H)`` row blocks of ``w_rec`` (gates i, f, g, o;
      gamma 1/4, 1/4, 1, 1/4). GRU: blocks r, z, n (gamma 1/4, 1/4, 1).
    - Any other cell with a ``w_rec`` of shape ``(m H, H)``: ``m`` blocks with
      ``gamma = 1`` (a valid bound for tanh, ReLU, linear and sigmoid alike).
    - expRNN: ``"h"``, ``W = expm(a - a.T)`` (orthogonal: ``sigma_max = 1``),
      gamma 1 (modReLU). AntisymmetricRNN: ``"h"``, ``w - w.T - gamma I``
      (the matrix inside its tanh; the step Jacobian is
      ``I + eps diag(tanh') (w - w.T - gamma I)``, see the ``rest_*`` fields).
      IndRNN: ``"h"``, ``diag(u)`` with ``u`` clipped as the step reads it,
      gamma 1 (ReLU). coRNN: ``"y"`` (``w_y``) and ``"z"`` (``w_z``), gamma 1
      (tanh); like the gated cells its carry Jacobian has an identity path,
      so the bound is a summary, not a vanishing criterion. A parametrised
      cell's matrix is the one its ``parametrization`` derives (what the step reads).
    - ``rnnjax.stack``: the blocks of every layer, gates prefixed with the
      layer index (``"0.i"``, ``"1.h"``), summaries the largest over all.
    - Every cell: the step Jacobian at rest (zero carry, zero input; a stack's
      whole carry).

    Args:
      cell, params: a cell and its parameters.
      activation: the Elman nonlinearity when ``cell.name`` does not tell it
        (names ``"elman-<act>"`` and ``"irnn"`` do).

    Returns:
      A ``RecurrentDiagnostics``.

    References:
      Pascanu, Mikolov & Bengio, ICML 2013, Sec. 3.1.
    """
    _check_step_cell(cell, "recurrent_diagnostics")
    v.check_params(cell, params)
    blocks = _blocks(cell.name, _prepared_weights(cell, params), activation)
    jac = np.asarray(_rest_jacobian(cell, params), dtype=np.float64)
    nan = float("nan")
    return RecurrentDiagnostics(
        blocks=tuple(blocks),
        spectral_radius=max((b.spectral_radius for b in blocks), default=nan),
        sigma_max=max((b.sigma_max for b in blocks), default=nan),
        pascanu_bound=max((b.bound for b in blocks), default=nan),
        rest_spectral_radius=float(np.max(np.abs(np.linalg.eigvals(jac)))),
        rest_sigma_max=float(np.linalg.norm(jac, 2)),
    )


@functools.partial(jax.jit, static_argnums=0)
def _prepared_weights(cell, params):
    return prepare(cell, params)[1]


@functools.partial(jax.jit, static_argnums=0)
def _rest_jacobian(cell, params):
    vec, unflatten = flatten_carry(cell.initial_carry())
    x0 = jnp.zeros((cell.input_size,), vec.dtype)
    return jax.jacfwd(_flat_step(cell, params, unflatten))(vec, x0)


def summary_dict(diag: RecurrentDiagnostics) -> dict:
    """A JSON-ready dict of a ``RecurrentDiagnostics``."""
    return {
        "spectral_radius": diag.spectral_radius,
        "sigma_max": diag.sigma_max,
        "pascanu_bound": diag.pascanu_bound,
        "rest_spectral_radius": diag.rest_spectral_radius,
        "rest_sigma_max": diag.rest_sigma_max,
        "blocks": {b.gate: b._asdict() for b in diag.blocks},
    }
