"""Trace-time argument checks with messages that name the argument.

Everything here runs while JAX traces (shapes and pytree structure are static),
so a checked function costs nothing extra inside the compiled loop.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _describe(tree) -> str:
    def leaf(x):
        return "None" if x is None else f"{getattr(x, 'dtype', type(x).__name__)}{tuple(np.shape(x))}"

    return str(jax.tree.map(leaf, tree, is_leaf=lambda x: x is None))


def check_cell(cell) -> None:
    from rnnjax._cells import Cell

    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected an rnnjax.Cell (e.g. rnnjax.lstm(3, 64)), got {type(cell).__name__}")


@functools.lru_cache(maxsize=256)
def _expected_params(cell):
    try:
        return jax.eval_shape(cell.init, jax.random.key(0))
    except Exception:  # an init that cannot be traced abstractly: skip the check
        return None


@functools.lru_cache(maxsize=256)
def _expected_carry(cell):
    try:
        return jax.eval_shape(cell.initial_carry)
    except Exception:
        return None


def _same_layout(expected, got) -> bool:
    try:
        if jax.tree.structure(expected) != jax.tree.structure(got):
            return False
        return all(
            tuple(np.shape(e)) == tuple(np.shape(g)) for e, g in zip(jax.tree.leaves(expected), jax.tree.leaves(got))
        )
    except Exception:
        return False


def check_params(cell, params: Any) -> None:
    """Raise unless ``params`` have the pytree structure and shapes of ``cell.init`` and floating leaves."""
    expected = _expected_params(cell)
    if expected is not None and not _same_layout(expected, params):
        raise ValueError(
            f"params: these parameters do not belong to cell {cell.name!r} "
            f"(input_size={cell.input_size}, output_size={cell.output_size}); "
            f"expected {_describe(expected)}, got {_describe(params)}"
        )
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        dtype = leaf.dtype if hasattr(leaf, "dtype") else jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"params{jax.tree_util.keystr(path)}: expected floating-point parameters, got {dtype} "
                f"(the cell would run on truncated weights); cast them, e.g. "
                f"jax.tree.map(lambda a: a.astype(jnp.float32), params)"
            )


def check_output(cell, y: Any, time: int | None = None) -> None:
    """Raise unless a step's output ``y`` is an array ``(cell.output_size,)`` (``(time, output_size)`` if given)."""
    want = (cell.output_size,) if time is None else (time, cell.output_size)
    shape = getattr(y, "shape", None)
    if shape is None or tuple(shape) != want:
        got = f"y of shape {tuple(shape)}" if shape is not None else f"a {type(y).__name__} ({_describe(y)})"
        what = "its step returned" if time is None else "its linear_recurrence readout returned"
        raise ValueError(
            f"cell {cell.name!r}: {what} {got}, but the cell declares output_size={cell.output_size} "
            f"(expected y of shape {want}); fix the step or the Cell's output_size"
        )


def checked_step(cell):
    """``cell.step`` that checks, while JAX traces it, that ``y`` has the declared ``(output_size,)``."""

    def step(params, carry, x):
        carry, y = cell.step(params, carry, x)
        check_output(cell, y)
        return carry, y

    return step


def check_carry(cell, carry: Any, name: str = "carry") -> Any:
    """Raise unless ``carry`` has the structure and shapes of ``cell.initial_carry()``."""
    expected = _expected_carry(cell)
    if expected is None or _same_layout(expected, carry):
        return carry
    raise ValueError(
        f"{name}: expected an unbatched carry like cell.initial_carry() = {_describe(expected)}, "
        f"got {_describe(carry)} (batch with jax.vmap or rnnjax.unroll_batch)"
    )


def check_xs(cell, xs, name: str = "xs") -> jax.Array:
    """Return ``xs`` as an array of shape ``(time, cell.input_size)`` or raise."""
    if not hasattr(xs, "shape") or not hasattr(xs, "dtype"):
        xs = jnp.asarray(xs)
    if not jnp.issubdtype(xs.dtype, jnp.floating):
        raise TypeError(f"{name}: expected a floating-point array, got dtype {xs.dtype}")
    if xs.ndim != 2:
        hint = " (batch with jax.vmap or rnnjax.unroll_batch)" if xs.ndim == 3 else ""
        raise ValueError(
            f"{name}: expected shape (time, {cell.input_size}) for one sequence, got {tuple(xs.shape)}{hint}"
        )
    if xs.shape[1] != cell.input_size:
        raise ValueError(
            f"{name}: expected input width {cell.input_size} for cell {cell.name!r}, "
            f"got shape {tuple(xs.shape)} (width {xs.shape[1]})"
        )
    return xs


def check_loop_options(reverse, unroll) -> tuple[bool, int]:
    """``(reverse, unroll)`` as ``(bool, int)``; raise naming the argument if ``reverse`` is not a bool or
    ``unroll`` is not a positive integer (steps per scan iteration)."""
    if not isinstance(reverse, (bool, np.bool_)):
        raise TypeError(f"reverse: expected a bool, got {reverse!r}")
    if isinstance(unroll, (bool, np.bool_)) or not isinstance(unroll, (int, np.integer)) or unroll < 1:
        raise ValueError(f"unroll: expected a positive integer (steps per scan iteration), got {unroll!r}")
    return bool(reverse), int(unroll)


def check_length(length, time: int, name: str = "length"):
    """Return a Python int, a traced integer scalar, or None; raise on a bad concrete value."""
    if length is None:
        return None
    if isinstance(length, bool):
        raise TypeError(f"{name}: expected an integer number of steps, got {length!r}")
    if isinstance(length, jax.core.Tracer):
        if length.ndim != 0 or not jnp.issubdtype(length.dtype, jnp.integer):
            raise ValueError(
                f"{name}: expected an integer scalar, got {length.dtype}{tuple(length.shape)} "
                "(a length per sequence goes with jax.vmap or rnnjax.unroll_batch)"
            )
        return length
    arr = np.asarray(length)
    if arr.ndim != 0 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"{name}: expected an integer scalar, got {arr.dtype}{arr.shape} "
            "(a length per sequence goes with jax.vmap or rnnjax.unroll_batch)"
        )
    value = int(arr)
    if not 0 <= value <= time:
        raise ValueError(f"{name}: expected a value in [0, {time}] (the sequence has {time} steps), got {value}")
    return value
