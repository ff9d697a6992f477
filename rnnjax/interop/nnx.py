"""A Flax NNX module wrapping any rnnjax ``Cell``, so rnnjax cells drop into NNX models.

Example::

    from flax import nnx
    import rnnjax
    from rnnjax.interop.nnx import RNNCell

    cell = RNNCell(rnnjax.lstm(3, 16), rngs=nnx.Rngs(0))
    ys = nnx.RNN(cell)(xs)                 # xs: (batch, time, 3) -> ys: (batch, time, 16)
    carry, ys = cell.unroll(xs, lengths=n)  # rnnjax.unroll_batch, with padding and remat options

``initialize_carry(input_shape, rngs, carry_init)`` takes Flax's arguments with
Flax's meaning. The carry is the cell's own (``LSTMState(h, c)`` for an LSTM,
where Flax's ``LSTMCell`` uses ``(c, h)``): convert a Flax carry with
``rnnjax.interop.carry_from_flax``.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from rnnjax import _validate as v
from rnnjax._cells import Cell
from rnnjax._unroll import unroll, unroll_batch
from rnnjax.interop._batching import batched_step
from rnnjax.interop._flax import check_front_end_carry, front_end_carry


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
        check_front_end_carry(self.cell, carry, inputs.shape[:-1])
        return batched_step(self.cell, self.param_values(), carry, inputs)

    def initialize_carry(self, input_shape, rngs=None, carry_init=None):
        """The carry for inputs of shape ``input_shape (*batch, input_size)``, as Flax's NNX cells make it.

        Args:
          input_shape: ``(*batch, input_size)``.
          rngs: ``nnx.Rngs`` (its ``carry`` stream, else ``default``) or an
            ``nnx.RngStream``: one key per carry leaf is drawn, in Flax's order
            (an LSTM's ``c``, then ``h``), also without ``carry_init``, so the
            stream advances as with Flax's cells. Needed with ``carry_init``.
          carry_init: an initialiser ``carry_init(key, shape, dtype)`` for every
            carry leaf, or None for ``cell.initial_carry()`` (zeros for
            rnnjax's cells).

        Returns:
          The cell's carry with leading axes ``batch`` (``LSTMState(h, c)`` for
          an LSTM; ``rnnjax.interop.carry_to_flax`` gives Flax's ``(c, h)``).
        """
        if isinstance(rngs, nnx.Rngs):
            rngs = rngs.carry
        if rngs is not None and not isinstance(rngs, nnx.RngStream):
            raise TypeError(f"rngs: expected nnx.Rngs, an nnx.RngStream or None, got {type(rngs).__name__}")
        if rngs is None and carry_init is not None:
            raise ValueError("rngs: expected nnx.Rngs or an nnx.RngStream to draw carry_init's keys, got None")
        keys = None if rngs is None else (lambda n: [rngs() for _ in range(n)])
        return front_end_carry(self.cell, input_shape, carry_init, keys)

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
