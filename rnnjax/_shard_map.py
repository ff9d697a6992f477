"""Helpers for code traced inside ``jax.shard_map``: which manual mesh axes a value varies along.

Inside ``shard_map`` every value's type records the manual mesh axes along
which it differs between devices ("varying"); a replicated value (a weight, a
constant initial carry) must be cast to varying before it meets per-device
values in a ``lax.scan`` carry or a ``dot_general``. Outside ``shard_map``
nothing varies and these helpers return their input unchanged.
"""

from __future__ import annotations

from typing import Any

import jax

__all__ = ["match_varying", "varying_axes"]


def varying_axes(tree: Any) -> frozenset:
    """The manual mesh axes (inside ``jax.shard_map``) along which any leaf of ``tree`` varies; empty elsewhere."""
    leaves = jax.tree.leaves(tree)
    if len(leaves) != 1 or leaves[0] is not tree:
        return frozenset().union(*(varying_axes(a) for a in leaves))
    try:
        aval = jax.typeof(tree)
    except TypeError:
        return frozenset()
    manual = getattr(aval, "manual_axis_type", None)  # jax >= 0.10
    if manual is not None:
        return frozenset(manual.varying)
    return frozenset(getattr(aval, "vma", ()))  # jax 0.6-0.9


def match_varying(tree: Any, *others: Any) -> Any:
    """Cast the leaves of ``tree`` to vary along every manual axis any leaf of ``tree`` or ``others`` varies along.

    Inside ``jax.shard_map`` a scan's carry must keep its type: a constant
    initial carry (zeros) next to per-device inputs would otherwise become
    "varying" after one step and the scan would be rejected. Outside
    ``shard_map`` this returns ``tree`` unchanged.
    """
    axes = varying_axes((tree, others))
    if not axes:
        return tree

    def cast(a):
        missing = tuple(sorted(axes - varying_axes(a)))
        if not missing:
            return a
        if hasattr(jax.lax, "pcast"):
            return jax.lax.pcast(a, missing, to="varying")
        return jax.lax.pvary(a, missing)

    return jax.tree.map(cast, tree)
