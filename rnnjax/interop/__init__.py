"""Exact weight import and export: PyTorch ``nn.RNN``/``nn.LSTM``/``nn.GRU`` and Flax recurrent cells.

- ``from_torch(module) -> (fn, params)`` and ``to_torch(params, module=None, ...)``.
- ``from_flax(flax_cell, flax_params) -> (cell, params)`` and ``to_flax(cell, params, flax_cell=None)``.
- Flax front ends wrapping any rnnjax ``Cell``: ``rnnjax.interop.nnx.RNNCell``
  and ``rnnjax.interop.linen.RNNCell`` (import those submodules explicitly).

Neither PyTorch nor Flax is imported by ``import rnnjax.interop``; PyTorch is
needed only when a torch function is called.
"""

from rnnjax.interop._flax import carry_from_flax, carry_to_flax, from_flax, to_flax
from rnnjax.interop._torch import TorchSpec, from_torch, params_from_tensors, to_torch

__all__ = [
    "TorchSpec",
    "carry_from_flax",
    "carry_to_flax",
    "from_flax",
    "from_torch",
    "params_from_tensors",
    "to_flax",
    "to_torch",
]
