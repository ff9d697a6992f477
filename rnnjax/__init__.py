"""rnnjax: recurrent neural networks as pure JAX functions.

A cell is a ``Cell(init, initial_carry, step)`` of pure functions;
``rnnjax.unroll`` runs it over time with ``jax.lax.scan``; ``jax.grad`` of that
is backpropagation through time.
"""

from rnnjax import bptt, initializers
from rnnjax._cells import (
    ACTIVATIONS,
    Cell,
    ElmanParams,
    GRUParams,
    LSTMParams,
    LSTMState,
    elman,
    gru,
    irnn,
    lstm,
    torch_init,
)
from rnnjax._layers import (
    BidirectionalParams,
    Layer,
    Linear,
    LinearParams,
    bidirectional,
    layer,
    linear,
    sequential,
    stack,
)
from rnnjax._registry import CELLS, make_cell
from rnnjax._unroll import unroll, unroll_batch

__version__ = "0.1.0"

__all__ = [
    "ACTIVATIONS",
    "BidirectionalParams",
    "CELLS",
    "Cell",
    "ElmanParams",
    "GRUParams",
    "LSTMParams",
    "LSTMState",
    "Layer",
    "Linear",
    "LinearParams",
    "bidirectional",
    "bptt",
    "elman",
    "gru",
    "initializers",
    "irnn",
    "layer",
    "linear",
    "lstm",
    "make_cell",
    "sequential",
    "stack",
    "torch_init",
    "unroll",
    "unroll_batch",
]
