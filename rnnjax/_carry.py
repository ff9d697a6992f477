"""A carry pytree seen as one real vector: the coordinates of step Jacobians, DEER and carry readouts.

A carry is an array, a tuple such as ``LSTMState(h, c)`` or any pytree, real
or complex. ``flatten_carry`` ravels its leaves in pytree order into one real
vector (a complex leaf contributes its real parts, then its imaginary parts)
and returns the inverse; ``carry_size`` is that vector's length for a cell.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import _validate as v
from rnnjax._cells import Cell

__all__ = ["carry_size", "flatten_carry"]


def flatten_carry(carry: Any) -> tuple[jax.Array, Callable[[jax.Array], Any]]:
    """Ravel a carry pytree into one real vector.

    Args:
      carry: any pytree of arrays (real or complex leaves).

    Returns:
      ``(vec, unflatten)``: ``vec: (n,)`` real, leaves raveled in pytree order
      (a complex leaf gives its real parts then its imaginary parts), and
      ``unflatten(vec) -> carry`` its inverse (same structure, shapes, dtypes).
    """
    leaves, treedef = jax.tree.flatten(carry)
    leaves = [jnp.asarray(leaf) for leaf in leaves]
    if not leaves:
        raise ValueError("carry: expected a pytree with at least one array leaf, got an empty pytree")
    metas = [(leaf.shape, leaf.dtype, int(np.prod(leaf.shape))) for leaf in leaves]
    parts = []
    for leaf in leaves:
        if jnp.iscomplexobj(leaf):
            parts += [jnp.real(leaf).ravel(), jnp.imag(leaf).ravel()]
        else:
            parts.append(leaf.ravel())
    real_dtype = jnp.result_type(*[p.dtype for p in parts])
    vec = jnp.concatenate([p.astype(real_dtype) for p in parts])

    def unflatten(vec):
        out, i = [], 0
        for shape, dtype, size in metas:
            if jnp.issubdtype(dtype, jnp.complexfloating):
                re, im = vec[i : i + size], vec[i + size : i + 2 * size]
                out.append((re + 1j * im).astype(dtype).reshape(shape))
                i += 2 * size
            else:
                out.append(vec[i : i + size].astype(dtype).reshape(shape))
                i += size
        return jax.tree.unflatten(treedef, out)

    return vec, unflatten


def carry_size(cell: Cell) -> int:
    """Number of real numbers in ``cell``'s carry (complex entries count twice)."""
    v.check_cell(cell)
    shapes = jax.eval_shape(cell.initial_carry)
    return int(
        sum(
            int(np.prod(s.shape)) * (2 if jnp.issubdtype(s.dtype, jnp.complexfloating) else 1)
            for s in jax.tree.leaves(shapes)
        )
    )
