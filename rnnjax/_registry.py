"""Cells by name, for the command line, sweeps and benchmarks; ``register_cell`` adds a user's cell."""

from __future__ import annotations

import functools
import math
from typing import Callable

from rnnjax import initializers as inits
from rnnjax._cells import Cell, elman, gru, irnn, lstm
from rnnjax._longmemory import antisymmetric, cornn, exprnn, indrnn, indrnn_bound
from rnnjax._modern import lru, mingru, minlstm

_gain = functools.partial(inits.check_positive, "init_gain")


def _elman(activation):
    def make(input_size, hidden_size, *, init_gain=1.0, dtype=None):
        init_gain = _gain(init_gain)
        return elman(input_size, hidden_size, activation=activation, rec_init=inits.orthogonal(init_gain), dtype=dtype)

    return make


def _irnn(input_size, hidden_size, *, init_gain=1.0, dtype=None):
    init_gain = _gain(init_gain)
    return irnn(input_size, hidden_size, gain=init_gain, dtype=dtype)


def _lstm(input_size, hidden_size, *, init_gain=1.0, dtype=None):
    init_gain = _gain(init_gain)
    return lstm(input_size, hidden_size, rec_init=inits.orthogonal(init_gain), dtype=dtype)


def _gru(input_size, hidden_size, *, init_gain=1.0, dtype=None):
    init_gain = _gain(init_gain)
    return gru(input_size, hidden_size, rec_init=inits.orthogonal(init_gain), dtype=dtype)


def _lru(input_size, hidden_size, *, init_gain=1.0, dtype=None):
    init_gain = _gain(init_gain)
    # The ring radii [0.9, 0.999] times init_gain, capped below 1 (|lambda| < 1 by construction).
    cap = 1.0 - 1e-4
    r_max = min(0.999 * init_gain, cap)
    return lru(input_size, hidden_size, r_min=min(0.9 * init_gain, r_max * (1 - 1e-3)), r_max=r_max, dtype=dtype)


def _mingru(input_size, hidden_size, *, init_gain=1.0, dtype=None):
    init_gain = _gain(init_gain)
    # Update-gate bias -log(g): retention 1 - z = g / (1 + g) at zero input.
    return mingru(input_size, hidden_size, gate_bias=-math.log(init_gain), dtype=dtype)


def _minlstm(input_size, hidden_size, *, init_gain=1.0, dtype=None):
    init_gain = _gain(init_gain)
    # Forget-gate bias +log(g), input-gate bias -log(g).
    g = math.log(init_gain)
    return minlstm(input_size, hidden_size, forget_bias=g, input_bias=-g, dtype=dtype)


def _exprnn(input_size, hidden_size, *, init_gain=1.0, dtype=None):
    init_gain = _gain(init_gain)
    return exprnn(input_size, hidden_size, angle_scale=init_gain, dtype=dtype)


def _cornn(input_size, hidden_size, *, init_gain=1.0, dtype=None):
    init_gain = _gain(init_gain)
    return cornn(input_size, hidden_size, rec_scale=init_gain, dtype=dtype)


def _indrnn(input_size, hidden_size, *, init_gain=1.0, dtype=None):
    init_gain = _gain(init_gain)
    # u ~ U(0, init_gain * u_max), clipped to [-u_max, u_max] by the parametrization (t_max = 784, max_gain = 2).
    return indrnn(input_size, hidden_size, u_range=(0.0, init_gain * indrnn_bound(784, 2.0)), dtype=dtype)


def _antisymmetric(input_size, hidden_size, *, init_gain=1.0, dtype=None):
    init_gain = _gain(init_gain)
    return antisymmetric(input_size, hidden_size, rec_std=init_gain, dtype=dtype)


# name -> factory(input_size, hidden_size, *, init_gain, dtype) -> Cell.
# ``init_gain`` scales the recurrent initialisation (orthogonal gain; identity gain for IRNN).
# Cells without a recurrent matrix read it as a memory knob: "lru" multiplies the ring radii
# [r_min, r_max] = [0.9, 0.999] by it (capped at 0.9999); "mingru" sets the update-gate bias to
# -log(init_gain) (retention g/(1+g) per step at zero input); "minlstm" sets the forget-gate bias to
# +log(init_gain) and the input-gate bias to -log(init_gain). The long-memory cells: "exprnn" multiplies
# the initial rotation angles of its orthogonal W = expm(a - a.T) by it (W stays orthogonal; < 1 starts
# nearer the identity); "cornn" multiplies the U(+-1/sqrt(I + 2H)) bound of w_y and w_z; "indrnn" draws
# u ~ U(0, init_gain * u_max), u_max = 2 ** (1/784) (memory T = 784, gradient growth <= 2; |u| is clipped to
# u_max whatever the gain); "antisymmetric" is sigma_w, w ~ N(0, init_gain^2 / H) (eps = gamma = 0.01).
# init_gain=1 is each paper's default.
CELLS: dict[str, Callable[..., Cell]] = {
    "elman-tanh": _elman("tanh"),
    "elman-relu": _elman("relu"),
    "elman-linear": _elman("linear"),
    "irnn": _irnn,
    "lstm": _lstm,
    "gru": _gru,
    "lru": _lru,
    "mingru": _mingru,
    "minlstm": _minlstm,
    "exprnn": _exprnn,
    "cornn": _cornn,
    "indrnn": _indrnn,
    "antisymmetric": _antisymmetric,
}


def register_cell(name: str, factory: Callable[..., Cell], *, overwrite: bool = False) -> None:
    """Make a user's cell available by name: the way to train or sweep your own cell.

    After ``register_cell("mycell", factory)``, ``rnnjax.make_cell("mycell", ...)``,
    ``rnnjax.train.RunConfig(cell="mycell")`` and so ``rnnjax train --cell mycell``
    and ``rnnjax sweep --cell mycell`` build it (the command line from a script
    that registers first and then calls ``rnnjax.cli.main([...])``). Do not
    write into ``rnnjax.CELLS`` directly: this checks the name and the factory.

    Example::

        def leaky(input_size, hidden_size, *, init_gain, dtype):
            return rnnjax.elman(input_size, hidden_size, activation="linear",
                                rec_init=rnnjax.initializers.orthogonal(0.9 * init_gain), dtype=dtype)

        rnnjax.register_cell("leaky", leaky)

    Args:
      name: a non-empty string without whitespace or commas (command lines
        take comma-separated lists of names); must not be registered yet.
      factory: ``factory(input_size, hidden_size, *, init_gain, dtype) -> Cell``
        with ``init_gain`` a finite positive float (1.0: the cell's default
        initialisation; it scales the recurrent initialisation) and ``dtype``
        a floating dtype or None (JAX's default float dtype). It is called
        once here as ``factory(1, 1, init_gain=1.0, dtype=None)`` to check that
        it builds a ``Cell`` with ``input_size == 1``.
      overwrite: replace an existing entry of the same name (a built-in one
        included).

    Raises:
      TypeError: ``name`` is not a string or ``factory`` not callable.
      ValueError: ``name`` is empty, has whitespace or a comma, or is taken
        (without ``overwrite``); or ``factory(1, 1, ...)`` fails or returns
        no ``Cell`` of input size 1.
    """
    if not isinstance(name, str):
        raise TypeError(f"name: expected a string, got {type(name).__name__}")
    if not name or name != "".join(name.split()) or "," in name:
        raise ValueError(f"name: expected a non-empty string without whitespace or commas, got {name!r}")
    if name in CELLS and not overwrite:
        raise ValueError(f"name: cell {name!r} is already registered; pass overwrite=True to replace it")
    if not callable(factory):
        raise TypeError(f"factory: expected a callable (input_size, hidden_size, *, init_gain, dtype) -> Cell, got {factory!r}")
    call = "factory(1, 1, init_gain=1.0, dtype=None)"
    try:
        cell = factory(1, 1, init_gain=1.0, dtype=None)
    except Exception as err:
        raise ValueError(f"factory: {call} raised {type(err).__name__}: {err}") from err
    if not isinstance(cell, Cell) or cell.input_size != 1:
        got = f"a Cell with input_size {cell.input_size}" if isinstance(cell, Cell) else type(cell).__name__
        raise ValueError(f"factory: expected {call} to return an rnnjax.Cell with input_size 1, got {got}")
    CELLS[name] = factory


def make_cell(name: str, input_size: int, hidden_size: int, *, init_gain: float = 1.0, dtype=None) -> Cell:
    """Build a cell by name (``rnnjax.CELLS`` lists them) with its recurrent init scaled by ``init_gain``.

    Args:
      name: e.g. ``"elman-tanh"``, ``"irnn"``, ``"lstm"``, ``"gru"``, or a
        name added with ``rnnjax.register_cell``.
      input_size: I.
      hidden_size: H.
      init_gain: finite positive recurrent-weight scale (orthogonal gain;
        identity gain for ``"irnn"``; for ``"lru"``, ``"mingru"``,
        ``"minlstm"``, ``"exprnn"``, ``"cornn"``, ``"indrnn"``,
        ``"antisymmetric"`` see the note above ``CELLS``).
      dtype: parameter dtype; default (None) JAX's default float dtype
        (float64 under ``jax_enable_x64``, else float32).
    """
    if name not in CELLS:
        raise ValueError(f"name: unknown cell {name!r}; expected one of {sorted(CELLS)}")
    return CELLS[name](input_size, hidden_size, init_gain=_gain(init_gain), dtype=dtype)
