"""A Flax linen module wrapping any rnnjax ``Cell``, so rnnjax cells drop into linen models.

Example::

    import flax.linen as nn
    import rnnjax
    from rnnjax.interop.linen import RNNCell

    rnn = nn.RNN(RNNCell(rnnjax.gru(3, 16)))
    variables = rnn.init(jax.random.key(0), xs)   # xs: (batch, time, 3)
    ys = rnn.apply(variables, xs)                  # (batch, time, 16)
"""

from __future__ import annotations

import flax.linen as nn

from rnnjax._cells import Cell
from rnnjax.interop._batching import batched_carry, batched_step


class RNNCell(nn.RNNCellBase):
    """An rnnjax ``Cell`` as a linen recurrent cell (usable with ``flax.linen.RNN``).

    Its parameters are one linen param named ``"cell"``: the cell's own pytree
    (``LSTMParams``, ...), initialised by ``cell.init``.

    Attributes:
      cell: any rnnjax ``Cell``.
    """

    cell: Cell

    @nn.compact
    def __call__(self, carry, inputs):
        """One step: ``inputs (*batch, input_size)``, carry with leading axes ``batch`` -> ``(carry, y)``."""
        params = self.param("cell", self.cell.init)
        return batched_step(self.cell, params, carry, inputs)

    @nn.nowrap
    def initialize_carry(self, rng, input_shape):
        """The cell's zero carry broadcast to ``input_shape[:-1]`` (``rng`` unused)."""
        del rng
        return batched_carry(self.cell, input_shape)

    @property
    def num_feature_axes(self) -> int:
        return 1
