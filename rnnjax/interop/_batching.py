"""Helpers shared by the Flax front ends: run an unbatched rnnjax step over any leading batch axes."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from rnnjax import _validate as v
from rnnjax._cells import Cell


def batched_step(cell: Cell, params, carry, inputs):
    """``cell.step`` on ``inputs (*batch, input_size)`` and a carry with leading axes ``batch``.

    The new carry keeps the dtypes of ``carry`` (a scan over time needs a
    fixed carry type; Flax creates carries in the parameter dtype).
    """
    v.check_cell(cell)
    if inputs.ndim < 1 or inputs.shape[-1] != cell.input_size:
        raise ValueError(
            f"inputs: expected shape (..., {cell.input_size}) for cell {cell.name!r}, got {tuple(inputs.shape)}"
        )
    step = cell.step
    for _ in range(inputs.ndim - 1):
        step = jax.vmap(step, in_axes=(None, 0, 0))
    new_carry, y = step(params, carry, inputs)
    new_carry = jax.tree.map(lambda n, o: n.astype(jnp.asarray(o).dtype), new_carry, carry)
    return new_carry, y


def batched_carry(cell: Cell, input_shape) -> object:
    """``cell.initial_carry()`` broadcast to the batch axes ``input_shape[:-1]``."""
    batch = tuple(input_shape[:-1])
    return jax.tree.map(lambda c: jnp.broadcast_to(c, batch + c.shape), cell.initial_carry())
