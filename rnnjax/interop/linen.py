"""A Flax linen module wrapping any rnnjax ``Cell``, so rnnjax cells drop into linen models.

Example::

    import flax.linen as nn
    import rnnjax
    from rnnjax.interop.linen import RNNCell

    rnn = nn.RNN(RNNCell(rnnjax.gru(3, 16)))
    variables = rnn.init(jax.random.key(0), xs)   # xs: (batch, time, 3)
    ys = rnn.apply(variables, xs)                  # (batch, time, 16)

The carry is the cell's own (``LSTMState(h, c)`` for an LSTM, where Flax's
``LSTMCell`` uses ``(c, h)``): convert a Flax carry with
``rnnjax.interop.carry_from_flax``.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax

from rnnjax._cells import Cell
from rnnjax.interop._batching import batched_step
from rnnjax.interop._flax import check_front_end_carry, front_end_carry


class RNNCell(nn.RNNCellBase):
    """An rnnjax ``Cell`` as a linen recurrent cell (usable with ``flax.linen.RNN``).

    Its parameters are one linen param named ``"cell"``: the cell's own pytree
    (``LSTMParams``, ...), initialised by ``cell.init``.

    Attributes:
      cell: any rnnjax ``Cell``.
      carry_init: as Flax's cells' ``carry_init``: an initialiser
        ``carry_init(key, shape, dtype)`` for every carry leaf, or None (the
        default) for ``cell.initial_carry()`` (zeros for rnnjax's cells).
    """

    cell: Cell
    carry_init: Callable[..., Any] | None = None

    @nn.compact
    def __call__(self, carry, inputs):
        """One step: ``inputs (*batch, input_size)``, carry with leading axes ``batch`` -> ``(carry, y)``."""
        check_front_end_carry(self.cell, carry, inputs.shape[:-1])
        params = self.param("cell", self.cell.init)
        return batched_step(self.cell, params, carry, inputs)

    @nn.nowrap
    def initialize_carry(self, rng, input_shape):
        """The carry for inputs of shape ``input_shape (*batch, input_size)``, as Flax's cells make it.

        Args:
          rng: a PRNG key for ``carry_init``: used whole for a one-leaf carry
            and split into one key per leaf otherwise (an LSTM's ``c``, then
            ``h``), as Flax's cells do; unused without ``carry_init``.
          input_shape: ``(*batch, input_size)``.

        Returns:
          The cell's carry with leading axes ``batch``.
        """
        if rng is None and self.carry_init is not None:
            raise ValueError("rng: expected a PRNG key (jax.random.key) to draw carry_init's keys, got None")
        keys = None if rng is None else (lambda n: [rng] if n == 1 else list(jax.random.split(rng, n)))
        return front_end_carry(self.cell, input_shape, self.carry_init, keys)

    @property
    def num_feature_axes(self) -> int:
        return 1
