"""Cells by name, for the command line, sweeps and benchmarks."""

from __future__ import annotations

import math
from typing import Callable

import jax.numpy as jnp

from rnnjax import initializers as inits
from rnnjax._cells import Cell, elman, gru, irnn, lstm
from rnnjax._modern import lru, mingru, minlstm


def _elman(activation):
    def make(input_size, hidden_size, *, init_gain=1.0, dtype=jnp.float32):
        return elman(input_size, hidden_size, activation=activation, rec_init=inits.orthogonal(init_gain), dtype=dtype)

    return make


def _irnn(input_size, hidden_size, *, init_gain=1.0, dtype=jnp.float32):
    return irnn(input_size, hidden_size, gain=init_gain, dtype=dtype)


def _lstm(input_size, hidden_size, *, init_gain=1.0, dtype=jnp.float32):
    return lstm(input_size, hidden_size, rec_init=inits.orthogonal(init_gain), dtype=dtype)


def _gru(input_size, hidden_size, *, init_gain=1.0, dtype=jnp.float32):
    return gru(input_size, hidden_size, rec_init=inits.orthogonal(init_gain), dtype=dtype)


def _lru(input_size, hidden_size, *, init_gain=1.0, dtype=jnp.float32):
    # The ring radii [0.9, 0.999] times init_gain, capped below 1 (|lambda| < 1 by construction).
    cap = 1.0 - 1e-4
    r_max = min(0.999 * init_gain, cap)
    return lru(input_size, hidden_size, r_min=min(0.9 * init_gain, r_max * (1 - 1e-3)), r_max=r_max, dtype=dtype)


def _mingru(input_size, hidden_size, *, init_gain=1.0, dtype=jnp.float32):
    # Update-gate bias -log(g): retention 1 - z = g / (1 + g) at zero input.
    return mingru(input_size, hidden_size, gate_bias=-math.log(init_gain), dtype=dtype)


def _minlstm(input_size, hidden_size, *, init_gain=1.0, dtype=jnp.float32):
    # Forget-gate bias +log(g), input-gate bias -log(g).
    g = math.log(init_gain)
    return minlstm(input_size, hidden_size, forget_bias=g, input_bias=-g, dtype=dtype)


# name -> factory(input_size, hidden_size, *, init_gain, dtype) -> Cell.
# ``init_gain`` scales the recurrent initialisation (orthogonal gain; identity gain for IRNN).
# Cells without a recurrent matrix read it as a memory knob: "lru" multiplies the ring radii
# [r_min, r_max] = [0.9, 0.999] by it (capped at 0.9999); "mingru" sets the update-gate bias to
# -log(init_gain) (retention g/(1+g) per step at zero input); "minlstm" sets the forget-gate bias to
# +log(init_gain) and the input-gate bias to -log(init_gain). init_gain=1 is each paper's default.
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
}


def make_cell(name: str, input_size: int, hidden_size: int, *, init_gain: float = 1.0, dtype=jnp.float32) -> Cell:
    """Build a cell by name (``rnnjax.CELLS`` lists them) with its recurrent init scaled by ``init_gain``.

    Args:
      name: e.g. ``"elman-tanh"``, ``"irnn"``, ``"lstm"``, ``"gru"``.
      input_size: I.
      hidden_size: H.
      init_gain: recurrent-weight scale (orthogonal gain; identity gain for ``"irnn"``; for
        ``"lru"``, ``"mingru"``, ``"minlstm"`` a memory knob, see the note above ``CELLS``).
      dtype: parameter dtype.
    """
    if name not in CELLS:
        raise ValueError(f"name: unknown cell {name!r}; expected one of {sorted(CELLS)}")
    if not init_gain > 0:
        raise ValueError(f"init_gain: expected a positive number, got {init_gain}")
    return CELLS[name](input_size, hidden_size, init_gain=init_gain, dtype=dtype)
