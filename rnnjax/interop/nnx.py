"""A Flax NNX module wrapping any rnnjax ``Cell``, so rnnjax cells drop into NNX models.

Example::

    from flax import nnx
    import rnnjax
    from rnnjax.interop.nnx import RNNCell

    cell = RNNCell(rnnjax.lstm(3, 16), rngs=nnx.Rngs(0))
    ys = nnx.RNN(cell)(xs)                 # xs: (batch, time, 3) -> ys: (batch, time, 16)
    carry, ys = cell.unroll(xs, lengths=n)  # rnnjax.unroll_batch, with padding and remat options
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from rnnjax import _validate as v
from rnnjax._cells import Cell
from rnnjax._unroll import unroll, unroll_batch
from rnnjax.interop._batching import batched_carry, batched_step


def _is_var(x) -> bool:
    return isinstance(x, nnx.Variable)


class RNNCell(nnx.RNNCellBase):
    """An rnnjax ``Cell`` as an NNX recurrent cell (usable with ``flax.nnx.RNN``).

    The parameters live in ``self.params``: the cell's own named pytree
    (``LSTMParams``, ...) with every array an ``nnx.Param``, so
    ``nnx.state(module, nnx.Param)``, ``nnx.Optimizer`` and ``nnx.grad`` see
    them as usual.

    Args:
      cell: any rnnjax ``Cell`` (``rnnjax.lstm(...)``, ``rnnjax.stack(...)``, ...).
      rngs: ``nnx.Rngs`` used to initialise the parameters with
        ``cell.init(rngs.params())`` (not needed when ``params`` is given).
      params: optional initial parameters (e.g. from ``rnnjax.interop.from_torch``
        or ``from_flax``); they must have ``cell.init``'s structure and shapes.
    """

    def __init__(self, cell: Cell, *, rngs: nnx.Rngs | None = None, params: Any = None):
        v.check_cell(cell)
        if params is None:
            if rngs is None:
                raise ValueError("rngs: expected nnx.Rngs to initialise the cell's parameters (or pass params=)")
            params = cell.init(rngs.params())
        else:
            v.check_params(cell, params)
        self.cell = cell
        self.params = nnx.data(jax.tree.map(nnx.Param, params))

    def param_values(self) -> Any:
        """The parameters as a plain rnnjax pytree of arrays."""
        return jax.tree.map(lambda p: p[...], self.params, is_leaf=_is_var)

    def __call__(self, carry, inputs):
        """One step: ``inputs (*batch, input_size)``, carry with leading axes ``batch`` -> ``(carry, y)``."""
        return batched_step(self.cell, self.param_values(), carry, inputs)

    def initialize_carry(self, input_shape, rngs=None, carry_init=None):
        """The cell's zero carry broadcast to ``input_shape[:-1]`` (``rngs``/``carry_init`` unused)."""
        del rngs
        if carry_init is not None:
            raise ValueError(
                "carry_init: not supported; rnnjax cells start from cell.initial_carry() (pass a carry instead)"
            )
        return batched_carry(self.cell, input_shape)

    @property
    def num_feature_axes(self) -> int:
        return 1

    def unroll(self, xs, carry=None, *, lengths=None, **unroll_options):
        """Run over whole sequences with ``rnnjax.unroll``/``unroll_batch``.

        Args:
          xs: ``(time, input_size)`` or ``(batch, time, input_size)``.
          carry: initial carry (batched like ``xs``) or None.
          lengths: valid steps: a scalar for one sequence, ``(batch,)`` for a batch.
          **unroll_options: ``reverse``, ``unroll``, ``remat``, ``method``... of ``rnnjax.unroll``.

        Returns:
          ``(final_carry, ys)`` with ``ys: ([batch,] time, output_size)``.
        """
        params = self.param_values()
        if getattr(xs, "ndim", None) == 2:
            return unroll(self.cell, params, xs, carry, length=lengths, **unroll_options)
        return unroll_batch(self.cell, params, xs, carry, lengths=lengths, **unroll_options)
