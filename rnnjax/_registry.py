"""Cells by name, for the command line, sweeps and benchmarks."""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp

from rnnjax import initializers as inits
from rnnjax._cells import Cell, elman, gru, irnn, lstm


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


# name -> factory(input_size, hidden_size, *, init_gain, dtype) -> Cell.
# ``init_gain`` scales the recurrent initialisation (orthogonal gain; identity gain for IRNN).
CELLS: dict[str, Callable[..., Cell]] = {
    "elman-tanh": _elman("tanh"),
    "elman-relu": _elman("relu"),
    "elman-linear": _elman("linear"),
    "irnn": _irnn,
    "lstm": _lstm,
    "gru": _gru,
}


def make_cell(name: str, input_size: int, hidden_size: int, *, init_gain: float = 1.0, dtype=jnp.float32) -> Cell:
    """Build a cell by name (``rnnjax.CELLS`` lists them) with its recurrent init scaled by ``init_gain``.

    Args:
      name: e.g. ``"elman-tanh"``, ``"irnn"``, ``"lstm"``, ``"gru"``.
      input_size: I.
      hidden_size: H.
      init_gain: recurrent-weight scale (orthogonal gain; identity gain for ``"irnn"``).
      dtype: parameter dtype.
    """
    if name not in CELLS:
        raise ValueError(f"name: unknown cell {name!r}; expected one of {sorted(CELLS)}")
    if not init_gain > 0:
        raise ValueError(f"init_gain: expected a positive number, got {init_gain}")
    return CELLS[name](input_size, hidden_size, init_gain=init_gain, dtype=dtype)
